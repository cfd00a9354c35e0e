"""UDON's losses on tiny hand-made tensors, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from udon_core.losses import LossConfig, classification_loss, kl_distillation, margin_logits, relational_distillation


def test_normface_is_cross_entropy_of_16_cos():
    cos = torch.tensor([[0.1, 0.0]])
    # logits [1.6, 0] -> CE = log(1 + e^-1.6)
    assert classification_loss(cos, torch.tensor([0]), LossConfig()).item() == pytest.approx(math.log1p(math.exp(-1.6)), rel=1e-6)


def test_margins_only_touch_the_target_class():
    cos = torch.tensor([[0.5, 0.2]])
    cosface = margin_logits(cos, torch.tensor([0]), LossConfig(margin_type="cosface", margin=0.1, scale=1.0))
    assert cosface.tolist()[0] == pytest.approx([0.4, 0.2])
    arc = margin_logits(cos, torch.tensor([0]), LossConfig(margin_type="arcface", margin=0.1, scale=1.0))
    assert arc.tolist()[0] == pytest.approx([math.cos(math.acos(0.5) + 0.1), 0.2], rel=1e-5)


def test_kl_on_cosines_over_temperature_hand_value():
    # teacher softmax([1, 0]), student softmax([0, 1]) -> KL = (s(1) - s(-1)) * 1 = tanh(0.5)
    kl = kl_distillation(torch.tensor([[0.0, 0.1]]), torch.tensor([[0.1, 0.0]]), temperature=0.1)
    assert kl.item() == pytest.approx(math.tanh(0.5), rel=1e-5)
    same = kl_distillation(torch.tensor([[0.3, -0.2]]), torch.tensor([[0.3, -0.2]]), 0.1)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_relational_chunks_emulate_the_per_device_blocks():
    student = torch.tensor([E1, E2, E1, E1])
    teacher = torch.tensor([E1, E1, E1, E1])
    cfg = LossConfig(relational_chunks=2)
    # chunk 1: S_s = I, S_t = ones -> sum of squares 2, / 2 = 1; chunk 2: identical -> 0; mean 0.5
    assert relational_distillation(student, teacher, cfg).item() == pytest.approx(0.5)
    # full batch: 6 off-diagonal entries differ by 1 -> 6 / (chunks * B) = 6 / 8
    full = relational_distillation(student, teacher, cfg.model_copy(update={"relational": "full"}))
    assert full.item() == pytest.approx(0.75)


def test_relational_full_equals_chunks_per_entry_scale_at_uniform_error():
    torch.manual_seed(0)
    s = F.normalize(torch.randn(128, 8), dim=1)
    t = F.normalize(torch.randn(128, 8), dim=1)
    chunks = relational_distillation(s, t, LossConfig())
    full = relational_distillation(s, t, LossConfig(relational="full"))
    # both are 32 x (mean squared entry error), over different sets of pairs: same order of magnitude
    assert 0.5 < (chunks / full).item() < 2.0


def test_teacher_is_detached_in_both_distillation_losses():
    s = torch.tensor([[0.2, 0.1]], requires_grad=True)
    t = torch.tensor([[0.1, 0.3]], requires_grad=True)
    kl_distillation(s, t, 0.1).backward()
    assert t.grad is None and s.grad is not None
    es = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    et = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    relational_distillation(es, et, LossConfig()).backward()
    assert et.grad is None and es.grad is not None
