"""The loader MLflow runs for a registered udon model: ``model.pt2`` must match the SHA-256 logged beside it.

Every registered version carries this file in its ``code/`` folder (MLflow's ``code_paths``) and names it
as its ``python_function`` loader, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` check the
weights before ``torch.export.load`` reads them, with or without udon-pipeline installed: it needs only
the standard library, then hands over to MLflow's own pytorch loader. A missing or damaged digest is an
error, like a mismatch. ``mlflow.pytorch.load_model`` reads the archive directly and has no such hook;
``mlflow.pyfunc.load_model(uri).get_raw_model()`` is the checked way to the same torch module.

The digest file is ``data/model.pt2.sha256`` in ``sha256sum`` format: ``cd data && sha256sum -c
model.pt2.sha256`` checks a downloaded copy with nothing but coreutils.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

PT2_FILE = "model.pt2"
DIGEST_FILE = PT2_FILE + ".sha256"
_LINE = re.compile(r"([0-9a-f]{64})  " + re.escape(PT2_FILE) + "\n")
_SERVING = "__pyfunc_model_path__"  # set by MLflow's scoring server (mlflow.pyfunc.scoring_server) for its app


class DamagedModelError(ValueError):
    """``model.pt2`` does not match its SHA-256, or the digest file is missing or damaged.

    MLflow imports the copy shipped in the model, not this module: catch it as ValueError.
    """


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_digest(data_path: str | Path) -> Path:
    """Write ``model.pt2.sha256`` beside ``data_path/model.pt2``; returns the digest file."""
    pt2 = Path(data_path) / PT2_FILE
    out = pt2.with_name(DIGEST_FILE)
    out.write_text(f"{_sha256(pt2)}  {PT2_FILE}\n")
    return out


def verify(data_path: str | Path) -> None:
    """Raise DamagedModelError unless ``data_path/model.pt2`` matches ``data_path/model.pt2.sha256``."""
    pt2, digest_file = Path(data_path) / PT2_FILE, Path(data_path) / DIGEST_FILE
    if not digest_file.is_file():
        raise DamagedModelError(f"{digest_file}: missing, so {PT2_FILE} cannot be checked (the model was copied "
                                "without it, or damaged)")
    match = _LINE.fullmatch(digest_file.read_bytes().decode("ascii", errors="replace"))
    if match is None:
        raise DamagedModelError(f"{digest_file}: damaged (expected one line '<sha256>  {PT2_FILE}')")
    if not pt2.is_file():
        raise DamagedModelError(f"{pt2}: missing")
    if (actual := _sha256(pt2)) != match.group(1):
        raise DamagedModelError(f"{pt2}: content does not match its SHA-256 in {DIGEST_FILE} (expected "
                                f"{match.group(1)[:12]}..., found {actual[:12]}...): the model is damaged or was "
                                "replaced")


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> Any:
    """MLflow's pyfunc entry point: verify, then MLflow's pytorch flavor loads the program (on the CPU unless
    ``model_config`` or ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` names a device)."""
    try:
        verify(data_path)
    except DamagedModelError as err:
        if os.environ.get(_SERVING):  # the server would print a uvicorn traceback: say it in one sentence
            raise SystemExit(f"error: refusing to serve the model: {err}") from None
        raise
    from mlflow.pytorch import _load_pyfunc as load_pytorch

    config = dict(model_config or {})
    if config.get("device") is None and not os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE"):
        # why: the program was exported on the CPU and a torch.export program cannot move; left to itself MLflow
        # picks CUDA on a GPU host and refuses to load it.
        config["device"] = "cpu"
    return load_pytorch(data_path, config)
