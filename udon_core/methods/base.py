"""What a training method is: the task the loop drives, and the spec that turns a method name into one.

The training loop knows an objective only through ``Task``: ``task(images, labels, domain) -> {"loss":
total, other scalars}``, ``task.param_groups()`` and ``task.inactive_head_parameters(domain)`` (timm's
"task" pattern). A method is a ``MethodSpec``: its name, the settings it changes (its preset), what it
requires of the run, and how it builds its task. Each method's spec lives in its own file beside its task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from udon_core.methods.losses import LossConfig
from udon_core.model.udon_model import UdonModel


class TrainSettings(Protocol):
    """The training settings a method reads (``udon_core.training.TrainConfig`` has them all)."""

    method: str
    steps: int
    seed: int
    domains: tuple[str, ...] | None
    loss: LossConfig
    student_head_group: str
    student_classifier: str
    unic: Any
    specialists: Mapping[str, str]


class Task(nn.Module):
    """One training objective over a ``UdonModel``: every loss term of one single-domain batch."""

    model: UdonModel

    @property
    def domains(self) -> list[str]:
        """The domains the task trains, in the model's order (the sampler draws their indices)."""
        return self.model.domains

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups by name ('heads', 'backbone'); the loop sets each group's learning rate."""
        raise NotImplementedError

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """Parameters a batch of ``domain`` does not touch; the loop gives them zero gradients, as optax."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """Losses of ``images [B, 3, S, S]`` with ``labels [B]`` of ``domain``: 'loss' (the total, with grad)
        and any other scalars to log."""
        raise NotImplementedError


TaskBuilder = Callable[[UdonModel, TrainSettings, LossConfig, int], Task]


def no_requirements(cfg: TrainSettings) -> None:
    """A method that runs with any settings."""


@dataclass(frozen=True)
class MethodSpec:
    """A training method: its preset, its requirements and how it builds its task.

    Attributes:
        name: the value of ``train.method``.
        build: ``(model, settings, per-rank loss config, rank) -> Task``.
        preset: what the method changes from the UDON defaults; explicit settings override it (nested
            configs field by field).
        derived: defaults computed from the run's own settings (``value(key)`` reads a setting, given or
            default), applied after the preset.
        check: raises ``InvalidValueError`` naming the setting a run of this method is missing.
        online_teacher_heads: whether the per-domain teacher heads are trained (then the oracle-teacher
            evaluation means something).
        distillation_only: whether every loss weight may be 0 (the task has a loss of its own).
    """

    name: str
    build: TaskBuilder
    preset: Mapping[str, Any] = field(default_factory=dict)
    derived: Callable[[Callable[[str], Any]], dict[str, Any]] | None = None
    check: Callable[[TrainSettings], None] = no_requirements
    online_teacher_heads: bool = False
    distillation_only: bool = False
