"""Faults around the pipeline: a `udon run` killed with SIGKILL, a registry that cannot be reached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.conftest import tiny_run_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    from pipelines.cli import cli

    return CliRunner().invoke(cli, list(args))


def _records() -> list[dict]:
    from pipelines.run_records import records_dir, udon_home

    return [json.loads(p.read_text()) for p in records_dir(udon_home()).glob("*.json")]


def _step_status(run_name: str, step: str) -> str | None:
    from zenml.client import Client

    try:
        steps = Client().get_pipeline_run(run_name).steps
    except KeyError:
        return None
    return str(steps[step].status) if step in steps else None


def test_a_killed_udon_run_is_closed_by_the_next_command(tiny_repo, tmp_path):
    from mlflow import MlflowClient
    from zenml.client import Client

    from integrations.mlflow_tracking import mlflow_tracking_uri
    from pipelines.stack import ensure_local_stack

    ensure_local_stack()
    mlflow = MlflowClient(tracking_uri=mlflow_tracking_uri())

    def mlflow_runs(name: str) -> list:
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        return mlflow.search_runs(experiments, f"tags.mlflow.runName = '{name}'") if experiments else []

    config = tiny_run_config(tiny_repo, tmp_path / "long.yaml", registry={"model_name": "udon-killed"},
                             training={"train": {"steps": 100_000, "batch_size": 8, "log_every": 1}})
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_name, deadline = None, time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            mine = [r for r in _records() if r["pid"] == proc.pid]
            run_name = mine[0]["run_name"] if mine else None
            if run_name and _step_status(run_name, "model_trainer") == "running" and mlflow_runs(run_name):
                break
            time.sleep(0.5)
        assert proc.poll() is None and run_name, "the run ended or never reached training"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = mlflow_runs(run_name)
    assert left and {r.info.status for r in left} == {"RUNNING"}  # what kill -9 leaves behind
    assert str(Client().get_pipeline_run(run_name).status) == "running"

    result = _cli("models", "--model", "udon-killed")  # no version was registered: exits 2, after cleaning up
    assert "no registered model 'udon-killed'" in result.output

    run = Client().get_pipeline_run(run_name)
    assert str(run.status) == "failed" and "killed" in (run.get_body().status_reason or "")
    assert str(run.steps["model_trainer"].status) == "failed"
    assert {r.info.status for r in mlflow_runs(run_name)} == {"FAILED"}
    assert not [r for r in _records() if r["run_name"] == run_name]


def test_a_version_registered_but_never_judged_is_marked_incomplete(tmp_path):
    """The window between registration and the gate's verdict, made deterministic: a record of a dead process."""
    from mlflow import MlflowClient

    from pipelines.run_records import RunRecord, close_abandoned_runs, records_dir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("e"))
    client.create_registered_model("m")
    for name in ("killed-run", "other-run"):
        client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id,
                                    tags={"zenml.pipeline_run": name, "gate.verdict": "pending"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    import psutil

    record = RunRecord("killed-run", dead.pid, psutil.Process().create_time() - 99, socket.gethostname(), "now")
    records_dir(tmp_path).mkdir(parents=True)
    (records_dir(tmp_path) / "killed-run.json").write_text(json.dumps(record.__dict__))

    lines = close_abandoned_runs(tmp_path, uri)
    assert lines == ["model m version 1: never judged by the gate -> incomplete"]
    v1, v2 = client.get_model_version("m", "1"), client.get_model_version("m", "2")
    assert v1.tags["gate.verdict"] == "incomplete" and "not a candidate" in v1.tags["gate.reasons"]
    assert v2.tags["gate.verdict"] == "pending"  # its run is not known to be dead: left alone
    assert close_abandoned_runs(tmp_path, uri) == []  # the record is gone


def test_a_live_run_is_never_touched(tmp_path):
    from pipelines.run_records import abandoned_runs, recorded_run

    with recorded_run(tmp_path, "live-run"):
        assert abandoned_runs(tmp_path) == []
    assert not list((tmp_path / "runs" / "active").glob("*.json"))


_REGISTER = """
import torch, mlflow
from integrations.mlflow_models import register_embedding_model
from integrations.model_registry import RegistryError
from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.model.udon_model import EmbeddingModel

torch.manual_seed(0)
with mlflow.start_run():
    try:
        register_embedding_model(EmbeddingModel(TINY_MODEL), "m", metrics={"mean_mmp_at_5": 0.5},
                                 dataset_tags={"data.dvc_md5": "x"})
    except RegistryError as err:
        print("REGISTRY ERROR:", err)
"""


def test_an_unreachable_registry_is_one_sentence_and_nothing_is_registered(tmp_path, monkeypatch):
    import socket

    from mlflow import MlflowClient

    from integrations.model_registry import ModelRegistry, RegistryError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RegistryError, match=f"the MLflow registry at {dead} cannot be used"):
        ModelRegistry("m", dead).versions()

    # Registering from a run whose tracking store works but whose registry is down (a process of its own:
    # MLflow's tracking and registry URIs are process-global).
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # why drop MLFLOW_*: earlier in-process runs export the experiment id and URIs for their subprocesses
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_TRACKING_URI": local,
           "MLFLOW_REGISTRY_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "register.py"  # a file: ZenML derives the source root from the main module's path
    script.write_text(_REGISTER)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert f"REGISTRY ERROR: the MLflow registry at {dead} cannot be used" in done.stdout, done.stderr[-3000:]
    assert MlflowClient(tracking_uri=local).search_registered_models() == []
