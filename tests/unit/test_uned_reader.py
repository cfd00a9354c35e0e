"""The UnED info-file reader and the manifest built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from udon_core.data import (
    BenchmarkSpec,
    DomainSpec,
    EvalSet,
    ImageRecord,
    InfoFileError,
    info_file_path,
    num_train_classes,
    read_info_file,
    read_manifest,
    records_of,
    write_info_file,
)


def _write(path, items):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items))
    return path


def test_reads_int_and_list_labels_in_file_order(tmp_path):
    f = _write(tmp_path / "x.json", [{"path": "b/2.jpg", "class_id": 7}, {"path": "a/1.jpg", "class_id": [3, 9]}])
    assert read_info_file(f) == [ImageRecord("b/2.jpg", (7,)), ImageRecord("a/1.jpg", (3, 9))]


def test_unknown_extra_keys_are_ignored(tmp_path):
    f = _write(tmp_path / "x.json", [{"path": "a.jpg", "class_id": 1, "bbox": [0, 0, 1, 1]}])
    assert read_info_file(f) == [ImageRecord("a.jpg", (1,))]


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"path": "a.jpg"}, "missing field 'class_id'"),
        ({"class_id": 1}, "missing field 'path'"),
        ({"path": "a.jpg", "class_id": True}, "'class_id' must be an int"),
        ({"path": "a.jpg", "class_id": "3"}, "'class_id' must be an int"),
        ({"path": "a.jpg", "class_id": []}, "'class_id' must be an int"),
        ({"path": "/abs/a.jpg", "class_id": 1}, "relative to images/"),
        ({"path": "../a.jpg", "class_id": 1}, "relative to images/"),
        ({"path": "", "class_id": 1}, "non-empty string"),
        ("a.jpg", "expected an object"),
    ],
)
def test_bad_records_name_the_file_and_row(tmp_path, item, fragment):
    f = _write(tmp_path / "cars" / "train.json", [{"path": "ok.jpg", "class_id": 0}, item])
    with pytest.raises(InfoFileError) as err:
        read_info_file(f)
    assert f"{f} row 1" in str(err.value) and fragment in str(err.value)


def test_every_defect_of_every_info_file_is_reported_at_once(tmp_path):
    root = tmp_path / "bench"
    spec = BenchmarkSpec(name="two", domains=(
        DomainSpec(name="shop", evals={"test": EvalSet(query="query", index="index")}),
        DomainSpec(name="art", evals={"test": EvalSet(query="test", index="test")}, classes_disjoint=False)))
    _write(info_file_path(root, "shop", "train"), [{"path": "a.jpg", "class_id": 0}, {"path": "b.jpg"},
                                                   {"path": "../c.jpg", "class_id": "x"}])
    (info_file_path(root, "shop", "query")).write_text("[{")  # malformed JSON
    _write(info_file_path(root, "art", "train"), {"not": "a list"})
    _write(info_file_path(root, "art", "test"), [{"path": "", "class_id": True}])
    # shop/index.json is missing
    problems: list = []
    manifest = read_manifest(root, spec, problems)
    assert list(manifest["path"]) == ["a.jpg"]  # the valid records, with their file rows
    found = {(Path(p.file).parent.name + "/" + Path(p.file).name, p.row, p.field) for p in problems}
    assert found == {("shop/train.json", 1, "class_id"), ("shop/train.json", 2, "path"),
                     ("shop/train.json", 2, "class_id"), ("shop/query.json", None, None),
                     ("shop/index.json", None, None), ("art/train.json", None, None),
                     ("art/test.json", 0, "path"), ("art/test.json", 0, "class_id")}
    with pytest.raises(InfoFileError) as err:
        read_manifest(root, spec)
    assert str(err.value).startswith("8 problem(s) in info files:") and len(str(err.value).splitlines()) == 9


def test_not_json_and_not_a_list_and_missing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(InfoFileError, match="not valid JSON"):
        read_info_file(bad)
    with pytest.raises(InfoFileError, match="expected a JSON list"):
        read_info_file(_write(tmp_path / "obj.json", {"path": "a"}))
    with pytest.raises(InfoFileError, match="info file not found"):
        read_info_file(tmp_path / "nope.json")


def test_write_then_read_round_trip(tmp_path):
    recs = [ImageRecord("x/1.png", (0,)), ImageRecord("x/2.png", (1, 4))]
    write_info_file(tmp_path / "d" / "val.json", recs)
    assert json.loads((tmp_path / "d" / "val.json").read_text())[1]["class_id"] == [1, 4]
    assert read_info_file(tmp_path / "d" / "val.json") == recs


def _tiny_benchmark(tmp_path):
    spec = BenchmarkSpec(
        name="tiny",
        domains=(
            DomainSpec(name="shop", evals={"test": EvalSet(query="test", index="index")}),
            DomainSpec(name="cars", evals={"test": EvalSet(query="test", index="test")}, num_train_classes=5),
        ),
    )
    files = {
        ("shop", "train"): [{"path": "s/0.jpg", "class_id": 0}, {"path": "s/1.jpg", "class_id": 2}],
        ("shop", "test"): [{"path": "s/q.jpg", "class_id": [10, 11]}],
        ("shop", "index"): [{"path": "s/i.jpg", "class_id": 11}],
        ("cars", "train"): [{"path": "c/0.jpg", "class_id": 1}],
        ("cars", "test"): [{"path": "c/t1.jpg", "class_id": 3}, {"path": "c/t0.jpg", "class_id": 3}],
    }
    for (domain, split), items in files.items():
        _write(info_file_path(tmp_path, domain, split), items)
    return spec


def test_manifest_has_one_row_per_record_in_spec_and_file_order(tmp_path):
    spec = _tiny_benchmark(tmp_path)
    m = read_manifest(tmp_path, spec)
    assert list(m.columns) == ["domain", "split", "row", "path", "labels"]
    assert list(zip(m["domain"], m["split"])) == [
        ("shop", "train"), ("shop", "train"), ("shop", "test"), ("shop", "index"), ("cars", "train"),
        ("cars", "test"), ("cars", "test"),
    ]
    assert records_of(m, "cars", "test") == [ImageRecord("c/t1.jpg", (3,)), ImageRecord("c/t0.jpg", (3,))]
    assert records_of(m, "shop", "test")[0].labels == (10, 11)


def test_num_train_classes_prefers_the_spec_and_else_reads_the_data(tmp_path):
    spec = _tiny_benchmark(tmp_path)
    assert num_train_classes(read_manifest(tmp_path, spec), spec) == {"shop": 3, "cars": 5}


def test_missing_info_file_is_named(tmp_path):
    spec = _tiny_benchmark(tmp_path)
    info_file_path(tmp_path, "shop", "index").unlink()
    with pytest.raises(InfoFileError, match=r"shop/index.json: info file not found"):
        read_manifest(tmp_path, spec)


# ---- the containment rule and malformed files as findings (issue #25) ------------------------------------

@pytest.mark.parametrize("link, target", [
    ("info_files/shop/train.json", "outside/train.json"),  # an info file linked out
    ("info_files/shop", "outside/shop"),                   # an info folder linked out
    ("info_files", "outside"),                             # info_files/ itself linked out
])
def test_info_files_that_resolve_outside_the_folder_are_problems_and_never_opened(tmp_path, link, target):
    from tests.hostile import OpenedOutside

    root = tmp_path / "data"
    spec = _tiny_benchmark(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    for split in ("train", "test", "index"):  # what a hostile author would put there: valid labels
        _write(outside / "shop" / f"{split}.json", [{"path": "s/0.jpg", "class_id": 0}])
    _write(outside / "train.json", [{"path": "s/0.jpg", "class_id": 0}])
    (root / "info_files" / "cars").rename(outside / "cars")  # keeps a copy for the info_files link
    if (root / link).is_dir():
        import shutil

        shutil.rmtree(root / link)
    elif (root / link).exists():
        (root / link).unlink()
    (root / link).symlink_to(tmp_path / target)
    problems: list = []
    with OpenedOutside(root, tmp_path) as opened:
        manifest = read_manifest(root, spec, problems)
    assert opened.files == []
    refused = [p for p in problems if "leaves the data root" in p.message]
    assert refused and all(p.message.startswith("not read: it leaves the data root") for p in refused)
    assert not (manifest["domain"] == "shop").any() or link == "info_files/shop/train.json"


def test_info_files_linked_into_the_dvc_cache_are_read(tmp_path):
    root = tmp_path / "data"
    spec = _tiny_benchmark(root)
    cache = tmp_path / "cache"
    cache.mkdir()
    (root / "info_files" / "shop" / "train.json").rename(cache / "ab12")
    (root / "info_files" / "shop" / "train.json").symlink_to(cache / "ab12")  # DVC's cache.type symlink
    problems: list = []
    read_manifest(root, spec, problems, link_roots=[cache])
    assert problems == []


@pytest.mark.parametrize("content, fragment", [
    (b"", "not valid JSON"),
    (b'{"path": "s/0.jpg", "class_id": 0}', "expected a JSON list of records, got dict"),
    ('[{"path": "ä.jpg", "class_id": 0}]'.encode("latin-1"), "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[]", "holds no records"),
    (b"null", "expected a JSON list of records, got NoneType"),
    (b'[{"path": "s/x\\u0000.jpg", "class_id": 0}]', "must not contain NUL"),
    (b'[{"path": "s/\\udc80.jpg", "class_id": 0}]', "lone surrogate"),
    (b'[{"path": "s/new\\nline.jpg", "class_id": 0}]', "control characters"),
])
def test_malformed_info_files_are_findings_not_exceptions(tmp_path, content, fragment):
    from udon_core.data import read_benchmark

    spec = _tiny_benchmark(tmp_path)
    info_file_path(tmp_path, "shop", "train").write_bytes(content)
    problems: list = []
    read_manifest(tmp_path, spec, problems)
    assert [p.file for p in problems] == [str(info_file_path(tmp_path, "shop", "train"))]
    assert fragment in problems[0].message
    # the domain whose train file is unreadable has no class count; the others keep theirs
    from udon_core.data import save_benchmark_spec

    save_benchmark_spec(spec, tmp_path)
    data = read_benchmark(tmp_path)
    assert data.classes == {"cars": 5} and len(data.problems) == 1


@pytest.mark.parametrize("label", [10**30, -(10**30), [1, 2**31], 2**31])
def test_class_ids_beyond_64_bit_columns_are_refused_by_the_reader(tmp_path, label):
    f = _write(tmp_path / "cars" / "train.json", [{"path": "ok.jpg", "class_id": 0}, {"path": "a.jpg", "class_id": label}])
    with pytest.raises(InfoFileError, match=r"row 1: 'class_id' must lie between -2,147,483,647 and 2,147,483,647"):
        read_info_file(f)
    assert read_info_file(_write(tmp_path / "ok.json", [{"path": "a.jpg", "class_id": 2**31 - 1}]))[0].labels == (2**31 - 1,)
