"""The UDON model: a shared backbone, one 64-d universal student head, a 256-d teacher head per domain,
and per-domain cosine classifiers for both; and the deployable part of it (backbone + student head).

Facts (research/udon.md 1.2): heads are one Linear with bias followed by L2 normalisation, initialised
lecun-normal (truncated) with zero bias; classifiers have no bias, lecun-uniform init, and return cosine
similarities (the embedding is unit-norm and each class weight is normalised).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from udon_core.data.transforms import Preprocess
from udon_core.digests import file_sha256
from udon_core.errors import CheckpointError, InvalidValueError
from udon_core.model.backbone import BackboneConfig, create_backbone

log = logging.getLogger(__name__)
EXPORT_FORMAT = "udon-embedding/1"
TRAINING_FORMAT = "udon-training-model/1"  # every head: what the oracle-teacher evaluation needs
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model; saved as the sidecar of every exported model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    student_dim: int = Field(default=64, ge=1, description="universal embedding size (UDON and UnED: 64)")
    teacher_dim: int = Field(default=256, ge=1, description="per-domain teacher embedding size (UDON: 256)")
    preprocess: Preprocess = Field(default_factory=Preprocess)


def _write_folder(module: nn.Module, directory: str | Path, sidecar: dict) -> Path:
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    # The sidecar is written last and carries the weights' digest: a folder whose weights were damaged or
    # swapped after export is refused on load.
    sidecar = {**sidecar, "weights_sha256": file_sha256(out / WEIGHTS_FILE)}
    tmp = out / (SIDECAR_FILE + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / SIDECAR_FILE)
    return out


def _read_sidecar(directory: str | Path, expected: str) -> dict:
    sidecar = _sidecar(directory)
    if sidecar.get("format") != expected:
        raise CheckpointError(f"{Path(directory) / SIDECAR_FILE}: unknown format {sidecar.get('format')!r}, "
                              f"expected {expected}")
    return sidecar


def _sidecar(directory: str | Path) -> dict:
    path = Path(directory) / SIDECAR_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a saved udon model (no {SIDECAR_FILE})")
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(sidecar).__name__}")
    return sidecar


def _load_weights(module: nn.Module, directory: str | Path, sidecar: dict) -> None:
    """Load ``model.safetensors`` strictly, after checking it against the digest in the sidecar."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    expected = sidecar.get("weights_sha256")
    if expected is None:
        # why: folders exported before digests existed stay loadable; they only lose the corruption check.
        log.warning("%s has no weights_sha256: loading %s without an integrity check", SIDECAR_FILE, path)
    elif (actual := file_sha256(path)) != expected:
        raise CheckpointError(f"{path}: content does not match weights_sha256 in {SIDECAR_FILE} (expected "
                              f"{expected[:12]}..., found {actual[:12]}...): the file is damaged or was replaced")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the architecture in {SIDECAR_FILE} "
                              f"({str(err).splitlines()[0]})") from err


def _without_download(cfg: ModelConfig) -> ModelConfig:
    """The same architecture with no pretrained weights to fetch: saved weights replace them anyway."""
    return cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"pretrained": None})})


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Flax's default kernel init: truncated normal (2 std) with variance 1/fan_in."""
    fan_in = weight.shape[1]
    # why: 0.8796 is the std of a unit normal truncated at +-2, as in jax.nn.initializers.variance_scaling.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class Projection(nn.Module):
    """Linear(D, d) with bias, then L2 normalisation: ``[B, D] -> [B, d]`` unit vectors."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        lecun_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=-1)


class CosineClassifier(nn.Module):
    """``[B, d]`` unit vectors -> ``[B, C]`` cosine similarities to the normalised class weights."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        bound = math.sqrt(3.0 / dim)  # lecun_uniform over the kernel's fan_in (= dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return F.linear(e, F.normalize(self.weight, dim=1))


