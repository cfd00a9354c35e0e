"""How to train: one typed config for the training loop, with the method's preset applied at validation.

The defaults are the official UDON run on UnED (research/udon.md section 4); a method (udon_core/methods)
changes some of them, and explicit settings override the method.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from udon_core.errors import InvalidValueError
from udon_core.methods import METHODS, MethodName
from udon_core.methods.losses import LossConfig
from udon_core.methods.unic import UnicConfig
from udon_core.training.sampler import SamplerConfig


class TrainConfig(BaseModel):
    """How to train; the defaults are the official UDON run on UnED (the demo overrides the sizes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: MethodName = Field(
        default="udon", description="a training method of udon_core.methods ('udon', a UnED baseline such as "
        "'uscrr', 'unic', ...); its preset fills every setting not given explicitly",
    )
    # why: 10 epochs (num_training_epochs) of floor(2,831,222 UnED train images / 128) = 22,118 steps.
    steps: int = Field(default=221_180, ge=1, description="optimisation steps (UDON: 10 x 22,118)")
    batch_size: int = Field(default=128, ge=2, description="images per step, all from one domain (UDON: 128)")
    lr_heads: float = Field(default=1e-3, ge=0, description="projections and classifiers, constant (UDON: 1e-3)")
    lr_backbone: float = Field(default=1e-5, ge=0, description="1e-3 x backbone_learning_rate_multiplier 1e-2")
    # why: the official backbone lr is 0 while optax's update count (0-based) <= frozen_steps = 2 epochs =
    # 44,236, i.e. for 44,237 updates; here "lr 0 while step < frozen_steps", hence 44,237.
    frozen_steps: int = Field(default=44_237, ge=0, description="steps with backbone lr 0 (heads-only warm phase)")
    weight_decay: float = Field(default=1e-6, ge=0, description="decoupled (optax.adamw), on all parameters")
    decay_exclude_1d: bool = Field(
        default=False, description="no weight decay on biases and norm weights (parameters of fewer than 2 "
        "dimensions), as official UNIC; UDON decays every parameter")
    betas: tuple[float, float] = (0.9, 0.999)  # optax defaults
    eps: float = 1e-8
    lr_schedule: Literal["constant", "warmup_cosine"] = Field(
        default="constant", description="'constant' (UDON); 'warmup_cosine': linear warmup from 0 over "
        "warmup_steps, then cosine decay to min_lr at the last step (official UNIC, DINO's cosine_scheduler)")
    warmup_steps: int = Field(default=0, ge=0, description="warmup_cosine: steps of the linear warmup")
    min_lr: float = Field(default=1e-6, ge=0, description="warmup_cosine: the learning rate of the last step")
    student_head_group: Literal["heads", "backbone"] = Field(
        default="heads", description="optimiser group of the 64-d projection (UDON: heads; UnED baselines: backbone)"
    )
    student_classifier: Literal["separate", "joint"] = Field(
        default="separate", description="per-domain cosine classifiers, or one joint classifier (UJC baselines)"
    )
    domains: tuple[str, ...] | None = Field(
        default=None, description="train on these domains only (None: all); a specialist names exactly one"
    )
    zero_grad_inactive_heads: bool = Field(
        default=True, description="match optax: other domains' heads get zero grads, so Adam still moves them"
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    unic: UnicConfig = Field(default_factory=UnicConfig, description="frozen teachers, UNIC settings (unic, udon+unic)")
    specialists: dict[str, str] = Field(
        default_factory=dict, description="udon-offline: domain -> training-model folder of its specialist run"
    )
    seed: int = Field(default=0, description="rng_seed of the official config")
    device: str = Field(default="auto", description="'auto' = CUDA when present, else CPU; or any torch device")
    amp: bool = Field(default=True, description="bf16 autocast of the backbone on CUDA (the official run is fp32)")
    num_workers: int = Field(default=0, ge=0, description="DataLoader workers per domain")
    log_every: int = Field(default=50, ge=1, description="steps between metric callbacks")
    checkpoint_every: int = Field(default=1000, ge=1, description="steps between checkpoints (and at the end)")
    deterministic: bool = Field(default=False, description="deterministic kernels (exact resume on GPU too)")
    compile: bool = Field(default=False, description="torch.compile the backbone (in place: checkpoints unchanged)")
    compile_backend: str = Field(default="inductor", description="torch.compile backend ('inductor' on GPUs)")
    freeze_norm_stats: bool = Field(
        default=True,
        description="keep BatchNorm running statistics fixed (CNN backbones): every batch is single-domain, so "
        "updated statistics would follow whichever domain was drawn last. No effect on ViTs (LayerNorm).",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill what ``method``'s preset sets and the caller did not (nested configs merged field by field)."""
        if not isinstance(data, dict) or data.get("method", "udon") not in METHODS:
            return data
        spec = METHODS[data.get("method", "udon")]
        merged = dict(data)
        for key, value in spec.preset.items():
            given = merged.get(key)
            if isinstance(value, dict):
                given = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else (given or {})
                merged[key] = {**value, **given}
            elif key not in merged:
                merged[key] = value
        if spec.derived is not None:  # what depends on the run's own settings (its batch, its length)
            for key, value in spec.derived(lambda k: merged.get(k, cls.model_fields[k].default)).items():
                merged.setdefault(key, value)
        return merged

    @property
    def trains_teacher_heads(self) -> bool:
        """Whether the online teacher heads learn (UDON); otherwise they stay at their random init."""
        return METHODS[self.method].online_teacher_heads and self.loss.teacher_ce_weight > 0

    @model_validator(mode="after")
    def _method_has_what_it_needs(self) -> "TrainConfig":
        spec = METHODS[self.method]
        spec.check(self)
        if not spec.distillation_only and sum(self.loss.weights().values()) <= 0:
            raise InvalidValueError("at least one loss weight must be positive (only unic may set them all to 0: "
                                    "distillation alone, as published)")
        return self
