"""The hostile-input set: 65 variants of the small own benchmark of ``tests/byob.py``, each what a hostile or
unlucky data author could hand the pipeline, and a judge that says whether the validator held.

A variant holds when validating it (1) raises nothing but a one-sentence user error, (2) opens no file
outside the data root (an audit hook on the interpreter's "open" event records every file opened), and
(3) names what is wrong: a critical failure of the expected check in the report, or a sentence holding the
expected fragment. Memory variants hold when the verdict comes without a crash; the peak memory of their
decoding is measured by the tests that run them in a subprocess.

Classes (``Variant.kind``) are the rows of the README's reliability table: read outside the root, validator
crashes, leaks not seen, lax types, memory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.byob import _save, write_benchmark

KINDS = ("read outside root", "validator crashes", "leaks not seen", "lax types", "memory")


@dataclass(frozen=True)
class Variant:
    """One hostile benchmark: ``make(root, outside)`` turns the clean benchmark in ``root`` into it."""

    name: str
    kind: str
    make: Callable[[Path, Path], None]
    expect: str  # a check name the report must fail critically, or a fragment of the one-sentence error


# ---- the audit hook --------------------------------------------------------------------------------------

_lock = threading.Lock()
_watchers: list["OpenedOutside"] = []


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _watchers or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    try:
        target = os.path.realpath(os.fsdecode(args[0]))  # what is really read: symlinks followed
    except (ValueError, OSError):
        return
    for watcher in list(_watchers):
        watcher.see(target)


_installed = False


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:  # an audit hook cannot be removed: one per process, dispatching to the watchers
            sys.addaudithook(_audit)
            _installed = True


class OpenedOutside:
    """Records every file opened (in any thread) under ``watch`` but outside ``root``, symlinks resolved.

    ``watch`` is the test's folder: library files the interpreter opens (modules, fonts) are elsewhere.
    """

    def __init__(self, root: Path, watch: Path) -> None:
        self.root, self.watch = os.path.realpath(root), os.path.realpath(watch)
        self.files: list[str] = []

    def see(self, target: str) -> None:
        inside = lambda base: target == base or target.startswith(base + os.sep)  # noqa: E731
        if inside(self.watch) and not inside(self.root):
            self.files.append(target)

    def __enter__(self) -> "OpenedOutside":
        _install()
        _watchers.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _watchers.remove(self)


# ---- editing the clean benchmark -------------------------------------------------------------------------

def _describe(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "benchmark.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False))


def _domain(doc: dict, name: str) -> dict:
    return next(d for d in doc["domains"] if d["name"] == name)


def _set(domain: str, *keys: str, value) -> Callable[[Path, Path], None]:
    """A variant that sets ``domains[<domain>].<keys...>`` of benchmark.json to ``value``."""
    def make(root: Path, outside: Path) -> None:
        def change(doc):
            node = _domain(doc, domain)
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = value(outside) if callable(value) else value
        _describe(root, change)
    return make


def _records(root: Path, domain: str, split: str) -> list:
    return json.loads((root / "info_files" / domain / f"{split}.json").read_text())


def _add_records(domain: str, split: str, *records: dict) -> Callable[[Path, Path], None]:
    """A variant that appends ``records`` to an info file; a callable value is ``value(outside)``."""
    def make(root: Path, outside: Path) -> None:
        path = root / "info_files" / domain / f"{split}.json"
        made = [{k: v(outside) if callable(v) else v for k, v in r.items()} for r in records]
        items = json.loads(path.read_text()) + made
        path.write_text(json.dumps(items, indent=1))  # ASCII: a lone surrogate is written as its escape
    return make


def _write_info(domain: str, split: str, data: bytes) -> Callable[[Path, Path], None]:
    def make(root: Path, outside: Path) -> None:
        (root / "info_files" / domain / f"{split}.json").write_bytes(data)
    return make


def _link(link: str, target: Callable[[Path, Path], Path], *records: dict) -> Callable[[Path, Path], None]:
    """A symlink at ``root/link`` to ``target(root, outside)`` (replacing what is there), then ``records``
    added to the info files as ``(domain, split, path, class_id)`` dicts."""
    def make(root: Path, outside: Path) -> None:
        path = root / link
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target(root, outside))
        for r in records:
            _add_records(r["domain"], r["split"], {"path": r["path"], "class_id": r["class_id"]})(root, outside)
    return make


def _both(*makers: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def make(root: Path, outside: Path) -> None:
        for m in makers:
            m(root, outside)
    return make


def _rename_domain(new: str) -> Callable[[Path, Path], None]:
    """Rename the ``art`` domain in benchmark.json (its info files stay where they are)."""
    return _set("art", "name", value=new)


def _copy_image(src: str, dst: str, how: str = "copy") -> Callable[[Path, Path], None]:
    def make(root: Path, outside: Path) -> None:
        target = root / "images" / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if how == "hardlink":
            os.link(root / "images" / src, target)
        else:
            shutil.copyfile(root / "images" / src, target)
    return make


def _big_png(name: str, mode: str, side: int, copies: int = 1) -> Callable[[Path, Path], None]:
    """``copies`` images of ``side x side`` in ``mode`` (all-zero pixels: a few hundred KB as PNG) listed in
    art's train split."""
    def make(root: Path, outside: Path) -> None:
        first = root / "images" / "art" / "train" / f"{name} 0.png"
        dtype = {"I;16": np.uint16, "L": np.uint8, "RGBA": np.uint8}[mode]
        shape = (side, side, 4) if mode == "RGBA" else (side, side)
        Image.fromarray(np.zeros(shape, dtype=dtype)).save(first, compress_level=1)  # mode from the dtype
        for i in range(1, copies):
            shutil.copyfile(first, first.with_name(f"{name} {i}.png"))
        _add_records("art", "train", *({"path": f"art/train/{name} {i}.png", "class_id": 0}
                                       for i in range(copies)))(root, outside)
    return make