class UdonModel(nn.Module):
    """Backbone + student head + per-domain teacher heads and classifiers (the training-time model)."""

    def __init__(self, cfg: ModelConfig, classes: dict[str, int]) -> None:
        super().__init__()
        bad = [d for d in classes if not d.isidentifier()]
        if bad:
            raise InvalidValueError(f"domain names must be identifiers to name their heads, got {bad}")
        self.config = cfg
        self.domains = list(classes)
        self.backbone, dim = create_backbone(cfg.backbone)
        self.student = Projection(dim, cfg.student_dim)
        self.teachers = nn.ModuleDict({d: Projection(dim, cfg.teacher_dim) for d in classes})
        self.student_classifiers = nn.ModuleDict({d: CosineClassifier(cfg.student_dim, n) for d, n in classes.items()})
        self.teacher_classifiers = nn.ModuleDict({d: CosineClassifier(cfg.teacher_dim, n) for d, n in classes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> L2-normalised backbone features ``[B, D]``, float32 even under autocast."""
        return F.normalize(self.backbone(images).float(), dim=-1)

    def domain_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """Parameters that only ``domain``'s batches train (its teacher head and both classifiers)."""
        mods = (self.teachers[domain], self.student_classifiers[domain], self.teacher_classifiers[domain])
        return [p for m in mods for p in m.parameters()]

    def embedding_model(self) -> "EmbeddingModel":
        """A deep copy of the deployable part: backbone + student head."""
        return EmbeddingModel(self.config, copy.deepcopy(self.backbone), copy.deepcopy(self.student)).eval()

    def teacher_embedding_model(self, domain: str) -> "EmbeddingModel":
        """Backbone + ``domain``'s teacher head (the 'oracle teacher' evaluation)."""
        cfg = self.config.model_copy(update={"student_dim": self.config.teacher_dim})
        return EmbeddingModel(cfg, copy.deepcopy(self.backbone), copy.deepcopy(self.teachers[domain])).eval()

    @property
    def classes(self) -> dict[str, int]:
        """Training classes per domain, in head order."""
        return {d: self.student_classifiers[d].weight.shape[0] for d in self.domains}

    def save(self, directory: str | Path) -> Path:
        """Every head and classifier (``model.safetensors``) + config and classes (``model.json``)."""
        sidecar = {"format": TRAINING_FORMAT, "config": self.config.model_dump(mode="json"), "classes": self.classes}
        return _write_folder(self, directory, sidecar)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> "UdonModel":
        """Rebuild from the sidecar (no weights download) and load the weights strictly."""
        sidecar = _read_sidecar(directory, TRAINING_FORMAT)
        config = ModelConfig.model_validate(sidecar["config"])
        model = cls(_without_download(config), {d: int(n) for d, n in sidecar["classes"].items()})
        model.config = config
        _load_weights(model, directory, sidecar)
        return model.to(map_location).eval()


class EmbeddingModel(nn.Module):
    """The deployable model: images ``[B, 3, S, S]`` -> universal embeddings ``[B, 64]``, unit norm."""

    def __init__(self, cfg: ModelConfig, backbone: nn.Module | None = None, head: Projection | None = None) -> None:
        super().__init__()
        self.config = cfg
        if backbone is None:
            backbone, dim = create_backbone(cfg.backbone.model_copy(update={"pretrained": None}))
            head = Projection(dim, cfg.student_dim)
        self.backbone = backbone
        self.student = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(self.backbone(images).float(), dim=-1)
        with torch.autocast(images.device.type, enabled=False):  # the head in float32, as in training
            return self.student(feats)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``model.json`` (the config that rebuilds it) into ``directory``."""
        return _write_folder(self, directory, {"format": EXPORT_FORMAT, "config": self.config.model_dump(mode="json")})

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> "EmbeddingModel":
        """Rebuild from the sidecar (no weights download) and load the weights strictly."""
        sidecar = _read_sidecar(directory, EXPORT_FORMAT)
        model = cls(ModelConfig.model_validate(sidecar["config"]))
        _load_weights(model, directory, sidecar)
        return model.to(map_location).eval()


def load_embedding_model(directory: str | Path, map_location: str = "cpu") -> EmbeddingModel:
    """The deployable model from an exported folder, or from a training-model folder (its student part)."""
    if _sidecar(directory).get("format") == TRAINING_FORMAT:
        return UdonModel.load(directory, map_location).embedding_model()
    return EmbeddingModel.load(directory, map_location)
