"""Training checkpoints that cannot run code and cannot silently corrupt a model.

Each checkpoint is ``checkpoint-<step>.pt`` with its SHA-256 in ``checkpoint-<step>.pt.sha256``. Both are
written to a temporary name and renamed, the digest last, so a checkpoint counts only once its digest is
in place: one without it is an interrupted write (a kill between the two renames), ignored with a warning,
and a restart continues from the one before, or from step 0 when there is none. The last two complete ones
are kept: when the newest is damaged (a flipped byte, a truncated copy) training resumes from the one
before, with a warning; when every complete one is damaged the run stops rather than start over.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain Python containers are accepted, so a
crafted file in a shared checkpoint volume cannot execute anything.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from udon_core.digests import verify_digest_file, write_atomic, write_digest_file
from udon_core.errors import CheckpointError
from udon_core.model.weight_files import read_tensors_file

log = logging.getLogger(__name__)
DIGEST_SUFFIX = ".sha256"
KEEP = 2
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def checkpoint_files(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory`` (with or without a digest), newest step first."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as the checkpoint of ``step`` with its digest, then keep only the newest two."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{step:09d}.pt"
    write_atomic(path, lambda tmp: torch.save(state, tmp))
    write_digest_file(digest_path(path), [path])
    # Keep the newest two that have their digest; a digest-less one (a crashed write) is never worth keeping.
    complete = [p for p in checkpoint_files(directory) if digest_path(p).is_file()]
    for old in [p for p in checkpoint_files(directory) if p not in complete[:KEEP]]:
        digest_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def digest_path(path: Path) -> Path:
    """Where the SHA-256 of checkpoint ``path`` is kept; the checkpoint is complete once this exists."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def verify(path: Path) -> None:
    """Raise CheckpointError unless ``path`` matches the SHA-256 written beside it."""
    if not digest_path(path).is_file():
        raise CheckpointError(f"{path}: no {digest_path(path).name} beside it, so it was never completely "
                              "written (or was copied without its digest)")
    verify_digest_file(digest_path(path), [path.name])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint, verified against its digest and loaded without executing anything."""
    verify(path)
    state = read_tensors_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (holds {type(state).__name__}, not a dict)")
    return state


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint in ``directory`` that verifies and loads, falling back to older ones.

    A checkpoint without its digest was interrupted while being written: it is skipped with a warning, never
    an error, so a restarted pod always gets going. None when no complete checkpoint exists (training starts
    at step 0). Raises CheckpointError naming every file when complete checkpoints exist but none is usable
    (starting over would silently discard a run).
    """
    problems, skipped = [], []
    for path in checkpoint_files(directory):
        if not digest_path(path).is_file():
            skipped.append(path.name)
            log.warning("ignoring %s: it has no %s, its write was interrupted", path, digest_path(path).name)
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("skipping checkpoint: %s", err)
            continue
        if problems or skipped:
            log.warning("resuming from the previous checkpoint %s instead", path.name)
        return path, state
    if problems:
        raise CheckpointError("no usable checkpoint in " + str(directory) + ": " + "; ".join(problems)
                              + ". Move the folder away to start the run again from step 0.")
    if skipped:
        log.warning("no complete checkpoint in %s (only the interrupted %s): starting from step 0",
                    directory, ", ".join(skipped))
    return None
