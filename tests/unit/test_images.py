"""The one image reader (training, evaluation, validation, `udon embed`) on real files of awkward kinds."""

from __future__ import annotations

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
