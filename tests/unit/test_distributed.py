"""Collectives of the data-parallel trainer, with two real gloo processes (no torchrun needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from udon_core.training import DistContext, check_ranks_agree, mean_over_ranks, shard_size, weights_fingerprint


def _rank_main(rank: int, store: str, out: str, same: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ctx = DistContext(rank, 2)
    torch.manual_seed(0 if same else rank)
    model = torch.nn.Linear(3, 2)
    mean = mean_over_ranks(torch.tensor([float(rank), 10.0 * rank]), ctx)
    try:
        check_ranks_agree(model, ctx)
        verdict = "agree"
    except RuntimeError as err:
        verdict = str(err)
    Path(out, f"rank{rank}.txt").write_text(f"{mean.tolist()}\n{verdict}")
    dist.destroy_process_group()


def _run_two_ranks(tmp_path: Path, same: bool) -> list[str]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_rank_main, args=(str(tmp_path / "store"), str(tmp_path), same), nprocs=2,
                       start_method="spawn")
    return [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]


@pytest.mark.slow
def test_identical_replicas_pass_and_diverged_replicas_are_named(tmp_path):
    (tmp_path / "same").mkdir()
    (tmp_path / "differ").mkdir()
    same = _run_two_ranks(tmp_path / "same", True)
    assert same == ["[0.5, 5.0]\nagree"] * 2  # and the mean over ranks is the mean
    differ = _run_two_ranks(tmp_path / "differ", False)
    assert all("rank(s) [1] hold different weights from rank 0" in text for text in differ)


def test_single_process_helpers():
    one = DistContext()
    value = torch.tensor([1.0, 2.0])
    assert mean_over_ranks(value, one) is value
    check_ranks_agree(torch.nn.Linear(2, 2), one)  # nothing to compare with
    assert shard_size(128, DistContext(0, 4)) == 32
    with pytest.raises(ValueError, match="batch_size 10 does not split over 4 processes"):
        shard_size(10, DistContext(0, 4))
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    torch.manual_seed(1)
    b = torch.nn.Linear(3, 2)
    assert torch.equal(weights_fingerprint(a), weights_fingerprint(a)) and not torch.equal(
        weights_fingerprint(a), weights_fingerprint(b))


def _unic_rank_main(rank: int, store: str, out: str) -> None:
    from udon_core.methods import build_task
    from udon_core.methods.unic import teacher_drop_weights
    from udon_core.model import BackboneConfig, ModelConfig, UdonModel
    from udon_core.training import TrainConfig, current_context

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = UdonModel(ModelConfig(backbone=BackboneConfig(name="test_vit", img_size=16), student_dim=8,
                                  teacher_dim=8), {"a": 2})
    cfg = TrainConfig(method="unic", seed=3, unic={"teachers": [{"name": "t", "timm_model": "test_vit",
                                                                  "img_size": 16}],
                                                    "hidden_dim": 8, "last_hidden_dim": 16})
    task = build_task(model, cfg, cfg.loss, rank=current_context().rank)  # as the trainer builds it
    losses = torch.arange(3 * 32, dtype=torch.float32).reshape(3, 32) % 7  # the same losses on both ranks
    keep = teacher_drop_weights(losses, 0.5, task.unic.drop_generator) > 0
    torch.save(keep, Path(out, f"keep{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_each_gloo_rank_drops_teachers_with_its_own_draws(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_unic_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    keep0, keep1 = (torch.load(tmp_path / f"keep{r}.pt", weights_only=True) for r in range(2))
    assert not torch.equal(keep0, keep1)  # seed + rank: the ranks' images get independent drops
    assert keep0.any(0).all() and keep1.any(0).all()  # each image keeps its worst-fit teacher
