"""The registry from the command line: every mistake and every unusable registry is one sentence (exit code 2)
in every command that takes a model, and a promoter that is never cached, whatever the run configuration says."""

from __future__ import annotations

import time

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

import integrations.model_registry as mr
from integrations.model_registry import ModelRegistry
from pipelines.zen_server import free_port

NAME = "udon-universal-embedding"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite registry with NAME: v1 champion, v2 held by the gate with two failed checks."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("e"))
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id)
    reg = ModelRegistry(NAME, uri)
    reg.decide("1", "promote", ["first model: judged on the floors alone"], 0, actor="udon-gate")
    reg.decide("2", "hold", ["regression: a mMP@5 change -0.050 >= -0.020 (FAIL)",
                             "regression: a R@1 change -0.040 >= -0.020 (FAIL)"], 2, actor="udon-gate")
    return uri


@pytest.fixture
def registry_at(monkeypatch):
    """Point the CLI at a tracking URI (the stack's, normally); MLflow's global URI is restored afterwards."""
    previous = mlflow.get_tracking_uri()

    def point(uri: str) -> None:
        monkeypatch.setattr("pipelines.stack.tracking_uri", lambda: uri)
    yield point
    mlflow.set_tracking_uri(previous)


def _cli(*args):
    from pipelines.cli import cli

    return CliRunner().invoke(cli, list(args))