def _bomb(root: Path, outside: Path) -> None:
    Image.new("1", (20_000, 20_000)).save(root / "images" / "art" / "train" / "bomb.png")
    _add_records("art", "train", {"path": "art/train/bomb.png", "class_id": 0})(root, outside)


def _outside_copy(root: Path, outside: Path) -> None:
    """What the outside folder holds: copies of the info files (as a hostile author would place labels
    there), of the description and of the images, and one more image."""
    outside.mkdir(parents=True, exist_ok=True)
    for name in ("train", "query", "index"):
        shutil.copyfile(root / "info_files" / "shop" / f"{'train' if name == 'train' else name}.json",
                        outside / f"{name}.json")
    shutil.copytree(root / "info_files" / "art", outside / "infodir")
    shutil.copytree(root / "info_files", outside / "info_files")
    shutil.copytree(root / "images", outside / "images")
    shutil.copyfile(root / "benchmark.json", outside / "benchmark.json")
    shutil.copyfile(root / "images" / "shop" / "train" / "0_0.png", outside / "elsewhere.png")


def _replace_with_link(rel: str, target: Callable[[Path], Path]) -> Callable[[Path, Path], None]:
    return _link(rel, lambda root, outside: target(outside))


TRAIN_IMAGE = "art/train/klasse 0/bild 1.png"


