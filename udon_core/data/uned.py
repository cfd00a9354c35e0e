"""Reader for the UnED on-disk layout and the manifest built from it.

Layout (research/udon.md section 5.2): ``<root>/info_files/<domain>/<split>.json``, each a JSON list of
``{"path": str, "class_id": int | list[int]}`` records, paths relative to ``<root>/images/``. A list
``class_id`` is a multi-label query: it matches any index image sharing one of the labels.

The manifest is one row per record and info file, in file order (evaluation relies on that order):
``domain, split, row, path, labels``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from udon_core.data.benchmark import BenchmarkSpec, resolve_benchmark_spec
from udon_core.data.containment import DataRoot, Outside, image_path_problem
from udon_core.errors import UdonUserError, shown

INFO_DIR = "info_files"
IMAGES_DIR = "images"
MANIFEST_COLUMNS = ("domain", "split", "row", "path", "labels")


class InfoFileError(UdonUserError, ValueError):
    """Info files that do not follow the UnED format; the message names every file, row and field."""


@dataclass(frozen=True)
class InfoFileProblem:
    """One defect of an info file: the whole file (``row`` None) or one record and field."""

    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        return f"{where}: {self.message}"


MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class ImageRecord:
    """One image of an info file: its path relative to ``images/`` and its labels (one or more)."""

    path: str
    labels: tuple[int, ...]


def info_file_path(root: Path, domain: str, split: str) -> Path:
    return Path(root) / INFO_DIR / domain / f"{split}.json"


# why: JSON integers are unbounded, the manifest's columns and label tensors are 64-bit; a class id of 10**30
# would crash storing the manifest. Negative ids within the bound are the label_non_negative check's.
MAX_CLASS_ID = 2**31 - 1


def _label_problem(value: object) -> str | None:
    # why: bool is an int subclass in Python, and `true` as a class id is a data bug, not class 1.
    values = value if isinstance(value, list) else [value]
    if not (value != [] and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        return f"'class_id' must be an int or a non-empty list of ints, got {shown(value)}"
    if any(abs(v) > MAX_CLASS_ID for v in values):
        return f"'class_id' must lie between -{MAX_CLASS_ID:,} and {MAX_CLASS_ID:,}, got {shown(value)}"
    return None


def _record_problems(item: object) -> list[tuple[str | None, str]]:
    """(field, message) for everything wrong with one decoded record; empty when it is valid."""
    if not isinstance(item, dict):
        return [(None, f"expected an object with 'path' and 'class_id', got {item!r}")]
    out: list[tuple[str | None, str]] = [(k, f"missing field '{k}'") for k in ("path", "class_id") if k not in item]
    path = item.get("path")
    if "path" in item and (not isinstance(path, str) or not path):
        out.append(("path", f"'path' must be a non-empty string, got {path!r}"))
    elif isinstance(path, str) and (problem := image_path_problem(path)):
        out.append(("path", problem))
    if "class_id" in item and (problem := _label_problem(item["class_id"])):
        out.append(("class_id", problem))
    return out


def check_info_records(items: object, source: str) -> tuple[list[tuple[int, ImageRecord]], list[InfoFileProblem]]:
    """The valid records of one decoded info file with their row numbers, and every problem of the others."""
    if not isinstance(items, list):
        return [], [InfoFileProblem(source, None, None, f"expected a JSON list of records, got {type(items).__name__}")]
    if not items:  # why: a domain without train images has no classes; an eval split without queries no metric
        return [], [InfoFileProblem(source, None, None, "holds no records (an empty list)")]
    records, problems = [], []
    for i, item in enumerate(items):
        found = _record_problems(item)
        if found:
            problems += [InfoFileProblem(source, i, field, message) for field, message in found]
        else:
            records.append((i, ImageRecord(path=item["path"], labels=_labels(item["class_id"]))))
    return records, problems


def _labels(value: int | list[int]) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


def raise_problems(problems: list[InfoFileProblem]) -> None:
    """One InfoFileError listing every problem (the first MAX_LISTED_PROBLEMS), or nothing when there is none."""
    if not problems:
        return
    lines = [str(p) for p in problems[:MAX_LISTED_PROBLEMS]]
    more = f"\n... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
    head = f"{len(problems)} problem(s) in info files:\n" if len(problems) > 1 else ""
    raise InfoFileError(head + "\n".join(lines) + more)


def parse_info_records(items: object, source: str) -> list[ImageRecord]:
    """Validate and convert the decoded JSON of one info file; the error names ``source``, every row and field."""
    records, problems = check_info_records(items, source)
    raise_problems(problems)
    return [r for _, r in records]


def check_info_file(path: Path, read_from: Path | None = None) -> tuple[list[tuple[int, ImageRecord]], list[InfoFileProblem]]:
    """Read one info file: its valid records (row, record) in file order, and every problem found.

    ``read_from`` is where ``path`` resolves to when the caller has contained it (DataRoot.info_file); the
    problems name ``path``, as the user wrote the folder."""
    path = Path(path)
    source = Path(read_from) if read_from is not None else path
    if not source.is_file():
        return [], [InfoFileProblem(str(path), None, None, "info file not found")]
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        return [], [InfoFileProblem(str(path), None, None, f"not UTF-8 text ({err.reason} at byte {err.start})")]
    except json.JSONDecodeError as err:
        return [], [InfoFileProblem(str(path), None, None, f"not valid JSON ({err.msg} at line {err.lineno})")]
    except RecursionError:  # why: json's decoder recurses once per nesting level
        return [], [InfoFileProblem(str(path), None, None, "not an info file: JSON nested too deeply")]
    return check_info_records(items, str(path))


def read_info_file(path: Path) -> list[ImageRecord]:
    """Read one UnED info file, in file order (InfoFileError listing every problem)."""
    records, problems = check_info_file(path)
    raise_problems(problems)
    return [r for _, r in records]


def write_info_file(path: Path, records: list[ImageRecord]) -> None:
    """Write records in the UnED format: a single label as an int, several as a list."""
    items = [{"path": r.path, "class_id": r.labels[0] if len(r.labels) == 1 else list(r.labels)} for r in records]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(items, separators=(",", ":")) + "\n")


def read_manifest(root: Path, spec: BenchmarkSpec, problems: list[InfoFileProblem] | None = None,
                  link_roots: Sequence[Path] = ()) -> pd.DataFrame:
    """One row per record of every info file the benchmark needs, in spec and file order.

    Every info file is read before anything is reported: with ``problems`` given, the problems of all of
    them are appended to it and the valid records are returned; without it, one InfoFileError lists them.
    An info file that resolves outside ``info_files/`` (and the ``link_roots``, the DVC cache) is a problem
    and is not opened.
    """
    rows, found = [], []
    data_root = DataRoot(root, link_roots)
    for domain in spec.domains:
        for split in domain.info_files:
            path = info_file_path(root, domain.name, split)
            try:
                records, bad = check_info_file(path, data_root.info_file(domain.name, split))
            except Outside as err:
                records, bad = [], [InfoFileProblem(str(path), None, None, f"not read: it {err.reason}")]
            found += bad
            rows += [(domain.name, split, i, rec.path, list(rec.labels)) for i, rec in records]
    if problems is None:
        raise_problems(found)
    else:
        problems += found
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


def classes_source(spec: BenchmarkSpec, domain: str) -> str:
    """Where a domain's number of train classes comes from, as the validation report says it."""
    if spec.domain(domain).num_train_classes is not None:
        return "num_train_classes in the benchmark description"
    return "inferred from the data: largest train class id + 1"


