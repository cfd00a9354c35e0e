"""Facts about a manifest that data validation asserts: one derived column per rule, computed here.

The expectation suite (integrations/expectations.py) only states the rules over these columns, so every rule
is a pure function of the manifest that can be unit tested without Great Expectations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.data.image_source import ImageSource, as_source


def _positives(query_labels: list[list[int]], index_labels: list[list[int]], self_query: bool) -> list[int]:
    """Relevant index images per query: any shared label, the query itself excluded when self_query."""
    by_label: dict[int, set[int]] = defaultdict(set)
    for pos, labels in enumerate(index_labels):
        for label in labels:
            by_label[label].add(pos)
    out = []
    for labels in query_labels:
        hits = set().union(*(by_label.get(label, set()) for label in labels))
        out.append(len(hits) - (1 if self_query else 0))
    return out


def count_positives(manifest: pd.DataFrame, spec: BenchmarkSpec) -> pd.Series:
    """Per row: its number of relevant index images if it is a query of some eval split, else NaN.

    A file that is the query set of two eval splits keeps the smaller count (the stricter one).
    """
    result = pd.Series(float("nan"), index=manifest.index, dtype="float64")
    for domain in spec.domains:
        in_domain = manifest["domain"] == domain.name
        for ev in domain.evals.values():
            q = manifest[in_domain & (manifest["split"] == ev.query)].sort_values("row")
            if q.empty:  # an unreadable query file: the reader reports it
                continue
            i = manifest[in_domain & (manifest["split"] == ev.index)].sort_values("row")
            counts = pd.Series(_positives(list(q["labels"]), list(i["labels"]), ev.self_query), index=q.index)
            result.loc[q.index] = result.loc[q.index].fillna(counts).combine(counts, min)
    return result


def leaked_labels(manifest: pd.DataFrame, spec: BenchmarkSpec) -> pd.Series:
    """Per row: True when a *query* of a class-disjoint domain has a label seen in training.

    Leakage is about what is scored: a query whose class was trained on (and so are its positives, which
    share its label). Index-only rows are not checked: distractors from training classes are part of the
    design of UnED's GLDv2 and Met indexes and never count as positives of a clean query.
    """
    leaked = pd.Series(False, index=manifest.index)
    for domain in spec.domains:
        if not domain.classes_disjoint:
            continue
        in_domain = manifest["domain"] == domain.name
        train_labels = {x for labels in manifest.loc[in_domain & (manifest["split"] == domain.train), "labels"] for x in labels}
        # a query file that is the train file is refused by the description (DomainSpec) before this
        rows = in_domain & manifest["split"].isin({e.query for e in domain.evals.values()})
        _assign(leaked, rows, manifest.loc[rows, "labels"].map(lambda ls: any(x in train_labels for x in ls)))
    return leaked


def _assign(column: pd.Series, rows: pd.Series, values: pd.Series) -> None:
    """``column[rows] = values`` for a bool column; why: pandas refuses an empty object selection there."""
    if rows.any():
        column.loc[rows] = values.astype(bool)


def undense_labels(manifest: pd.DataFrame, spec: BenchmarkSpec) -> pd.Series:
    """Per train row of a domain whose class count is inferred: True when a label is >= the number of
    distinct train labels, i.e. the class ids are not 0..K-1 and the inferred classifier would have empty
    classes (one stray id of 10**6 makes a million-class head). Domains that state num_train_classes are
    checked against it instead (``label_max``)."""
    out = pd.Series(False, index=manifest.index)
    for domain in spec.domains:
        if domain.num_train_classes is not None:
            continue
        rows = (manifest["domain"] == domain.name) & (manifest["split"] == domain.train)
        distinct = len({x for labels in manifest.loc[rows, "labels"] for x in labels})
        _assign(out, rows, manifest.loc[rows, "labels"].map(lambda ls: any(x >= distinct for x in ls)))
    return out


def train_class_sizes(annotated: pd.DataFrame) -> pd.Series:
    """Per train row, the number of train images of its rarest label in its domain (NaN for other rows)."""
    train = annotated[annotated["is_train"]]
    exploded = train[["domain", "labels"]].explode("labels")
    counts = exploded.groupby(["domain", "labels"]).size().rename("n")
    sizes = exploded.join(counts, on=["domain", "labels"])["n"].groupby(level=0).min()  # vectorised: 2.8M rows
    return sizes.reindex(annotated.index)


def annotate_manifest(
    manifest: pd.DataFrame, spec: BenchmarkSpec, root: Path | ImageSource | None, classes: dict[str, int],
    link_roots: Sequence[Path] = (),
) -> pd.DataFrame:
    """The manifest plus the derived columns the validation suite checks.

    Added columns: ``image_key`` ("domain: " + the image's identity: the same file however the path spells it,
    see ``ImageSource.locate``), ``label_min``, ``label_max``, ``num_classes`` (train classes of the row's
    domain), ``is_train``, ``n_positives`` (queries only), ``class_size`` (train rows: images of the row's
    rarest class), ``label_leaked``, ``label_undense`` and, when ``root`` is given (the benchmark folder, or
    its ``ImageSource`` when the caller reads images from it too), the columns of ``ImageSource.locate`` (the
    containment rule: inside ``images/`` or a link root, symlinks resolved; for a packed folder as its index
    recorded it).
    """
    out = manifest.copy()
    if root is not None:
        located = as_source(root).locate(out["path"], link_roots).drop(columns="reason")
        out = pd.concat([out, located], axis=1)
        identity = out["image_identity"]
    else:  # lexically: a/./b.png and a//b.png are a/b.png
        identity = out["path"].map(lambda p: Path(p).as_posix())
    out["image_key"] = out["domain"] + ": " + identity
    out["label_min"] = out["labels"].map(lambda ls: min(ls) if len(ls) else None)
    out["label_max"] = out["labels"].map(lambda ls: max(ls) if len(ls) else None)
    out["num_classes"] = out["domain"].map(classes)
    train_split = {d.name: d.train for d in spec.domains}
    out["is_train"] = out["split"] == out["domain"].map(train_split)
    out["n_positives"] = count_positives(manifest, spec)
    out["class_size"] = train_class_sizes(out)
    out["label_leaked"] = leaked_labels(manifest, spec)
    out["label_undense"] = undense_labels(manifest, spec)
    return out
