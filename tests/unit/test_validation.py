"""Derived manifest facts (pure) and the Great Expectations suite that asserts them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from integrations.expectations import ValidationConfig, image_suite, manifest_suite, report_html, run_suite
from udon_core.data import BenchmarkSpec, DomainSpec, EvalSet, annotate_manifest, count_positives, leaked_labels

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


def test_leaks_are_queries_of_train_classes_where_classes_must_be_disjoint():
    rows = ROWS + [("shop", "index", 3, "s/distractor.png", [1]),  # an index distractor of a train class: fine
                   ("shop", "test", 2, "s/leak.png", [1]),          # a query of a train class: leaked
                   ("cars", "test", 3, "c/seen.png", [1])]          # cars classes are shared by design
    leaked = leaked_labels(manifest(rows), SPEC)
    assert leaked.tolist() == [False] * len(ROWS) + [False, True, False]


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
        ("shop", "test", 3, "s/leak.png", [1]),          # a query of a train class
        ("shop", "index", 3, "s/q-leak.png", [1]),       # ... and its positive
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
    assert failed[("expect_column_values_to_be_in_set", "label_leaked")] == [("shop", "test", 3, "s/leak.png")]
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
    strict = ValidationConfig(severity={"class_size": "critical"}, min_images_per_class=1)
    assert run_suite(frame, manifest_suite(SPEC, CLASSES, config=strict)).success  # 1 image is enough here
    strict = ValidationConfig(severity={"class_size": "critical"})
    assert not run_suite(frame, manifest_suite(SPEC, CLASSES, config=strict)).success


def _png(path, size=(32, 32), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0).save(path)


def test_image_suite_names_every_bad_file_with_its_reason(tmp_path):
    from udon_core.data import inspect_images

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
    assert "truncated" in errors["c/truncated.png"] and errors["c/text.png"] == "not an image file PIL can read"
    assert errors["c/empty.png"] == "empty file (0 bytes)"
    assert [r.path for r in by_column["mode"].rows] == ["c/cmyk.jpg"] and by_column["mode"].severity == "warning"
    assert [r.path for r in by_column["width"].rows] == ["c/tiny.png"] and "height" not in by_column
    assert "cars/train.json row 1: c/truncated.png" in report.summary()


def test_images_are_sampled_reproducibly_in_manifest_order(tmp_path):
    from udon_core.data import sample_rows

    m = manifest()
    assert sample_rows(m, None) is m and sample_rows(m, 100) is m
    a, b = sample_rows(m, 5, seed=1), sample_rows(m, 5, seed=1)
    assert a.index.tolist() == b.index.tolist() == sorted(a.index) and len(a) == 5
    assert sample_rows(m, 5, seed=2).index.tolist() != a.index.tolist()


def test_a_symlink_leaving_the_images_folder_is_refused_by_name(tmp_path):
    m = manifest([r for r in ROWS if r[3] != "c/c.png"])
    write_images(tmp_path, m)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(b"png")
    (tmp_path / "images" / "c" / "t1.png").unlink()
    (tmp_path / "images" / "c" / "t1.png").symlink_to(outside)
    (tmp_path / "images" / "c" / "inside.png").symlink_to(tmp_path / "images" / "c" / "t0.png")  # fine
    cache = tmp_path.parent / f"{tmp_path.name}-dvc-cache"
    cache.mkdir()
    (cache / "ab12").write_bytes(b"png")
    (tmp_path / "images" / "c" / "cached.png").symlink_to(cache / "ab12")  # DVC's cache.type symlink: fine
    m = manifest([r for r in ROWS if r[3] != "c/c.png"] + [("cars", "train", 2, "c/inside.png", [1]),
                                                          ("cars", "train", 3, "c/cached.png", [1])])
    report = run_suite(annotate_manifest(m, SPEC, tmp_path, CLASSES, link_roots=[cache]),
                       manifest_suite(SPEC, CLASSES))
    (failed,) = report.critical_failures
    assert failed.check == "path_inside_root" and [r.path for r in failed.rows] == ["c/t1.png"]
    outside_cache = annotate_manifest(m, SPEC, tmp_path, CLASSES)  # without the cache as a link root
    assert outside_cache.loc[outside_cache["path"] == "c/cached.png", "inside_root"].item() is False


def test_inferred_class_counts_must_be_dense_and_the_report_says_where_counts_come_from(tmp_path):
    stated = SPEC.model_copy(update={"domains": (SPEC.domains[0], SPEC.domains[1].model_copy(
        update={"num_train_classes": 2}))})
    rows = [r for r in ROWS if r[3] != "c/c.png"] + [("shop", "train", 2, "s/stray.png", [5000])]
    m = manifest(rows)
    write_images(tmp_path, m)
    classes = {"shop": 5001, "cars": 2}  # as num_train_classes infers it: the largest id + 1
    sources = {"shop": "inferred from the data: largest train class id + 1", "cars": "num_train_classes in ..."}
    report = run_suite(annotate_manifest(m, stated, tmp_path, classes),
                       manifest_suite(stated, classes, config=ValidationConfig(), sources=sources))
    (failed,) = report.critical_failures
    assert failed.check == "train_labels_dense" and [r.path for r in failed.rows] == ["s/stray.png"]
    assert "inferred from the data" in failed.note
    ranges = [o for o in report.outcomes if o.check == "train_label_in_range"]
    assert {o.note for o in ranges} == {"shop: 5001 classes, inferred from the data: largest train class id + 1",
                                        "cars: 2 classes, num_train_classes in ..."}
    assert "train_labels_dense" in report.summary() and "inferred from the data" in report.summary()


def test_every_check_has_a_configurable_severity(tmp_path):
    from integrations.expectations import CHECKS

    rows = [r for r in ROWS if r[3] != "c/c.png"] + [("shop", "test", 2, "s/lonely.png", [99])]
    m = manifest(rows)
    write_images(tmp_path, m)
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    assert not run_suite(frame, manifest_suite(SPEC, CLASSES)).success
    relaxed = ValidationConfig(severity={"query_has_positive": "warning"})
    report = run_suite(frame, manifest_suite(SPEC, CLASSES, config=relaxed))
    assert report.success and [o.check for o in report.warnings] == ["query_has_positive", "class_size"]
    off = run_suite(frame, manifest_suite(SPEC, CLASSES, config=ValidationConfig(severity={"query_has_positive": "off"})))
    assert off.success and "query_has_positive" not in {o.check for o in off.outcomes}
    checked = {o.check for o in run_suite(frame, manifest_suite(SPEC, CLASSES)).outcomes}
    assert checked <= set(CHECKS) and "" not in checked  # every expectation is a named check
    with pytest.raises(ValueError, match="severity"):
        ValidationConfig(severity={"no_such_check": "warning"})


def test_info_file_problems_are_one_outcome_of_the_report():
    from integrations.expectations import info_file_outcome
    from udon_core.data import InfoFileProblem

    problems = [InfoFileProblem("/d/info_files/shop/train.json", 3, "class_id", "'class_id' must be an int"),
                InfoFileProblem("/d/info_files/shop/val.json", None, None, "not valid JSON (x at line 1)")]
    outcome = info_file_outcome(problems, "critical")
    assert not outcome.success and outcome.unexpected_count == 2 and outcome.check == "info_file_format"
    assert [(r.domain, r.split, r.row) for r in outcome.rows] == [("shop", "train", 3), ("shop", "val", -1)]
    assert info_file_outcome([], "critical").success


def test_a_folder_without_a_description_that_is_not_uned_is_explained(tmp_path):
    from udon_core.data import resolve_benchmark_spec
    from udon_core.errors import UdonUserError

    for domain in ("shop", "art"):
        (tmp_path / "info_files" / domain).mkdir(parents=True)
    with pytest.raises(UdonUserError, match=r"holds the domain\(s\) art, shop and .*benchmark.json does not exist"):
        resolve_benchmark_spec("auto", tmp_path)


def test_the_html_report_shows_what_was_expected_and_what_was_observed(tmp_path):
    rows = [r for r in ROWS if r[3] != "c/c.png"] + [("cars", "train", 2, "c/big.png", [7])]
    m = manifest(rows)
    write_images(tmp_path, m)
    report = run_suite(annotate_manifest(m, SPEC, tmp_path, CLASSES), manifest_suite(SPEC, CLASSES))
    (big,) = [o for o in report.critical_failures if o.check == "train_label_in_range"]
    assert big.expected == {"max_value": 1} and big.element_count == 3  # cars train rows: t0, t1, big
    assert big.observed == "33.33% unexpected"
    page = report_html(report)
    assert "max_value=1" in page and "33.33% unexpected of 3 rows" in page
    from integrations.expectations import ValidationReport

    assert ValidationReport.model_validate_json(report.model_dump_json()) == report  # the artifact keeps them
