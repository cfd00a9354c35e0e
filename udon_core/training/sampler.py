"""Which domain each training step draws its (single-domain) batch from (research/udon.md section 3).

Like the official ``sampling_utils.Sampler``, the sampler holds a schedule of domain ids for every step
of the run. Static strategies build it once; 'dynamic' (UDON) starts round robin and, every
``update_every`` steps, sets each domain's probability to its mean teacher classification loss over
the window divided by the sum over the domains seen in the window (domains not seen keep their previous
probability, then everything is renormalised) and rebuilds the schedule from those probabilities.

A schedule for probabilities p over T steps holds floor(T * p_d) entries of each domain but the last,
which gets the remainder, in a seeded random order (the official code permutes with PRNGKey(step); we
permute with numpy under (seed, step), so the order differs but the law is the same). Only the steps
after an update use the rebuilt schedule, so in effect each step draws from Categorical(p).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from udon_core.errors import InvalidValueError

Strategy = Literal["dynamic", "round_robin", "dataset_size", "balanced"]


class SamplerConfig(BaseModel):
    """How domains are scheduled; defaults are the official UDON run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # why: UDON = round robin (sampling_strategy) + update_sampler=True; the others are the UnED baselines.
    strategy: Strategy = "dynamic"
    update_every: int = Field(default=1000, ge=1, description="steps between dynamic updates (UDON: 1000)")
    signal: str = Field(
        default="loss/teacher_ce",
        description="the task's per-batch mean loss that drives 'dynamic' (official: the teacher CE, "
        "update_sampler_logit_type='teacher'; 'loss/student_ce' is its 'universal_student' option)",
    )
    flush_every: int | None = Field(
        default=None, ge=1,
        description="None: the loss window is the steps since the last update. N: emulate the official code, "
        "whose window is cleared only when the train summary is written (after steps with step % N == 1, "
        "N = steps_per_epoch // 10 = 2211 on UnED), not at updates",
    )


class DomainSampler:
    """One domain index per step, from a per-run schedule; 'dynamic' re-learns it from the losses.

    Steps are 0-based here; the official loop counts from 1, so its "update when step % 1000 == 0,
    before drawing the batch" is our update before step ``s`` when ``(s + 1) % update_every == 0``.
    """

    def __init__(self, sizes: list[int], cfg: SamplerConfig, total_steps: int, seed: int = 0) -> None:
        if not sizes:
            raise InvalidValueError("the sampler needs at least one domain")
        if total_steps < 1:
            raise InvalidValueError(f"total_steps must be positive, got {total_steps}")
        self.cfg, self.total_steps, self.seed = cfg, total_steps, seed
        n = len(sizes)
        sizes_arr = np.asarray(sizes, dtype=np.float64)
        self.probs = sizes_arr / sizes_arr.sum() if cfg.strategy == "dataset_size" else np.full(n, 1.0 / n)
        self.last_update: int | None = None  # step of the last dynamic update that changed the schedule
        self._loss_sum = np.zeros(n)
        self._count = np.zeros(n)
        self._schedule = self._build_schedule()

    @property
    def num_domains(self) -> int:
        return len(self.probs)

    def _build_schedule(self) -> np.ndarray:
        if self.cfg.strategy == "round_robin" or (self.cfg.strategy == "dynamic" and self.last_update is None):
            return np.arange(self.total_steps) % self.num_domains
        counts = np.floor(self.total_steps * self.probs[:-1]).astype(np.int64)
        counts = np.append(counts, max(self.total_steps - int(counts.sum()), 0))
        schedule = np.repeat(np.arange(self.num_domains), counts)[: self.total_steps]
        rng = np.random.default_rng([self.seed, self.last_update or 0])
        return rng.permutation(schedule)

    def draw(self, step: int) -> int:
        """The domain of step ``step`` (0-based); a dynamic update happens first when one is due."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} is outside the run's {self.total_steps} steps")
        if self.cfg.strategy == "dynamic" and (step + 1) % self.cfg.update_every == 0:
            self.update(step)
        return int(self._schedule[step])

    def record(self, domain: int, loss_sum: float, count: int, step: int) -> None:
        """Add a batch's summed per-example loss (the signal) of step ``step`` to the window."""
        self._loss_sum[domain] += loss_sum
        self._count[domain] += count
        # why: the official train_metrics are cleared at each summary write, after steps with step % N == 1.
        if self.cfg.flush_every is not None and (step + 1) % self.cfg.flush_every == 1 % self.cfg.flush_every:
            self._clear_window()

    def update(self, step: int) -> None:
        """p_d = mean loss_d / sum over the seen domains; unseen keep p; renormalise; rebuild the schedule."""
        seen = self._count > 0
        if seen.any():
            mean = self._loss_sum[seen] / self._count[seen]
            probs = self.probs.copy()
            probs[seen] = mean / mean.sum()
            self.probs = probs / probs.sum()
            self.last_update = step
            self._schedule = self._build_schedule()
        if self.cfg.flush_every is None:
            self._clear_window()

    def _clear_window(self) -> None:
        self._loss_sum[:] = 0
        self._count[:] = 0

    def weights(self, names: list[str]) -> dict[str, float]:
        """The current sampling probabilities by domain name (logged as ``sampler/p/<domain>``)."""
        return {name: float(p) for name, p in zip(names, self.probs, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        """Everything that determines future draws besides the run length and seed (the schedule is rebuilt)."""
        return {"probs": self.probs.tolist(), "last_update": self.last_update, "loss_sum": self._loss_sum.tolist(),
                "count": self._count.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probs = np.asarray(state["probs"], dtype=np.float64)
        self.last_update = state["last_update"]
        self._loss_sum = np.asarray(state["loss_sum"], dtype=np.float64)
        self._count = np.asarray(state["count"], dtype=np.float64)
        self._schedule = self._build_schedule()
