"""Derived manifest facts (pure) and the Great Expectations suite that asserts them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from steps.expectations import ValidationConfig, image_suite, manifest_suite, report_html, run_suite
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


def test_rare_train_classes_are_a_warning_by_default_and_can_stop_the_run(tmp_path):
    m = manifest([r for r in ROWS if r[3] != "c/c.png"] + [("cars", "train", 2, "c/t2.png", [0])])
    write_images(tmp_path, m)
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    assert frame.loc[frame["path"] == "c/t2.png", "class_size"].item() == 2  # cars class 0: t0 and t2
    report = run_suite(frame, manifest_suite(SPEC, CLASSES))
    assert report.success  # warnings are recorded, not fatal
    (rare,) = [o for o in report.outcomes if o.column == "class_size"]
    assert rare.severity == "warning" and not rare.success
    assert {r.path for r in rare.rows} == {"s/t0.png", "s/t1.png", "c/t1.png"}  # one image each
    strict = ValidationConfig(class_size_severity="critical", min_images_per_class=1)
    assert run_suite(frame, manifest_suite(SPEC, CLASSES, config=strict)).success  # 1 image is enough here
    strict = ValidationConfig(class_size_severity="critical")
    assert not run_suite(frame, manifest_suite(SPEC, CLASSES, config=strict)).success


def _png(path, size=(32, 32), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0).save(path)


def test_image_suite_names_every_bad_file_with_its_reason(tmp_path):
    from udon_core.image_checks import inspect_images

    images = tmp_path / "images"
    rows = [("cars", "train", i, f"c/{name}", [0]) for i, name in enumerate(
        ["good.png", "truncated.png", "empty.png", "text.png", "cmyk.jpg", "tiny.png", "gone.png"])]
    m = manifest(rows)
    _png(images / "c/good.png")
    _png(images / "c/truncated.png", size=(64, 64))
    data = (images / "c/truncated.png").read_bytes()
    (images / "c/truncated.png").write_bytes(data[: len(data) // 2])
    (images / "c/empty.png").write_bytes(b"")
    (images / "c/text.png").write_text("not an image")
    _png(images / "c/cmyk.jpg", mode="CMYK")
    _png(images / "c/tiny.png", size=(4, 40))
    frame = inspect_images(m, images)
    assert frame["exists"].tolist() == [True] * 6 + [False]
    assert frame["decodes"].tolist() == [True, False, False, False, True, True, False]
    report = run_suite(frame, image_suite(SPEC, ValidationConfig()))
    assert not report.success
    by_column = {o.column: o for o in report.outcomes if not o.success}
    errors = {r.path: r.value for r in by_column["error"].rows}
    assert set(errors) == {"c/truncated.png", "c/empty.png", "c/text.png"} and by_column["error"].severity == "critical"
    assert "truncated" in errors["c/truncated.png"] and "cannot identify image file" in errors["c/text.png"]
    assert [r.path for r in by_column["mode"].rows] == ["c/cmyk.jpg"] and by_column["mode"].severity == "warning"
    assert [r.path for r in by_column["width"].rows] == ["c/tiny.png"] and "height" not in by_column
    assert "cars/train.json row 1: c/truncated.png" in report.summary()


def test_images_are_sampled_reproducibly_in_manifest_order(tmp_path):
    from udon_core.image_checks import sample_rows

    m = manifest()
    assert sample_rows(m, None) is m and sample_rows(m, 100) is m
    a, b = sample_rows(m, 5, seed=1), sample_rows(m, 5, seed=1)
    assert a.index.tolist() == b.index.tolist() == sorted(a.index) and len(a) == 5
    assert sample_rows(m, 5, seed=2).index.tolist() != a.index.tolist()
