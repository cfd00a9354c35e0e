"""UNIC pieces against hand computations, and UnicTask / CombinedTask on tiny random ViTs."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from udon_core.data import Preprocess
from udon_core.methods import LossConfig, UdonTask
from udon_core.methods.unic import (
    BlockCapture,
    CombinedTask,
    ProjectorLadder,
    RunningStandardizer,
    UnicConfig,
    UnicTask,
    align_patch_grid,
    ema_momentum,
    teacher_drop_weights,
    teacher_image_losses,
    token_loss,
)
from udon_core.model import BackboneConfig, ModelConfig, TeacherConfig, UdonModel, create_teachers

# A 32 px test_vit student (6 blocks, width 64, 2x2 patch grid) and two teachers with other statistics.
STUDENT = ModelConfig(backbone=BackboneConfig(name="test_vit", img_size=32), student_dim=8, teacher_dim=12,
                      preprocess=Preprocess(image_size=32))
TEACHERS = (
    TeacherConfig(name="vit_a", timm_model="test_vit", img_size=32, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225)),
    TeacherConfig(name="vit_b", timm_model="test_vit", img_size=64),  # a 4x4 grid, resampled to 2x2
)
SMALL = UnicConfig(teachers=TEACHERS, hidden_dim=16, last_hidden_dim=32)


def _task(cfg: UnicConfig = SMALL, total_steps: int = 10, rank: int = 0) -> UnicTask:
    torch.manual_seed(0)
    model = UdonModel(STUDENT, {"a": 3, "b": 4})
    return UnicTask(model, create_teachers(cfg.teachers), cfg, total_steps=total_steps, rank=rank)


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, torch.zeros(n, dtype=torch.long)


# ---------------------------------------------------------------- momentum schedule and standardisation


def test_momentum_schedule_is_the_official_cosine_from_1_to_0_001():
    assert ema_momentum(0, 100) == pytest.approx(1.0)
    assert ema_momentum(50, 100) == pytest.approx(0.001 + 0.5 * 0.999)  # cos(pi/2) = 0
    assert ema_momentum(25, 100) == pytest.approx(0.001 + 0.5 * 0.999 * (1 + math.sqrt(0.5)))
    assert ema_momentum(99, 100) == pytest.approx(0.001 + 0.5 * 0.999 * (1 + math.cos(math.pi * 0.99)))
    assert ema_momentum(500, 100) == ema_momentum(99, 100)  # past the end: the last value
    values = [ema_momentum(s, 100) for s in range(100)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_standardisation_uses_the_statistics_before_the_update_and_matches_a_hand_computation():
    std = RunningStandardizer(2)
    y1 = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])  # mean (3, 6), unbiased std (2, 4)
    out1 = std(y1, momentum=1.0)
    torch.testing.assert_close(out1, y1 / (1 + 1e-6))  # initial stats: mean 0, std 1
    torch.testing.assert_close(std.mean, torch.tensor([3.0, 6.0]))
    torch.testing.assert_close(std.std, torch.tensor([2.0, 4.0]) + 1e-6)
    y2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])  # mean (1, 2), unbiased std (sqrt 2, sqrt 8)
    out2 = std(y2, momentum=0.25)
    torch.testing.assert_close(out2, (y2 - torch.tensor([3.0, 6.0])) / (torch.tensor([2.0, 4.0]) + 2e-6))
    torch.testing.assert_close(std.mean, 0.75 * torch.tensor([3.0, 6.0]) + 0.25 * torch.tensor([1.0, 2.0]))
    expected_std = 0.75 * (torch.tensor([2.0, 4.0]) + 1e-6) + 0.25 * (torch.tensor([2.0, 8.0]).sqrt() + 1e-6)
    torch.testing.assert_close(std.std, expected_std)
    frozen = (std.mean.clone(), std.std.clone())
    std(torch.randn(5, 2), momentum=0.0)  # evaluation: no update
    torch.testing.assert_close((std.mean, std.std), frozen)
    assert sorted(std.state_dict()) == ["mean", "std"]


def test_patch_statistics_pool_images_and_tokens():
    std = RunningStandardizer(1)
    y = torch.tensor([[[1.0], [2.0]], [[3.0], [6.0]]])  # [B=2, N=2, D=1]: rows 1, 2, 3, 6
    std(y, momentum=1.0)
    assert std.mean.item() == pytest.approx(3.0)
    assert std.std.item() == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3) + 1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        RunningStandardizer(1)(torch.ones(1, 1), momentum=0.5)


# ---------------------------------------------------------------- projector ladder


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_ladder_has_one_mlp_per_block_the_last_wider_and_sums_them(depth):
    cfg = UnicConfig(hidden_dim=5, last_hidden_dim=9)
    ladder = ProjectorLadder(range(depth), depth, in_dim=6, out_dim=3, cfg=cfg)
    assert [m[0].out_features for m in ladder.mlps] == [5] * (depth - 1) + [9]
    assert all(m[0].in_features == 6 and m[2].out_features == 3 for m in ladder.mlps)
    cls = [torch.randn(2, 6) for _ in range(depth)]
    patch = [torch.randn(2, 4, 6) for _ in range(depth)]
    assert ladder(cls).shape == (2, 3) and ladder(patch).shape == (2, 4, 3)
    torch.testing.assert_close(ladder(patch), sum(m(x) for m, x in zip(ladder.mlps, patch)))
    with torch.no_grad():  # rung b outputs the constant b + 1, so the ladder gives 1 + 2 + ... + depth
        for b, mlp in enumerate(ladder.mlps):
            mlp[2].weight.zero_()
            mlp[2].bias.fill_(b + 1.0)
    torch.testing.assert_close(ladder(cls), torch.full((2, 3), depth * (depth + 1) / 2))


def test_only_the_encoder_last_block_gets_the_wide_mlp_and_init_is_the_official_one():
    ladder = ProjectorLadder([1, 3], depth=6, in_dim=64, out_dim=256, cfg=UnicConfig())
    assert [m[0].out_features for m in ladder.mlps] == [768, 768]
    wide = ProjectorLadder([2, 5], depth=6, in_dim=64, out_dim=256, cfg=UnicConfig())
    assert [m[0].out_features for m in wide.mlps] == [768, 3072]
    w = wide.mlps[1][0].weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and not wide.mlps[1][0].bias.any()
    with pytest.raises(ValueError, match="2 rungs, got 3"):
        ladder([torch.randn(1, 64)] * 3)


def test_block_capture_records_the_raw_block_outputs():
    torch.manual_seed(0)
    backbone = UdonModel(STUDENT, {"a": 2}).backbone
    x = torch.randn(2, 3, 32, 32)
    with BlockCapture(backbone.blocks, [0, 2, 5]) as cap:
        backbone(x)
    reference = backbone.forward_intermediates(x, indices=[0, 2, 5], output_fmt="NLC", intermediates_only=True,
                                               return_prefix_tokens=True)
    for got, (patch, prefix) in zip(cap.tokens(), reference):
        torch.testing.assert_close(got, torch.cat([prefix, patch], 1))  # pre-norm: no final LayerNorm
    assert not backbone.blocks[0]._forward_hooks  # hooks removed on exit
    with pytest.raises(RuntimeError, match="did not run"), BlockCapture(backbone.blocks, [1]) as empty:
        empty.tokens()


def test_patch_grid_alignment():
    patch = torch.randn(2, 4, 3)
    assert align_patch_grid(patch, (2, 2), (2, 2)) is patch
    flat = torch.tensor([1.0, 2.0, 3.0]).expand(2, 16, 3)
    torch.testing.assert_close(align_patch_grid(flat, (4, 4), (2, 2)), torch.tensor([1.0, 2.0, 3.0]).expand(2, 4, 3))
    # 2x downsampling with bilinear, align_corners=False, averages each 2x2 cell
    grid = torch.arange(16.0).view(1, 16, 1)
    torch.testing.assert_close(align_patch_grid(grid, (4, 4), (2, 2)).flatten(), torch.tensor([2.5, 4.5, 10.5, 12.5]))


# ---------------------------------------------------------------- loss and teacher dropping


def test_token_loss_on_hand_made_vectors():
    pred = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.5]])
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.5]])
    # row 0: 1 - cos = 1, smooth-L1 |d| = 1 -> 0.5 each, mean 0.5  -> 0.5 * 1 + 0.5 * 0.5
    # row 1: 1 - cos = 0, d = (1, 0) -> (0.5, 0), mean 0.25       -> 0.125
    # row 2: cos = 0.25 / (sqrt(0.5) * 0.5), d = (0.5, 0) -> 0.5 * 0.5^2 = 0.125, mean 0.0625
    cos2 = 1 - 0.25 / (math.sqrt(0.5) * 0.5)
    torch.testing.assert_close(token_loss(pred, target), torch.tensor([0.75, 0.125, 0.5 * cos2 + 0.5 * 0.0625]))
    torch.testing.assert_close(token_loss(pred, target, lam_cos=1.0, lam_sl1=0.0), torch.tensor([1.0, 0.0, cos2]))


def test_teacher_loss_averages_patches_then_token_types():
    pred = {"cls": torch.tensor([[1.0, 0.0]]), "patch": torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])}
    target = {"cls": torch.tensor([[0.0, 1.0]]), "patch": torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])}
    out = teacher_image_losses(pred, target)
    torch.testing.assert_close(out["cls"], torch.tensor([0.75]))
    torch.testing.assert_close(out["patch"], torch.tensor([(0.125 + 0.0) / 2]))
    torch.testing.assert_close(out["all"], torch.tensor([(0.75 + 0.0625) / 2]))


def test_dropping_everything_droppable_keeps_the_worst_fit_teacher_per_image():
    losses = torch.tensor([[1.0, 4.0, 0.2], [3.0, 2.0, 0.1], [0.5, 0.5, 0.3]])
    coeff = teacher_drop_weights(losses, p=1.0)
    torch.testing.assert_close(coeff, torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]) / 3)
    total = (coeff * losses).sum()
    assert total.item() == pytest.approx((3.0 + 4.0 + 0.3) / 3)
    torch.testing.assert_close(teacher_drop_weights(losses, p=0.0), torch.full((3, 3), 1 / 9))


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_teachers_are_dropped_at_the_configured_rate(p):
    g = torch.Generator().manual_seed(0)
    t, b, draws = 4, 500, 20
    kept_others, n_others = 0, 0
    for _ in range(draws):
        losses = torch.rand(t, b, generator=g)
        coeff = teacher_drop_weights(losses, p, generator=g)
        keep = coeff > 0
        worst = losses.argmax(0)
        assert keep[worst, torch.arange(b)].all()  # the highest-loss teacher of every image is kept
        torch.testing.assert_close(coeff[keep], torch.full((int(keep.sum()),), 1 / keep.sum().item()))
        assert coeff.sum().item() == pytest.approx(1.0)
        kept_others += int(keep.sum()) - b
        n_others += (t - 1) * b
    rate = 1 - kept_others / n_others
    sigma = math.sqrt(p * (1 - p) / n_others)  # binomial std of the observed drop rate
    assert abs(rate - p) < 4 * sigma


# ---------------------------------------------------------------- the task


def test_task_outputs_shapes_and_terms():
    task = _task()
    images, labels = _batch()
    out = task(images, labels, "a")
    terms = {f"loss/{n}/{k}" for n in ("vit_a", "vit_b") for k in ("cls", "patch")}
    assert terms | {"loss", "teacher_coeff/vit_a", "teacher_coeff/vit_b"} == set(out)
    assert out["loss"].requires_grad and out["loss"].ndim == 0
    assert sum(out[f"teacher_coeff/{n}"].item() for n in ("vit_a", "vit_b")) == pytest.approx(1.0)
    assert int(task.step) == 1


def test_task_loss_is_the_dropped_normalised_mean_of_hand_recomputed_teacher_losses():
    task = _task(SMALL.model_copy(update={"drop_prob": 0.0}))
    images, labels = _batch()
    torch.manual_seed(0)
    out = task(images, labels, "a")
    with BlockCapture(task.model.backbone.blocks, range(6)) as cap:
        task.model.backbone(images)
    blocks = cap.tokens()
    for name, teacher in task.teachers.items():
        t = teacher(images, task.student_norm)
        patch = align_patch_grid(t.patch, t.grid, (2, 2))
        ladders = task.projectors.ladders[name]
        pred_cls = ladders["cls"]([x[:, 0] for x in blocks])
        pred_patch = ladders["patch"]([x[:, 1:] for x in blocks])
        # step 0 standardises with the initial statistics: mean 0, std 1 (+1e-6)
        cls_loss = token_loss(pred_cls, t.cls / (1 + 1e-6)).mean()
        patch_loss = token_loss(pred_patch, patch / (1 + 1e-6)).mean()
        assert out[f"loss/{name}/cls"].item() == pytest.approx(cls_loss.item(), rel=1e-4)
        assert out[f"loss/{name}/patch"].item() == pytest.approx(patch_loss.item(), rel=1e-4)
    expected = sum(out[f"loss/{n}/{k}"] for n in ("vit_a", "vit_b") for k in ("cls", "patch")) / 4
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)  # p = 0: all 8 pairs weigh 1/8


def test_statistics_follow_the_schedule_and_freeze_in_eval():
    task = _task(total_steps=4)
    images, labels = _batch()
    assert task.momentum() == pytest.approx(1.0)
    task(images, labels, "a")
    teacher = task.teachers["vit_a"](images, task.student_norm)
    stats = task.standardizers["vit_a"]["cls"]
    torch.testing.assert_close(stats.mean, teacher.cls.mean(0))  # momentum 1 at step 0: the batch statistics
    torch.testing.assert_close(stats.std, teacher.cls.std(0) + 1e-6)
    assert task.momentum() == pytest.approx(ema_momentum(1, 4))
    task.eval()
    before = stats.mean.clone()
    task(images, labels, "a")
    torch.testing.assert_close(stats.mean, before)
    assert int(task.step) == 1 and task.momentum() == 0.0


def test_teachers_get_no_gradient_and_are_in_no_optimiser_group():
    task = _task()
    groups = task.param_groups()
    grouped = {id(p) for ps in groups.values() for p in ps}
    assert {id(p) for p in task.projectors.parameters()} == {id(p) for p in groups["heads"]}
    assert {id(p) for p in task.model.backbone.parameters()} == {id(p) for p in groups["backbone"]}
    assert not grouped & {id(p) for p in task.teachers.parameters()}
    assert task.inactive_head_parameters("a") == []
    images, labels = _batch()
    task(images, labels, "a")["loss"].backward()
    assert all(p.grad is None for p in task.teachers.parameters())
    assert task.model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in task.projectors.parameters())


def test_task_state_dict_has_projectors_statistics_step_and_no_teacher():
    task = _task()
    images, labels = _batch()
    task(images, labels, "a")
    state = task.state_dict()
    assert not [k for k in state if k.startswith("teachers.")]
    assert "step" in state and "standardizers.vit_b.patch.std" in state
    fresh = _task()
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.standardizers["vit_b"]["patch"].std, task.standardizers["vit_b"]["patch"].std)
    assert int(fresh.step) == 1


def test_projectors_never_reach_the_exported_model():
    task = _task()
    exported = task.model.embedding_model()
    keys = set(exported.state_dict())
    assert keys == {f"backbone.{k}" for k in task.model.backbone.state_dict()} | {
        f"student.{k}" for k in task.model.student.state_dict()}
    n_export = sum(p.numel() for p in exported.parameters())
    assert n_export == sum(p.numel() for m in (task.model.backbone, task.model.student) for p in m.parameters())
    shapes = sorted(tuple(p.shape) for p in exported.parameters())
    assert (16, 64) not in shapes and (32, 64) not in shapes  # the ladders' first layers


def test_a_few_steps_reduce_the_loss_on_a_tiny_vit_with_two_tiny_vit_teachers():
    steps = 25
    task = _task(total_steps=steps)  # teacher dropping at the default p = 0.5
    images, labels = _batch(8)
    groups = task.param_groups()
    opt = torch.optim.AdamW([{"params": groups["heads"], "lr": 3e-3}, {"params": groups["backbone"], "lr": 1e-3}])
    losses = []
    for _ in range(steps):
        loss = task(images, labels, "a")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # step 0 distils raw teacher tokens; from step 1 on the targets are standardised with nearly fixed stats
    assert sum(losses[-3:]) / 3 < 0.7 * losses[1]


def test_combined_task_adds_weighted_unic_to_udon_with_one_backbone_forward():
    unic = _task()
    udon = UdonTask(unic.model, LossConfig())
    combined = CombinedTask(udon, unic, weight=0.5)
    calls = []
    unic.model.backbone.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    images, _ = _batch()
    labels = torch.tensor([0, 1, 2, 0])
    out = combined(images, labels, "a")
    assert len(calls) == 1
    assert out["loss"].item() == pytest.approx(out["loss/udon"].item() + 0.5 * out["loss/unic"].item(), rel=1e-6)
    assert {"loss/teacher_ce", "loss/kl", "loss/relational", "prec1/student", "loss/vit_a/cls"} <= set(out)
    groups = combined.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert {id(p) for p in unic.projectors.parameters()} <= {id(p) for p in groups["heads"]}
    assert combined.inactive_head_parameters("a") == udon.inactive_head_parameters("a")
    out["loss"].backward()
    assert all(p.grad is not None for p in unic.projectors.parameters())


def test_bad_configurations_are_rejected_with_the_reason():
    with pytest.raises(ValidationError, match="names must be unique"):
        UnicConfig(teachers=(TEACHERS[0], TEACHERS[0]))
    with pytest.raises(ValueError, match="which_blocks"):
        _task(SMALL.model_copy(update={"which_blocks": (0, 6)}))
    with pytest.raises(ValueError, match="at least one teacher"):
        UnicTask(UdonModel(STUDENT, {"a": 2}), [], SMALL, total_steps=2)
    cnn = STUDENT.model_copy(update={"backbone": BackboneConfig(name="resnet10t")})
    with pytest.raises(ValueError, match="timm ViT student with a class token, got resnet10t"):
        UnicTask(UdonModel(cnn, {"a": 2}), create_teachers(TEACHERS[:1]), SMALL, total_steps=2)


def _standardise_on_rank(rank: int, port: int, rows: torch.Tensor, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        std = RunningStandardizer(rows.shape[-1])
        std(rows[rank], momentum=1.0)
        results[rank] = (std.mean.clone(), std.std.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_statistics_are_global_across_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[5.0, 10.0], [7.0, 0.0]]])  # rank r holds rows[r]
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the children reuse the imported modules (spawn would re-import torch and timm, ~10 s)
        mp.start_processes(_standardise_on_rank, args=(port, rows, results), nprocs=2, join=True, start_method="fork")
        got = dict(results)
    every = rows.reshape(-1, 2)
    for rank in (0, 1):  # both processes hold the statistics of all four rows
        torch.testing.assert_close(got[rank][0], every.mean(0))
        torch.testing.assert_close(got[rank][1], every.std(0) + 1e-6)


# ---------------------------------------------------------------- udon-offline: frozen per-domain specialists


def _offline(tmp_path, loss: LossConfig = LossConfig()):
    from udon_core.methods import OfflineUdonTask

    classes = {"a": 3, "b": 4}
    teachers, weights = {}, {}
    for i, (d, n) in enumerate(classes.items()):
        torch.manual_seed(10 + i)
        specialist = UdonModel(STUDENT, {d: n})
        specialist.embedding_model().save(tmp_path / d)
        teachers[d] = create_teachers([TeacherConfig(name=d, udon_model=tmp_path / d)])[0]
        weights[d] = specialist.student_classifiers[d].weight.detach()
    torch.manual_seed(0)
    return OfflineUdonTask(UdonModel(STUDENT, classes), teachers, weights, loss), weights


def test_offline_task_is_udon_distillation_from_the_frozen_specialist(tmp_path):
    from udon_core.methods.losses import classification_loss, kl_distillation, relational_distillation

    task, weights = _offline(tmp_path)
    images, _ = _batch()
    labels = torch.tensor([0, 3, 1, 2])
    out = task(images, labels, "b")
    m, cfg = task.model, LossConfig()
    teacher = task.teachers["b"](images, task.student_norm).embedding
    t_cos = teacher @ torch.nn.functional.normalize(weights["b"], dim=1).T
    student = m.student(m.features(images))
    s_cos = m.student_classifiers["b"](student)
    expected = {"student_ce": classification_loss(s_cos, labels, cfg), "kl": kl_distillation(s_cos, t_cos, 0.1),
                "relational": relational_distillation(student, teacher, cfg)}
    for k, v in expected.items():
        assert out[f"loss/{k}"].item() == pytest.approx(v.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(sum(v.item() for v in expected.values()) / 3, rel=1e-5)
    assert "loss/teacher_ce" not in out
    out["loss"].backward()
    assert all(p.grad is None for p in task.teachers.parameters())
    assert m.student.linear.weight.grad is not None and m.backbone.cls_token.grad is not None


def test_offline_task_groups_and_state(tmp_path):
    task, _ = _offline(tmp_path)
    groups = task.param_groups()
    assert not {id(p) for ps in groups.values() for p in ps} & {id(p) for p in task.teachers.parameters()}
    assert {id(p) for p in task.inactive_head_parameters("a")} == {
        id(p) for p in task.model.student_classifiers["b"].parameters()}
    assert all(k.startswith("model.") for k in task.state_dict())  # teachers and their classes come from files


def test_offline_task_rejects_incomplete_teachers(tmp_path):
    from udon_core.methods import OfflineUdonTask

    task, weights = _offline(tmp_path)
    teachers = dict(task.teachers.items())
    model = UdonModel(STUDENT, {"a": 3, "b": 4})
    with pytest.raises(ValueError, match=r"no teachers for domains \['b'\]"):
        OfflineUdonTask(model, {"a": teachers["a"]}, weights, LossConfig())
    with pytest.raises(ValueError, match=r"domain 'a': shape \(4, 8\), the domain has 3 classes"):
        OfflineUdonTask(model, teachers, {**weights, "a": weights["b"]}, LossConfig())
    plain = create_teachers(TEACHERS[:1])[0]
    with pytest.raises(ValueError, match="no embedding head"):
        OfflineUdonTask(model, {**teachers, "a": plain}, weights, LossConfig())


def test_each_rank_drops_teachers_with_its_own_draws_and_a_checkpoint_resumes_them():
    from udon_core.methods.unic import teacher_drop_weights

    losses = torch.rand(3, 64)
    rank0, rank1 = (torch.Generator().manual_seed(7 + r) for r in (0, 1))  # seed + rank, as UnicTask seeds them
    assert not torch.equal(teacher_drop_weights(losses, 0.5, rank0), teacher_drop_weights(losses, 0.5, rank1))
    a, b = _task(), _task()
    assert torch.equal(a.drop_rng_state, b.drop_rng_state)  # same seed and rank: same draws
    assert not torch.equal(a.drop_rng_state, _task(rank=1).drop_rng_state)  # another rank: its own stream
    images, labels = _batch()
    a(images, labels, "a")
    assert not torch.equal(a.drop_rng_state, b.drop_rng_state)  # the draw advanced the generator ...
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.drop_generator.get_state(), b.drop_generator.get_state())  # ... and resumes with it


def test_unic_with_no_retrieval_term_is_distillation_only_and_the_head_is_a_weighted_option():
    from udon_core.methods import CombinedTask, LossConfig, build_task
    from udon_core.training import TrainConfig

    model = UdonModel(STUDENT, {"a": 3, "b": 4})
    pure = TrainConfig(method="unic", unic=SMALL, loss={"student_ce_weight": 0})
    task = build_task(model, pure, pure.loss)
    assert isinstance(task, UnicTask)
    images, labels = _batch()
    out = task(images, labels, "a")
    assert "loss/student_ce" not in out and "loss/vit_b/cls" in out
    with_head = TrainConfig(method="unic", unic=SMALL, loss={"student_ce_weight": 0.5})
    combined = build_task(model, with_head, with_head.loss)
    assert isinstance(combined, CombinedTask) and combined.udon.loss.weights()["student_ce"] == 0.5
    assert LossConfig(student_ce_weight=0, teacher_ce_weight=0, kl_weight=0, relational_weight=0)  # allowed here
