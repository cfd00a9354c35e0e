"""The one image reader (training, evaluation, validation, `udon embed`) on real files of awkward kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.data import ImageListDataset, ImageRecord, Preprocess, inspect_image, load_rgb, open_rgb
from udon_core.errors import ImageFileError, UdonUserError
from udon_core.evaluation import embed_records
from udon_core.model import EmbeddingModel


def _gradient16(path):
    """A 16-bit grayscale PNG spanning the whole range: 0 .. 65535 across the columns."""
    values = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    Image.fromarray(values).save(path)
    return values


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    values = _gradient16(tmp_path / "scan.png")
    with Image.open(tmp_path / "scan.png") as im:
        assert im.mode.startswith("I")  # PIL's own conversion would clip this at 255
        assert (np.asarray(im.convert("RGB"))[..., 0] == 255).mean() > 0.95
    rgb, mode = open_rgb(tmp_path / "scan.png")
    pixels = np.asarray(rgb)
    assert mode.startswith("I") and rgb.mode == "RGB"
    assert (pixels[..., 0] == pixels[..., 2]).all()
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1
    assert (pixels == 255).mean() < 0.01 and pixels.min() == 0 and pixels.max() == 255


def test_a_cmyk_jpeg_keeps_its_colours(tmp_path):
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:] = (20, 60, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", "JPEG", quality=95)
    image, mode = open_rgb(tmp_path / "print.jpg")
    assert mode == "CMYK"
    assert np.abs(np.asarray(image).astype(int) - rgb).mean() < 6


def test_grayscale_and_palette_images_become_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "g.png")
    Image.new("P", (8, 8), 3).save(tmp_path / "p.png")
    assert np.asarray(load_rgb(tmp_path / "g.png")).tolist()[0][0] == [77, 77, 77]
    assert load_rgb(tmp_path / "p.png").mode == "RGB"


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file (0 bytes)"),
    (b"this is not an image", "not an image file PIL can read"),
])
def test_empty_and_foreign_files_say_what_they_are(tmp_path, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageFileError) as err:
        load_rgb(tmp_path / "x.png")
    assert str(err.value) == f"{tmp_path / 'x.png'}: {reason}" and isinstance(err.value, UdonUserError)
    assert inspect_image(tmp_path / "x.png")["error"] == reason


@pytest.fixture
def bomb(tmp_path, monkeypatch):
    """A real 64x64 PNG, with PIL's pixel limit lowered so that it counts as a decompression bomb."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an error above 2x: 4096 > 2000
    return tmp_path


def test_a_decompression_bomb_is_one_sentence_on_every_path(bomb, monkeypatch):
    path = bomb / "images" / "bomb.png"
    # sampled validation
    checked = inspect_image(path)
    assert not checked["decodes"] and "decompression bomb" in checked["error"]
    # a DataLoader worker (the message crosses the process boundary intact)
    records = [ImageRecord("bomb.png", (0,))]
    with pytest.raises(ImageFileError) as err:
        embed_records(EmbeddingModel(TINY_MODEL), bomb, records, Preprocess(image_size=16), num_workers=1,
                      progress=False)
    assert str(err.value).startswith(f"{path}: refused as a decompression bomb") and "Traceback" not in str(err.value)
    with pytest.raises(ImageFileError):
        ImageListDataset(bomb, records, lambda x: x)[0]
    # `udon embed`
    from pipelines.cli import cli

    EmbeddingModel(TINY_MODEL).save(bomb / "model")
    result = CliRunner().invoke(cli, ["embed", str(bomb / "images"), "--model", str(bomb / "model"),
                                      "--out", str(bomb / "out.npy")])
    assert result.exit_code == 2 and "refused as a decompression bomb" in result.output
    assert "Traceback" not in result.output


# ---- the decoding memory budget (issue #25) -------------------------------------------------------------

@pytest.fixture
def budget(monkeypatch):
    """A fresh process budget of 4 MiB, as the loader sees it."""
    from udon_core.data import decode_budget

    fresh = decode_budget.DecodeBudget(4 << 20)
    monkeypatch.setattr(decode_budget, "PROCESS_BUDGET", fresh)
    return fresh


