"""Derived manifest facts (pure) and the Great Expectations suite that asserts them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from integrations.expectations import ValidationConfig, image_suite, manifest_suite, run_suite
from integrations.validation_page import report_html
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
    (tmp_path / "images" / "c" / "unlisted.png").write_bytes(b"png")
    (tmp_path / "images" / "c" / "inside.png").symlink_to(tmp_path / "images" / "c" / "unlisted.png")  # fine
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
    assert "max_value = 1" in page and "1 of 3 rows unexpected" in page
    from integrations.expectations import ValidationReport

    assert ValidationReport.model_validate_json(report.model_dump_json()) == report  # the artifact keeps them


# ---- one image however its path is spelled; byte-identical copies; no crash on empty selections (#25) ----

def _cars_rows(*extra):
    return manifest([r for r in ROWS if r[3] != "c/c.png"] + list(extra))


@pytest.mark.parametrize("spelling", ["c/./t0.png", "c//t0.png", "c/alias.png", "mirror/t0.png"])
def test_the_same_file_however_spelled_is_listed_twice(tmp_path, spelling):
    m = _cars_rows(("cars", "test", 2, spelling, [0]))
    write_images(tmp_path, _cars_rows())
    (tmp_path / "images" / "c" / "alias.png").symlink_to("t0.png")  # a link inside images/
    (tmp_path / "images" / "mirror").symlink_to("c")                  # a folder link inside images/
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    report = run_suite(frame, manifest_suite(SPEC, CLASSES))
    (failed,) = report.critical_failures
    assert failed.check == "unique_image"
    assert sorted(r.path for r in failed.rows) == sorted(["c/t0.png", spelling])
    assert {r.value for r in failed.rows} == {"cars: c/t0.png"}  # the file both rows are


def test_links_into_the_dvc_cache_are_files_of_their_own(tmp_path):
    # DVC's cache.type symlink links byte-identical files to one cache object: still two images of the folder
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ab12").write_bytes(b"png")
    m = _cars_rows(("cars", "test", 2, "c/d1.png", [0]), ("cars", "test", 3, "c/d2.png", [0]))
    write_images(tmp_path, _cars_rows())
    for name in ("d1.png", "d2.png"):
        (tmp_path / "images" / "c" / name).symlink_to(cache / "ab12")
    (tmp_path / "images" / "c" / "d3.png").symlink_to("d1.png")  # ... but a link to one of them is that one
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES, link_roots=[cache])
    assert frame["image_key"].tolist()[-2:] == ["cars: c/d1.png", "cars: c/d2.png"]
    assert run_suite(frame, manifest_suite(SPEC, CLASSES)).success
    m3 = _cars_rows(("cars", "test", 2, "c/d1.png", [0]), ("cars", "test", 3, "c/d3.png", [0]))
    frame = annotate_manifest(m3, SPEC, tmp_path, CLASSES, link_roots=[cache])
    assert frame["image_key"].tolist()[-2:] == ["cars: c/d1.png", "cars: c/d1.png"]


def test_a_domain_whose_train_file_was_unreadable_does_not_break_the_checks(tmp_path):
    # pandas refuses to assign an empty object selection to a bool column ("Invalid value '[]' for dtype 'bool'")
    m = manifest([r for r in ROWS if r[:2] != ("shop", "train")])
    write_images(tmp_path, m)
    frame = annotate_manifest(m, SPEC, tmp_path, {"cars": 2})
    assert frame["label_leaked"].dtype == bool and not frame["label_leaked"].any()
    inferred = BenchmarkSpec(name="t", domains=(SPEC.domains[0], SPEC.domains[1]))
    assert not annotate_manifest(manifest([r for r in ROWS if r[0] == "cars"]), inferred, tmp_path, {"cars": 2})[
        "label_undense"].any()


def test_the_containment_rule_cannot_be_relaxed_and_holds_without_file_checks(tmp_path):
    with pytest.raises(ValueError, match="path_inside_root cannot be relaxed"):
        ValidationConfig(severity={"path_inside_root": "off"})
    with pytest.raises(ValueError, match="path_inside_root cannot be relaxed"):
        ValidationConfig(severity={"path_inside_root": "warning"})
    m = _cars_rows(("cars", "train", 2, "c/out.png", [1]))
    write_images(tmp_path, _cars_rows())
    (tmp_path / "outside.png").write_bytes(b"png")
    (tmp_path / "images" / "c" / "out.png").symlink_to(tmp_path / "outside.png")
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    report = run_suite(frame, manifest_suite(SPEC, CLASSES, check_files=False))
    assert [o.check for o in report.critical_failures] == ["path_inside_root"]


def test_the_image_check_never_opens_a_file_the_containment_rule_refused(tmp_path):
    from PIL import Image

    from tests.hostile import OpenedOutside
    from udon_core.data import inspect_images

    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "images" / "c").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (32, 32)).save(outside / "secret.png")
    Image.new("RGB", (32, 32)).save(root / "images" / "c" / "ok.png")
    (root / "images" / "c" / "link.png").symlink_to(outside / "secret.png")
    (root / "images" / "d").symlink_to(outside)
    m = manifest([("cars", "train", 0, "c/ok.png", [0]), ("cars", "train", 1, "c/link.png", [0]),
                  ("cars", "train", 2, "d/secret.png", [0])])
    for table in (annotate_manifest(m, SPEC, root, CLASSES), m):  # with the rule's column, and applying it
        with OpenedOutside(root, tmp_path) as opened:
            inspected = inspect_images(table, root / "images")
        assert opened.files == []
        assert inspected["decodes"].tolist() == [True, False, False]
        assert inspected["error"].iloc[1].startswith("not opened:")


def test_byte_identical_copies_in_another_info_file_are_the_same_image(tmp_path):
    import shutil

    from udon_core.data import inspect_images

    m = _cars_rows(("cars", "test", 2, "c/copy.png", [0]), ("cars", "test", 3, "c/again.png", [0]),
                   ("cars", "train", 2, "c/twin.png", [1]))
    write_images(tmp_path, m)
    for path in m["path"]:  # every file its own bytes...
        (tmp_path / "images" / path).write_bytes(path.encode())
    for name, content in (("t0.png", b"train image"), ("copy.png", b"train image"), ("again.png", b"train image"),
                          ("twin.png", b"other")):
        (tmp_path / "images" / "c" / name).write_bytes(content)
    shutil.copyfile(tmp_path / "images" / "c" / "twin.png", tmp_path / "images" / "c" / "t1.png")
    frame = annotate_manifest(m, SPEC, tmp_path, CLASSES)
    inspected = inspect_images(frame, tmp_path / "images")
    twins = dict(zip(inspected["path"], inspected["content_twin"]))
    # copies of a train image in the test file are flagged, naming the original; within train they are not
    assert twins["c/copy.png"] == twins["c/again.png"] == "c/t0.png"
    assert twins["c/t0.png"] is None and twins["c/twin.png"] is None and twins["c/t1.png"] is None
    report = run_suite(inspected, image_suite(SPEC, ValidationConfig(severity={"image_decodes": "off"})))
    (failed,) = report.critical_failures
    assert failed.check == "unique_content" and {r.path for r in failed.rows} == {"c/copy.png", "c/again.png"}


def test_the_report_page_shows_each_check_its_severity_and_the_rows_by_file_and_row(tmp_path):
    from integrations.expectations import ValidationReport, info_file_report
    from udon_core.data import InfoFileProblem

    m = _cars_rows(("cars", "train", 2, "c/big.png", [7]))
    write_images(tmp_path, m)
    report = ValidationReport.combine(
        run_suite(annotate_manifest(m, SPEC, tmp_path, CLASSES), manifest_suite(SPEC, CLASSES)),
        info_file_report([InfoFileProblem("/d/info_files/shop/val.json", 3, "class_id", "'class_id' must be an int")],
                         "critical")).model_copy(update={"data_root": "/d", "benchmark": "tiny", "rows": 10})
    page = report_html(report)
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page  # self-contained
    assert "Data validation FAILED" in page and "benchmark <b>tiny</b>" in page and "10 rows" in page
    assert page.index("train_label_in_range") < page.index("required_fields")  # failures first
    assert "<span class='badge critical'>critical</span>" in page and "<span class='badge warning'>warning" in page
    assert "max_value = 1" in page and "1 of 3 rows unexpected" in page
    assert "<td class='path'>info_files/cars/train.json</td><td class='num'>2</td><td class='path'>c/big.png" in page
    assert "<td class='path'>/d/info_files/shop/val.json</td><td class='num'>3</td><td class='path'>class_id" in page


# ---- `udon data validate`: the pipeline's suites without the pipeline (issue #24 item 5) -----------------

def test_udon_data_validate_prints_the_verdict_and_where_the_report_is(tmp_path):
    import json

    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark, write_corrupted_benchmark

    clean = write_benchmark(tmp_path / "clean")
    out = tmp_path / "reports" / "clean.html"
    done = CliRunner().invoke(cli, ["data", "validate", str(clean), "--out", str(out)])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0].startswith(f"Data validation of {clean} (benchmark my-benchmark, 65 rows): passed, 22/23 checks")
    assert "[warning] image_mode" in done.output and "druck cmyk.jpg" in done.output
    assert lines[-2:] == [f"report: {out}", f"        {out.with_suffix('.json')}"]
    assert "Data validation passed" in out.read_text() and json.loads(out.with_suffix(".json").read_text())["success"]

    broken = write_corrupted_benchmark(tmp_path / "broken", tmp_path / "outside")
    done = CliRunner().invoke(cli, ["data", "validate", str(broken), "--out", str(tmp_path / "broken.html")])
    assert done.exit_code == 1 and "FAILED" in done.output.splitlines()[0] and "Traceback" not in done.output
    assert "[critical] path_inside_root" in done.output and (tmp_path / "broken.html").is_file()


def test_udon_data_validate_uses_the_run_configuration_and_its_overrides(tmp_path):
    import yaml
    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark

    root = write_benchmark(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"parameters": {"data": {"domains": ["art"]},
                                                     "validation": {"severity": {"image_mode": "critical"}}}}))
    out = str(tmp_path / "r.html")
    done = CliRunner().invoke(cli, ["data", "validate", str(root), "--config", str(config), "--out", out])
    assert done.exit_code == 1 and "[critical] image_mode" in done.output and "shop" not in done.output
    done = CliRunner().invoke(cli, ["data", "validate", str(root), "--config", str(config), "--out", out,
                                    "--set", "validation.severity.image_mode=off", "--domains", "shop,art"])
    assert done.exit_code == 0, done.output
    assert "65 rows" in done.output.splitlines()[0]


@pytest.mark.parametrize("case, fragment", [
    ("no folder", "no such benchmark folder"),
    ("bad description", "domains[1].num_train_classes: must be a whole number"),
    ("report inside the folder", "is inside the folder being validated"),
    ("not a validation setting", "only validation.KEY=VALUE settings"),
    ("relaxed containment", "validation.severity: path_inside_root cannot be relaxed"),
])
def test_udon_data_validate_says_in_one_sentence_what_it_could_not_do(tmp_path, case, fragment):
    import json

    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark

    root = write_benchmark(tmp_path / "data")
    args = ["data", "validate", str(root), "--out", str(tmp_path / "r.html")]
    if case == "no folder":
        args[2] = str(tmp_path / "nope")
    elif case == "bad description":
        doc = json.loads((root / "benchmark.json").read_text())
        doc["domains"][1]["num_train_classes"] = "3"
        (root / "benchmark.json").write_text(json.dumps(doc))
    elif case == "report inside the folder":
        args[-1] = str(root / "r.html")
    elif case == "not a validation setting":
        args += ["--set", "training.train.steps=3"]
    else:
        args += ["--set", "validation.severity.path_inside_root=off"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2 and done.output.startswith("error: ") and fragment in done.output, done.output
    out = Path(args[args.index("--out") + 1])  # the report named: in the folder for "report inside the folder"
    assert len(done.output.strip().splitlines()) == 1 and not out.exists()


def test_a_bare_yaml_off_switches_a_check_off():
    # PyYAML reads `--set validation.severity.query_has_positive=off` (as the README writes it) as false
    assert ValidationConfig(severity={"query_has_positive": False}).severity_of("query_has_positive") == "off"


def test_udon_data_validate_accepts_links_into_the_dvc_cache_of_the_folder(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark
    from tests.repos import init_repo, sh, track_data

    repo = init_repo(tmp_path / "repo")
    sh(repo, "dvc", "config", "cache.type", "symlink")
    write_benchmark(repo / "data")
    track_data(repo)
    assert (repo / "data" / "info_files" / "art" / "train.json").is_symlink()  # into .dvc/cache
    done = CliRunner().invoke(cli, ["data", "validate", str(repo / "data"), "--out", str(tmp_path / "r.html")])
    assert done.exit_code == 0 and "passed" in done.output.splitlines()[0], done.output


def test_udon_data_validate_an_unwritable_report_is_one_sentence_not_a_failed_validation(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark

    root = write_benchmark(tmp_path / "data")
    (tmp_path / "a-file").write_text("")  # --out below a file: no folder can be made there (also as root)
    out = tmp_path / "a-file" / "r.html"
    done = CliRunner().invoke(cli, ["data", "validate", str(root), "--out", str(out)])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output  # 1 would mean: the data FAILED
    assert done.output.startswith(f"error: --out {out}: the report cannot be written there (")


@pytest.mark.parametrize("text, fragment", [
    ("- a list\n", "expected a mapping (parameters:, steps:, ...), found list"),
    ("parameters: [validation]\n", "parameters: expected a mapping of sections, found list"),
    ("parameters: {validation: {image_sample: -1}}\n", "validation.image_sample: "),
])
def test_udon_data_validate_reads_the_run_configuration_as_udon_run_does(tmp_path, text, fragment):
    from click.testing import CliRunner

    from pipelines.cli import cli
    from tests.byob import write_benchmark

    root = write_benchmark(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(text)
    done = CliRunner().invoke(cli, ["data", "validate", str(root), "--config", str(config), "--out",
                                    str(tmp_path / "r.html")])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert fragment in done.output and done.output.count("\n") == 1, done.output
