"""The bundled demo benchmark: deterministic bytes, the UnED layout, and the protocol's promises."""

from __future__ import annotations

import sys

import pytest

from udon_core.data import (
    DemoConfig,
    ImageRecord,
    MissingSourceError,
    build_demo_benchmark,
    count_positives,
    demo,
    info_file_path,
    load_rgb,
    read_manifest,
    resolve_benchmark_spec,
    tree_digest,
)

SMALL = DemoConfig(emoji_val_classes=3, emoji_test_classes=4, emoji_train_classes=5, glyph_train_fonts=2,
                   glyph_val_fonts=2, glyph_test_fonts=2, animals_train_per_class=3, animals_val_per_class=2,
                   animals_test_per_class=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = build_demo_benchmark(tmp_path_factory.mktemp("demo") / "data", SMALL, progress=False)
    return root, read_manifest(root, resolve_benchmark_spec("auto", root))


def test_build_is_deterministic_and_seeded(built, tmp_path):
    root, _ = built
    again = build_demo_benchmark(tmp_path / "again", SMALL, progress=False)
    assert tree_digest(again) == tree_digest(root)
    other = build_demo_benchmark(tmp_path / "other", SMALL.model_copy(update={"seed": 1}), progress=False)
    assert tree_digest(other) != tree_digest(root)


def test_layout_reads_back_and_every_image_decodes(built):
    root, manifest = built
    spec = resolve_benchmark_spec("auto", root)
    assert spec.name == "demo" and spec.domain_names == ("emoji", "glyphs", "animals")
    assert [d.num_train_classes for d in spec.domains] == [5, 62, 10]
    assert all(info_file_path(root, d.name, s).is_file() for d in spec.domains for s in d.info_files)
    for path in manifest["path"]:
        assert load_rgb(root / "images" / path).mode == "RGB"
    on_disk = {str(p.relative_to(root / "images")) for p in (root / "images").rglob("*.png")}
    assert on_disk == set(manifest["path"]), "every image is referenced and every reference exists"
    assert "CC-BY 4.0" in (root / "LICENSES.md").read_text() and "CC-BY-SA 4.0" in (root / "LICENSES.md").read_text()


def test_emoji_protocol_across_styles_with_held_out_classes(built):
    _, m = built
    emoji = m[m["domain"] == "emoji"]
    splits = ("train", "val", "test", "index")
    labels = {s: {x for ls in emoji[emoji["split"] == s]["labels"] for x in ls} for s in splits}
    assert not labels["train"] & (labels["val"] | labels["test"]) and not labels["val"] & labels["test"]
    assert labels["test"] == labels["index"]
    assert all("/twemoji/" in p for p in emoji[emoji["split"] == "test"]["path"])
    assert all("/openmoji/" in p for p in emoji[emoji["split"] == "index"]["path"])


def test_glyph_fonts_are_disjoint_and_animals_never_repeat(built):
    _, m = built
    glyphs = m[m["domain"] == "glyphs"]
    fonts = {s: {p.split("/")[1] for p in glyphs[glyphs["split"] == s]["path"]} for s in ("train", "val", "test")}
    assert not fonts["train"] & fonts["val"] and not fonts["train"] & fonts["test"] and not fonts["val"] & fonts["test"]
    assert m["path"].is_unique


def test_every_query_has_a_positive(built):
    root, m = built
    counts = count_positives(m, resolve_benchmark_spec("auto", root))
    assert counts.dropna().min() >= 1


def test_refuses_a_non_empty_folder_unless_told_to_overwrite(built, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        build_demo_benchmark(tmp_path, SMALL, progress=False)
    assert (tmp_path / "keep.txt").is_file()
    build_demo_benchmark(tmp_path, SMALL, progress=False, overwrite=True)
    assert not (tmp_path / "keep.txt").exists() and tree_digest(tmp_path) == tree_digest(built[0])


def test_a_missing_source_package_names_the_pip_command(monkeypatch, tmp_path):
    # why: a None entry in sys.modules makes `import animal_mnist` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "animal_mnist", None)
    with pytest.raises(MissingSourceError, match=r"'animal_mnist'.*pip install --no-deps animal-mnist==0\.4"):
        demo.build_animals(tmp_path, SMALL, None, progress=False)


def test_the_builder_refuses_a_query_without_a_positive():
    # why: in a self-queried split a class seen once has no positive once the query itself is excluded.
    files = {"train": [ImageRecord("a/0.png", (0,))],
             "val": [ImageRecord("a/1.png", (1,)), ImageRecord("a/2.png", (1,))],
             "test": [ImageRecord("a/3.png", (2,))]}
    with pytest.raises(ValueError, match="demo animals/test: query a/3.png has no relevant index image"):
        demo._check_positives("animals", files)


def test_the_demo_spec_still_serialises_to_the_pinned_benchmark_json(tmp_path):
    """benchmark.json is part of the DVC-pinned demo data: rewording the DEMO spec changes the data hash, and a
    fresh clone's rebuild would no longer match data.dvc. Change the spec and re-pin the data together."""
    import hashlib

    from udon_core.data import DEMO, save_benchmark_spec

    counts = {"emoji": 830, "glyphs": 62, "animals": 10}  # what the pinned build recorded
    built = DEMO.model_copy(update={"domains": tuple(d.model_copy(update={"num_train_classes": counts[d.name]})
                                                     for d in DEMO.domains)})
    digest = hashlib.md5(save_benchmark_spec(built, tmp_path).read_bytes()).hexdigest()
    assert digest == "f8a6b898a0e66bd220739814cb23b6a3", "the demo spec changed: rebuild the demo data and re-pin data.dvc"


@pytest.mark.slow
def test_the_full_demo_rebuilds_to_the_version_data_dvc_pins(tmp_path):
    """What `make run` does on a fresh clone: a rebuild that misses the pin by one byte stops the run. The demo is
    pinned packed (shards and an index, as `udon data pack` writes them), so this also holds the packer to its
    bytes."""
    import shutil
    from pathlib import Path

    from integrations import dvc_store
    from tests.repos import sh
    from udon_core.data import build_demo_benchmark

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "data.dvc", tmp_path / "data.dvc")
    sh(tmp_path, "dvc", "init", "-q", "--no-scm")
    build_demo_benchmark(tmp_path / "data", progress=False, packed=True)
    assert dvc_store.workspace_hash(tmp_path) == dvc_store.read_pin(root).md5
