"""The UDON objective as a method object: forward + every loss term for one single-domain batch.

The training loop only knows ``task(images, labels, domain) -> {"loss": ..., other scalars}`` and
``task.param_groups()``, so another objective (e.g. UNIC distillation from frozen teachers) plugs in
without touching the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from udon_core.losses import LossConfig, classification_loss, kl_distillation, precision_at_1, relational_distillation
from udon_core.model import UdonModel


class UdonTask(nn.Module):
    """Online distillation: per-domain teacher heads teach the shared 64-d student head."""

    def __init__(self, model: UdonModel, loss: LossConfig) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    @property
    def domains(self) -> list[str]:
        return self.model.domains

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """'heads' (projections + classifiers) and 'backbone' (everything else), as the official masks."""
        heads = [p for m in self.model.head_modules() for p in m.parameters()]
        return {"heads": heads, "backbone": list(self.model.backbone.parameters())}

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """Head parameters this batch does not touch (other domains' heads and classifiers)."""
        return [p for d in self.domains if d != domain for p in self.model.domain_head_parameters(d)]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """Losses of one batch ``images [B,3,S,S]``, ``labels [B]`` of ``domain``; 'loss' is the total."""
        cfg, m = self.loss, self.model
        feats = m.features(images)
        student = m.student(feats)
        teacher = m.teachers[domain](feats)
        s_cos = m.student_classifiers[domain](student)
        t_cos = m.teacher_classifiers[domain](teacher)
        # why: the paper's Fig. 2 stops distillation at the student head; the official code does not.
        d_student = m.student(feats.detach()) if cfg.distill_detach_backbone else student
        d_cos = m.student_classifiers[domain](d_student) if cfg.distill_detach_backbone else s_cos
        terms = {
            "teacher_ce": classification_loss(t_cos, labels, cfg),
            "student_ce": classification_loss(s_cos, labels, cfg),
            "kl": kl_distillation(d_cos, t_cos, cfg.temperature),
            "relational": relational_distillation(d_student, teacher, cfg),
        }
        weights = {"teacher_ce": cfg.teacher_ce_weight, "student_ce": cfg.student_ce_weight,
                   "kl": cfg.kl_weight, "relational": cfg.relational_weight}
        total = sum(weights[k] * v for k, v in terms.items()) / sum(weights.values())
        out = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()}}
        out["prec1/teacher"] = precision_at_1(t_cos.detach(), labels)
        out["prec1/student"] = precision_at_1(s_cos.detach(), labels)
        # The dynamic sampler's signal: the teacher's per-example CE, summed over the batch.
        out["sampler_loss_sum"] = terms["teacher_ce"].detach() * labels.shape[0]
        return out
