"""The bundled demo benchmark: deterministic bytes, the UnED layout, and the protocol's promises."""

from __future__ import annotations

import pytest

from udon_core.benchmark import resolve_benchmark_spec
from udon_core.demo import DemoConfig, build_demo_benchmark, tree_digest
from udon_core.manifest_checks import count_positives
from udon_core.transforms import load_rgb
from udon_core.uned import read_manifest

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
    for path in manifest["path"]:
        assert load_rgb(root / "images" / path).mode == "RGB"
    assert "CC-BY 4.0" in (root / "LICENSES.md").read_text() and "CC-BY-SA 4.0" in (root / "LICENSES.md").read_text()


def test_emoji_protocol_across_styles_with_held_out_classes(built):
    _, m = built
    emoji = m[m["domain"] == "emoji"]
    labels = {s: {x for ls in emoji[emoji["split"] == s]["labels"] for x in ls} for s in ("train", "val", "test", "index")}
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


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        build_demo_benchmark(tmp_path, SMALL, progress=False)
