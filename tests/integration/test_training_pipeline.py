"""The whole pipeline on a tiny DVC-versioned benchmark, in an isolated ZenML/MLflow/DVC home."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.integration.conftest import commit_data, tiny_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(tiny_repo, tmp_path_factory):
    from pipelines.run import run_pipeline

    config = tiny_run_config(tiny_repo, tmp_path_factory.mktemp("cfg") / "run.yaml")
    return config, run_pipeline(config)


def test_pipeline_registers_a_model_traceable_to_its_data(first_run, tiny_repo):
    from mlflow import MlflowClient
    from zenml.client import Client

    from integrations import dvc_store

    _, outcome = first_run
    pin = dvc_store.read_pin(tiny_repo)
    assert outcome.status.endswith("completed")
    assert outcome.dataset_md5 == pin.md5
    assert set(outcome.metrics["per_domain"]) == {"emoji", "glyphs", "animals"}

    # MLflow: a registered version tagged with the data version and the metrics.
    reg = outcome.registration
    import mlflow

    mlflow.set_tracking_uri(reg["tracking_uri"])
    mv = MlflowClient().get_model_version(reg["name"], reg["version"])
    assert mv.tags["data.dvc_md5"] == pin.md5
    assert float(mv.tags["metric.mean_mmp_at_5"]) == pytest.approx(outcome.metrics["mean_mmp_at_5"], abs=1e-4)
    # The version's run holds its per-domain evaluation and report, even when train and evaluate were cached
    # (another test module may have trained this model first); the tag names the run with the training curves.
    run = MlflowClient().get_run(mv.run_id)
    assert run.data.metrics["eval/trained/emoji/mmp_at_5"] == pytest.approx(
        outcome.metrics["per_domain"]["emoji"]["mmp_at_5"])
    assert {"evaluation/report.md", "evaluation/trained.json"} <= {
        f.path for f in MlflowClient().list_artifacts(mv.run_id, "evaluation")}
    training_run = mv.tags["training.mlflow_run_id"]
    assert len(MlflowClient().get_metric_history(training_run, "loss/total")) > 1
    assert "eval/oracle_teacher/mean_r_at_1" in MlflowClient().get_run(training_run).data.metrics
    embedder = mlflow.pytorch.load_model(reg["model_uri"])
    import torch

    out = embedder(torch.zeros(3, 3, 32, 32))
    assert out.shape == (3, 64)
    # The generic pyfunc (what `mlflow models serve` runs) takes an image array, as the signature says.
    import numpy as np

    served = mlflow.pyfunc.load_model(reg["model_uri"])  # through udon_pt2_loader: model.pt2 checked first
    assert served.metadata.flavors["python_function"]["loader_module"] == "udon_pt2_loader"
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 3, 32, 32)
    vectors = served.predict(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    # What a team sees in MLflow: the data as the run's input (DVC hash as its digest), the preprocessing in
    # the model's metadata and the version's description with the gate's verdict, a per-domain table, an
    # experiment opened as model training, and no stray 'domain' metric.
    assert served.metadata.metadata["preprocess"]["image_size"] == 32
    assert "centre crop 32 x 32" in mv.description and "Gate verdict: promote" in mv.description
    inputs = [i.dataset for i in run.inputs.dataset_inputs]
    assert any(d.digest == pin.md5 for d in inputs), inputs
    assert "evaluation/per_domain.json" in {f.path for f in MlflowClient().list_artifacts(mv.run_id, "evaluation")}
    assert "domain" not in MlflowClient().get_run(training_run).data.metrics
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # ZenML: the model version's model artifact leads back, through the train step, to the DVC hash.
    client = Client()
    zen_mv = client.get_pipeline_run(outcome.run_name).model_version
    art = zen_mv.get_model_artifact("embedding_model")
    producer = client.get_run_step(art.producer_step_run_id)
    assert producer.name == "model_trainer"
    dataset_art = producer.inputs["dataset"][0]
    assert dataset_art.run_metadata["dvc_md5"] == pin.md5
    assert zen_mv.run_metadata["mlflow"]["version"] == reg["version"]

    # The evaluator keeps the test embeddings (re-scoring them gives the same numbers) and scores the
    # teacher heads, each on its own domain, from the training-model artifact.
    from udon_core.evaluation import evaluate_embeddings

    evaluator = client.get_pipeline_run(outcome.run_name).steps["model_evaluator"]
    embeddings = evaluator.outputs["test_embeddings"][0].load()
    dataset = producer.inputs["dataset"][0].load()
    manifest = producer.inputs["manifest"][0].load()
    again = evaluate_embeddings(embeddings.vectors, manifest, dataset.benchmark, split="test", protocol="merged")
    assert again.to_dict() == outcome.metrics
    assert outcome.oracle_teacher_metrics["protocol"] == "oracle-teacher"
    assert set(outcome.oracle_teacher_metrics["per_domain"]) == {"emoji", "glyphs", "animals"}
    assert set(producer.outputs["training_model"][0].load().domains) == {"emoji", "glyphs", "animals"}


def test_second_run_reuses_ingest_and_validation(first_run):
    from pipelines.run import run_pipeline

    config, _ = first_run
    again = run_pipeline(config)
    assert {"data_ingester", "data_validator"} <= set(again.cached_steps)


def test_deleted_data_is_pulled_back_and_the_next_run_is_cached(first_run, tiny_repo):
    from pipelines.run import run_pipeline

    config, _ = first_run
    shutil.rmtree(tiny_repo / "data")
    restored = run_pipeline(config)
    assert "data_ingester" not in restored.cached_steps and (tiny_repo / "data" / "benchmark.json").is_file()
    again = run_pipeline(config)
    assert {"data_ingester", "data_validator", "model_trainer"} <= set(again.cached_steps)


def test_corrupted_benchmark_stops_before_training(tiny_repo, tmp_path):
    from zenml.client import Client

    from pipelines.run import PipelineRunError, run_pipeline

    repo = tmp_path / "corrupt"
    shutil.copytree(tiny_repo, repo)
    info = repo / "data" / "info_files" / "animals" / "train.json"
    items = json.loads(info.read_text())
    items[3]["class_id"] = 999                                          # out of range
    info.write_text(json.dumps(items))
    (repo / "data" / "images" / items[5]["path"]).unlink()             # missing
    truncated = repo / "data" / "images" / items[7]["path"]
    truncated.write_bytes(truncated.read_bytes()[:100])                 # truncated
    queries = repo / "data" / "info_files" / "emoji" / "test.json"
    test_items = json.loads(queries.read_text())
    test_items[0]["class_id"] = 12345                                   # a query no index image shares
    queries.write_text(json.dumps(test_items))
    commit_data(repo, "corrupt four rows")
    config = tiny_run_config(repo, tmp_path / "run.yaml")
    with pytest.raises(PipelineRunError, match="animals/train.json row 3") as err:
        run_pipeline(config)
    message = str(err.value)
    assert "step 'data_validator' failed" in message
    assert f"animals/train.json row 5: {items[5]['path']}" in message
    assert f"animals/train.json row 7: {items[7]['path']}" in message and "truncated" in message
    assert f"emoji/test.json row 0: {test_items[0]['path']}" in message and "n_positives" in message
    last = Client().list_pipeline_runs(sort_by="desc:created", size=1).items[0]
    assert "model_trainer" not in {name for name, s in last.steps.items() if str(s.status).endswith("completed")}


def test_cli_evaluates_and_embeds_with_the_registered_model(first_run, tiny_repo, tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from pipelines.cli import cli

    _, outcome = first_run
    uri = outcome.registration["model_uri"]
    result = CliRunner().invoke(cli, ["evaluate", "--model", uri, "--data", str(tiny_repo / "data"),
                                      "--out", str(tmp_path / "metrics.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["mean_mmp_at_5"] == pytest.approx(outcome.metrics["mean_mmp_at_5"], abs=1e-6)
    result = CliRunner().invoke(cli, ["evaluate", "--model", uri, "--data", str(tiny_repo / "data"), "--protocol",
                                      "separate", "--save-embeddings", str(tmp_path / "e.npz")])
    assert result.exit_code == 0, result.output
    rescored = CliRunner().invoke(cli, ["evaluate", "--embeddings", str(tmp_path / "e.npz"), "--data",
                                        str(tiny_repo / "data"), "--out", str(tmp_path / "again.json")])
    assert rescored.exit_code == 0, rescored.output  # merged from the saved embeddings: no model needed
    assert json.loads((tmp_path / "again.json").read_text())["mean_mmp_at_5"] == pytest.approx(
        outcome.metrics["mean_mmp_at_5"], abs=1e-6)

    folder = tiny_repo / "data" / "images" / "animals"
    result = CliRunner().invoke(cli, ["embed", str(folder), "--model", uri, "--out", str(tmp_path / "e.parquet")])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert list(table["path"]) == sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    assert len(table["embedding"][0]) == 64


def test_specialists_are_distilled_by_unic_and_udon_offline_with_lineage_to_both(tiny_repo, tmp_path):
    """Two tiny specialist runs, then one student per distillation method, each registered with its teachers."""
    from click.testing import CliRunner
    from zenml.client import Client

    from pipelines.cli import cli
    from pipelines.run import run_pipeline

    def run(name, train, model=None):
        sections = {"train": {"steps": 4, "batch_size": 8, "frozen_steps": 1, "log_every": 1, **train}}
        if model:
            sections["model"] = model
        return run_pipeline(tiny_run_config(tiny_repo, tmp_path / f"{name}.yaml", training=sections,
                                            registry={"model_name": f"udon-{name}"}))

    refs = {}
    for domain in ("emoji", "glyphs"):
        outcome = run(f"specialist-{domain}", {"method": "specialist", "domains": [domain]})
        trainer = Client().get_pipeline_run(outcome.run_name).steps["model_trainer"]
        refs[domain] = (f"zenml:{trainer.outputs['training_model'][0].id}",  # an artifact of the run
                        f"models:/{outcome.registration['name']}/{outcome.registration['version']}")  # registered
    students = {
        "offline": run("offline", {"method": "udon-offline", "domains": ["emoji", "glyphs"],
                                   "specialists": {"emoji": refs["emoji"][0], "glyphs": refs["glyphs"][1]},
                                   "sampler": {"update_every": 2}}),
        "unic": run("unic", {"method": "unic", "domains": ["emoji", "glyphs"],
                             "unic": {"hidden_dim": 16, "last_hidden_dim": 32, "teachers": [
                                 {"name": "emoji", "udon_model": refs["emoji"][1]},
                                 {"name": "glyphs", "udon_model": refs["glyphs"][0]}]}},
                    model={"backbone": {"name": "test_vit", "img_size": 32, "pretrained": None},
                           "preprocess": {"image_size": 32}}),
    }
    for method, student in students.items():
        assert student.status.endswith("completed"), method
        reg = student.registration
        chain = CliRunner().invoke(cli, ["lineage", reg["version"], "--model", reg["name"]])
        assert chain.exit_code == 0, chain.output
        assert "Frozen teachers" in chain.output
        for zenml_ref, registered in refs.values():  # each student names both teachers, by the ref it used
            assert f"ref={zenml_ref}" in chain.output or f"ref={registered}" in chain.output, (method, chain.output)
        assert "artifact=udon_training_model" in chain.output  # the registered specialist's every head


def test_mlflow_models_serve_answers_an_image_with_the_udon_embed_vector(first_run, tiny_repo, tmp_path):
    """`mlflow models serve` as the README runs it, queried over HTTP by examples/serve_client.py."""
    import importlib.util
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    import numpy as np

    from integrations.mlflow_models import load_registered_model
    from udon_core.evaluation import embed_folder

    _, outcome = first_run
    reg = outcome.registration
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("serve_client", root / "examples" / "serve_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    images = tmp_path / "images"
    images.mkdir()
    for i, source in enumerate(sorted((tiny_repo / "data" / "images").rglob("*.png"))[:3]):
        shutil.copyfile(source, images / f"{i}.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": reg["tracking_uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the venv's uvicorn
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", reg["model_uri"],
                               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        paths = sorted(str(p) for p in images.iterdir())
        served = client.embed(url, paths, size=32)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    names, expected = embed_folder(load_registered_model(reg["model_uri"], reg["tracking_uri"]), images, progress=False)
    assert [Path(p).name for p in paths] == names and served.shape == expected.shape == (3, 64)
    cosine = np.sum(served * expected, axis=1)
    assert cosine.min() > 0.99, cosine  # the client's PIL resize vs torchvision's: same preprocessing, not bits


def test_the_dashboard_serves_the_embedded_store_runs_on_loopback(first_run):
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    from pipelines.zen_server import free_port

    _, outcome = first_run
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "dashboard", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()  # printed once the server answers /health
        assert banner.startswith(f"ZenML dashboard: http://127.0.0.1:{port}"), banner + proc.stdout.read()
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/api/v1/runs?name={outcome.run_name}", timeout=30) as resp:
            runs = json.loads(resp.read())["items"]
        assert [r["name"] for r in runs] == [outcome.run_name]
        with urllib.request.urlopen(f"{base}/", timeout=10) as resp:  # the dashboard's single-page app
            assert b"<html" in resp.read().lower()
        _check_what_the_dashboard_shows(f"{base}/api/v1", outcome)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
            pytest.fail(f"udon dashboard did not stop within 60 s of SIGINT:\n{rest}")
    assert proc.returncode == 0 and "stopping the dashboard" in rest, rest
    with socket.socket() as probe:  # the server went with it: nothing listens on the port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _check_what_the_dashboard_shows(api: str, outcome) -> None:
    """The REST calls the dashboard's pages make: the validation page's visualization and a step's log come back
    with their content (not "Files in a local artifact store cannot be accessed from the server"), and the
    first visit is not sent to the sign-up survey."""
    import re
    import urllib.request
    from pathlib import Path

    def get(path: str):
        with urllib.request.urlopen(f"{api}{path}", timeout=60) as resp:
            return json.loads(resp.read())

    run = get(f"/runs?name={outcome.run_name}")["items"][0]
    steps = {s["name"]: s["id"] for s in get(f"/steps?pipeline_run_id={run['id']}&size=50")["items"]}
    validator = get(f"/steps/{steps['data_validator']}?hydrate=true")
    page = get(f"/artifact_versions/{validator['resources']['outputs']['validation_page'][0]['id']}?hydrate=true")
    shown = get(f"/artifact_versions/{page['id']}/visualize?index=0")
    stored = Path(page["metadata"]["visualizations"][0]["body"]["uri"]).read_text()
    assert shown == {"type": "html", "value": stored} and "passed" in stored
    # An earlier test may have trained the same configuration: the log then lives with the step that ran
    trainer = get(f"/steps/{steps['model_trainer']}?hydrate=true")
    ran = trainer["metadata"].get("original_step_run_id") or trainer["id"]
    log = [entry["message"] for entry in get(f"/steps/{ran}/logs?source=step")]
    final = f"{outcome.train_summary['last']['loss/total']:.3f}"  # what the run summary calls the final loss
    assert any(re.fullmatch(rf"train: 6/6 \(100%\) \d+s loss={final} domain=\w+", line) for line in log), log
    user = get("/current-user?hydrate=true")  # the dashboard's survey gate: unanswered e-mail or survey
    assert user["body"]["email_opted_in"] is False
    assert user["metadata"]["user_metadata"]["finished_onboarding_survey"] is True
    settings = get("/settings")["body"]  # nothing fetched from the internet for announcements and updates
    assert settings["display_announcements"] is False and settings["display_updates"] is False
