"""The training loop: generic over the task, with UDON's optimisation recipe and exact resume.

Recipe (research/udon.md section 4): AdamW, weight decay 1e-6 on every parameter, two groups — heads at
1e-3 and the backbone at 1e-5 but at lr 0 during the frozen phase (kept in the optimiser, so its Adam
moments evolve as in the JAX original); inactive domain heads get zero gradients for the same reason.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from udon_core.benchmark import BenchmarkSpec
from udon_core.device import resolve_device
from udon_core.domain_loader import DomainStream
from udon_core.losses import LossConfig
from udon_core.model import EmbeddingModel, UdonModel
from udon_core.sampler import DomainSampler, SamplerConfig
from udon_core.task import UdonTask
from udon_core.transforms import train_transform
from udon_core.uned import records_of

MetricsCallback = Callable[[dict[str, float], int], None]
Validator = Callable[[EmbeddingModel], float]


class TrainConfig(BaseModel):
    """How to train; the defaults are the official UDON run on UnED (the demo overrides the sizes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=221_180, ge=1, description="UnED: 10 epochs of floor(2,831,222 / 128) steps")
    batch_size: int = Field(default=128, ge=2, description="images per step, all from one domain")
    lr_heads: float = Field(default=1e-3, ge=0)
    lr_backbone: float = Field(default=1e-5, ge=0, description="1e-3 x the official multiplier 1e-2")
    frozen_steps: int = Field(default=44_236, ge=0, description="backbone lr is 0 for the first 2 epochs")
    weight_decay: float = Field(default=1e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    zero_grad_inactive_heads: bool = Field(default=True, description="match optax: idle heads still take Adam steps")
    loss: LossConfig = Field(default_factory=LossConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    log_every: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=1000, ge=1)
    deterministic: bool = False
    freeze_norm_stats: bool = Field(
        default=True,
        description="keep BatchNorm running statistics fixed (CNN backbones): every batch is single-domain, so "
        "updated statistics would follow whichever domain was drawn last. No effect on ViTs (LayerNorm).",
    )


@dataclass
class TrainResult:
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


def build_optimizer(task: UdonTask, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = [{"name": name, "params": params, "lr": 0.0} for name, params in task.param_groups().items()]
    return torch.optim.AdamW(groups, lr=cfg.lr_heads, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def learning_rates(step: int, cfg: TrainConfig) -> dict[str, float]:
    """Constant heads lr; backbone lr 0 while ``step < frozen_steps`` (optax count <= frozen), then constant."""
    return {"heads": cfg.lr_heads, "backbone": 0.0 if step < cfg.frozen_steps else cfg.lr_backbone}


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass
class _Loop:
    """Everything that changes while training; its state_dict is the checkpoint."""

    task: UdonTask
    optimizer: torch.optim.AdamW
    sampler: DomainSampler
    streams: list[DomainStream]
    step: int = 0
    domain_steps: list[int] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    best_state: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.task.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "streams": [s.position for s in self.streams],
                "step": self.step, "domain_steps": self.domain_steps, "rng": _rng_state(),
                "best": (self.best_score, self.best_step, self.best_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        for stream, pos in zip(self.streams, state["streams"]):
            stream.position = pos
        self.step, self.domain_steps = state["step"], list(state["domain_steps"])
        self.best_score, self.best_step, self.best_state = state["best"]
        _set_rng_state(state["rng"])


def _build_loop(model: UdonModel, root: Path, manifest: pd.DataFrame, spec: BenchmarkSpec, cfg: TrainConfig) -> _Loop:
    task = UdonTask(model, cfg.loss)
    transform = train_transform(model.config.preprocess)
    streams = []
    for i, name in enumerate(model.domains):
        records = records_of(manifest, name, spec.domain(name).train)
        streams.append(DomainStream(root, records, transform, cfg.batch_size, seed=cfg.seed * 100 + i,
                                    num_workers=cfg.num_workers))
    sampler = DomainSampler([len(s.dataset) for s in streams], cfg.sampler, seed=cfg.seed)
    return _Loop(task, build_optimizer(task, cfg), sampler, streams, domain_steps=[0] * len(streams))


def train_step(loop: _Loop, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """One optimisation step on one domain's batch; returns the scalars to log."""
    d = loop.sampler.draw(loop.step)
    domain = loop.task.domains[d]
    images, labels = loop.streams[d].next()
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = loop.task(images, labels, domain)
    loop.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if cfg.zero_grad_inactive_heads:
        for p in loop.task.inactive_head_parameters(domain):
            p.grad = torch.zeros_like(p)
    lrs = learning_rates(loop.step, cfg)
    for group in loop.optimizer.param_groups:
        group["lr"] = lrs[group["name"]]
    loop.optimizer.step()
    loop.sampler.record(d, float(out["sampler_loss_sum"]), labels.shape[0])
    loop.domain_steps[d] += 1
    loop.step += 1
    metrics = {k: float(v.detach()) for k, v in out.items() if k != "sampler_loss_sum"}
    metrics["loss/total"] = metrics.pop("loss")
    metrics.update({f"lr/{k}": v for k, v in lrs.items()}, domain=float(d))
    metrics.update({f"sampler/p/{name}": float(p) for name, p in zip(loop.task.domains, loop.sampler.probs)})
    return metrics


def set_train_mode(model: UdonModel, freeze_norm_stats: bool) -> None:
    """Train mode, with BatchNorm layers kept in eval mode when their statistics are frozen."""
    model.train()
    if freeze_norm_stats:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _maybe_validate(loop: _Loop, validate: Validator | None, every: int | None, final: bool) -> float | None:
    if validate is None or not (final or (every and loop.step % every == 0)):
        return None
    score = float(validate(loop.task.model.embedding_model()))
    if loop.best_score is None or score > loop.best_score:
        # why: the official run keeps only the best checkpoint by mean merged val R@1 and tests that one.
        loop.best_score, loop.best_step = score, loop.step
        loop.best_state = copy.deepcopy(loop.task.model.state_dict())
    return score


def train(model: UdonModel, root: Path, manifest: pd.DataFrame, spec: BenchmarkSpec, cfg: TrainConfig, *,
          callback: MetricsCallback | None = None, validate: Validator | None = None,
          validate_every: int | None = None, checkpoint_dir: Path | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps, resuming from ``checkpoint_dir/last.pt`` when it exists."""
    torch.manual_seed(cfg.seed), np.random.seed(cfg.seed), random.seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    device = resolve_device(cfg.device)
    loop = _build_loop(model.to(device), Path(root), manifest, spec, cfg)
    last = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if last is not None and last.is_file():
        loop.load_state_dict(torch.load(last, map_location=device, weights_only=False))
    set_train_mode(model, cfg.freeze_norm_stats)
    history, metrics = [], {}
    for _ in tqdm(range(loop.step, cfg.steps), desc="train", initial=loop.step, total=cfg.steps, disable=not progress):
        metrics = train_step(loop, cfg, device)
        score = _maybe_validate(loop, validate, validate_every, final=loop.step == cfg.steps)
        if score is not None:
            metrics["val/r_at_1"] = score
        if callback and (loop.step % cfg.log_every == 0 or score is not None or loop.step == cfg.steps):
            callback(metrics, loop.step)
            history.append({"step": loop.step, **metrics})
        if last is not None and (loop.step % cfg.checkpoint_every == 0 or loop.step == cfg.steps):
            save_checkpoint(last, loop.state_dict())
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    model.eval()
    return TrainResult(model, loop.step, dict(zip(loop.task.domains, loop.domain_steps)), metrics,
                       loop.best_score, loop.best_step, history)
