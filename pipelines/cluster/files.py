"""Rendered manifests on disk: written only over files that `udon k8s render` wrote, and read back for validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

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


def write_manifest_file(manifests: Mapping[str, dict], path: str | Path, source: str = "") -> Path:
    """All objects in one multi-document YAML file, in apply order (``kubectl apply -f FILE``); an existing file
    is replaced only when an earlier render wrote it."""
    out = Path(path)
    if out.is_dir():
        raise ClusterConfigError(f"{out}: is a directory; give a file name, e.g. {out / 'trainjob.yaml'}")
    if out.exists() and not out.read_text(errors="replace").startswith(RENDER_MARK):
        raise ClusterConfigError(f"{out}: exists and was not written by `udon k8s render`; not overwriting it")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"{RENDER_MARK}{f' from {source}' if source else ''}; edit the configuration, not this file.\n"
    docs = [yaml.safe_dump(obj, sort_keys=True, default_flow_style=False) for _, obj in sorted(manifests.items())]
    out.write_text(header + "---\n".join(docs))
    return out


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")  # what `kubectl apply -f DIR` reads


def expand_lists(name: str, obj: Any) -> Iterator[tuple[str, Any]]:
    """``(name, object)`` for ``obj``, or for each item of a ``kind: List`` (any ``*List`` with ``items``), as
    `kubectl apply` does; nested lists are expanded too."""
    items = obj.get("items") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and str(obj.get("kind", "")).endswith("List") and isinstance(items, list):
        for i, item in enumerate(items):
            yield from expand_lists(f"{name}.items[{i}]", item)
    else:
        yield name, obj


def _documents(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ClusterConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        if path.suffix == ".json":
            return [json.loads(text)]
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ClusterConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err


def read_manifests(directory: str | Path) -> dict[str, Any]:
    """Every object in the ``*.yaml`` / ``*.yml`` / ``*.json`` files of ``directory`` (``kind: List`` expanded),
    keyed by file, document index and list item."""
    root = Path(directory)
    if not root.is_dir():
        raise ClusterConfigError(f"{root}: no such directory")
    out: dict[str, Any] = {}
    for path in sorted(p for p in root.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        docs = _documents(path)
        for i, doc in enumerate(docs):
            out.update(expand_lists(path.name if len(docs) == 1 else f"{path.name}[{i}]", doc))
    if not out:
        raise ClusterConfigError(f"{root}: no manifests ({', '.join('*' + s for s in MANIFEST_SUFFIXES)}) found")
    return out
