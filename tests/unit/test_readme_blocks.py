"""Every README code block is listed as run or skipped, and names only programs and files that exist as written.

What this caught in the README of 2026-12-05: the BYOB block called `dvc` and the bench blocks a bare `python`
without putting the venv on PATH (`dvc: command not found`, `ModuleNotFoundError: pandas`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_blocks import BLOCKS, ROOT, Block, blocks, commands, programs, repo_files, user_shell

VENV_BIN = Path(sys.executable).parent  # the venv `source .venv/bin/activate` puts first on PATH
# The shell of a user who has not activated the venv: the system's PATH, no venv.
SHELL_PATH = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                             if Path(p).resolve() != VENV_BIN.resolve()) or "/usr/bin:/bin"
README_BLOCKS = blocks()


def test_every_block_is_listed_once_as_run_or_skipped_with_a_reason():
    keys = [b.key for b in README_BLOCKS]
    assert len(keys) == len(set(keys)), keys
    unlisted = [f"README.md:{b.line}: {b.key}" for b in README_BLOCKS if b.key not in BLOCKS]
    assert not unlisted, "classify these in tests/readme_blocks.py BLOCKS:\n" + "\n".join(unlisted)
    stale = sorted(set(BLOCKS) - set(keys))
    assert not stale, f"no longer in the README: {stale}"
    assert all(why for _, why in BLOCKS.values())


@pytest.mark.parametrize("block", [b for b in README_BLOCKS if b.lang == "bash"], ids=lambda b: f"line{b.line}")
def test_a_block_names_programs_and_files_that_exist_as_written(block: Block):
    path = f"{VENV_BIN}{os.pathsep}{SHELL_PATH}" if block.activates_venv else SHELL_PATH
    for program in programs(block):
        found = (ROOT / program).is_file() if "/" in program else shutil.which(program, path=path)
        assert found, f"README.md:{block.line}: `{program}` is not found as written" + \
                      ("" if block.activates_venv else " (the block does not activate the venv)")
        if program in ("python", "python3"):  # the system's python has none of the stack (pandas, torch...)
            assert Path(found).parent == VENV_BIN, f"README.md:{block.line}: `{program}` is {found}, not the venv's"
    for name in repo_files(block):
        assert (ROOT / name).is_file(), f"README.md:{block.line}: {name} does not exist"


def test_the_make_targets_the_readme_names_exist():
    targets = {tuple(words[1:]) for b in README_BLOCKS if b.lang == "bash" for words in commands(b)
               if words[0] == "make"}
    assert ("models",) in targets and ("lineage", "V=1") in targets
    for args in targets:
        done = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=ROOT, capture_output=True,
                              text=True)
        assert done.returncode == 0, (args, done.stderr)


def test_the_users_shell_has_no_venv_on_path_and_keeps_dvc_analytics_off(tmp_path, monkeypatch):
    """The shell the slow README test runs blocks in: the venv is off PATH however either is spelled (here
    the venv is named through a link, PATH holds both spellings), and DVC's analytics daemon is not started,
    while what `udon` must switch off itself is left unset."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "venv")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "venv" / "bin"), "/usr/bin",
                                                str(tmp_path / "link" / "bin")]))
    env = user_shell(tmp_path / "home", tmp_path / "link")
    assert env["PATH"] == "/usr/bin" and env["HOME"] == str(tmp_path / "home")
    assert env["DVC_NO_ANALYTICS"] == "1"
    assert not [k for k in env if k.startswith(("ZENML_", "MLFLOW_", "GX_", "UDON_", "DO_NOT_TRACK"))], env
