"""The UDON model: a shared backbone, one 64-d universal student head, a 256-d teacher head per domain,
and per-domain cosine classifiers for both; and the deployable part of it (backbone + student head).

Facts (research/udon.md 1.2): heads are one Linear with bias followed by L2 normalisation, initialised
lecun-normal (truncated) with zero bias; classifiers have no bias, lecun-uniform init, and return cosine
similarities (the embedding is unit-norm and each class weight is normalised).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from udon_core.data.transforms import Preprocess
from udon_core.digests import file_sha256, verify_digest_file, write_atomic, write_digest_file
from udon_core.errors import CheckpointError, InvalidValueError
from udon_core.model.backbone import BackboneConfig, create_backbone

EXPORT_FORMAT = "udon-embedding/1"
TRAINING_FORMAT = "udon-training-model/1"  # every head: what the oracle-teacher evaluation needs
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"
DIGEST_FILE = "model.sha256"  # sha256sum list of both: what defines the model is verified before it is read
SEALED_FILES = (SIDECAR_FILE, WEIGHTS_FILE)  # the small description first: its damage is found before hashing weights


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model; saved as the sidecar of every exported model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    student_dim: int = Field(default=64, ge=1, description="universal embedding size (UDON and UnED: 64)")
    teacher_dim: int = Field(default=256, ge=1, description="per-domain teacher embedding size (UDON: 256)")
    preprocess: Preprocess = Field(default_factory=Preprocess)


def _write_folder(module: nn.Module, directory: str | Path, sidecar: dict) -> Path:
    """``model.safetensors`` + ``model.json``, then ``model.sha256`` over both: the folder counts once it is there."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # why first: a save interrupted from here on leaves a folder without its digest, which is refused, never a
    # folder whose old digest vouches for half-new files.
    (out / DIGEST_FILE).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_atomic(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    text = json.dumps(sidecar, indent=1, sort_keys=True) + "\n"
    write_atomic(out / SIDECAR_FILE, lambda tmp: tmp.write_text(text))
    write_digest_file(out / DIGEST_FILE, [out / name for name in SEALED_FILES])
    return out


def _parse_sidecar(directory: Path) -> dict:
    path = directory / SIDECAR_FILE
    try:
        sidecar = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(sidecar).__name__}")
    return sidecar


class UnsealedModelError(CheckpointError):
    """A folder saved before ``model.sha256`` existed: its weights digest sits in its unverifiable ``model.json``."""


def _unsealed(directory: Path) -> CheckpointError:
    """The error for a folder without ``model.sha256``: saved before it existed, interrupted, or copied without it."""
    try:
        legacy = "weights_sha256" in _parse_sidecar(directory)
    except CheckpointError:
        legacy = False
    if legacy:
        return UnsealedModelError(
            f"{directory}: saved before {DIGEST_FILE} covered {SIDECAR_FILE}, so its description cannot be verified; "
            f"if you trust this copy, `udon seal {directory}` checks its weights and records the digest, else "
            "export the model again")
    return CheckpointError(f"{directory}: no {DIGEST_FILE} beside {SIDECAR_FILE}: the save was interrupted or the "
                           "folder was copied without it; export the model again")


def _verified_sidecar(directory: str | Path) -> dict:
    """``model.json`` of a saved model folder, after both files matched ``model.sha256``; CheckpointError else.

    Nothing in the folder is parsed before the digests match, so a damaged description can neither load
    with another configuration nor switch the check off.
    """
    folder = Path(directory)
    if not (folder / SIDECAR_FILE).is_file():
        raise CheckpointError(f"{directory}: not a saved udon model (no {SIDECAR_FILE})")
    if not (folder / DIGEST_FILE).is_file():
        raise _unsealed(folder)
    verify_digest_file(folder / DIGEST_FILE, SEALED_FILES)
    sidecar = _parse_sidecar(folder)
    if sidecar.get("format") not in (EXPORT_FORMAT, TRAINING_FORMAT):
        raise CheckpointError(f"{folder / SIDECAR_FILE}: unknown format {sidecar.get('format')!r}, expected "
                              f"{EXPORT_FORMAT} or {TRAINING_FORMAT}")
    return sidecar


def _expect_format(directory: str | Path, sidecar: dict, expected: str) -> None:
    if sidecar["format"] != expected:
        raise CheckpointError(f"{Path(directory) / SIDECAR_FILE}: unknown format {sidecar['format']!r}, "
                              f"expected {expected}")


