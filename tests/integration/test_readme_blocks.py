"""The README's quick code blocks run as written in a fresh clone, from a user's shell (tests/readme_blocks.py
lists which blocks run here and why the others do not).

The clone holds the checkout's tracked files and the installed venv as `make run` leaves it; the shell has no
venv on PATH, HOME is a temporary folder and no test isolation variable is set (only DVC's analytics opt-out
is kept: tests/readme_blocks.py TOOL_OPT_OUTS). `make run` trains a tiny benchmark (CONFIG=), then the
commands it prints are pasted, then the README's blocks run; the home directory stays empty throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.byob import write_benchmark
from tests.integration.conftest import tiny_run_config
from tests.readme_blocks import BLOCKS, CHECKOUT, GIT_USER, ROOT, RUN, blocks, user_shell

pytestmark = pytest.mark.slow
VENV = Path(sys.prefix)


def _block(first_line: str):
    found = [b for b in blocks() if b.key == first_line]
    assert len(found) == 1 and BLOCKS[first_line][0] == RUN, first_line
    return found[0]


def _fresh_clone(path: Path) -> Path:
    """The tracked files as they are now, committed to a new repository, with `.venv` as `make run` leaves it
    (the installed venv's folders, and a stamp newer than pyproject.toml, so make does not reinstall)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split("\0")):
        if (ROOT / name).is_file():  # not one deleted in the working tree
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    env = {**os.environ, **GIT_USER}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "fresh clone"]):
        subprocess.run(cmd, cwd=path, check=True, env=env, capture_output=True)
    (path / ".venv").mkdir()
    for entry in VENV.iterdir():
        if entry.name != ".installed":
            (path / ".venv" / entry.name).symlink_to(entry)
    (path / ".venv" / ".installed").touch()
    return path


def _bash(script: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, f"{script}\n-> exit {done.returncode}\n{out[-4000:]}"
    return out


def test_make_run_prints_commands_that_work_pasted_and_the_quick_blocks_run_as_written(tiny_repo, tmp_path):
    clone, home = _fresh_clone(tmp_path / "udon-pipeline"), tmp_path / "home"
    home.mkdir()
    env = user_shell(home, VENV)
    config = tiny_run_config(tiny_repo, tmp_path / "tiny.yaml", registry={"model_name": "udon-universal-embedding"})

    out = _bash(f"make run CONFIG={config}", clone, env, timeout=900)
    pasted = [line.removeprefix("Review: ") for line in out.splitlines() if line.startswith("Review: ")]
    assert pasted == ["make models; make lineage V=1"], out[-3000:]
    shown = _bash(pasted[0], clone, env)
    assert "udon-universal-embedding" in shown and "champion" in shown
    where = _bash(_block("make models                     # the versions: stage, aliases, gate verdict, "
                         "metrics").text, clone, env)
    assert "training_pipeline" in where  # zenml's run list
    assert sorted(home.rglob("*")) == []  # no ~/.udon, ~/.config/zenml, analytics ids

    mydata, repo = write_benchmark(tmp_path / "mydata"), tmp_path / "my-repo"
    (mydata / "benchmark.json").write_text(_block('{"name": "my-benchmark",').text)
    byob = _block("mkdir -p /path/to/my-repo && cd /path/to/my-repo && git init && dvc init && mv /path/to/mydata "
                  "data \\").text
    _bash(byob.replace(CHECKOUT, str(clone)).replace("/path/to/my-repo", str(repo))
          .replace("/path/to/mydata", str(mydata)), tmp_path, env)
    assert (repo / "data.dvc").is_file() and not mydata.exists()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True)
    assert log.stdout.split() == ["our", "benchmark", "v1"]
    from udon_core.data import resolve_benchmark_spec

    spec = resolve_benchmark_spec("auto", repo / "data")  # the README's description, read as a run reads it
    assert spec.domain_names == ("shop", "art") and json.loads((repo / "data" / "benchmark.json").read_text())
    validate = _block(".venv/bin/udon data validate /path/to/my-repo/data --out /tmp/my-benchmark.html   # exit 0, "
                      "1 or 2").text
    page = tmp_path / "my-benchmark.html"
    checked = _bash(validate.replace("/path/to/my-repo", str(repo)).replace("/tmp/my-benchmark.html", str(page)),
                    clone, env)
    assert "(benchmark my-benchmark, 65 rows): passed" in checked and page.is_file()
