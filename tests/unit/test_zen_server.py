"""The local ZenML server's settings: the dashboard's may read the local artifact store, the render's may not."""

from __future__ import annotations

from pipelines.zen_server import server_env


def test_the_dashboard_runs_with_zenmls_settings_for_a_local_server_and_the_clients_local_stores(tmp_path):
    env = server_env("sqlite:////x/zenml.db", tmp_path, "none", local_stores=tmp_path / "local_stores")
    # what `zenml login --local` sets (zenml/zen_server/deploy/daemon/daemon_zen_server.py); without the first,
    # every visualization and step log is "Files in a local artifact store cannot be accessed from the server"
    assert env["ZENML_SERVER_ALLOW_LOCAL_FILE_ACCESS"] == "true"
    assert (env["ZENML_SERVER_AUTH_SCHEME"], env["ZENML_SERVER_DEPLOYMENT_TYPE"]) == ("NO_AUTH", "local")
    # the server has its own config folder; the artifact store's files are where the client put them
    assert env["ZENML_LOCAL_STORES_PATH"] == str(tmp_path / "local_stores")
    assert env["ZENML_CONFIG_PATH"] == str(tmp_path / "config") and env["ZENML_ANALYTICS_OPT_IN"] == "false"


def test_the_kubeflow_renders_throwaway_server_signs_clients_in_and_reads_no_local_files(tmp_path):
    env = server_env(f"sqlite:///{tmp_path / 'zenml.db'}", tmp_path, "password")
    assert env["ZENML_SERVER_AUTH_SCHEME"] == "OAUTH2_PASSWORD_BEARER"
    assert "ZENML_SERVER_ALLOW_LOCAL_FILE_ACCESS" not in env and "ZENML_LOCAL_STORES_PATH" not in env
