"""Weight files from outside the pipeline (pretrained backbones, timm teachers) and training checkpoints, read
so that nothing runs and nothing unusable gets through.

Only tensors and plain containers are unpickled (``torch.load(weights_only=True)``, or safetensors, which
holds no pickle). A file that cannot be used (missing, empty, truncated, text, Python objects, a bare
tensor) is one sentence naming it, a CheckpointError; never a traceback, and never torch's hint to retry
with ``weights_only=False``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from udon_core.errors import CheckpointError, MissingFileError

_PICKLE_START = re.compile(rb"\x80[\x02-\x05]")  # a pickle's PROTO opcode: torch's legacy (pre-1.6) format
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.*?)(?:\. |\.?\n|$)", re.S)


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    match = _UNPICKLER_ERROR.search(str(err))
    return match.group(1).strip() if match and match.group(1).strip() else "not a weights-only pickle"


def read_tensors_file(path: Path, legacy: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure one sentence naming the file.

    ``legacy`` also accepts torch's pre-1.6 (non-zip) format, which old pretrained weights still use; the
    pipeline's own checkpoints are always zip archives.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not zipfile.is_zipfile(path) and not (legacy and _PICKLE_START.match(head)):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive; truncated or another format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if "global" in reason.lower():  # why: weights_only refuses every class or function: never run it
            raise CheckpointError(f"{path}: refused, it holds Python objects other than tensors and plain data "
                                  f"({reason})") from err
        raise CheckpointError(f"{path}: damaged or not a PyTorch checkpoint ({reason})") from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint, truncated or damaged "
                              f"({type(err).__name__}: {detail})") from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or PyTorch weights file, taken out of a ``state_dict`` or ``model``
    entry when the file wraps them; every unusable file is one sentence naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = read_tensors_file(path, legacy=True)
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or damaged ({err})") from err
