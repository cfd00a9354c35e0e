"""The training loop: generic over the task, with UDON's optimisation recipe and exact resume.

Recipe (research/udon.md section 4): AdamW, weight decay 1e-6 on every parameter, two groups: heads at
1e-3 and the backbone at 1e-5, but at lr 0 during the frozen phase (kept in the optimiser, so its Adam
moments evolve as in the JAX original); inactive domain heads get zero gradients for the same reason.

The loop knows the task only through ``task(images, labels, domain) -> {"loss", ...}``,
``task.param_groups()`` and ``task.inactive_head_parameters(domain)``; it logs every key the task
returns.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.data.domain_loader import DomainStream, stream_seed
from udon_core.data.image_source import ImageSource, as_source
from udon_core.data.transforms import normalize, train_decode_side, train_transform
from udon_core.data.uned import records_of
from udon_core.device import resolve_device
from udon_core.errors import CheckpointError, InvalidValueError, NonFiniteLossError, UnknownNameError
from udon_core.methods import Task, build_task
from udon_core.methods.losses import LossConfig
from udon_core.model.udon_model import EmbeddingModel, UdonModel
from udon_core.progress import progress as show_progress
from udon_core.training.checkpoint import load_latest, save_checkpoint
from udon_core.training.config import TrainConfig
from udon_core.training.distributed import (
    DistContext,
    broadcast_from_main,
    check_ranks_agree,
    init_distributed,
    mean_over_ranks,
    shard_size,
)
from udon_core.training.sampler import DomainSampler

log = logging.getLogger(__name__)
MetricsCallback = Callable[[dict[str, float], int], None]
Validator = Callable[[EmbeddingModel], float]
CHECKPOINT_FORMAT = "udon-train-checkpoint/3"  # /3: tensors and plain values only (weights_only loads)


@dataclass
class TrainResult:
    """The trained model (the best validated state when ``validate`` was given) and how it got there."""

    model: UdonModel
    steps: int
    domain_steps: dict[str, int]
    last_metrics: dict[str, float]
    best_score: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "domain_steps": self.domain_steps, "best_val_r_at_1": self.best_score,
                "best_step": self.best_step, "last": self.last_metrics}


def build_optimizer(task: Task, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one named group per ``task.param_groups()`` entry; ``learning_rates`` sets their lr.

    With ``decay_exclude_1d`` each group is split in two under the same name: weights of two or more
    dimensions with ``weight_decay``, biases and norm weights without.
    """
    groups = []
    for name, params in task.param_groups().items():
        if not cfg.decay_exclude_1d:
            groups.append({"name": name, "params": params, "lr": 0.0, "weight_decay": cfg.weight_decay})
            continue
        decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
        groups += [g for g in ({"name": name, "params": decay, "lr": 0.0, "weight_decay": cfg.weight_decay},
                               {"name": name, "params": no_decay, "lr": 0.0, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr_heads, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def scheduled_lr(step: int, cfg: TrainConfig, base: float) -> float:
    """The learning rate of 0-based ``step`` for a group whose peak rate is ``base``.

    'warmup_cosine' follows DINO's/UNIC's ``cosine_scheduler``: ``linspace(0, base, warmup_steps)`` for the
    first steps, then ``min_lr + (base - min_lr) / 2 * (1 + cos(pi * i / n))`` over the remaining n steps.
    """
    if cfg.lr_schedule == "constant" or base == 0.0:
        return base
    w = min(cfg.warmup_steps, cfg.steps)
    if step < w:
        return base * step / (w - 1) if w > 1 else base
    n = cfg.steps - w
    i = step - w
    return cfg.min_lr + 0.5 * (base - cfg.min_lr) * (1 + math.cos(math.pi * i / n)) if n > 0 else base


def learning_rates(step: int, cfg: TrainConfig) -> dict[str, float]:
    """Heads and backbone rates at ``step`` (0-based): the schedule's, with the backbone at 0 while
    ``step < frozen_steps``."""
    backbone = 0.0 if step < cfg.frozen_steps else scheduled_lr(step, cfg, cfg.lr_backbone)
    return {"heads": scheduled_lr(step, cfg, cfg.lr_heads), "backbone": backbone}


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG's state as tensors and plain Python values (what a weights_only load accepts)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class TrainingLoop:
    """Everything that changes while training; its state_dict is the checkpoint."""

    task: Task
    optimizer: torch.optim.AdamW
    sampler: DomainSampler
    streams: list[DomainStream]
    device: torch.device
    forward: Callable[..., dict[str, torch.Tensor]]  # the task, or its DDP wrapper (which syncs gradients)
    dist: DistContext = field(default_factory=DistContext)
    step: int = 0
    domain_steps: list[int] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        # The task's state: the model plus whatever the objective trains or tracks (UNIC's projectors and
        # teacher statistics); frozen teachers leave themselves out.
        return {"format": CHECKPOINT_FORMAT, "model": model_identity(self.task.model), "task": self.task.state_dict(),
                "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
                "streams": [s.position for s in self.streams], "step": self.step,
                "domain_steps": self.domain_steps, "rng": _rng_state(self.device),
                "best": {"score": self.best_score, "step": self.best_step, "state": self.best_state}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a {CHECKPOINT_FORMAT} checkpoint (format {state.get('format')!r}); "
                                  "move the folder away to start again")
        self.task.load_state_dict(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        for stream, position in zip(self.streams, state["streams"], strict=True):
            stream.seek(position)
        self.step, self.domain_steps = state["step"], list(state["domain_steps"])
        best = state["best"]
        self.best_score, self.best_step, self.best_state = best["score"], best["step"], best["state"]
        _set_rng_state(state["rng"], self.device)


def model_identity(model: UdonModel) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it: the architecture and the benchmark's domains
    and class counts (the pretrained source is left out: the checkpoint replaces those weights anyway)."""
    b = model.config.backbone
    return {"backbone": b.name, "img_size": b.img_size, "act": b.act, "student_dim": model.config.student_dim,
            "teacher_dim": model.config.teacher_dim, "classes": model.classes}


def _check_resumable(path: Path, state: dict[str, Any], model: UdonModel, cfg: TrainConfig) -> None:
    """A CheckpointError sentence when ``state`` belongs to another run or lies past ``cfg.steps``."""
    own, theirs = model_identity(model), state.get("model")
    if isinstance(theirs, dict) and theirs != own:
        diff = "; ".join(f"{k}: {theirs.get(k)!r} there, {own[k]!r} here" for k in own if theirs.get(k) != own[k])
        raise CheckpointError(f"{path} belongs to another run ({diff}): give this run its own "
                              "checkpoint folder, or move that one away")
    step = state.get("step")
    if isinstance(step, int) and step > cfg.steps:
        raise CheckpointError(f"{path} is at step {step}, past train.steps={cfg.steps}: raise train.steps to "
                              "continue that run, or give this run its own checkpoint folder")


def resume(loop: TrainingLoop, directory: Path, cfg: TrainConfig) -> Path | None:
    """Load the newest usable checkpoint of ``directory`` into ``loop``; the checkpoint used, or None (step 0)."""
    found = load_latest(directory)
    if found is None:
        return None
    path, state = found
    _check_resumable(path, state, loop.task.model, cfg)
    try:  # tensors load to the CPU; load_state_dict copies them onto the model's and optimiser's devices
        loop.load_state_dict(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    except (RuntimeError, ValueError, KeyError, TypeError) as err:  # written before checkpoints named their model
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit this run's model or method ({first}): give this run its own "
                              "checkpoint folder, or move that one away") from err
    return path


def per_rank_loss(loss: LossConfig, ctx: DistContext) -> LossConfig:
    """The loss each rank computes on its slice of the batch.

    why: the official relational loss is per device (4 devices x 32 images, emulated as 4 chunks in one
    process). With W ranks each holds B / W images, so it takes chunks / W of them: the gradient average
    over ranks then equals the single-process 'chunks' loss. 'full' stays per rank (no cross-rank pairs).
    """
    if not ctx.enabled or loss.relational != "chunks":
        return loss
    if loss.relational_chunks % ctx.world_size:
        raise InvalidValueError(f"relational_chunks={loss.relational_chunks} does not split over {ctx.world_size} "
                         "processes: use a divisor of it, or relational='full' (per-rank pairs)")
    return loss.model_copy(update={"relational_chunks": loss.relational_chunks // ctx.world_size})


def _wrap(task: Task, device: torch.device, ctx: DistContext) -> Callable[..., dict[str, torch.Tensor]]:
    if not ctx.enabled:
        return task
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: only the drawn domain's heads run, the same ones on every rank.
    return DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def _stream(source: ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec, name: str, index: int, transform: Any,
            draft: int, cfg: TrainConfig, device: torch.device, ctx: DistContext) -> DomainStream:
    records = records_of(manifest, name, spec.domain(name).train)
    try:
        return DomainStream(source, records, transform, cfg.batch_size, seed=stream_seed(cfg.seed, index),
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            shard=(ctx.rank, ctx.world_size), draft=draft)
    except InvalidValueError as err:
        raise InvalidValueError(f"domain '{name}': {err} (lower train.batch_size)") from err


def build_loop(model: UdonModel, root: Path | ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec, cfg: TrainConfig,
               device: torch.device, ctx: DistContext = DistContext()) -> TrainingLoop:
    """The loop's state at step 0: the method's task, its optimiser, the domain sampler and one stream per
    domain (this rank's shard of each global batch)."""
    shard_size(cfg.batch_size, ctx)  # a clear error before any worker starts
    task = build_task(model, cfg, per_rank_loss(cfg.loss, ctx), rank=ctx.rank)
    if cfg.compile:
        model.backbone.compile(backend=cfg.compile_backend)  # in place: parameter names are unchanged
    transform, draft = train_transform(model.config.preprocess), train_decode_side(model.config.preprocess)
    source = as_source(root)  # loose or packed, read once for every domain's stream
    streams = [_stream(source, manifest, spec, name, i, transform, draft, cfg, device, ctx)
               for i, name in enumerate(model.domains)]
    # Every rank builds the same schedule from the same seed: all draw the same domain at each step.
    sampler = DomainSampler([len(s) for s in streams], cfg.sampler, total_steps=cfg.steps, seed=cfg.seed)
    return TrainingLoop(task, build_optimizer(task, cfg), sampler, streams, device, _wrap(task, device, ctx), ctx,
                 domain_steps=[0] * len(streams))


def check_finite(out: dict[str, torch.Tensor], step: int, domain: str) -> None:
    """Stop before a NaN or infinite loss reaches the weights (and every later checkpoint), naming the step,
    the domain and each term that is not finite.

    why here, every step: one update with a NaN gradient corrupts the model for good; the check costs one
    device-to-host copy of a scalar, as the dynamic sampler's signal already does.
    """
    if bool(torch.isfinite(out["loss"].detach()).item()):
        return
    bad = {k: float(v.detach().float()) for k, v in out.items()
           if isinstance(v, torch.Tensor) and v.numel() == 1 and not bool(torch.isfinite(v.detach()).item())}
    terms = ", ".join(f"{k}={v}" for k, v in bad.items())
    raise NonFiniteLossError(f"step {step}, domain '{domain}': the loss is not finite ({terms}); training "
                             "stopped before the update. Lower the learning rates (train.lr_heads, "
                             "train.lr_backbone) or check that domain's images and labels")


def train_step(loop: TrainingLoop, cfg: TrainConfig) -> dict[str, torch.Tensor | float]:
    """One optimisation step on one domain's batch: forward, backward, AdamW. Returns the task's outputs
    (detached) plus the learning rates and the drawn domain; nothing is synchronised with the GPU except
    the dynamic sampler's loss signal."""
    d = loop.sampler.draw(loop.step)
    domain = loop.task.domains[d]
    images, labels = (t.to(loop.device, non_blocking=True) for t in loop.streams[d].next())
    images = normalize(images, loop.task.model.config.preprocess)  # uint8 travels; floats are made on the device
    amp = cfg.amp and loop.device.type == "cuda"
    with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=amp):
        out = loop.forward(images, labels, domain)
    check_finite(out, loop.step, domain)
    # Idle heads keep zeroed gradient buffers (allocated once) so AdamW steps them as optax does.
    loop.optimizer.zero_grad(set_to_none=not cfg.zero_grad_inactive_heads)
    out["loss"].backward()
    if cfg.zero_grad_inactive_heads:
        for p in loop.task.inactive_head_parameters(domain):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    lrs = learning_rates(loop.step, cfg)
    for group in loop.optimizer.param_groups:
        group["lr"] = lrs[group["name"]]
    loop.optimizer.step()
    if cfg.sampler.strategy == "dynamic":
        signal = out.get(cfg.sampler.signal)
        if signal is None:
            raise UnknownNameError(f"the dynamic sampler needs '{cfg.sampler.signal}', the task returns {sorted(out)}")
        # why: the official signal is the loss summed over examples, divided by the examples in the window;
        # averaged over ranks (equal slices) so every rank's sampler stays identical.
        batch = labels.shape[0] * loop.dist.world_size
        loop.sampler.record(d, float(mean_over_ranks(signal, loop.dist)) * batch, batch, loop.step)
    loop.domain_steps[d] += 1
    loop.step += 1
    metrics: dict[str, torch.Tensor | float] = {("loss/total" if k == "loss" else k): v.detach()
                                                for k, v in out.items()}
    metrics.update({f"lr/{k}": v for k, v in lrs.items()}, domain=float(d))
    return metrics


def _to_floats(metrics: dict[str, torch.Tensor | float], sampler: DomainSampler,
               domains: list[str]) -> dict[str, float]:
    """Python floats, with one device-to-host copy for all the tensors; then the sampler weights."""
    tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    values = torch.stack([v.float() for v in tensors.values()]).tolist() if tensors else []
    floats = dict(zip(tensors, values, strict=True))
    out = {k: floats[k] if k in floats else float(v) for k, v in metrics.items()}
    out.update({f"sampler/p/{name}": p for name, p in sampler.weights(domains).items()})
    return out


def set_train_mode(task: Task, freeze_norm_stats: bool) -> None:
    """Train mode for the task (model and objective modules; frozen teachers stay in eval), with BatchNorm
    layers kept in eval mode when their statistics are frozen."""
    task.train()
    if freeze_norm_stats:
        for module in task.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _maybe_validate(loop: TrainingLoop, validate: Validator | None, every: int | None, final: bool) -> float | None:
    if validate is None or not (final or (every and loop.step % every == 0)):
        return None
    # Rank 0 validates (one kNN evaluation, not one per GPU); the others wait for its score.
    score = float(validate(loop.task.model.embedding_model())) if loop.dist.is_main else None
    score = broadcast_from_main(score, loop.dist)
    if loop.best_score is None or score > loop.best_score:
        # why: the official run keeps only the best checkpoint by mean merged val R@1 and tests that one.
        loop.best_score, loop.best_step = score, loop.step
        if loop.dist.is_main:  # only rank 0 checkpoints and exports
            loop.best_state = _cpu_copy(loop.task.model.state_dict())
    return score


@contextlib.contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of training only (the flags are process-global)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    # why: cuBLAS is only deterministic with a fixed workspace; must be set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def train(model: UdonModel, root: Path | ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec, cfg: TrainConfig, *,
          callback: MetricsCallback | None = None, validate: Validator | None = None,
          validate_every: int | None = None, checkpoint_dir: Path | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps, resuming from the newest checkpoint in ``checkpoint_dir``.

    Args:
        model: the model to train, in place; its ``domains`` name the benchmark domains it trains on.
        root, manifest, spec: the benchmark (``manifest`` rows of each domain's train split are used); ``root``
            is its folder or its ``ImageSource`` (``image_source``), which validation can then share.
        callback: receives ``(metrics, step)`` every ``log_every`` steps, at validations and at the end.
        validate: scores a copy of the deployable model (higher is better); run every ``validate_every``
            steps and at the end. The best state is kept and returned, as the official best checkpoint.
        checkpoint_dir: where checkpoints are written (udon_core/training/checkpoint.py: atomic, hashed, the last two
            kept); a later call resumes from the newest one that verifies.

    Under ``torchrun`` (WORLD_SIZE > 1) this joins the process group (NCCL on CUDA, gloo on CPU) and trains
    data-parallel: each rank loads its slice of every global batch of ``cfg.batch_size``, gradients are
    averaged, and only rank 0 validates, logs, shows progress and writes checkpoints. Rank 0's result
    holds the best state; the other ranks return their last one.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    ctx = init_distributed(device)
    device = ctx.device(device)
    loop = build_loop(model.to(device), root, manifest, spec, cfg, device, ctx)
    resumed = resume(loop, Path(checkpoint_dir), cfg) if checkpoint_dir else None
    if resumed is not None and ctx.is_main:
        log.info("resumed from %s at step %d of %d", resumed, loop.step, cfg.steps)
    set_train_mode(loop.task, cfg.freeze_norm_stats)
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    callback = callback if ctx.is_main else None
    bar = show_progress(total=cfg.steps, initial=loop.step, desc="train", enabled=progress and ctx.is_main)
    with _determinism(cfg.deterministic), bar:
        while loop.step < cfg.steps:
            raw = train_step(loop, cfg)
            score = _maybe_validate(loop, validate, validate_every, final=loop.step == cfg.steps)
            if loop.step % cfg.log_every == 0 or score is not None or loop.step == cfg.steps:
                metrics = _to_floats(raw, loop.sampler, loop.task.domains)
                if score is not None:
                    metrics["val/r_at_1"] = score
                history.append({"step": float(loop.step), **metrics})
                bar.set_postfix(loss=f"{metrics['loss/total']:.3f}", domain=loop.task.domains[int(metrics['domain'])])
                if callback is not None:
                    callback(metrics, loop.step)
            # why after the postfix: a line printed at this step shows this step's logged loss, so the last
            # line and the run summary's final loss are the same number (not the previous log's)
            bar.update(1)
            due = loop.step % cfg.checkpoint_every == 0 or loop.step == cfg.steps
            if checkpoint_dir is not None and ctx.is_main and due:
                save_checkpoint(Path(checkpoint_dir), loop.step, loop.state_dict())
    check_ranks_agree(model, ctx)
    if ctx.enabled and ctx.is_main:
        log.info("all %d ranks hold identical weights after step %d", ctx.world_size, loop.step)
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    model.eval()
    return TrainResult(model, loop.step, dict(zip(loop.task.domains, loop.domain_steps, strict=True)), metrics,
                       loop.best_score, loop.best_step, history)
