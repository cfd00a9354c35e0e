"""Which training objective (task) a run uses: UDON, a UnED baseline, UNIC, UDON+UNIC or UDON's offline-teacher
ablation. The training loop only sees the task protocol (udon_core/task.py), so this is the one place a
method name becomes code.

- ``udon`` and the UnED baselines (``uscrr``, ``ujcrr``, ..., ``specialist``): ``UdonTask``.
- ``unic``: UNIC's ladder of projectors distilling frozen generic teachers, plus the NormFace-trained 64-d
  student head as a separately weighted term: ``CombinedTask(student-only UdonTask, UnicTask)``; with every
  loss weight at 0 (``loss.student_ce_weight: 0``), UNIC as published, distillation only: ``UnicTask``.
- ``udon+unic``: online UDON plus the UNIC loss on the shared backbone: ``CombinedTask(UdonTask, UnicTask)``.
- ``udon-offline``: the UDON paper's "separate teachers" ablation, frozen per-domain specialists distilled with
  UDON's logit and relational losses: ``OfflineUdonTask``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from udon_core.losses import LossConfig
from udon_core.model import UdonModel
from udon_core.offline import OfflineUdonTask
from udon_core.task import UdonTask
from udon_core.teachers import FrozenTeacher, Normalization, create_teachers
from udon_core.unic import CombinedTask, UnicTask
from udon_core.errors import InvalidValueError

if TYPE_CHECKING:
    from udon_core.trainer import TrainConfig

UNIC_METHODS = ("unic", "unic-published", "udon+unic")


def load_specialists(folders: dict[str, str], domains: list[str]) -> tuple[dict[str, FrozenTeacher],
                                                                          dict[str, torch.Tensor]]:
    """Frozen specialists for ``udon-offline`` from training-model folders (``UdonModel.save``): per domain the
    specialist's backbone + 64-d student head as the teacher, and its student classifier ``[C_d, 64]`` for KL.

    A specialist folder is what a ``specialist`` run writes (``<checkpoint dir>/training_model``, or the
    pipeline's ``training_model`` artifact); it must have been trained on that domain.
    """
    missing = [d for d in domains if d not in folders]
    if missing:
        raise InvalidValueError(f"udon-offline needs a specialist for every domain: none for {missing} (train.specialists)")
    teachers, weights = {}, {}
    for domain in domains:
        specialist = UdonModel.load(Path(folders[domain]))
        if domain not in specialist.domains:
            raise InvalidValueError(f"{folders[domain]}: the specialist for '{domain}' was trained on {specialist.domains}")
        pre = specialist.config.preprocess
        teachers[domain] = FrozenTeacher(domain, specialist.backbone, Normalization(pre.mean, pre.std),
                                         pre.image_size, head=specialist.student, interpolation="bilinear")
        weights[domain] = specialist.student_classifiers[domain].weight.detach().clone()
    return teachers, weights


def build_task(model: UdonModel, cfg: TrainConfig, loss: LossConfig, rank: int = 0) -> nn.Module:
    """The task ``cfg.method`` trains ``model`` with (``loss`` is the per-rank loss configuration, ``rank``
    this process's data-parallel rank)."""
    if cfg.method == "udon-offline":
        teachers, class_weights = load_specialists(dict(cfg.specialists), model.domains)
        return OfflineUdonTask(model, teachers, class_weights, loss)
    if cfg.method in UNIC_METHODS:
        unic = UnicTask(model, create_teachers(cfg.unic.teachers), cfg.unic, cfg.steps, seed=cfg.seed, rank=rank)
        if sum(loss.weights().values()) == 0:
            return unic  # UNIC as published: distillation only, no retrieval head trained
    udon = UdonTask(model, loss, student_head_group=cfg.student_head_group, student_classifier=cfg.student_classifier)
    return udon if cfg.method not in UNIC_METHODS else CombinedTask(udon, unic, cfg.unic.aux_weight)