def _one_sentence(result, start: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: {start}"), result.output
    return result.output


@pytest.mark.parametrize("command", ["evaluate", "embed", "promote", "lineage", "models", "rollback"])
def test_a_mistyped_model_name_is_one_sentence_in_every_command(store, registry_at, tmp_path, command):
    registry_at(store)
    typo = "udon-universal-embeding"
    args = {"evaluate": ["evaluate", "--model", f"models:/{typo}/1", "--data", str(tmp_path)],
            "embed": ["embed", str(tmp_path), "--model", f"models:/{typo}@champion", "--out", str(tmp_path / "e.npy")],
            "promote": ["promote", "2", "--reason", "r", "--model", typo], "lineage": ["lineage", "1", "--model", typo],
            "models": ["models", "--model", typo], "rollback": ["rollback", "--model", typo]}[command]
    out = _one_sentence(_cli(*args), f"no registered model '{typo}' in the MLflow registry at {store}")
    assert f"did you mean '{NAME}'?" in out


def test_a_missing_version_or_alias_names_the_versions_and_aliases(store, registry_at, tmp_path):
    registry_at(store)
    what = "(versions: 1 (promote), 2 (hold); aliases: challenger -> 2, champion -> 1)"
    _one_sentence(_cli("evaluate", "--model", f"models:/{NAME}/7", "--data", str(tmp_path)),
                  f"model '{NAME}' has no version 7 {what}")
    _one_sentence(_cli("embed", str(tmp_path), "--model", f"models:/{NAME}@champoin", "--out", str(tmp_path / "e.npy")),
                  f"model '{NAME}' has no alias 'champoin'; did you mean 'champion'? {what}")
    _one_sentence(_cli("lineage", "7", "--model", NAME), f"model '{NAME}' has no version 7 {what}")
    _one_sentence(_cli("promote", "7", "--reason", "r", "--model", NAME), f"model '{NAME}' has no version 7 {what}")


def test_a_missing_data_folder_is_one_sentence(tmp_path):
    _one_sentence(_cli("evaluate", "--model", f"models:/{NAME}/1", "--data", str(tmp_path / "nope")),
                  f"{tmp_path / 'nope'}: no such data folder (--data")


def test_promoting_over_the_gate_asks_for_force_and_says_it_was_recorded(store, registry_at):
    registry_at(store)
    refused = _one_sentence(_cli("promote", "2", "--reason", "noise", "--model", NAME),
                            "the gate's verdict on version 2 is hold (2 failed checks: regression: a mMP@5")
    assert refused.rstrip().endswith("add --force to do so (recorded with your name and reason)")
    assert ModelRegistry(NAME, store).champion().version == "1"
    done = _cli("promote", "2", "--reason", "noise", "--force", "--model", NAME)
    assert done.exit_code == 0, done.output
    assert done.output.startswith("version 2 is the champion (production); version 1 archived; recorded as an "
                                  "override of the gate's verdict hold (2 failed checks")
    chain = _cli("lineage", "2", "--model", NAME)
    assert "promote v2 by " in chain.output and " over the gate's verdict hold (2 failed checks" in chain.output


def _refused_port() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a loopback port nobody listens on


@pytest.mark.parametrize("command", ["models", "evaluate"])
def test_an_unreachable_registry_is_one_sentence_within_seconds(registry_at, tmp_path, monkeypatch, command):
    for key in mr.INTERACTIVE_HTTP:  # MLflow's own defaults: 7 retries, about 4 minutes on a refused port
        monkeypatch.delenv(key, raising=False)
    dead = _refused_port()
    registry_at(dead)
    args = ["models"] if command == "models" else ["evaluate", "--model", f"models:/{NAME}@champion",
                                                   "--data", str(tmp_path)]
    started = time.monotonic()
    _one_sentence(_cli(*args), f"the MLflow registry at {dead} cannot be used")
    assert time.monotonic() - started < 20


def test_a_registry_whose_sqlite_folder_is_gone_is_an_error_not_an_empty_registry(registry_at, tmp_path):
    gone = tmp_path / "moved" / "mlflow.db"
    registry_at(f"sqlite:///{gone}")
    for args in (["models"], ["evaluate", "--model", f"models:/{NAME}@champion", "--data", str(tmp_path)]):
        _one_sentence(_cli(*args), f"the MLflow registry at sqlite:///{gone} is gone: the folder {gone.parent} does "
                                   "not exist")
    assert not gone.parent.exists()


def test_retrain_never_reads_an_unusable_registry_as_no_champion(registry_at, tmp_path):
    from pipelines.cli.registry import _champion_or_none

    registry_at(f"sqlite:///{tmp_path / 'moved' / 'mlflow.db'}")
    with pytest.raises(mr.RegistryUnavailableError, match="is gone"):
        _champion_or_none(NAME)
    registry_at(_refused_port())
    with pytest.raises(mr.RegistryUnavailableError, match="cannot be used"):
        _champion_or_none(NAME)
    registry_at(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a registry without the model: the first run
    assert _champion_or_none(NAME) is None


def test_the_promoter_is_never_cached_even_when_the_run_enables_caching(tmp_path):
    from pipelines.run import ConfigError, resolve_config
    from tests.repos import init_repo, track_data

    init_repo(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    track_data(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"enable_cache": True, "parameters": {"data": {"repo": str(tmp_path)}}}))
    doc = resolve_config(config)
    assert doc["enable_cache"] is True and doc["steps"]["model_promoter"] == {"enable_cache": False}
    config.write_text(yaml.safe_dump({"parameters": {"data": {"repo": str(tmp_path)}},
                                      "steps": {"model_promoter": {"enable_cache": True}}}))
    with pytest.raises(ConfigError, match="steps.model_promoter.enable_cache: model_promoter is never cached"):
        resolve_config(config)


@pytest.mark.parametrize("command", ["evaluate", "embed", "models"])
def test_a_stack_without_an_mlflow_tracker_is_one_sentence(monkeypatch, tmp_path, command):
    monkeypatch.setattr("pipelines.stack.tracking_uri", lambda: None)  # the active stack has no MLflow tracker
    args = {"evaluate": ["evaluate", "--model", f"models:/{NAME}/1", "--data", str(tmp_path)],
            "embed": ["embed", str(tmp_path), "--model", f"models:/{NAME}@champion", "--out", str(tmp_path / "e.npy")],
            "models": ["models", "--model", NAME]}[command]
    _one_sentence(_cli(*args), "the active ZenML stack has no MLflow experiment tracker, so no model registry")
