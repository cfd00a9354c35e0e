"""Image preprocessing, exactly as the official UDON input pipeline does it, at any resolution.

Train (research/udon.md section 4): resize to ``resize x resize`` ignoring the aspect ratio, random crop
``size``, random horizontal flip, normalise. Eval: resize the shorter side to ``size`` keeping the aspect,
centre crop ``size``, normalise. At the paper's 224 px, ``resize`` is 256.

The transforms run in the loader and end in uint8 tensors; ``normalize`` converts a whole batch where the
model runs. JPEGs are decoded at a reduced DCT scale when the transform's resize allows it (``open_rgb``'s
``draft``; ``train_decode_side`` / ``eval_decode_side`` say how far).
"""

from __future__ import annotations

import functools
import io
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2 as T

import udon_core.data.decode_budget as decode_budget
from udon_core.errors import ImageFileError


class Preprocess(BaseModel):
    """How images become tensors for a model; saved with every exported model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(default=224, ge=8, description="crop side; UDON uses 224")
    resize_ratio: float = Field(default=256 / 224, ge=1.0, description="train resize / crop; UDON uses 256/224")
    # why: the IN21k AugReg ViT (UDON's default backbone) and tf_efficientnet_lite0 both use 0.5/0.5.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def resize_size(self) -> int:
        return int(round(self.image_size * self.resize_ratio))


STRIP_PIXELS = 1 << 20  # pixels scaled at once by _to_8_bit: 8 MB of float64, whatever the image size


def _to_8_bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit 'L', scaled, not clipped.

    why: ``convert("RGB")`` clips these modes at 255, which turns almost every pixel of a 16-bit scan white.
    16-bit modes are divided by 257 (65535 -> 255); 'I' (how some decoders return 16-bit data) is taken as
    16-bit when any value exceeds 255; 'F' in [0, 1] is scaled to [0, 255]. Scaled a strip of rows at a
    time, so the cost is the 8-bit result, not float64 copies of the whole image (decode_budget).
    """
    width, height = im.size
    top_value = im.getextrema()[1] if height and width else 0
    factor = 1 / 257.0 if im.mode.startswith("I;16") or (im.mode == "I" and top_value > 255) else \
        255.0 if im.mode == "F" and top_value <= 1.0 else 1.0
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = np.asarray(im.crop((0, top, width, min(height, top + rows))), dtype=np.float64)
        out[top:top + rows] = np.clip(np.rint(strip * factor if factor != 1.0 else strip), 0, 255)
    return Image.fromarray(out)  # uint8, 2-D: mode L


def open_rgb(source: str | Path | bytes, name: str | None = None, draft: int | None = None) -> tuple[Image.Image, str]:
    """``(the image as 8-bit RGB, the file's own mode)``: the one image reader of training, evaluation,
    validation and ``udon embed``. Transparency is composited onto white, high-bit-depth grayscale is
    scaled to 8 bits, CMYK and palette images are converted by PIL.

    Args:
        source: a file path, or an encoded image's bytes (a record of a packed benchmark).
        name: how errors name ``source`` when it is bytes (the record's path and shard).
        draft: decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this many
            pixels (PIL's ``Image.draft``): the transform's resize then starts from fewer pixels. Never below
            ``draft``, never above the file's own size; other formats ignore it.

    Raises:
        ImageFileError: naming the file and what is wrong (missing, empty, not an image, truncated, a
            decompression bomb, more memory to decode than ``decode_budget`` allows); never a raw PIL
            exception. The cost is taken from the process's budget before any pixel is read and given back
            when the returned image is released.

    why white: emoji artwork is RGBA with a transparent background; converting straight to RGB would turn
    the background black in some files and white in others depending on the stored colour of clear pixels.
    """
    where, fp = _opened(source, name)
    with _pil_errors(where):
        im = Image.open(fp)
    with im:
        if draft and im.format == "JPEG":
            im.draft(None, (draft, draft))  # None: keep the file's colour mode; the budget pays the reduced size
        cost = decode_budget.decode_cost(im.mode, im.size, "transparency" in im.info)
        give_back = decode_budget.PROCESS_BUDGET.hold(cost, where, f"{im.width}x{im.height} {im.mode}")
        try:
            with _pil_errors(where):
                im.load()  # the whole file: truncation shows up here
                rgb = _rgb(im)
        except BaseException:
            give_back()
            raise
    weakref.finalize(rgb, give_back)  # the budget holds the decoded image for as long as it lives
    return rgb, im.mode


def _opened(source: str | Path | bytes, name: str | None) -> tuple[Path | str, Path | io.BytesIO]:
    """(how errors name the image, what PIL opens); a missing or empty file is named before PIL sees it."""
    if isinstance(source, bytes):
        where = name or "<image bytes>"
        if not source:
            raise ImageFileError(where, "empty file (0 bytes)")
        return where, io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise ImageFileError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageFileError(path, "empty file (0 bytes)")
    return path, path


@contextmanager
def _pil_errors(path: Path | str) -> Iterator[None]:
    """PIL's exceptions as one ImageFileError sentence naming the file."""
    try:
        yield
    except Image.DecompressionBombError as err:
        raise ImageFileError(path, f"refused as a decompression bomb ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageFileError(path, "not an image file PIL can read") from err
    except (OSError, ValueError, SyntaxError) as err:  # PIL reports damaged data with these
        raise ImageFileError(path, f"cannot be decoded ({type(err).__name__}: {err})") from err


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        return _to_8_bit(im).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (see ``open_rgb``)."""
    return open_rgb(path)[0]


def train_transform(p: Preprocess) -> T.Compose:
    """UDON's train augmentation: squash-resize, random crop, horizontal flip -> uint8 ``[3, S, S]``.

    The batch is converted to float and normalised where the model runs (``normalize``): a uint8 image is a
    quarter of the bytes through the worker queue and the host-to-device copy, and the arithmetic is the
    device's, not the loader's.
    """
    return T.Compose(
        [
            T.ToImage(),
            T.Resize((p.resize_size, p.resize_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.RandomCrop(p.image_size),
            T.RandomHorizontalFlip(),
        ]
    )


def eval_transform(p: Preprocess) -> T.Compose:
    """UDON's eval preprocessing: shorter side to S, centre crop S -> uint8 ``[3, S, S]`` (see ``normalize``)."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(p.image_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(p.image_size),
        ]
    )


def train_decode_side(p: Preprocess) -> int:
    """The fewest pixels per side a train image must decode to: it is squashed to ``resize x resize``."""
    return p.resize_size


def eval_decode_side(p: Preprocess) -> int:
    """The fewest pixels per side an eval image must decode to: its shorter side becomes ``image_size``."""
    return p.image_size


def normalize(images: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 ``[B, 3, S, S]`` (on any device) -> float32 ``(x / 255 - mean) / std``, on that device.

    The same operations in the same order as torchvision's ``ToDtype(float32, scale=True)`` then
    ``Normalize``, so a CPU batch is bit-identical to what the per-image transform gave before.
    """
    mean, std = _channel_stats(p.mean, p.std, images.device)
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, 3, 1, 1]`` float32 mean and std on ``device``, made once: building them per batch is a
    synchronous host-to-device copy from pageable memory in the training step. Never written to."""
    with torch.inference_mode(False):  # why: one made during evaluation (inference mode) also serves training
        return (torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1))
