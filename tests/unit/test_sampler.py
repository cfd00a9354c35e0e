"""The domain sampler: round robin first, then probabilities proportional to the teacher loss."""

from __future__ import annotations

import numpy as np
import pytest

from udon_core.sampler import DomainSampler, SamplerConfig


def test_round_robin_until_the_first_update():
    s = DomainSampler([10, 10, 10], SamplerConfig(update_every=6))
    assert [s.draw(t) for t in range(6)] == [0, 1, 2, 0, 1, 2]


def test_update_sets_p_proportional_to_mean_loss_and_unseen_keep_theirs():
    s = DomainSampler([1, 1, 1, 1], SamplerConfig(update_every=4))
    s.record(0, loss_sum=8.0, count=4)   # mean 2
    s.record(1, loss_sum=6.0, count=1)   # mean 6
    s.record(0, loss_sum=0.0, count=4)   # domain 0 now mean 1
    s.update()
    # seen: domain 0 mean 1, domain 1 mean 6 -> share their old mass 0.5 as 1:6 before renormalising;
    # unseen 2 and 3 keep 0.25 each.  p = [1/7, 6/7, 0.25, 0.25] / 1.5
    assert s.probs == pytest.approx(np.array([1 / 7, 6 / 7, 0.25, 0.25]) / 1.5)
    assert s.probs.sum() == pytest.approx(1.0)


def test_after_the_update_draws_follow_p_and_are_seeded():
    cfg = SamplerConfig(update_every=2)
    a, b = DomainSampler([1, 1], cfg, seed=3), DomainSampler([1, 1], cfg, seed=3)
    for s in (a, b):
        s.record(0, 1.0, 1)
        s.record(1, 9.0, 1)
    draws_a = [a.draw(t) for t in range(2, 2002)]
    assert draws_a == [b.draw(t) for t in range(2, 2002)]
    assert np.mean(np.array(draws_a[1:]) == 1) == pytest.approx(0.9, abs=0.03)


def test_static_strategies():
    size = DomainSampler([30, 10], SamplerConfig(strategy="dataset_size"))
    assert size.probs == pytest.approx([0.75, 0.25])
    assert DomainSampler([30, 10], SamplerConfig(strategy="balanced")).probs == pytest.approx([0.5, 0.5])
    rr = DomainSampler([30, 10], SamplerConfig(strategy="round_robin", update_every=1))
    assert [rr.draw(t) for t in range(4)] == [0, 1, 0, 1]


def test_state_round_trip_continues_identically():
    cfg = SamplerConfig(update_every=3)
    a = DomainSampler([1, 1, 1], cfg, seed=1)
    for t in range(7):
        a.record(a.draw(t), float(t + 1), 1)
    b = DomainSampler([1, 1, 1], cfg, seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.draw(t) for t in range(7, 40)] == [b.draw(t) for t in range(7, 40)]
