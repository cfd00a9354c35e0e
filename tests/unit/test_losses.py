"""UDON's losses on tiny hand-made tensors, against values worked out by hand or by an explicit formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from udon_core.methods.losses import (
    LossConfig,
    classification_loss,
    kl_distillation,
    margin_logits,
    relational_distillation,
)


def test_normface_is_cross_entropy_of_16_cos():
    cos = torch.tensor([[0.1, 0.0], [0.2, 0.5]])
    # row 0: logits [1.6, 0], target 0 -> log(1 + e^-1.6); row 1: logits [3.2, 8], target 1 -> log(1 + e^-4.8)
    expected = (math.log1p(math.exp(-1.6)) + math.log1p(math.exp(-4.8))) / 2
    assert classification_loss(cos, torch.tensor([0, 1]), LossConfig()).item() == pytest.approx(expected, rel=1e-6)


def test_margins_only_touch_the_target_class():
    cos = torch.tensor([[0.5, 0.2]])
    cosface = margin_logits(cos, torch.tensor([0]), LossConfig(margin_type="cosface", margin=0.1, scale=1.0))
    assert cosface.tolist()[0] == pytest.approx([0.4, 0.2])
    arc = margin_logits(cos, torch.tensor([0]), LossConfig(margin_type="arcface", margin=0.1, scale=2.0))
    assert arc.tolist()[0] == pytest.approx([2 * math.cos(math.acos(0.5) + 0.1), 0.4], rel=1e-5)
    assert margin_logits(cos, torch.tensor([0]), LossConfig(margin=0.3)).tolist()[0] == pytest.approx([8.0, 3.2])


def test_kl_on_cosines_over_temperature_hand_value():
    # teacher softmax([1, 0]), student softmax([0, 1]): KL = s(1)*1 + s(-1)*(-1) = s(1) - s(-1) = tanh(0.5)
    # second row: identical distributions -> 0; the batch mean is tanh(0.5) / 2
    student = torch.tensor([[0.0, 0.1], [0.3, -0.2]])
    teacher = torch.tensor([[0.1, 0.0], [0.3, -0.2]])
    assert kl_distillation(student, teacher, temperature=0.1).item() == pytest.approx(math.tanh(0.5) / 2, rel=1e-5)


def test_kl_is_forward_kl_from_teacher_to_student():
    s, t = torch.tensor([[0.2, -0.1, 0.4]]), torch.tensor([[0.5, 0.0, -0.3]])
    p, q = F.softmax(t / 0.1, -1), F.softmax(s / 0.1, -1)
    expected = (p * (p.log() - q.log())).sum()  # sum_c p_t (log p_t - log p_u)
    assert kl_distillation(s, t, 0.1).item() == pytest.approx(expected.item(), rel=1e-5)


E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_relational_chunks_emulate_the_per_device_blocks_by_hand():
    student = torch.tensor([E1, E2, E1, E1])
    teacher = torch.tensor([E1, E1, E1, E1])
    cfg = LossConfig(relational_chunks=2)
    # chunk 1: S_s = I, S_t = ones -> sum of squares 2, / 2 = 1; chunk 2: identical -> 0; mean 0.5
    assert relational_distillation(student, teacher, cfg).item() == pytest.approx(0.5)
    # full batch: 6 off-diagonal entries differ by 1 -> 6 / (chunks * B) = 6 / 8
    full = relational_distillation(student, teacher, cfg.model_copy(update={"relational": "full"}))
    assert full.item() == pytest.approx(0.75)


def test_relational_4x32_is_the_block_diagonal_of_the_full_batch():
    torch.manual_seed(0)
    s = F.normalize(torch.randn(128, 8), dim=1)
    t = F.normalize(torch.randn(128, 8), dim=1)
    sq = (s @ s.T - t @ t.T) ** 2                      # [128, 128] squared similarity errors
    block = torch.block_diag(*[torch.ones(32, 32)] * 4)  # the pairs one device of the 4 x 32 run saw
    # default: mean over the 4 devices of (1/32) * sum over its 32 x 32 block
    expected_chunks = (sq * block).sum() / 32 / 4
    assert relational_distillation(s, t, LossConfig()).item() == pytest.approx(expected_chunks.item(), rel=1e-5)
    # 'full': the official single-device value, coeff (1/4) * (1/128) * sum over all pairs
    expected_full = sq.sum() / 4 / 128
    full = relational_distillation(s, t, LossConfig(relational="full"))
    assert full.item() == pytest.approx(expected_full.item(), rel=1e-5)


def test_relational_chunks_of_an_uneven_batch_differ_by_at_most_one():
    s = torch.tensor([E1, E2, E1, E2, E1, E2])
    t = torch.tensor([E1, E1, E1, E1, E1, E1])
    # 4 chunks of sizes 2, 2, 1, 1: the first two each have 2 differing pairs -> 2/2 = 1; singletons -> 0
    assert relational_distillation(s, t, LossConfig()).item() == pytest.approx(0.5)


def test_teacher_is_detached_in_both_distillation_losses():
    s = torch.tensor([[0.2, 0.1]], requires_grad=True)
    t = torch.tensor([[0.1, 0.3]], requires_grad=True)
    kl_distillation(s, t, 0.1).backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0
    es = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    et = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    relational_distillation(es, et, LossConfig()).backward()
    assert et.grad is None and es.grad is not None and es.grad.abs().sum() > 0


def test_weights_must_not_all_be_zero_unless_the_method_distils_frozen_teachers():
    from udon_core.training import TrainConfig

    assert LossConfig().weights() == {"teacher_ce": 1.0, "student_ce": 1.0, "kl": 1.0, "relational": 1.0}
    zero = {"teacher_ce_weight": 0, "student_ce_weight": 0, "kl_weight": 0, "relational_weight": 0}
    with pytest.raises(ValueError, match="at least one loss weight"):
        TrainConfig(loss=zero)
    teacher = {"name": "t", "timm_model": "test_vit", "img_size": 16}
    assert TrainConfig(method="unic", loss=zero, unic={"teachers": [teacher]}).loss.weights()["student_ce"] == 0
