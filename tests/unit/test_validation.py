"""Derived manifest facts (pure) and the Great Expectations suite that asserts them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from steps.expectations import manifest_suite, report_html, run_suite
from udon_core.benchmark import BenchmarkSpec, DomainSpec, EvalSet
from udon_core.manifest_checks import annotate_manifest, count_positives, leaked_labels

SPEC = BenchmarkSpec(
    name="tiny",
    domains=(
        DomainSpec(name="shop", evals={"test": EvalSet(query="test", index="index")}),
        DomainSpec(name="cars", evals={"test": EvalSet(query="test", index="test")}, classes_disjoint=False),
    ),
)
ROWS = [
    ("shop", "train", 0, "s/t0.png", [0]),
    ("shop", "train", 1, "s/t1.png", [1]),
    ("shop", "test", 0, "s/q0.png", [10]),
    ("shop", "test", 1, "s/q1.png", [11, 12]),
    ("shop", "index", 0, "s/i0.png", [10]),
    ("shop", "index", 1, "s/i1.png", [12]),
    ("shop", "index", 2, "s/i2.png", [10]),
    ("cars", "train", 0, "c/t0.png", [0]),
    ("cars", "train", 1, "c/t1.png", [1]),
    ("cars", "test", 0, "c/a.png", [0]),
    ("cars", "test", 1, "c/b.png", [0]),
    ("cars", "test", 2, "c/c.png", [1]),
]
CLASSES = {"shop": 2, "cars": 2}


def manifest(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["domain", "split", "row", "path", "labels"])


def write_images(root, m):
    for p in m["path"]:
        (root / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / p).write_bytes(b"png")


def test_positives_count_shared_labels_and_exclude_the_query_itself():
    counts = count_positives(manifest(), SPEC)
    # shop q0 (label 10) -> i0, i2; q1 (11 or 12) -> i1; cars a -> b (self excluded); c (label 1) -> none.
    assert [counts[i] for i in (2, 3, 9, 10, 11)] == [2, 1, 1, 1, 0]
    assert all(math.isnan(counts[i]) for i in (0, 1, 4, 5, 6, 7, 8))


def test_leaks_only_checked_where_classes_must_be_disjoint():
    rows = ROWS + [("shop", "index", 3, "s/leak.png", [1])]
    leaked = leaked_labels(manifest(rows), SPEC)
    assert leaked.tolist() == [False] * len(ROWS) + [True]


def test_clean_manifest_passes(tmp_path):
    m = manifest([r for r in ROWS if r[3] != "c/c.png"])  # c/c.png is the only query without a positive
    write_images(tmp_path, m)
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    report = run_suite(frame, manifest_suite(SPEC, CLASSES))
    assert report.success, report.summary()


def test_each_corruption_is_reported_with_its_rows(tmp_path):
    rows = [r for r in ROWS if r[3] != "c/c.png"] + [
        ("cars", "train", 2, "c/big.png", [7]),        # class id out of range for cars (2 classes)
        ("shop", "test", 2, "s/lonely.png", [99]),      # query with no relevant index image
        ("cars", "test", 2, "c/a.png", [0]),            # the same image twice
        ("shop", "index", 3, "s/leak.png", [1]),         # a train class in the test index
    ]
    m = manifest(rows)
    write_images(tmp_path, m)
    (tmp_path / "images" / "s" / "i1.png").unlink()     # missing file
    report = run_suite(annotate_manifest(m, SPEC, tmp_path, CLASSES), manifest_suite(SPEC, CLASSES))
    assert not report.success
    failed = {(o.expectation, o.column): [(r.domain, r.split, r.row, r.path) for r in o.rows]
              for o in report.critical_failures}
    assert failed[("expect_column_values_to_be_between", "label_max")] == [("cars", "train", 2, "c/big.png")]
    assert failed[("expect_column_values_to_be_between", "n_positives")] == [("shop", "test", 2, "s/lonely.png")]
    assert ("cars", "test", 2, "c/a.png") in failed[("expect_column_values_to_be_unique", "image_key")]
    assert failed[("expect_column_values_to_be_in_set", "file_exists")] == [("shop", "index", 1, "s/i1.png")]
    assert failed[("expect_column_values_to_be_in_set", "label_leaked")] == [("shop", "index", 3, "s/leak.png")]
    summary = report.summary()
    assert "cars/train.json row 2: c/big.png" in summary and "s/lonely.png" in summary
    assert "c/big.png" in report_html(report)


@pytest.mark.parametrize("check_files", [True, False])
def test_suite_has_one_range_rule_per_domain(check_files):
    suite = manifest_suite(SPEC, CLASSES, check_files=check_files)
    conds = [e.row_condition for e in suite.expectations if getattr(e, "column", None) == "label_max"]
    assert len(conds) == 2
    assert any(getattr(e, "column", None) == "file_exists" for e in suite.expectations) == check_files
