"""The training progress lines and the run summary report the same loss: the last logged step's batch loss."""

from __future__ import annotations

import io
import re

import pytest

from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, write_tiny_benchmark
from udon_core.data import num_train_classes, read_manifest
from udon_core.model import UdonModel
from udon_core.progress import LineProgress
from udon_core.training import SamplerConfig, TrainConfig, train


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = write_tiny_benchmark(tmp_path_factory.mktemp("tiny"))
    manifest = read_manifest(root, SPEC)
    return root, manifest, num_train_classes(manifest, SPEC)


@pytest.mark.parametrize("log_every", [1, 3])
def test_every_progress_line_shows_the_loss_logged_at_its_step(bench, monkeypatch, log_every):
    # why min_interval=0: the 5 s rate limit of a real run decides only *whether* a line is printed; a line
    # printed at the last step (a long run) must already carry that step's loss, not the previous log's.
    out = io.StringIO()
    monkeypatch.setattr("udon_core.training.loop.show_progress",
                        lambda total, initial, desc, enabled: LineProgress(total=total, initial=initial, desc=desc,
                                                                            stream=out, every=0.25, min_interval=0))
    root, manifest, classes = bench
    cfg = TrainConfig(steps=8, batch_size=4, frozen_steps=3, log_every=log_every, device="cpu",
                      sampler=SamplerConfig(update_every=4))
    result = train(UdonModel(TINY_MODEL, classes), root, manifest, SPEC, cfg)
    lines = out.getvalue().splitlines()
    logged = {int(h["step"]): h for h in result.history}
    shown = [re.fullmatch(r"train: (\d+)/8 \(\d+%\) \d+s(?: loss=([\d.]+) domain=(\w+))?", line).groups()
             for line in lines]
    assert [int(n) for n, _, _ in shown] == [2, 4, 6, 8], lines
    for n, loss, domain in shown:
        earlier = [s for s in logged if s <= int(n)]  # between logs a line shows the latest logged loss
        if not earlier:
            assert loss is None, lines  # nothing logged yet: no loss to show
            continue
        assert loss == f"{logged[max(earlier)]['loss/total']:.3f}", (n, lines, logged)
        assert domain == SPEC.domain_names[int(logged[max(earlier)]["domain"])]
    # the last line is what the summary reports as the final loss
    assert shown[-1][1] == f"{result.last_metrics['loss/total']:.3f}"