def _config_of(directory: str | Path, sidecar: dict) -> ModelConfig:
    try:
        return ModelConfig.model_validate(sidecar.get("config"))
    except ValidationError as err:
        first = err.errors()[0]
        raise CheckpointError(f"{Path(directory) / SIDECAR_FILE}: config.{'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}") from err


def _classes_of(directory: str | Path, sidecar: dict) -> dict[str, int]:
    classes = sidecar.get("classes")
    if not isinstance(classes, dict) or not all(isinstance(n, int) and n > 0 for n in classes.values()):
        raise CheckpointError(f"{Path(directory) / SIDECAR_FILE}: 'classes' must map each domain to a positive count")
    return classes


def _load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` (already verified) strictly into ``module``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
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
        """Every head and classifier (``model.safetensors``), config and classes (``model.json``), ``model.sha256``."""
        sidecar = {"format": TRAINING_FORMAT, "config": self.config.model_dump(mode="json"), "classes": self.classes}
        return _write_folder(self, directory, sidecar)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> "UdonModel":
        """Rebuild from the verified sidecar (no weights download) and load the weights strictly."""
        sidecar = _verified_sidecar(directory)
        _expect_format(directory, sidecar, TRAINING_FORMAT)
        return cls._from_sidecar(directory, sidecar).to(map_location).eval()

    @classmethod
    def _from_sidecar(cls, directory: str | Path, sidecar: dict) -> "UdonModel":
        config = _config_of(directory, sidecar)
        model = cls(_without_download(config), _classes_of(directory, sidecar))
        model.config = config
        _load_weights(model, directory)
        return model


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
        """Write ``model.safetensors`` + ``model.json`` (the config that rebuilds it) + ``model.sha256`` (both)."""
        return _write_folder(self, directory, {"format": EXPORT_FORMAT, "config": self.config.model_dump(mode="json")})

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> "EmbeddingModel":
        """Rebuild from the verified sidecar (no weights download) and load the weights strictly."""
        sidecar = _verified_sidecar(directory)
        _expect_format(directory, sidecar, EXPORT_FORMAT)
        return cls._from_sidecar(directory, sidecar).to(map_location).eval()

    @classmethod
    def _from_sidecar(cls, directory: str | Path, sidecar: dict) -> "EmbeddingModel":
        model = cls(_config_of(directory, sidecar))
        _load_weights(model, directory)
        return model


def load_embedding_model(directory: str | Path, map_location: str = "cpu") -> EmbeddingModel:
    """The deployable model from an exported folder, or from a training-model folder (its student part)."""
    sidecar = _verified_sidecar(directory)
    if sidecar["format"] == TRAINING_FORMAT:
        return UdonModel._from_sidecar(directory, sidecar).to(map_location).eval().embedding_model()
    return EmbeddingModel._from_sidecar(directory, sidecar).to(map_location).eval()


def seal_legacy_folder(directory: str | Path) -> Path:
    """Write ``model.sha256`` for a folder saved before it existed, after checking what can still be checked.

    The weights must match the ``weights_sha256`` its ``model.json`` records and load strictly into the
    architecture it describes; the description itself cannot be verified (nothing covered it), so this is
    the user's explicit decision to trust it. Returns the digest file.
    """
    folder = Path(directory)
    if (folder / DIGEST_FILE).is_file():
        raise InvalidValueError(f"{folder / DIGEST_FILE} exists: the folder is sealed already")
    if not (folder / SIDECAR_FILE).is_file():
        raise CheckpointError(f"{directory}: not a saved udon model (no {SIDECAR_FILE})")
    sidecar = _parse_sidecar(folder)
    weights, expected = folder / WEIGHTS_FILE, sidecar.get("weights_sha256")
    if not isinstance(expected, str) or not weights.is_file() or file_sha256(weights) != expected:
        raise CheckpointError(f"{weights}: does not match the weights_sha256 in {SIDECAR_FILE} (or either is "
                              "missing): refusing to seal a damaged folder")
    if sidecar.get("format") == TRAINING_FORMAT:
        UdonModel._from_sidecar(folder, sidecar)
    elif sidecar.get("format") == EXPORT_FORMAT:
        EmbeddingModel._from_sidecar(folder, sidecar)
    else:
        raise CheckpointError(f"{folder / SIDECAR_FILE}: unknown format {sidecar.get('format')!r}")
    write_digest_file(folder / DIGEST_FILE, [folder / name for name in SEALED_FILES])
    return folder / DIGEST_FILE