def _variants() -> list[Variant]:
    R, C, L, T, M = KINDS
    v = Variant
    out = [
        # -- read outside the root: paths the description or an info file names, and links out ------------
        v("split name leaves the root", R, _set("shop", "train", value="../../../outside/train"), "domains[0].train"),
        v("absolute split name", R, _set("shop", "train", value=lambda o: str(o / "train")), "domains[0].train"),
        v("query stem leaves the root", R, _set("shop", "evals", "test", "query", value="../../../outside/query"),
          "domains[0].evals.test.query"),
        v("index stem leaves the root", R, _set("shop", "evals", "test", "index", value="../../../outside/index"),
          "domains[0].evals.test.index"),
        v("domain name leaves the root", R, _rename_domain("../../outside"), "domains[1].name"),
        v("absolute domain name", R, _set("art", "name", value=lambda o: str(o / "infodir")), "domains[1].name"),
        v("info file symlinked out", R,
          _replace_with_link("info_files/shop/train.json", lambda o: o / "train.json"), "info_file_format"),
        v("info folder symlinked out", R, _replace_with_link("info_files/art", lambda o: o / "infodir"),
          "info_file_format"),
        v("info_files symlinked out", R, _replace_with_link("info_files", lambda o: o / "info_files"),
          "info_file_format"),
        v("benchmark.json symlinked out", R, _replace_with_link("benchmark.json", lambda o: o / "benchmark.json"),
          "benchmark.json"),
        v("image symlinked out", R, _link("images/art/train/link.png", lambda r, o: o / "elsewhere.png",
                                          {"domain": "art", "split": "train", "path": "art/train/link.png",
                                           "class_id": 0}), "path_inside_root"),
        v("image folder symlinked out", R, _replace_with_link("images/shop/val", lambda o: o / "images/shop/val"),
          "path_inside_root"),
        v("images symlinked out", R, _replace_with_link("images", lambda o: o / "images"), "path_inside_root"),
        # the outside image by its absolute path (the audit watches the test's folder, not /etc), and by a
        # relative one: images/art/../../../outside is base/outside, beside the root base/data
        v("absolute image path", R, _add_records("art", "train", {"path": lambda o: str(o / "elsewhere.png"),
                                                                  "class_id": 0}), "info_file_format"),
        v("image path with ..", R, _add_records("art", "train", {"path": "art/../../../outside/elsewhere.png",
                                                                 "class_id": 0}), "info_file_format"),
        # -- malformed input that must be a finding, not a traceback ---------------------------------------
        v("train info file is an object", C, _write_info("shop", "train", b'{"path": "shop/train/0_0.png", '
                                                         b'"class_id": 0}'), "info_file_format"),
        v("train info file is empty", C, _write_info("shop", "train", b""), "info_file_format"),
        v("train info file is not UTF-8", C, _write_info("shop", "train", '[{"path": "ä.png", "class_id": 0}]'
                                                         .encode("latin-1")), "info_file_format"),
        v("train info file is bad JSON", C, _write_info("shop", "train", b'[{"path": "shop/train/0_0.png"'),
          "info_file_format"),
        v("train info file lists numbers", C, _write_info("shop", "train", b"[1, 2, 3]"), "info_file_format"),
        v("train info file is an empty list", C, _write_info("art", "train", b"[]"), "info_file_format"),
        v("query info file is bad JSON", C, _write_info("shop", "query", b"[{"), "info_file_format"),
        v("index info file missing", C, lambda r, o: (r / "info_files/shop/index.json").unlink(), "info_file_format"),
        v("a domain's info files missing", C, lambda r, o: shutil.rmtree(r / "info_files/art"), "info_file_format"),
        v("domain without eval splits", C, _set("art", "evals", value={}), "domains[1].evals"),
        v("empty domain name", C, _rename_domain(""), "domains[1].name"),
        v("NUL in an image path", C, _add_records("art", "train", {"path": "art/train/x\u0000.png", "class_id": 0}),
          "info_file_format"),
        v("NUL in a split name", C, _set("shop", "train", value="tr\u0000ain"), "domains[0].train"),
        v("NUL in a domain name", C, _rename_domain("a\u0000rt"), "domains[1].name"),
        v("deeply nested info file", C, _write_info("shop", "train", b"[" * 100_000 + b"]" * 100_000),
          "info_file_format"),
        v("lone surrogate in an image path", C, _add_records("art", "train", {"path": "art/train/\udc80.png",
                                                                             "class_id": 0}), "info_file_format"),
        v("image path names a folder", C, _add_records("art", "train", {"path": "art/train", "class_id": 0}),
          "file_exists"),
        v("image name too long", C, _add_records("art", "train", {"path": "art/train/" + "x" * 300 + ".png",
                                                                 "class_id": 0}), "file_exists"),
        v("symlink loop in images", C, _both(
            _link("images/art/train/loop-a.png", lambda r, o: r / "images/art/train/loop-b.png"),
            _link("images/art/train/loop-b.png", lambda r, o: r / "images/art/train/loop-a.png",
                  {"domain": "art", "split": "train", "path": "art/train/loop-a.png", "class_id": 0})),
          "file_exists"),
        v("huge class id, stated count", C, _both(
            lambda r, o: _save(r, "art/train/huge.jpg", 5, 900, "jpg"),
            _add_records("art", "train", {"path": "art/train/huge.jpg", "class_id": 10**30})), "info_file_format"),
        v("huge class id, inferred count", C, _both(
            lambda r, o: _save(r, "shop/train/huge.png", 5, 901),
            _add_records("shop", "train", {"path": "shop/train/huge.png", "class_id": 10**30})), "info_file_format"),
        v("benchmark.json is not UTF-8", C, lambda r, o: (r / "benchmark.json").write_bytes(b'{"name": "\xff"}'),
          "benchmark.json"),
        # -- leaks: the same image under another spelling, link or copy ---------------------------------
        v("./ in a test path", L, _add_records("art", "test", {"path": "art/./train/klasse 0/bild 1.png",
                                                              "class_id": 0}), "unique_image"),
        v("// and ./ in an index path", L, _add_records("shop", "index", {"path": "shop//train/./0_0.png",
                                                                         "class_id": 0}), "unique_image"),
        v("symlink to a train image", L, _link("images/art/test/alias.png", lambda r, o: Path("..") / TRAIN_IMAGE[4:],
                                               {"domain": "art", "split": "test", "path": "art/test/alias.png",
                                                "class_id": 0}), "unique_image"),
        v("folder symlink to train", L, _link("images/art/mirror", lambda r, o: Path("train"),
                                              {"domain": "art", "split": "test",
                                               "path": "art/mirror/klasse 2/bild 0.png", "class_id": 2}),
          "unique_image"),
        v("test queries are the train file", L, _set("shop", "evals", "test", value={"query": "train",
                                                                                    "index": "train"}),
          "domains[0].evals: test.query"),
        v("val queries are the train file", L, _set("art", "evals", "val", value={"query": "train", "index": "val"}),
          "domains[1].evals: val.query"),
        v("byte-identical copy in test", L, _both(_copy_image(TRAIN_IMAGE, "art/test/new.png"),
                                                  _add_records("art", "test", {"path": "art/test/new.png",
                                                                               "class_id": 0})), "unique_content"),
        v("hard link into the index", L, _both(_copy_image("shop/train/0_0.png", "shop/index/hl.png", "hardlink"),
                                               _add_records("shop", "index", {"path": "shop/index/hl.png",
                                                                              "class_id": 0})), "unique_content"),
        v("byte-identical copy as a query", L, _both(
            _copy_image("shop/train/1_0.png", "shop/query/fresh.png"),
            _add_records("shop", "query", {"path": "shop/query/fresh.png", "class_id": 10})), "unique_content"),
        v("train image listed in test", L, _add_records("art", "test", {"path": "art/train/klasse 0/bild 0.png",
                                                                       "class_id": 0}), "unique_image"),
        v("query of a train class", L, _add_records("shop", "query", {"path": "shop/index/i10_1.png",
                                                                     "class_id": 3}), "query_not_a_train_class"),
        v("record listed twice", L, _add_records("shop", "index", {"path": "shop/index/i10_0.png", "class_id": 10}),
          "unique_image"),
        # -- lax types and absurd sizes in the description ------------------------------------------------
        v("class count as a string", T, _set("art", "num_train_classes", value="3"), "domains[1].num_train_classes"),
        v("class count as a float", T, _set("art", "num_train_classes", value=3.0), "domains[1].num_train_classes"),
        v("class count as true", T, _set("art", "num_train_classes", value=True), "domains[1].num_train_classes"),
        v("classes_disjoint as \"no\"", T, _set("shop", "classes_disjoint", value="no"),
          "domains[0].classes_disjoint"),
        v("class count 10**12", T, _set("art", "num_train_classes", value=10**12), "domains[1].num_train_classes"),
        v("class count 0", T, _set("art", "num_train_classes", value=0), "domains[1].num_train_classes"),
        v("negative class count", T, _set("art", "num_train_classes", value=-3), "domains[1].num_train_classes"),
        v("domain name with a quote", T, _rename_domain('a"rt'), "domains[1].name"),
        v("domain name with a space", T, _rename_domain("my art"), "domains[1].name"),
        v("domain name of 10,000 characters", T, _rename_domain("a" * 10_000), "domains[1].name"),
        v("eval split name with a slash", T, _set("art", "evals", value={"../val": {"query": "val", "index": "val"},
                                                                         "test": {"query": "test", "index": "test"}}),
          "domains[1].evals"),
        # -- memory: images whose decoding costs far more than their files ------------------------------
        v("16-bit PNG 12000x12000", M, _big_png("scan16", "I;16", 12_000), "memory"),
        v("four 16-bit PNGs 12000x12000", M, _big_png("scan16", "I;16", 12_000, copies=4), "memory"),
        v("8-bit PNG 12000x12000", M, _big_png("gray8", "L", 12_000), "memory"),
        v("RGBA PNG 9000x9000", M, _big_png("rgba", "RGBA", 9_000), "memory"),
        v("1-bit PNG 20000x20000 (PIL's bomb limit)", M, _bomb, "memory"),
    ]
    return out


