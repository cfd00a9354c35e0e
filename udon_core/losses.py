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
    relational_chunks: int = Field(default=4, ge=1, description="devices of the original run (coeff = n_devices / 4)")
    teacher_ce_weight: float = Field(default=1.0, ge=0)
    student_ce_weight: float = Field(default=1.0, ge=0)
    kl_weight: float = Field(default=1.0, ge=0)
    relational_weight: float = Field(default=1.0, ge=0)
    distill_detach_backbone: bool = Field(
        default=False,
        description="False = official code (distillation reaches the backbone); True = paper Fig. 2 (student head only)",
    )


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """``[B, C]`` cosines -> scaled logits with the configured margin on the target class."""
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

    The official code takes log(softmax(.)); log_softmax is the same value without the underflow.
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

    'chunks': the batch is split into ``relational_chunks`` sub-batches (the per-device batches of the
    original 4-device run) and the per-chunk losses are averaged. 'full': all B x B pairs with the same
    per-entry scale, i.e. (1 / (chunks * B)) * sum over B x B, which is the official single-device value.
    """
    if cfg.relational == "full":
        return _relational_block(student, teacher) / cfg.relational_chunks
    chunks = min(cfg.relational_chunks, student.shape[0])
    parts = zip(student.chunk(chunks), teacher.chunk(chunks))
    return torch.stack([_relational_block(s, t) for s, t in parts]).mean()


def precision_at_1(cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch whose highest cosine is the true class."""
    return (cos.argmax(dim=-1) == labels).float().mean()
