"""Image preprocessing, exactly as the official UDON input pipeline does it, at any resolution.

Train (research/udon.md section 4): resize to ``resize x resize`` ignoring the aspect ratio, random crop
``size``, random horizontal flip, normalise. Eval: resize the shorter side to ``size`` keeping the aspect,
centre crop ``size``, normalise. At the paper's 224 px, ``resize`` is 256.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2 as T


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


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image and convert it to RGB, compositing transparency onto white.

    why: emoji artwork is RGBA with a transparent background; converting straight to RGB would turn the
    background black in some files and white in others depending on the stored colour of clear pixels.
    """
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return im.convert("RGB")


def train_transform(p: Preprocess) -> T.Compose:
    """UDON's train augmentation: squash-resize, random crop, horizontal flip, normalise -> [3, S, S]."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize((p.resize_size, p.resize_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.RandomCrop(p.image_size),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(p.mean, p.std),
        ]
    )


def eval_transform(p: Preprocess) -> T.Compose:
    """UDON's eval preprocessing: shorter side to S, centre crop S, normalise -> [3, S, S]."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(p.image_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(p.image_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(p.mean, p.std),
        ]
    )
