"""UDON's "separate teachers" ablation (research/udon.md section 6): the student learns from frozen,
separately trained per-domain specialists with UDON's logit and relational losses, instead of from
teacher heads trained online on the shared backbone.

Per batch of domain d: ``(w_s CE(16 cos_u) + w_kl KL(cos_t / 0.1 || cos_u / 0.1) + w_rel L_rel(u, t)) / sum(w)``
with ``t`` the frozen specialist's unit embedding of the batch and ``cos_t`` its cosines to its own class
weights. There is no teacher CE: the teachers are not trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from udon_core.errors import InvalidValueError
from udon_core.methods.base import MethodSpec, Task, TrainSettings
from udon_core.methods.losses import (
    LossConfig,
    classification_loss,
    kl_distillation,
    precision_at_1,
    relational_distillation,
)
from udon_core.model.teachers import FrozenTeacher, Normalization
from udon_core.model.udon_model import UdonModel

OFFLINE_TERMS = ("student_ce", "kl", "relational")


class OfflineUdonTask(Task):
    """Distil one frozen specialist per domain into ``model``'s backbone and 64-d student head.

    Args:
        model: the student; its online teacher heads and teacher classifiers are not used.
        teachers: domain -> frozen specialist with an embedding head (an exported udon model).
        class_weights: domain -> the specialist's cosine-classifier weights ``[C_d, d_t]`` for that domain
            (rows are L2-normalised here, as ``CosineClassifier`` does).
        loss: UDON's loss settings; ``teacher_ce_weight`` is ignored.
    """

    def __init__(self, model: UdonModel, teachers: dict[str, FrozenTeacher], class_weights: dict[str, torch.Tensor],
                 loss: LossConfig) -> None:
        super().__init__()
        for name, table in (("teachers", teachers), ("class_weights", class_weights)):
            missing = sorted(set(model.domains) - set(table))
            if missing:
                raise InvalidValueError(f"OfflineUdonTask: no {name} for domains {missing}")
        for d in model.domains:
            if teachers[d].head is None:
                raise InvalidValueError(f"teacher of domain {d!r} has no embedding head (use an exported udon model)")
            n_classes = model.student_classifiers[d].weight.shape[0]
            if class_weights[d].ndim != 2 or class_weights[d].shape[0] != n_classes:
                found = tuple(class_weights[d].shape)
                raise InvalidValueError(f"class weights of domain {d!r}: shape {found}, the domain has {n_classes} classes")
        if sum(loss.weights()[k] for k in OFFLINE_TERMS) <= 0:
            raise InvalidValueError("udon-offline needs a positive student_ce, kl or relational weight")
        self.model, self.loss = model, loss
        self.teachers = nn.ModuleDict({d: teachers[d] for d in model.domains})
        for d in model.domains:
            # non-persistent: like the teachers, they come from the specialists, not from checkpoints
            self.register_buffer(f"class_weights_{d}", F.normalize(class_weights[d].float(), dim=1), persistent=False)
        pre = model.config.preprocess
        self.student_norm = Normalization(pre.mean, pre.std)
        self.to(next(model.parameters()).device)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """'heads': the student head and classifiers; 'backbone': the backbone. Teachers are in no group."""
        m = self.model
        heads = [p for mod in (m.student, m.student_classifiers) for p in mod.parameters()]
        return {"heads": heads, "backbone": list(m.backbone.parameters())}

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """Other domains' student classifiers (untouched by a batch of ``domain``)."""
        m = self.model
        return [p for d in self.domains if d != domain for p in m.student_classifiers[d].parameters()]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """Losses of one batch of ``domain``: 'loss', 'loss/<term>', 'prec1/{student,teacher}'.

        The teacher's terms are computed with no grad; heads and losses in float32, as ``UdonTask``.
        """
        cfg, m = self.loss, self.model
        feats = m.features(images)
        teacher = self.teachers[domain](images, self.student_norm).embedding
        with torch.autocast(images.device.type, enabled=False):
            t_cos = teacher @ getattr(self, f"class_weights_{domain}").T
            student = m.student(feats)
            s_cos = m.student_classifiers[domain](student)
            d_student = m.student(feats.detach()) if cfg.distill_detach_backbone else student
            d_cos = m.student_classifiers[domain](d_student) if cfg.distill_detach_backbone else s_cos
            terms = {"student_ce": classification_loss(s_cos, labels, cfg),
                     "kl": kl_distillation(d_cos, t_cos, cfg.temperature),
                     "relational": relational_distillation(d_student, teacher, cfg)}
            weights = cfg.weights()
            total = sum(weights[k] * terms[k] for k in OFFLINE_TERMS) / sum(weights[k] for k in OFFLINE_TERMS)
        return {"loss": total, **{f"loss/{k}": v.detach() for k, v in terms.items()},
                "prec1/student": precision_at_1(s_cos.detach(), labels), "prec1/teacher": precision_at_1(t_cos, labels)}


def load_specialists(folders: dict[str, str], domains: list[str]) -> tuple[dict[str, FrozenTeacher],
                                                                          dict[str, torch.Tensor]]:
    """Frozen specialists from training-model folders (``UdonModel.save``): per domain the specialist's
    backbone + 64-d student head as the teacher, and its student classifier ``[C_d, 64]`` for KL.

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


def build_offline_task(model: UdonModel, cfg: TrainSettings, loss: LossConfig, rank: int = 0) -> OfflineUdonTask:
    """``OfflineUdonTask`` over the specialists named in ``cfg.specialists``."""
    teachers, class_weights = load_specialists(dict(cfg.specialists), model.domains)
    return OfflineUdonTask(model, teachers, class_weights, loss)


def _has_specialists(cfg: TrainSettings) -> None:
    if not cfg.specialists:
        raise InvalidValueError("method 'udon-offline' distils per-domain specialists: set specialists "
                                "{domain: <training_model folder of its specialist run>}")


# No online teacher CE exists: the dynamic sampler follows the student's CE (the official alternative).
METHODS = (MethodSpec("udon-offline", build=build_offline_task, preset={"sampler": {"signal": "loss/student_ce"}},
                      check=_has_specialists),)
