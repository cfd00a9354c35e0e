"""The git facts recorded with data and models: the commit that last touched a file, and a dirty tree."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision(repo: Path, path: str | None = None) -> str | None:
    """The last git commit touching ``path`` (or HEAD), or None outside a git repository."""
    cmd = ["git", "-C", str(repo), "log", "-1", "--format=%H"] + (["--", path] if path else [])
    try:
        rev = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev or None


def git_dirty(repo: Path) -> bool | None:
    """Whether tracked files have uncommitted changes (None outside a git repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.strip())
