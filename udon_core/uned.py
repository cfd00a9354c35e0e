"""Reader for the UnED on-disk layout and the manifest built from it.

Layout (research/udon.md section 5.2): ``<root>/info_files/<domain>/<split>.json``, each a JSON list of
``{"path": str, "class_id": int | list[int]}`` records, paths relative to ``<root>/images/``. A list
``class_id`` is a multi-label query: it matches any index image sharing one of the labels.

The manifest is one row per record and info file, in file order (evaluation relies on that order):
``domain, split, row, path, labels``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from udon_core.benchmark import BenchmarkSpec

INFO_DIR = "info_files"
IMAGES_DIR = "images"
MANIFEST_COLUMNS = ("domain", "split", "row", "path", "labels")


class InfoFileError(ValueError):
    """An info file that does not follow the UnED format; the message names the file and the row."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of an info file: its path relative to ``images/`` and its labels (one or more)."""

    path: str
    labels: tuple[int, ...]


def info_file_path(root: Path, domain: str, split: str) -> Path:
    return Path(root) / INFO_DIR / domain / f"{split}.json"


def _parse_labels(value: object, where: str) -> tuple[int, ...]:
    # why: bool is an int subclass in Python, and `true` as a class id is a data bug, not class 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise InfoFileError(f"{where}: 'class_id' must be an int or a non-empty list of ints, got {value!r}")


def parse_info_records(items: object, source: str) -> list[ImageRecord]:
    """Validate and convert the decoded JSON of one info file; errors name ``source`` and the row."""
    if not isinstance(items, list):
        raise InfoFileError(f"{source}: expected a JSON list of records, got {type(items).__name__}")
    records = []
    for i, item in enumerate(items):
        where = f"{source} row {i}"
        if not isinstance(item, dict):
            raise InfoFileError(f"{where}: expected an object with 'path' and 'class_id', got {item!r}")
        missing = [k for k in ("path", "class_id") if k not in item]
        if missing:
            raise InfoFileError(f"{where}: missing field(s) {missing}")
        path = item["path"]
        if not isinstance(path, str) or not path:
            raise InfoFileError(f"{where}: 'path' must be a non-empty string, got {path!r}")
        if path.startswith("/") or ".." in Path(path).parts:
            raise InfoFileError(f"{where}: 'path' must be relative to images/ and stay inside it, got {path!r}")
        records.append(ImageRecord(path=path, labels=_parse_labels(item["class_id"], where)))
    return records


def read_info_file(path: Path) -> list[ImageRecord]:
    """Read one UnED info file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise InfoFileError(f"{path}: info file not found")
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InfoFileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    return parse_info_records(items, str(path))


def write_info_file(path: Path, records: list[ImageRecord]) -> None:
    """Write records in the UnED format: a single label as an int, several as a list."""
    items = [{"path": r.path, "class_id": r.labels[0] if len(r.labels) == 1 else list(r.labels)} for r in records]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(items, separators=(",", ":")) + "\n")


def read_manifest(root: Path, spec: BenchmarkSpec) -> pd.DataFrame:
    """One row per record of every info file the benchmark needs, in spec and file order."""
    rows = []
    for domain in spec.domains:
        for split in domain.info_files:
            for i, rec in enumerate(read_info_file(info_file_path(root, domain.name, split))):
                rows.append((domain.name, split, i, rec.path, list(rec.labels)))
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def records_of(manifest: pd.DataFrame, domain: str, split: str) -> list[ImageRecord]:
    """The records of one info file, in file order."""
    part = manifest[(manifest["domain"] == domain) & (manifest["split"] == split)].sort_values("row")
    return [ImageRecord(p, tuple(int(x) for x in labels)) for p, labels in zip(part["path"], part["labels"])]


def num_train_classes(manifest: pd.DataFrame, spec: BenchmarkSpec) -> dict[str, int]:
    """Classes per domain: the spec's number where given, else 1 + the largest train label."""
    out = {}
    for d in spec.domains:
        if d.num_train_classes is not None:
            out[d.name] = d.num_train_classes
            continue
        labels = manifest.loc[(manifest["domain"] == d.name) & (manifest["split"] == d.train), "labels"]
        if labels.empty:
            raise InfoFileError(f"domain '{d.name}' has no records in its '{d.train}' info file")
        out[d.name] = 1 + max(max(x) for x in labels)
    return out
