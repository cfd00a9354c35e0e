"""Where `udon` keeps its state: $UDON_HOME, else the `.udon` of the checkout it runs in; never the home directory.

The subprocess tests run the `udon` console script as a user's shell would: HOME is a temporary folder and none
of the test isolation variables (ZENML_CONFIG_PATH, UDON_HOME...) is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.run_records import find_checkout, udon_home
from udon_core.errors import StackError

ROOT = Path(__file__).resolve().parents[2]
UDON = Path(sys.executable).parent / "udon"


def _checkout(path: Path) -> Path:
    path.mkdir(parents=True)
    shutil.copyfile(ROOT / "pyproject.toml", path / "pyproject.toml")
    return path


def _user_shell(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def _written(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_the_checkout_is_found_by_walking_up_from_any_folder_inside_it(tmp_path, monkeypatch):
    checkout = _checkout(tmp_path / "udon-pipeline")
    deep = checkout / "bench" / "out"
    deep.mkdir(parents=True)
    assert find_checkout(deep) == checkout and find_checkout(checkout) == checkout
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    (tmp_path / "pyproject.toml").write_text("not [toml")  # a parent's broken file is passed over, not fatal
    assert find_checkout(other) is None
    monkeypatch.delenv("UDON_HOME")
    monkeypatch.chdir(deep)
    assert udon_home() == checkout / ".udon"
    monkeypatch.setenv("UDON_HOME", str(tmp_path / "elsewhere"))  # an explicit home wins
    assert udon_home() == tmp_path / "elsewhere"
    monkeypatch.delenv("UDON_HOME")
    monkeypatch.chdir(other)
    with pytest.raises(StackError, match=f"^{other} is not inside an udon-pipeline checkout and UDON_HOME is not set"):
        udon_home()


def test_outside_a_checkout_without_udon_home_udon_stops_in_one_sentence_and_writes_nothing_home(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    done = subprocess.run([str(UDON), "models"], cwd=elsewhere, env=_user_shell(home), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"error: {elsewhere} is not inside an udon-pipeline checkout and UDON_HOME is not set: run udon inside the "
        "checkout (its state is the checkout's .udon) or set UDON_HOME to a folder for it")
    helped = subprocess.run([str(UDON), "run", "--help"], cwd=elsewhere, env=_user_shell(home), capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "--config" in helped.stdout  # help needs no state
    assert _written(home) == []


@pytest.mark.slow
def test_inside_a_checkout_udon_keeps_every_tools_state_in_its_udon_folder(tmp_path):
    home, checkout = tmp_path / "home", _checkout(tmp_path / "udon-pipeline")
    home.mkdir()
    (checkout / "configs").mkdir()
    done = subprocess.run([str(UDON), "models"], cwd=checkout / "configs", env=_user_shell(home),
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode in (0, 2) and "Traceback" not in out, out  # no model yet: one sentence
    assert "udon-universal-embedding" in out
    config = (checkout / ".udon" / "zenml" / "config.yaml").read_text()
    assert "analytics_opt_in: false" in config
    assert _written(home) == []
