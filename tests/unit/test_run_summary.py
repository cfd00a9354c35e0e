"""The end of a run's summary: the trainer's final loss as the last progress line shows it, and next commands
written the way this `udon` was started, so that they run when pasted there."""

from __future__ import annotations

import sys

from pipelines.cli.common import _final_loss, next_commands

URI = "sqlite:////work/x/.udon/mlflow.db"


def test_the_final_loss_is_the_last_steps_batch_loss_with_its_domain():
    summary = {"steps": 300, "domain_steps": {"emoji": 90, "glyphs": 110, "animals": 100},
               "last": {"loss/total": 1.65449, "domain": 1.0}}
    assert _final_loss(summary) == "300 steps, final loss 1.654 (step 300, domain glyphs)"


def test_under_make_the_next_commands_are_make_targets(monkeypatch):
    monkeypatch.setenv("MAKELEVEL", "1")  # what make exports to the commands it runs
    assert next_commands(3, URI) == [
        "Review: make models; make lineage V=3",
        "MLflow UI: make mlflow-ui, then http://127.0.0.1:5000",
        "ZenML dashboard (runs, DAGs, artifact visualizations, step logs): make dashboard, then http://127.0.0.1:8237"]


def test_otherwise_they_call_udon_and_mlflow_as_this_udon_was_called(monkeypatch, tmp_path):
    monkeypatch.delenv("MAKELEVEL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no udon on PATH: the path it was called by
    monkeypatch.setattr(sys, "argv", [".venv/bin/udon", "run"])
    review, mlflow, dashboard = next_commands(2, URI)
    assert review == "Review: .venv/bin/udon models; .venv/bin/udon lineage 2"
    assert mlflow == f"MLflow UI: MLFLOW_DISABLE_TELEMETRY=true .venv/bin/mlflow ui --backend-store-uri {URI}"
    assert dashboard.endswith(": .venv/bin/udon dashboard, then http://127.0.0.1:8237")
    udon = tmp_path / "udon"  # the same udon found on PATH (an activated venv): plain `udon`
    udon.write_text("#!/bin/sh\n")
    udon.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(udon), "run"])
    assert next_commands(2, URI)[0] == "Review: udon models; udon lineage 2"
