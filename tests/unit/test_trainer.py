"""The training loop on a tiny benchmark: metrics, the optimiser recipe, and exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, Crash, crash_at, write_tiny_benchmark
from udon_core.data import DomainStream, num_train_classes, read_manifest, records_of, train_transform
from udon_core.methods import UdonTask
from udon_core.model import UdonModel
from udon_core.training import (
    DistContext,
    SamplerConfig,
    TrainConfig,
    TrainingJobConfig,
    build_loop,
    build_model,
    build_optimizer,
    checkpoint_files,
    learning_rates,
    load_checkpoint,
    per_rank_loss,
    run_training,
    train,
    train_step,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = write_tiny_benchmark(tmp_path_factory.mktemp("tiny"))
    manifest = read_manifest(root, SPEC)
    return root, manifest, num_train_classes(manifest, SPEC)


CFG = TrainConfig(steps=8, batch_size=4, frozen_steps=3, log_every=1, checkpoint_every=1, deterministic=True,
                  device="cpu", sampler=SamplerConfig(update_every=4))


def _model(classes):
    torch.manual_seed(0)
    return UdonModel(TINY_MODEL, classes)


def test_backbone_is_frozen_then_trains():
    cfg = TrainConfig(frozen_steps=2)
    assert [learning_rates(s, cfg)["backbone"] for s in range(4)] == [0.0, 0.0, 1e-5, 1e-5]
    assert learning_rates(0, cfg)["heads"] == 1e-3
    # the official lr is 0 while optax's count <= 44,236 (2 epochs): 44,237 frozen updates
    assert learning_rates(44_236, TrainConfig())["backbone"] == 0.0
    assert learning_rates(44_237, TrainConfig())["backbone"] == 1e-5


def test_method_presets_fill_only_what_is_not_given():
    uscrr = TrainConfig(method="uscrr")
    assert (uscrr.steps, uscrr.student_head_group, uscrr.sampler.strategy) == (154_826, "backbone", "round_robin")
    assert uscrr.loss.weights() == {"teacher_ce": 0.0, "student_ce": 1.0, "kl": 0.0, "relational": 0.0}
    uscds = TrainConfig.model_validate({"method": "uscds", "steps": 10, "loss": {"scale": 32.0}})
    assert (uscds.steps, uscds.sampler.strategy) == (10, "dataset_size")
    assert (uscds.loss.scale, uscds.loss.kl_weight) == (32.0, 0.0)
    assert TrainConfig.model_validate(uscds.model_dump(mode="json")) == uscds
    assert TrainConfig().loss.weights()["kl"] == 1.0 and TrainConfig().sampler.strategy == "dynamic"


def test_joint_and_specialist_presets():
    ujcds = TrainConfig(method="ujcds")
    assert (ujcds.student_classifier, ujcds.sampler.strategy, ujcds.steps) == ("joint", "dataset_size", 154_826)
    assert TrainConfig(method="ujcrr").sampler.strategy == "round_robin"
    assert TrainConfig(method="specialist", domains=["inshop"]).loss.kl_weight == 0.0
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(method="specialist")
    with pytest.raises(ValueError, match="no teachers"):  # joint classifier + distillation is refused at build
        UdonTask(_model({"a": 2, "b": 3}), TrainConfig(student_classifier="joint").loss,
                 student_classifier="joint")


def test_a_specialist_trains_only_its_domain(bench):
    root, manifest, _ = bench
    config = TrainingJobConfig(model=TINY_MODEL, train=TrainConfig(method="specialist", domains=["colors"], steps=2,
                                                                batch_size=4, device="cpu"))
    model = build_model(config, manifest, SPEC)
    assert model.domains == ["colors"]
    result = run_training(model, config, root, manifest, SPEC, checkpoint_dir=None, progress=False)
    assert result.domain_steps == {"colors": 2}
    bad = config.model_copy(update={"train": config.train.model_copy(update={"domains": ("paintings",)})})
    with pytest.raises(ValueError, match=r"\['paintings'\], not domains of benchmark 'tiny'"):
        build_model(bad, manifest, SPEC)


def test_a_baseline_run_never_touches_the_teachers(bench):
    root, manifest, classes = bench
    model = _model(classes)
    teachers = {k: v.clone() for k, v in model.teachers.state_dict().items()}
    cfg = TrainConfig(method="uscds", steps=3, batch_size=4, frozen_steps=1, log_every=1, device="cpu")
    seen = []
    train(model, root, manifest, SPEC, cfg, callback=lambda m, s: seen.append(m), progress=False)
    assert all(torch.equal(teachers[k], v) for k, v in model.teachers.state_dict().items())
    assert "loss/teacher_ce" not in seen[-1] and math.isfinite(seen[-1]["loss/student_ce"])


def test_metrics_reach_the_callback(bench):
    root, manifest, classes = bench
    seen = []
    result = train(_model(classes), root, manifest, SPEC, CFG, callback=lambda m, s: seen.append((s, m)),
                   progress=False)
    assert [s for s, _ in seen] == list(range(1, 9))
    keys = set(seen[-1][1])
    assert {"loss/total", "loss/teacher_ce", "loss/student_ce", "loss/kl", "loss/relational", "prec1/teacher",
            "prec1/student", "lr/heads", "lr/backbone", "sampler/p/shapes", "sampler/p/colors", "domain"} <= keys
    assert all(isinstance(v, float) and math.isfinite(v) for _, m in seen for v in m.values())
    assert [m["domain"] for _, m in seen[:3]] == [0.0, 1.0, 0.0]  # round robin before the first update
    assert [m["lr/backbone"] for _, m in seen[:4]] == [0.0, 0.0, 0.0, 1e-5]
    assert sum(result.domain_steps.values()) == 8 and result.domain_steps["shapes"] >= 2
    assert [h["step"] for h in result.history] == [float(s) for s in range(1, 9)]
    assert not result.model.training


def test_frozen_backbone_stays_put_and_inactive_heads_still_take_adam_steps(bench):
    root, manifest, classes = bench
    model = _model(classes)
    cfg = CFG.model_copy(update={"frozen_steps": 10, "sampler": SamplerConfig(strategy="round_robin")})
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loop = build_loop(model, root, manifest, SPEC, cfg, torch.device("cpu"))
    train_step(loop, cfg)  # domain 0 ("shapes") only
    assert all(torch.equal(backbone[k], v) for k, v in model.backbone.state_dict().items())
    idle = model.teacher_classifiers["colors"].weight
    # why: optax updates every parameter every step (zero grads for idle heads), so their Adam count moves
    assert loop.optimizer.state[idle]["step"] == 1 and loop.optimizer.state[model.backbone.cls_token]["step"] == 1
    off = cfg.model_copy(update={"zero_grad_inactive_heads": False})
    loop = build_loop(_model(classes), root, manifest, SPEC, off, torch.device("cpu"))
    train_step(loop, off)
    assert loop.task.model.teacher_classifiers["colors"].weight not in loop.optimizer.state


def test_an_interrupted_run_resumes_to_the_same_weights(bench, tmp_path):
    root, manifest, classes = bench
    straight = train(_model(classes), root, manifest, SPEC, CFG, progress=False)
    cfg = CFG.model_copy(update={"checkpoint_every": 2})
    with pytest.raises(Crash):  # dies after step 5, whose checkpoint is never written: resume from step 4
        train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, callback=crash_at(5),
              progress=False)
    # the last two checkpoints are kept, each with its digest, and nothing half-written
    assert [p.name for p in checkpoint_files(tmp_path)] == ["checkpoint-000000004.pt", "checkpoint-000000002.pt"]
    assert not list(tmp_path.glob("*.tmp")) and all(p.with_name(p.name + ".sha256").is_file()
                                                    for p in checkpoint_files(tmp_path))
    assert load_checkpoint(checkpoint_files(tmp_path)[0])["step"] == 4
    # a fresh process rebuilds the model from its config: another init, the same result once loaded
    torch.manual_seed(123)
    resumed = train(UdonModel(TINY_MODEL, classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, progress=False)
    assert resumed.steps == 8 and resumed.domain_steps == straight.domain_steps
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.last_metrics == straight.last_metrics


def test_a_finished_run_is_not_trained_again(bench, tmp_path):
    root, manifest, classes = bench
    done = train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 2}), checkpoint_dir=tmp_path,
                 progress=False)
    again = train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 2}), checkpoint_dir=tmp_path,
                  progress=False)
    assert again.steps == 2 and again.history == []
    a, b = done.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_keeps_the_best_state(bench):
    root, manifest, classes = bench
    scores = iter([0.2, 0.9, 0.1, 0.3])
    states = []

    def validate(model):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    result = train(_model(classes), root, manifest, SPEC, CFG, validate=validate, validate_every=2, progress=False)
    assert (result.best_score, result.best_step) == (0.9, 4)
    best = result.model.embedding_model().state_dict()
    assert all(torch.equal(best[k], states[1][k]) for k in best)
    assert [h["val/r_at_1"] for h in result.history if "val/r_at_1" in h] == [0.2, 0.9, 0.1, 0.3]


def test_domain_stream_restarts_at_any_batch(bench):
    root, manifest, _ = bench
    records = records_of(manifest, "shapes", "train")

    def stream():
        return DomainStream(root, records, train_transform(TINY_MODEL.preprocess), batch_size=4, seed=7)

    a = stream()
    batches = [a.next() for _ in range(6)]  # 18 images, 4 batches per epoch: crosses an epoch boundary
    b = stream()
    b.seek(3)
    for images, labels in batches[3:]:
        again = b.next()
        assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    epoch0 = torch.cat([labels for _, labels in batches[:4]])
    assert sorted(epoch0.tolist()) != epoch0.tolist() or len(set(epoch0.tolist())) == 1  # shuffled


def test_ranks_load_disjoint_slices_that_make_up_the_single_process_batch(bench):
    root, manifest, _ = bench
    records = records_of(manifest, "colors", "train")

    def stream(shard):
        return DomainStream(root, records, train_transform(TINY_MODEL.preprocess), batch_size=4, seed=7, shard=shard)

    whole, halves = stream((0, 1)), [stream((0, 2)), stream((1, 2))]
    for _ in range(5):  # across an epoch boundary
        images, labels = whole.next()
        parts = [h.next() for h in halves]
        assert torch.equal(torch.cat([p[0] for p in parts]), images)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
    with pytest.raises(ValueError, match="shard 0 of 3"):
        stream((0, 3))


def test_each_rank_computes_its_share_of_the_relational_chunks():
    loss = CFG.loss
    assert per_rank_loss(loss, DistContext()) is loss
    assert per_rank_loss(loss, DistContext(0, 2)).relational_chunks == 2
    assert per_rank_loss(loss, DistContext(1, 4)).relational_chunks == 1
    full = loss.model_copy(update={"relational": "full"})
    assert per_rank_loss(full, DistContext(0, 2)) is full
    with pytest.raises(ValueError, match="relational_chunks=4 does not split over 3"):
        per_rank_loss(loss, DistContext(0, 3))


def test_a_compiled_backbone_trains_and_checkpoints_under_the_same_names(bench, tmp_path):
    root, manifest, classes = bench
    names = set(_model(classes).state_dict())
    # 'eager' exercises the torch.compile wiring without a C++ toolchain; GPUs use the default 'inductor'.
    cfg = CFG.model_copy(update={"steps": 2, "compile": True, "compile_backend": "eager"})
    result = train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, progress=False)
    assert math.isfinite(result.last_metrics["loss/total"])
    assert set(load_checkpoint(checkpoint_files(tmp_path)[0])["task"]) == {f"model.{n}" for n in names}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run_is_finite_and_resumes_exactly(bench, tmp_path):
    root, manifest, classes = bench
    cfg = CFG.model_copy(update={"device": "cuda", "checkpoint_every": 2})
    seen = []
    straight = train(_model(classes), root, manifest, SPEC, cfg, callback=lambda m, s: seen.append(m), progress=False)
    assert all(math.isfinite(m["loss/total"]) for m in seen)
    assert next(straight.model.parameters()).device.type == "cuda"
    with pytest.raises(Crash):
        train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, callback=crash_at(5),
              progress=False)
    resumed = train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


TEACHER = {"name": "vit_t", "timm_model": "test_vit", "img_size": 16}
SMALL_UNIC = {"teachers": [TEACHER], "hidden_dim": 16, "last_hidden_dim": 32}


def test_unic_run_resumes_exactly_with_its_projectors_and_teacher_statistics(bench, tmp_path):
    root, manifest, classes = bench
    cfg = TrainConfig.model_validate({**CFG.model_dump(exclude={"loss", "sampler"}), "method": "unic",
                                      "unic": SMALL_UNIC, "checkpoint_every": 2})
    assert (cfg.frozen_steps, cfg.sampler.strategy, cfg.loss.kl_weight) == (3, "round_robin", 0.0)  # given: kept
    straight = train(_model(classes), root, manifest, SPEC, cfg, progress=False)
    assert {"loss/unic", "loss/vit_t/cls", "loss/vit_t/patch", "loss/student_ce"} <= set(straight.last_metrics)
    with pytest.raises(Crash):
        train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, callback=crash_at(5),
              progress=False)
    saved = load_checkpoint(checkpoint_files(tmp_path)[0])["task"]
    assert any("projectors" in k for k in saved) and any("standardizers" in k for k in saved)
    assert not any(k.startswith("unic.teachers") for k in saved)  # frozen teachers are not checkpointed
    resumed = train(_model(classes), root, manifest, SPEC, cfg, checkpoint_dir=tmp_path, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.last_metrics == straight.last_metrics


def test_udon_plus_unic_keeps_every_udon_term_and_adds_unic(bench):
    root, manifest, classes = bench
    cfg = TrainConfig.model_validate({**CFG.model_dump(exclude={"loss"}), "method": "udon+unic",
                                      "unic": {**SMALL_UNIC, "aux_weight": 0.5}, "steps": 2})
    seen = []
    train(_model(classes), root, manifest, SPEC, cfg, callback=lambda m, s: seen.append(m), progress=False)
    last = seen[-1]
    assert {"loss/teacher_ce", "loss/kl", "loss/relational", "loss/unic", "loss/udon"} <= set(last)
    assert last["loss/total"] == pytest.approx(last["loss/udon"] + 0.5 * last["loss/unic"], rel=1e-5)


def test_udon_offline_distils_specialists_trained_by_the_pipeline_recipe(bench, tmp_path):
    root, manifest, classes = bench
    folders = {}
    for domain in SPEC.domain_names:  # one specialist per domain, saved as the training-model folder
        config = TrainingJobConfig(model=TINY_MODEL, train=TrainConfig(method="specialist", domains=[domain], steps=2,
                                                                    batch_size=4, device="cpu"))
        specialist = run_training(build_model(config, manifest, SPEC), config, root, manifest, SPEC,
                                  checkpoint_dir=None, progress=False)
        folders[domain] = str(specialist.model.save(tmp_path / domain))
    cfg = CFG.model_copy(update={"method": "udon-offline", "specialists": folders, "steps": 4,
                                 "sampler": SamplerConfig(update_every=2, signal="loss/student_ce")})
    seen = []
    result = train(_model(classes), root, manifest, SPEC, cfg, callback=lambda m, s: seen.append(m), progress=False)
    assert {"loss/student_ce", "loss/kl", "loss/relational"} <= set(seen[-1]) and "loss/teacher_ce" not in seen[-1]
    assert result.steps == 4
    assert TrainConfig.model_validate({"method": "udon-offline", "specialists": folders}).sampler.signal == (
        "loss/student_ce")
    with pytest.raises(ValueError, match=r"none for \['colors'\]"):
        train(_model(classes), root, manifest, SPEC, cfg.model_copy(update={"specialists": {"shapes": folders["shapes"]}}),
              progress=False)
    with pytest.raises(ValueError, match="trained on \\['shapes'\\]"):
        train(_model(classes), root, manifest, SPEC,
              cfg.model_copy(update={"specialists": {"shapes": folders["shapes"], "colors": folders["shapes"]}}),
              progress=False)


def test_distillation_methods_say_what_they_are_missing():
    with pytest.raises(ValueError, match="list them in unic.teachers"):
        TrainConfig(method="unic")
    with pytest.raises(ValueError, match="set specialists"):
        TrainConfig(method="udon-offline")


def test_warmup_cosine_schedule_matches_unics_cosine_scheduler_by_hand():
    cfg = TrainConfig(steps=11, frozen_steps=0, lr_heads=3e-4, lr_backbone=3e-4, lr_schedule="warmup_cosine",
                      warmup_steps=3, min_lr=1e-6)
    lrs = [learning_rates(s, cfg)["heads"] for s in range(11)]
    # warmup: linspace(0, 3e-4, 3); then 8 cosine steps from 3e-4 down towards 1e-6 (i = 0..7 of n = 8)
    assert lrs[:3] == pytest.approx([0.0, 1.5e-4, 3e-4])
    assert lrs[3] == pytest.approx(3e-4)
    assert lrs[7] == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi * 4 / 8)))  # the midpoint
    assert lrs[10] == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    frozen = cfg.model_copy(update={"frozen_steps": 5})
    assert [learning_rates(s, frozen)["backbone"] for s in (4, 5)] == [0.0, pytest.approx(lrs[5])]
    assert learning_rates(7, TrainConfig(frozen_steps=0))["heads"] == 1e-3  # UDON: constant


def test_weight_decay_can_spare_biases_and_norms(bench):
    _, _, classes = bench
    model = _model(classes)
    task = UdonTask(model, TrainConfig().loss)
    groups = build_optimizer(task, TrainConfig(weight_decay=0.03, decay_exclude_1d=True)).param_groups
    assert {g["name"] for g in groups} == {"heads", "backbone"}
    for g in groups:
        assert all(p.ndim >= 2 for p in g["params"]) if g["weight_decay"] == 0.03 else \
            all(p.ndim < 2 for p in g["params"]) and g["weight_decay"] == 0.0
    every = build_optimizer(task, TrainConfig(weight_decay=0.03)).param_groups
    assert len(every) == 2 and all(g["weight_decay"] == 0.03 for g in every)  # UDON decays everything
    assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in every)


def test_the_published_unic_preset_has_the_official_optimiser():
    teacher = {"name": "t", "timm_model": "test_vit", "img_size": 16}
    cfg = TrainConfig.model_validate({"method": "unic-published", "steps": 2000, "batch_size": 64,
                                      "unic": {"teachers": [teacher]}})
    assert (cfg.betas, cfg.weight_decay, cfg.decay_exclude_1d) == ((0.9, 0.99), 0.03, True)
    assert cfg.lr_heads == cfg.lr_backbone == pytest.approx(3e-4 * 64 / 256)  # one peak for encoder and ladder
    assert (cfg.lr_schedule, cfg.warmup_steps, cfg.min_lr, cfg.frozen_steps) == ("warmup_cosine", 100, 1e-6, 0)
    assert sum(cfg.loss.weights().values()) == 0  # distillation only
    given = TrainConfig.model_validate({"method": "unic-published", "lr_heads": 1e-3, "unic": {"teachers": [teacher]}})
    assert given.lr_heads == 1e-3 and given.lr_backbone == pytest.approx(1.5e-4)  # a given value wins


def test_a_non_finite_loss_stops_training_naming_the_step_domain_and_term(bench, tmp_path):
    from udon_core.errors import NonFiniteLossError, UdonUserError

    root, manifest, classes = bench
    cfg = CFG.model_copy(update={"steps": 4, "checkpoint_every": 1})
    model = _model(classes)
    loop = build_loop(model, root, manifest, SPEC, cfg, torch.device("cpu"))
    train_step(loop, cfg)  # a healthy step
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.student.linear.weight.fill_(float("nan"))
    before["student.linear.weight"] = model.student.linear.weight.clone()
    with pytest.raises(NonFiniteLossError, match=r"step 1, domain '\w+': the loss is not finite \(.*loss=nan") as err:
        train_step(loop, cfg)
    assert isinstance(err.value, UdonUserError) and "student_ce=nan" in str(err.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).all() for k in before)  # no update