def test_an_image_costing_more_than_the_budget_is_refused_before_decoding(tmp_path, budget):
    from udon_core.data.decode_budget import decode_cost

    Image.fromarray(np.zeros((1000, 1000), dtype=np.uint16)).save(tmp_path / "scan.png")  # a few KB on disk
    assert decode_cost("I;16", (1000, 1000)) == 1000 * 1000 * 7 + (16 << 20)  # 2 (16-bit) + 1 (8-bit) + 4 (RGB)
    with pytest.raises(ImageFileError) as err:
        open_rgb(tmp_path / "scan.png")
    assert "refused: decoding it (1000x1000 I;16) needs about 23 MiB, more than the loader's budget of 4 MiB" \
        in str(err.value) and budget.held == 0
    assert inspect_image(tmp_path / "scan.png")["error"].startswith("refused: decoding it")


def test_the_budget_is_held_while_the_decoded_image_lives(tmp_path, budget):
    from udon_core.data.decode_budget import decode_cost

    budget.total = 64 << 20
    Image.new("RGB", (100, 50)).save(tmp_path / "a.png")
    image, _ = open_rgb(tmp_path / "a.png")
    assert budget.held == decode_cost("RGB", (100, 50)) == 100 * 50 * 8 + (16 << 20)
    del image
    assert budget.held == 0
    with pytest.raises(ImageFileError):  # a failed decode gives its share back too
        (tmp_path / "t.png").write_bytes((tmp_path / "a.png").read_bytes()[:60])
        open_rgb(tmp_path / "t.png")
    assert budget.held == 0


def test_a_thread_that_keeps_images_while_decoding_more_fails_instead_of_waiting_for_itself(tmp_path, budget):
    budget.total = 30 << 20  # two images of 16 MiB + a little do not fit together
    Image.new("L", (100, 100)).save(tmp_path / "a.png")
    kept = open_rgb(tmp_path / "a.png")
    with pytest.raises(RuntimeError, match="its own thread holds"):
        open_rgb(tmp_path / "a.png")
    del kept


def test_parallel_inspection_stays_within_the_budget(tmp_path, budget):
    from udon_core.data import inspect_images
    from udon_core.data.decode_budget import decode_cost

    one = decode_cost("I;16", (800, 800))
    budget.total = int(2.5 * one)  # two decodes at a time, never three
    for i in range(8):
        Image.fromarray(np.full((800, 800), 257 * i, dtype=np.uint16)).save(tmp_path / f"{i}.png")
    import pandas as pd

    rows = pd.DataFrame([("d", "train", i, f"{i}.png", [0]) for i in range(8)],
                        columns=["domain", "split", "row", "path", "labels"])
    inspected = inspect_images(rows, tmp_path, workers=8)
    assert inspected["decodes"].all() and budget.held == 0
    assert one <= budget.peak <= budget.total


def test_high_bit_depth_is_scaled_a_strip_at_a_time_exactly_as_a_whole(tmp_path, monkeypatch):
    from udon_core.data import transforms

    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(37, 53), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    whole = np.asarray(load_rgb(tmp_path / "scan.png"))
    monkeypatch.setattr(transforms, "STRIP_PIXELS", 100)  # one row at a time
    strips = np.asarray(load_rgb(tmp_path / "scan.png"))
    assert (whole == strips).all() and (whole[..., 0] == np.rint(values / 257.0)).all()
    floats = rng.random((20, 30), dtype=np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tiff")
    assert (np.asarray(load_rgb(tmp_path / "f.tiff"))[..., 1] == np.clip(np.rint(floats * 255.0), 0, 255)).all()


_PEAK = r"""
import sys
from PIL import Image
from tests.peak_rss import peak_above
from udon_core.data import decode_budget, transforms
with Image.open(sys.argv[1]) as raw:
    estimate = decode_budget.decode_cost(raw.mode, raw.size, "transparency" in raw.info)
print(peak_above(lambda: transforms.open_rgb(sys.argv[1])), estimate)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode, shape", [("I;16", (4000, 4000)), ("RGBA", (3000, 3000, 4))])  # the costliest kinds
def test_decode_cost_bounds_the_measured_peak(tmp_path, mode, shape):
    import subprocess
    import sys

    dtype = np.uint16 if mode == "I;16" else np.uint8
    Image.fromarray(np.zeros(shape, dtype=dtype)).save(tmp_path / "big.png", compress_level=1)
    done = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "big.png")], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    peak, estimate = map(int, done.stdout.split())
    assert 0.8 * estimate <= peak <= estimate, (peak, estimate)  # an upper bound, and not a loose one