@dataclass
class BenchmarkData:
    """A benchmark folder as read: its description, the manifest of every valid record, every problem of its
    info files, and the train classes per domain (with where each count comes from)."""

    root: Path
    spec: BenchmarkSpec
    manifest: pd.DataFrame
    problems: list[InfoFileProblem] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    classes_source: dict[str, str] = field(default_factory=dict)


def read_benchmark(root: Path, benchmark: str = "auto", domains: Sequence[str] | None = None,
                   link_roots: Sequence[Path] = ()) -> BenchmarkData:
    """Read a benchmark folder without stopping at its defects: the pipeline's ingest step and
    ``udon data validate`` both start here, and validation reports the problems collected.

    Raises:
        InvalidValueError: the description itself is unusable (one sentence naming every wrong field).
    """
    spec = resolve_benchmark_spec(benchmark, root, link_roots)
    if domains:
        spec = spec.restrict(list(domains))
    problems: list[InfoFileProblem] = []
    manifest = read_manifest(root, spec, problems, link_roots)
    # why: a domain whose train file is unreadable has no class count; its problems are in the report.
    trained = [d.name for d in spec.domains if ((manifest["domain"] == d.name) & (manifest["split"] == d.train)).any()]
    classes = num_train_classes(manifest, spec.restrict(trained)) if trained else {}
    return BenchmarkData(root=Path(root), spec=spec, manifest=manifest, problems=problems, classes=classes,
                         classes_source={d: classes_source(spec, d) for d in classes})
