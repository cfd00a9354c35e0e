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


_NOT_ZENML = """
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # healthy, but its API answers HTML (a proxy's page, another program on the port)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}" if self.path == "/health" else b"<html>not ZenML</html>")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Answer).serve_forever()
"""


def test_a_dashboard_whose_settings_cannot_be_read_is_one_sentence_and_its_server_is_stopped(tmp_path, monkeypatch):
    import subprocess
    import sys

    import pytest

    import pipelines.zen_server as zs
    from udon_core.errors import StackError

    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def fake_server(cmd, **kw):  # the server's own session and log, another program than uvicorn
        started.append(popen([sys.executable, "-c", _NOT_ZENML, cmd[cmd.index("--port") + 1]], **kw))
        return started[-1]
    monkeypatch.setattr(zs.subprocess, "Popen", fake_server)
    try:
        with pytest.raises(StackError, match="refused the local dashboard's settings"):
            zs.start_server("sqlite:///x", tmp_path / "state", auth="none")
        assert started[0].poll() is not None  # not left running in its own session
    finally:
        for process in started:
            process.kill()
            process.wait()
