"""Which domain each training step draws its (single-domain) batch from (research/udon.md section 3).

Dynamic (UDON): round robin until the first update; every ``update_every`` steps each domain's probability
becomes its mean teacher classification loss over the window, divided by the sum over the domains seen
in the window; domains not seen keep their previous probability; then everything is renormalised.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["dynamic", "round_robin", "dataset_size", "balanced"]


class SamplerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy = "dynamic"
    update_every: int = Field(default=1000, ge=1, description="steps between dynamic updates (UDON: 1000)")


class DomainSampler:
    """Draws one domain index per step and, for 'dynamic', learns the probabilities from the losses."""

    def __init__(self, sizes: list[int], cfg: SamplerConfig, seed: int = 0) -> None:
        if not sizes:
            raise ValueError("the sampler needs at least one domain")
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        n = len(sizes)
        sizes_arr = np.asarray(sizes, dtype=np.float64)
        self.probs = sizes_arr / sizes_arr.sum() if cfg.strategy == "dataset_size" else np.full(n, 1.0 / n)
        self.updated = False
        self._loss_sum = np.zeros(n)
        self._count = np.zeros(n)

    @property
    def num_domains(self) -> int:
        return len(self.probs)

    def draw(self, step: int) -> int:
        """The domain for step ``step`` (0-based); a dynamic update happens first when one is due."""
        if self.cfg.strategy == "dynamic" and step > 0 and step % self.cfg.update_every == 0:
            self.update()
        if self.cfg.strategy == "round_robin" or (self.cfg.strategy == "dynamic" and not self.updated):
            return step % self.num_domains
        return int(self.rng.choice(self.num_domains, p=self.probs))

    def record(self, domain: int, loss_sum: float, count: int) -> None:
        """Add a batch's summed per-example teacher loss to the current window."""
        self._loss_sum[domain] += loss_sum
        self._count[domain] += count

    def update(self) -> None:
        """p_d = mean loss_d / sum over seen domains; unseen keep p; renormalise; start a new window."""
        seen = self._count > 0
        if seen.any():
            mean = np.where(seen, self._loss_sum / np.maximum(self._count, 1), 0.0)
            probs = self.probs.copy()
            probs[seen] = mean[seen] / mean[seen].sum()
            self.probs = probs / probs.sum()
            self.updated = True
        self._loss_sum[:] = 0
        self._count[:] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs.tolist(), "updated": self.updated, "loss_sum": self._loss_sum.tolist(),
                "count": self._count.tolist(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probs = np.asarray(state["probs"], dtype=np.float64)
        self.updated = bool(state["updated"])
        self._loss_sum = np.asarray(state["loss_sum"], dtype=np.float64)
        self._count = np.asarray(state["count"], dtype=np.float64)
        self.rng.bit_generator.state = state["rng"]