VARIANTS: tuple[Variant, ...] = tuple(_variants())


def by_kind(kind: str) -> list[Variant]:
    return [x for x in VARIANTS if x.kind == kind]


def build(variant: Variant, base: Path) -> tuple[Path, Path]:
    """The clean benchmark in ``base/data`` with ``variant`` applied, and ``base/outside`` beside it."""
    root, outside = base / "data", base / "outside"
    write_benchmark(root)
    _outside_copy(root, outside)
    variant.make(root, outside)
    return root, outside


def as_the_pipeline(root: Path):
    """What ``udon run`` does with a folder up to the end of validation, without ZenML: read it (ingest),
    store the manifest and the report as ZenML's materializers do (parquet, ``describe()``, JSON), validate."""
    import io

    from integrations.expectations import validate_benchmark
    from udon_core.data import read_benchmark

    data = read_benchmark(root)
    data.manifest.to_parquet(io.BytesIO())
    data.manifest.describe()
    report = validate_benchmark(data)
    report.model_dump_json()
    return report


@dataclass
class Verdict:
    held: bool
    why: str
    opened_outside: list[str] = field(default_factory=list)


def judge(variant: Variant, base: Path, validate: Callable[[Path], object]) -> Verdict:
    """Build ``variant`` under ``base`` and validate it with ``validate(root) -> ValidationReport``.

    A ``UdonUserError`` (one sentence) counts as an answer; any other exception is a crash.
    """
    from udon_core.errors import UdonUserError

    root, _ = build(variant, base)
    with OpenedOutside(root, base) as opened:
        try:
            report = validate(root)
            failed = {o.check for o in report.critical_failures}
            text, passed = report.summary(rows_per_failure=50), report.success
        except UdonUserError as err:
            failed, text, passed = set(), str(err), False
        except BaseException as err:  # noqa: BLE001 - a crash is what is being measured
            return Verdict(False, f"crash: {type(err).__name__}: {str(err)[:200]}", opened.files)
    if opened.files:
        return Verdict(False, f"opened outside the root: {sorted(set(opened.files))[:3]}", opened.files)
    if variant.kind == "memory":  # decoded within the budget or refused with a reason: both are answers
        return Verdict(passed or "image_decodes" in failed, "passed" if passed else text.splitlines()[0])
    if variant.expect in failed or (not failed and not passed and variant.expect in text):
        return Verdict(True, variant.expect)
    return Verdict(False, f"expected {variant.expect!r}; got {'passed' if passed else text[:300]!r}")
