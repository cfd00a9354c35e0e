"""Training checkpoints that cannot run code and cannot silently corrupt a model.

Each checkpoint is ``checkpoint-<step>.pt`` with its SHA-256 in ``checkpoint-<step>.pt.sha256``. Both are
written to a temporary name and renamed, the digest last, so a checkpoint counts only once its digest is
in place; a crash mid-write leaves the previous one as the newest. The last two are kept: when the newest
is damaged (a flipped byte, a truncated copy) training resumes from the one before, with a warning.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain Python containers are accepted, so a
crafted file in a shared checkpoint volume cannot execute anything.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from udon_core.digests import file_sha256
from udon_core.errors import CheckpointError

log = logging.getLogger(__name__)
DIGEST_SUFFIX = ".sha256"
KEEP = 2
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def _write_atomic(path: Path, writer: Callable[[Path], Any]) -> None:
    """``writer(tmp)``, flushed to disk, then renamed to ``path``: readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    writer(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
    _write_atomic(path, lambda tmp: torch.save(state, tmp))
    line = f"{file_sha256(path)}  {path.name}\n"
    _write_atomic(path.with_name(path.name + DIGEST_SUFFIX), lambda tmp: tmp.write_text(line))
    # Keep the newest two that have their digest; a digest-less one (a crashed write) is never worth keeping.
    complete = [p for p in checkpoint_files(directory) if p.with_name(p.name + DIGEST_SUFFIX).is_file()]
    for old in [p for p in checkpoint_files(directory) if p not in complete[:KEEP]]:
        old.with_name(old.name + DIGEST_SUFFIX).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def verify(path: Path) -> None:
    """Raise CheckpointError unless ``path`` matches the SHA-256 written beside it."""
    digest_file = path.with_name(path.name + DIGEST_SUFFIX)
    if not digest_file.is_file():
        raise CheckpointError(f"{path}: no {digest_file.name} beside it, so it was never completely written "
                              "(or was copied without its digest)")
    expected = next(iter(digest_file.read_text().split()), "")
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(f"{path}: content does not match its SHA-256 in {digest_file.name} "
                              f"(expected {expected[:12] or 'nothing'}..., found {actual[:12]}...): the file is damaged")


def read_tensors_file(path: Path) -> Any:
    """``torch.load`` of a trusted-format file with ``weights_only=True``, every failure as one sentence."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive; truncated or another format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # why: weights_only refuses every global that is not a tensor or plain container: never run it.
        first = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: refused, it holds Python objects other than tensors and plain data "
                              f"({first[-1] if first else 'unpickling refused'})") from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from err


def load_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint, verified against its digest and loaded without executing anything."""
    verify(path)
    state = read_tensors_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (holds {type(state).__name__}, not a dict)")
    return state


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that verifies and loads, falling back to the one before.

    None when there is none. Raises CheckpointError naming every file when checkpoints exist but none is
    usable (resuming from scratch would silently discard a run).
    """
    problems = []
    for path in checkpoint_files(directory):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("skipping checkpoint: %s", err)
            continue
        if problems:
            log.warning("resuming from the previous checkpoint %s instead", path.name)
        return path, state
    if problems:
        raise CheckpointError("no usable checkpoint in " + str(directory) + ": " + "; ".join(problems)
                              + ". Move the folder away to start the run again from step 0.")
    return None
