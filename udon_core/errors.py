"""The one base class of every error a user can fix: bad data, a bad configuration, a damaged file.

The CLI and the pod entry point print these as one sentence (exit code 2) and keep the traceback for
anything else, which is a bug. Subclasses also derive from the built-in type they refine (ValueError,
RuntimeError...), so callers that catch those keep working.
"""

from __future__ import annotations


class UdonUserError(Exception):
    """An error whose message tells the user what to fix (it names the file, row or field)."""


class CheckpointError(UdonUserError, ValueError):
    """A checkpoint or saved model that cannot be trusted or read: damaged, truncated or not ours."""
