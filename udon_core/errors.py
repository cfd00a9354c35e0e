"""The one base class of every error a user can fix: bad data, a bad configuration, a damaged file.

The CLI and the pod entry point print these as one sentence (exit code 2) and keep the traceback for
anything else, which is a bug. Subclasses also derive from the built-in type they refine (ValueError,
RuntimeError...), so callers that catch those keep working.
"""

from __future__ import annotations

import json


class UdonUserError(Exception):
    """An error whose message tells the user what to fix (it names the file, row or field)."""


class CheckpointError(UdonUserError, ValueError):
    """A checkpoint or saved model that cannot be trusted or read: damaged, truncated or not ours."""


class ImageFileError(UdonUserError, OSError):
    """An image file that cannot be used: missing, empty, not an image, truncated, or too large to decode."""

    def __init__(self, path: object, reason: str | None = None) -> None:
        if reason is None:
            # why: a DataLoader re-raises a worker's exception as ``type(msg)`` with the worker's whole
            # traceback as the message; keep only the original sentence.
            last = [line for line in str(path).splitlines() if "ImageFileError: " in line]
            path, _, reason = (last[-1].split("ImageFileError: ", 1)[1] if last else str(path)).partition(": ")
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # why: DataLoader workers send exceptions to the main process by pickling
        return (type(self), (self.path, self.reason))


class InvalidValueError(UdonUserError, ValueError):
    """A value the user gave (configuration, option, file content) that cannot be used; says which and why."""


class UnknownNameError(UdonUserError, KeyError):
    """A name (domain, split, embedding key...) that does not exist; the message lists the known ones."""

    def __str__(self) -> str:  # why: KeyError's str() is the repr of its argument, quotes and all
        return str(self.args[0]) if self.args else ""


class MissingFileError(UdonUserError, FileNotFoundError):
    """A file or folder the user named that is not there."""


class StackError(UdonUserError, RuntimeError):
    """The stack or environment lacks something the command needs (a tracker, an SDK, a server)."""


class OutputExistsError(UdonUserError, FileExistsError):
    """An output location that already holds something the command will not overwrite unasked."""


class NonFiniteLossError(UdonUserError, FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step, the domain and the terms."""


def shown(value: object, limit: int = 60, json_spelling: bool = False) -> str:
    """``value`` quoted in a message: ``repr``, or with ``json_spelling`` as a JSON file spells it (``"3"``,
    ``true``, ``null``; non-ASCII escaped, so any terminal prints it); past ``limit`` characters its start and
    end, with its full length.

    why repr by default: messages that validation reports quote again with repr (info-file problems) keep one
    kind of quote; a benchmark description's own messages, printed as they are, use JSON's spelling.
    """
    text = repr(value)
    if json_spelling:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            pass
    if len(text) <= limit:
        return text
    return f"{text[:limit - 20]}...{text[-12:]} ({len(value) if isinstance(value, str) else len(text)} characters)"
