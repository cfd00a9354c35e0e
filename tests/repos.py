"""Throwaway git + DVC repositories for tests (dvc runs through this interpreter: no PATH needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def sh(cwd: Path, *cmd: str) -> None:
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", "dvc", *cmd[1:])
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def init_repo(path: Path, remote: Path | None = None) -> Path:
    """``git init`` + ``dvc init`` (+ a default local remote) in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    sh(path, "git", "init", "-q")
    sh(path, "git", "config", "user.email", "ci@example.com")
    sh(path, "git", "config", "user.name", "ci")
    sh(path, "dvc", "init", "-q")
    if remote is not None:
        sh(path, "dvc", "remote", "add", "-d", "local", str(remote))
    return path


def track_data(repo: Path, message: str | None = None, push: bool = False) -> None:
    """``dvc add data`` (and push, and a git commit when ``message`` is given)."""
    sh(repo, "dvc", "add", "-q", "data")
    if push:
        sh(repo, "dvc", "push", "-q")
    if message:
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", message)
