"""The `udon` command line: user mistakes are one sentence and exit code 2."""

from __future__ import annotations

from click.testing import CliRunner

from pipelines.cli import cli
from tests.repos import init_repo, track_data


def test_run_with_a_missing_config_is_one_clear_sentence(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'nope.yaml'}: run configuration not found"


def test_bad_override_is_reported(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("parameters: {}\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--set", "training.train.steps"])
    assert result.exit_code == 2 and "key.path=value" in result.output


def test_data_status_and_build(tmp_path):
    init_repo(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    track_data(tmp_path)
    result = CliRunner().invoke(cli, ["data", "status", "--repo", str(tmp_path)])
    assert result.exit_code == 0 and "workspace: clean" in result.output
    result = CliRunner().invoke(cli, ["data", "build", "--out", str(tmp_path / "data")])
    assert result.exit_code == 2 and "exists and is not empty" in result.output


def test_run_on_a_cluster_checks_the_data_remote_and_the_stack_before_anything_runs(tmp_path):
    from pathlib import Path

    cluster = Path(__file__).resolve().parents[2] / "configs" / "cluster.yaml"
    repo = init_repo(tmp_path / "repo", remote=tmp_path / "remote")
    (repo / "data").mkdir()
    (repo / "data" / "a.txt").write_text("a")
    track_data(repo, "data", push=True)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"parameters: {{data: {{repo: '{repo}'}}}}\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--cluster", str(cluster)])
    assert result.exit_code == 2, result.output
    assert f"data.remote: the pods of a cluster run pull the pinned data from the DVC remote, and " \
           f"'{tmp_path / 'remote'}' is a folder on this machine" in result.output
    result = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--cluster", str(cluster),
                                      "--set", "data.remote=s3://bucket/dvc"])
    assert result.exit_code == 2, result.output
    assert "the active stack has neither the 'udon_kubeflow' orchestrator nor a step operator" in result.output


def test_the_dashboard_serves_only_an_embedded_store_that_exists(tmp_path):
    import pytest

    from pipelines.zen_server import embedded_store_url
    from udon_core.errors import StackError

    with pytest.raises(StackError, match=r"a server already \(https://zenml.example.com\)"):
        embedded_store_url("https://zenml.example.com")
    with pytest.raises(StackError, match="no ZenML store yet; run `make run`"):
        embedded_store_url(f"sqlite:///{tmp_path / 'zenml.db'}")
    (tmp_path / "zenml.db").write_bytes(b"")
    assert embedded_store_url(f"sqlite:///{tmp_path / 'zenml.db'}") == f"sqlite:///{tmp_path / 'zenml.db'}"
