"""UDON: per-domain teacher heads trained online on the shared backbone teach the 64-d student head.

``UdonTask`` is also the UnED baselines' objective (udon_core/methods/baselines.py): with the teacher loss
weights at 0 only the student head's NormFace CE remains.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
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
from udon_core.model.udon_model import UdonModel


class UdonTask(Task):
    """Online distillation: per-domain teacher heads teach the shared 64-d student head.

    Loss of a batch of domain d (research/udon.md section 2), weights w (all 1 by default):
    ``(w1 CE(16 cos_t) + w2 CE(16 cos_u) + w3 KL(sg(cos_t)/0.1 || cos_u/0.1) + w4 L_rel) / sum(w)``.
    With the three teacher weights at 0 the teachers do not run and this is the UnED baselines' objective
    (a 64-d projection trained by NormFace CE alone).

    Args:
        student_head_group: optimiser group of the student projection: 'heads' (UDON) or 'backbone' (the
            UnED baselines, whose ``params_early_train = ['output_projection']`` leaves it with the backbone).
        student_classifier: 'separate' (one cosine classifier per domain) or 'joint' (the UJC baselines: one
            classifier over the union of all domains' classes, labels offset by the classes before the domain;
            built from the per-domain weights side by side, so every domain's rows see every batch).
    """

    def __init__(self, model: UdonModel, loss: LossConfig, student_head_group: Literal["heads", "backbone"] = "heads",
                 student_classifier: Literal["separate", "joint"] = "separate"):
        super().__init__()
        self.model = model
        self.loss = loss
        self.student_head_group = student_head_group
        self.student_classifier = student_classifier
        if student_classifier == "joint" and self.uses_teachers:
            raise InvalidValueError("a joint student classifier is a UnED baseline: it has no teachers to distil from "
                             "(set the teacher_ce, kl and relational weights to 0, or use 'separate')")
        sizes = [model.student_classifiers[d].weight.shape[0] for d in model.domains]
        self._offsets = dict(zip(model.domains, [sum(sizes[:i]) for i in range(len(sizes))], strict=True))

    @property
    def uses_teachers(self) -> bool:
        w = self.loss
        return w.teacher_ce_weight > 0 or w.kl_weight > 0 or w.relational_weight > 0

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """'heads' (projections + classifiers) and 'backbone' (everything else), as the official masks.

        why: ``params_early_train = ['output_projection', 'teacher_projection_domain',
        'universal_student_projection_domain']`` selects the heads; all the rest is the backbone.
        """
        m = self.model
        heads = [m.teachers, m.student_classifiers, m.teacher_classifiers]
        backbone = [m.backbone]
        (heads if self.student_head_group == "heads" else backbone).insert(0, m.student)
        return {"heads": [p for mod in heads for p in mod.parameters()],
                "backbone": [p for mod in backbone for p in mod.parameters()]}

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """Head parameters a batch of ``domain`` does not touch (other domains' heads and classifiers).

        Teacher heads that never run (student-only objective) are left out: they are not trained at all.
        """
        m = self.model
        kinds = [m.student_classifiers] if self.student_classifier == "separate" else []
        kinds += [m.teachers, m.teacher_classifiers] if self.uses_teachers else []
        return [p for d in self.domains if d != domain for kind in kinds for p in kind[d].parameters()]

    def _student_logits(self, student: torch.Tensor, labels: torch.Tensor,
                        domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Student cosines ``[B, C]`` and their targets: the domain's classes, or all domains' (joint)."""
        classifiers = self.model.student_classifiers
        if self.student_classifier == "separate":
            return classifiers[domain](student), labels
        cos = torch.cat([classifiers[d](student) for d in self.domains], dim=1)
        return cos, labels + self._offsets[domain]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """Losses of one batch ``images [B, 3, S, S]``, ``labels [B]`` (class ids of ``domain``).

        Returns 'loss' (the total, with grad), 'loss/<term>' for each term and 'prec1/{teacher,student}'.
        Only ``domain``'s teacher head and classifiers run. The backbone runs under the caller's autocast;
        heads and losses run in float32 (the official model is float32 throughout, and bf16 cosines
        scaled by 16 or divided by 0.1 would lose most of their resolution).
        """
        cfg, m = self.loss, self.model
        feats = m.features(images)
        with torch.autocast(images.device.type, enabled=False):
            student = m.student(feats)
            s_cos, s_labels = self._student_logits(student, labels, domain)
            terms = {"student_ce": classification_loss(s_cos, s_labels, cfg)}
            out = {"prec1/student": precision_at_1(s_cos.detach(), s_labels)}
            if self.uses_teachers:
                teacher = m.teachers[domain](feats)
                t_cos = m.teacher_classifiers[domain](teacher)
                if cfg.distill_detach_backbone:
                    # why: the paper's Fig. 2 stops distillation at the student head; the official code does not.
                    d_student = m.student(feats.detach())
                    d_cos = m.student_classifiers[domain](d_student)
                else:
                    d_student, d_cos = student, s_cos
                terms["teacher_ce"] = classification_loss(t_cos, labels, cfg)
                terms["kl"] = kl_distillation(d_cos, t_cos, cfg.temperature)
                terms["relational"] = relational_distillation(d_student, teacher, cfg)
                out["prec1/teacher"] = precision_at_1(t_cos.detach(), labels)
            weights = cfg.weights()
            total = sum(weights[k] * v for k, v in terms.items()) / sum(weights[k] for k in terms)
        return {"loss": total, **{f"loss/{k}": v.detach() for k, v in terms.items()}, **out}


# The loss weights of the student-only objective: no teacher head runs.
NO_TEACHERS: dict[str, Any] = {"teacher_ce_weight": 0.0, "kl_weight": 0.0, "relational_weight": 0.0}


def build_udon_task(model: UdonModel, cfg: TrainSettings, loss: LossConfig, rank: int = 0) -> UdonTask:
    """``UdonTask`` with the run's head group and classifier layout (``rank`` plays no part)."""
    return UdonTask(model, loss, student_head_group=cfg.student_head_group, student_classifier=cfg.student_classifier)


METHODS = (MethodSpec("udon", build=build_udon_task, online_teacher_heads=True),)
