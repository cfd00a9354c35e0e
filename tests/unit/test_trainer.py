"""The training loop on a tiny benchmark: metrics, the frozen phase, and exact resume."""

from __future__ import annotations

import pytest
import torch

from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, write_tiny_benchmark
from udon_core.model import UdonModel
from udon_core.sampler import SamplerConfig
from udon_core.trainer import TrainConfig, learning_rates, train
from udon_core.uned import num_train_classes, read_manifest


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = write_tiny_benchmark(tmp_path_factory.mktemp("tiny"))
    manifest = read_manifest(root, SPEC)
    return root, manifest, num_train_classes(manifest, SPEC)


CFG = TrainConfig(steps=8, batch_size=4, frozen_steps=3, log_every=1, checkpoint_every=1, deterministic=True,
                  sampler=SamplerConfig(update_every=4))


def _model(classes):
    torch.manual_seed(0)
    return UdonModel(TINY_MODEL, classes)


def test_backbone_is_frozen_then_trains():
    cfg = TrainConfig(frozen_steps=2)
    assert [learning_rates(s, cfg)["backbone"] for s in range(4)] == [0.0, 0.0, 1e-5, 1e-5]
    assert learning_rates(0, cfg)["heads"] == 1e-3


def test_metrics_reach_the_callback(bench):
    root, manifest, classes = bench
    seen = []
    result = train(_model(classes), root, manifest, SPEC, CFG, callback=lambda m, s: seen.append((s, m)), progress=False)
    assert [s for s, _ in seen] == list(range(1, 9))
    keys = set(seen[-1][1])
    assert {"loss/total", "loss/teacher_ce", "loss/kl", "loss/relational", "prec1/student", "lr/backbone",
            "sampler/p/shapes", "sampler/p/colors"} <= keys
    assert all(torch.isfinite(torch.tensor(m["loss/total"])) for _, m in seen)
    assert sum(result.domain_steps.values()) == 8 and result.domain_steps["shapes"] >= 2


def test_resume_ends_with_the_same_weights(bench, tmp_path):
    root, manifest, classes = bench
    straight = train(_model(classes), root, manifest, SPEC, CFG, progress=False).model.state_dict()
    half = CFG.model_copy(update={"steps": 4})
    train(_model(classes), root, manifest, SPEC, half, checkpoint_dir=tmp_path, progress=False)
    resumed = train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)
    assert resumed.steps == 8
    state = resumed.model.state_dict()
    assert all(torch.equal(straight[k], state[k]) for k in straight)


def test_validation_keeps_the_best_state(bench):
    root, manifest, classes = bench
    scores = iter([0.2, 0.9, 0.1, 0.3])
    result = train(_model(classes), root, manifest, SPEC, CFG, validate=lambda m: next(scores), validate_every=2,
                   progress=False)
    assert (result.best_score, result.best_step) == (0.9, 4)
