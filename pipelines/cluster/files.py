"""Rendered manifests on disk: written only over files that `udon k8s render` wrote, and read back for validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import yaml

from pipelines.cluster.config import ClusterConfigError

if TYPE_CHECKING:
    pass


RENDER_MARK = "# Rendered by `udon k8s render`"  # write_manifests only ever replaces files that start with it


def write_manifests(manifests: Mapping[str, dict], out_dir: str | Path, source: str = "") -> list[Path]:
    """Write one YAML file per object (sorted keys); earlier renders in ``out_dir`` are replaced, other files kept.

    why: `kubectl apply -f DIR` applies every file, so a stale Job next to a new PyTorchJob would start both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        if old.name not in manifests and old.read_text().startswith(RENDER_MARK):
            old.unlink()
    header = f"{RENDER_MARK}{f' from {source}' if source else ''}; edit the configuration, not this file.\n"
    paths = []
    for name, obj in sorted(manifests.items()):
        path = out / name
        path.write_text(header + yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))
        paths.append(path)
    return paths


def read_manifests(directory: str | Path) -> dict[str, dict]:
    """Every object in the ``*.yaml`` / ``*.yml`` files of ``directory``, keyed by file (and document index)."""
    root = Path(directory)
    if not root.is_dir():
        raise ClusterConfigError(f"{root}: no such directory")
    out: dict[str, dict] = {}
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            raise ClusterConfigError(f"{path}: not valid YAML: {err}") from err
        for i, doc in enumerate(docs):
            out[path.name if len(docs) == 1 else f"{path.name}[{i}]"] = doc
    if not out:
        raise ClusterConfigError(f"{root}: no manifests (*.yaml) found")
    return out
