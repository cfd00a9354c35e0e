"""UDON's four losses, exactly as the official code computes them (research/udon.md section 2).

All inputs are cosine similarities or unit vectors of ONE single-domain batch of B images.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class LossConfig(BaseModel):
    """Loss hyper-parameters; defaults are the official code's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    margin_type: Literal["normface", "arcface", "cosface"] = "normface"
    scale: float = Field(default=16.0, gt=0, description="logit scale of the classification losses (UDON: 16)")
    margin: float = Field(default=0.0, ge=0, description="angular/additive margin (UDON: 0)")
    temperature: float = Field(default=0.1, gt=0, description="KL temperature on raw cosines, teacher and student")
    relational: Literal["chunks", "full"] = Field(
        default="chunks", description="'chunks' emulates the official 4 devices x 32 images; 'full' uses all pairs"
    )
    # why: the official loss is coeff * (1/b) * sum over the per-device b x b block with coeff = n_devices / 4,
    # "to match original implem. that was using 4 devices": 4 chunks of 32 at the global batch of 128.
    relational_chunks: int = Field(default=4, ge=1, description="devices of the original run (coeff = n_devices / 4)")
    # why: all four weights are 1.0 and the total is divided by their sum (udon_model.loss_function).
    teacher_ce_weight: float = Field(default=1.0, ge=0)
    student_ce_weight: float = Field(default=1.0, ge=0)
    kl_weight: float = Field(default=1.0, ge=0)
    relational_weight: float = Field(default=1.0, ge=0)
    distill_detach_backbone: bool = Field(
        default=False,
        description="False = official code (distillation reaches the backbone); "
        "True = paper Fig. 2 (distillation trains the student head only)",
    )

    def weights(self) -> dict[str, float]:
        """Loss term name -> weight; the total is the weighted mean of the terms."""
        return {"teacher_ce": self.teacher_ce_weight, "student_ce": self.student_ce_weight, "kl": self.kl_weight,
                "relational": self.relational_weight}


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """``[B, C]`` cosines -> scaled logits with the configured margin on the target class.

    As ``loss_utils._transform_logits``: NormFace s*cos; CosFace s*(cos - m) and ArcFace s*cos(theta + m) on
    the target only (no "easy margin"; the clamp only keeps acos finite at +-1).
    """
    if cfg.margin == 0 or cfg.margin_type == "normface":
        return cfg.scale * cos
    target = F.one_hot(labels, cos.shape[1]).bool()
    if cfg.margin_type == "cosface":
        return cfg.scale * torch.where(target, cos - cfg.margin, cos)
    theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return cfg.scale * torch.where(target, torch.cos(theta + cfg.margin), cos)


def classification_loss(cos: torch.Tensor, labels: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """NormFace cross-entropy (mean over the batch) on ``[B, C]`` cosines."""
    return F.cross_entropy(margin_logits(cos, labels, cfg), labels)


def kl_distillation(student_cos: torch.Tensor, teacher_cos: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of softmax(cos / T), teacher detached, summed over classes, mean over B.

    Inputs are the raw ``[B, C]`` cosines (not the scale-16 logits): T = 0.1 is an effective scale of 10.
    The official code takes log(softmax(.)) (udon_logits_distillation_loss); log_softmax is the same value
    without the underflow to log(0) that a peaked softmax over 224k Met classes can hit.
    """
    log_pt = F.log_softmax(teacher_cos.detach() / temperature, dim=-1)
    log_ps = F.log_softmax(student_cos / temperature, dim=-1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1).mean()


def _relational_block(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """(1/b) * sum_ij (S_s - sg(S_t))^2 over one b x b block of in-batch cosine similarities."""
    s_student = es @ es.T
    s_teacher = (et @ et.T).detach()
    return ((s_student - s_teacher) ** 2).sum() / es.shape[0]


def relational_distillation(student: torch.Tensor, teacher: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Match the student's in-batch similarity matrix to the teacher's (diagonal included).

    ``student [B, d_u]`` and ``teacher [B, d_t]`` are unit vectors. 'chunks': the batch is split into
    ``relational_chunks`` consecutive sub-batches of B / chunks images (the per-device batches of the
    original 4-device run; sizes differ by at most one when B is not a multiple) and the per-chunk
    (1/b) * sum(dS^2) are averaged, which is what the pmean of the per-device gradients optimised.
    'full': all B x B pairs at the same per-entry scale, (1 / (chunks * B)) * sum(dS^2), which is the
    official code's own value on one device.
    """
    if cfg.relational == "full":
        return _relational_block(student, teacher) / cfg.relational_chunks
    chunks = min(cfg.relational_chunks, student.shape[0])
    parts = zip(student.tensor_split(chunks), teacher.tensor_split(chunks))
    return torch.stack([_relational_block(s, t) for s, t in parts]).mean()


def precision_at_1(cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch whose highest cosine is the true class (the official ``prec@1`` on raw logits)."""
    return (cos.argmax(dim=-1) == labels).float().mean()
