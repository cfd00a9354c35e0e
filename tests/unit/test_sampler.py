"""The domain sampler: round robin first, then probabilities proportional to the teacher loss."""

from __future__ import annotations

import numpy as np
import pytest

from udon_core.training import DomainSampler, SamplerConfig


def test_round_robin_until_the_first_update_which_comes_before_official_step_1000():
    s = DomainSampler([10, 10, 10], SamplerConfig(update_every=5), total_steps=20)
    # official steps 1..4 (ours 0..3) are round robin; the update runs before official step 5 (ours 4)
    draws = []
    for t in range(4):
        draws.append(s.draw(t))
        s.record(draws[-1], loss_sum=0.0 if draws[-1] else 1.0, count=1, step=t)
    assert draws == [0, 1, 2, 0]
    s.draw(4)
    assert s.last_update == 4 and s.probs == pytest.approx([1.0, 0.0, 0.0])
    assert all(s.draw(t) == 0 for t in range(5, 9))


def test_update_sets_p_proportional_to_mean_loss_and_unseen_keep_theirs():
    s = DomainSampler([1, 1, 1, 1], SamplerConfig(update_every=4), total_steps=100)
    s.record(0, loss_sum=8.0, count=4, step=0)   # domain 0: 8 over 4 examples
    s.record(1, loss_sum=6.0, count=1, step=1)   # domain 1: mean 6
    s.record(0, loss_sum=0.0, count=4, step=2)   # domain 0: 8 over 8 examples -> mean 1
    s.update(3)
    # seen: means 1 and 6 -> p = 1/7, 6/7; unseen 2 and 3 keep 0.25 each; renormalise by 1 + 0.5
    assert s.probs == pytest.approx(np.array([1 / 7, 6 / 7, 0.25, 0.25]) / 1.5)
    assert s.weights(["a", "b", "c", "d"])["b"] == pytest.approx(6 / 7 / 1.5)


def test_update_without_any_loss_keeps_round_robin():
    s = DomainSampler([1, 1], SamplerConfig(update_every=2), total_steps=10)
    assert [s.draw(t) for t in range(6)] == [0, 1, 0, 1, 0, 1] and s.last_update is None


def test_after_an_update_the_schedule_follows_p_and_is_seeded():
    cfg = SamplerConfig(update_every=2)
    a, b = DomainSampler([1, 1], cfg, total_steps=4002, seed=3), DomainSampler([1, 1], cfg, total_steps=4002, seed=3)
    for s in (a, b):
        s.record(0, 1.0, 1, step=0)
        s.record(1, 9.0, 1, step=0)
        s.draw(1)  # the update
    cfg_no_updates = SamplerConfig(update_every=10**6)
    a.cfg = b.cfg = cfg_no_updates
    draws_a = [a.draw(t) for t in range(2, 4002)]
    assert draws_a == [b.draw(t) for t in range(2, 4002)]
    assert np.mean(np.array(draws_a) == 1) == pytest.approx(0.9, abs=0.03)
    c = DomainSampler([1, 1], cfg, total_steps=4002, seed=4)
    c.record(0, 1.0, 1, step=0), c.record(1, 9.0, 1, step=0), c.draw(1)
    c.cfg = cfg_no_updates
    assert [c.draw(t) for t in range(2, 4002)] != draws_a


def test_static_strategies_have_exact_counts_like_the_official_schedule():
    size = DomainSampler([30, 10], SamplerConfig(strategy="dataset_size"), total_steps=100)
    assert size.probs == pytest.approx([0.75, 0.25])
    assert np.bincount([size.draw(t) for t in range(100)]).tolist() == [75, 25]
    balanced = DomainSampler([30, 10, 5], SamplerConfig(strategy="balanced"), total_steps=100)
    # floor(100/3) = 33 for the first domains, the last takes the remainder (official)
    assert np.bincount([balanced.draw(t) for t in range(100)]).tolist() == [33, 33, 34]
    rr = DomainSampler([30, 10], SamplerConfig(strategy="round_robin", update_every=1), total_steps=4)
    assert [rr.draw(t) for t in range(4)] == [0, 1, 0, 1]
    with pytest.raises(IndexError):
        rr.draw(4)


def test_official_window_is_only_cleared_at_summary_writes():
    # flush_every=3: the official loop clears its metrics after official steps 1, 4, 7 (ours 0, 3, 6).
    s = DomainSampler([1, 1], SamplerConfig(update_every=2, flush_every=3), total_steps=10)
    s.record(0, 100.0, 1, step=0)  # flushed right after: not seen by any update
    s.record(1, 3.0, 1, step=1)
    s.update(1)  # window = step 1 only: domain 1 seen, domain 0 keeps 0.5
    assert s.probs == pytest.approx([0.5 / 1.5, 1 / 1.5])
    s.record(0, 1.0, 1, step=2)
    s.update(3)  # not cleared at the update: the window still holds steps 1 and 2
    assert s.probs == pytest.approx([0.25, 0.75])


def test_state_round_trip_continues_identically():
    cfg = SamplerConfig(update_every=3)
    a = DomainSampler([1, 1, 1], cfg, total_steps=40, seed=1)
    for t in range(7):
        a.record(a.draw(t), float(t + 1), 1, step=t)
    b = DomainSampler([1, 1, 1], cfg, total_steps=40, seed=1)
    b.load_state_dict(a.state_dict())
    for t in range(7, 40):
        da, db = a.draw(t), b.draw(t)
        assert da == db
        a.record(da, 1.0 + da, 1, step=t), b.record(db, 1.0 + db, 1, step=t)
    assert a.probs.tolist() == b.probs.tolist()
