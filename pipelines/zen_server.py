"""A ZenML server on this machine, bound to 127.0.0.1: the dashboard over the embedded store (`udon dashboard`),
and the throwaway server that `udon k8s render --kubeflow-pipeline` compiles against.

The server runs in its own process (uvicorn on ZenML's FastAPI app, as ZenML's own local deployment does)
with its own config folder, so the client of this machine sees it as a server, not as its local store.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from udon_core.errors import StackError

HOST = "127.0.0.1"
STARTUP_SECONDS = 120.0
Auth = Literal["none", "password"]
SURVEY_DONE = "finished_onboarding_survey"  # zenml.constants.FINISHED_ONBOARDING_SURVEY_KEY


@dataclass
class ZenServer:
    """A running server: its URL, process and log file."""

    url: str
    process: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (uvicorn shuts down on SIGTERM), then kill if it does not."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def embedded_store_url(store_url: str) -> str:
    """``store_url`` if it is an embedded (SQLite) store that exists: what a local dashboard can serve."""
    if not store_url.startswith("sqlite:///"):
        raise StackError(f"the active ZenML store is a server already ({store_url}): open its dashboard there")
    db = Path(store_url.removeprefix("sqlite:///"))
    if not db.is_file():
        raise StackError(f"{db}: no ZenML store yet; run `make run` (or `udon run`) first")
    return store_url


def server_env(store_url: str, state: Path, auth: Auth, local_stores: Path | None = None) -> dict[str, str]:
    """The server process's environment: its store, its own config folder, and how clients sign in.

    ``auth='none'`` is the local dashboard, with the settings ZenML's own local server (`zenml login --local`,
    zenml/zen_server/deploy/daemon/daemon_zen_server.py) runs with: no login (one user, loopback only), the
    ``local`` deployment type, and permission to read the local artifact store, without which every artifact
    visualization and step log says "Files in a local artifact store cannot be accessed from the server".
    ``local_stores`` is the client's folder of local stores: a local artifact store without an explicit path
    lives there, and the server, with a config folder of its own, would look for it in that folder instead.
    ``'password'`` is the default user with an empty password, which a ZenML client can log in with as to any
    server (the Kubeflow render's throwaway server, which reads no artifact).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_STORE_")}
    env.update(
        ZENML_CONFIG_PATH=str(state / "config"), ZENML_STORE_URL=store_url, ZENML_SERVER="true",
        ZENML_SERVER_AUTO_ACTIVATE="true", ZENML_DEFAULT_USER_NAME="default", ZENML_DEFAULT_USER_PASSWORD="",
        ZENML_SERVER_JWT_SECRET_KEY=secrets.token_hex(32), ZENML_ANALYTICS_OPT_IN="false",
        ZENML_ENABLE_RICH_TRACEBACK="false",
    )
    if auth == "none":
        env.update(ZENML_SERVER_AUTH_SCHEME="NO_AUTH", ZENML_SERVER_DEPLOYMENT_TYPE="local",
                   ZENML_SERVER_ALLOW_LOCAL_FILE_ACCESS="true")
    else:
        env.update(ZENML_SERVER_AUTH_SCHEME="OAUTH2_PASSWORD_BEARER", ZENML_SERVER_DEPLOYMENT_TYPE="other")
    if local_stores is not None:
        env["ZENML_LOCAL_STORES_PATH"] = str(local_stores)
    return env


def settle_local_dashboard(url: str) -> None:
    """Take the first-visit gates off a local dashboard, through ZenML's own REST API (the server has no login).

    The dashboard sends a new user to a sign-up form and survey until that user has answered whether ZenML
    may e-mail them (``email_opted_in``) and finished the survey (the ``finished_onboarding_survey`` key the
    form itself writes to ``user_metadata``); this records "no e-mail", as `zenml init` does when its e-mail
    prompt is left empty. Announcements and update notices are switched off (server settings): the dashboard
    would fetch them from the internet. Both are written once, to this project's own store.
    """
    settings = _api(url, "GET", "/settings")["body"]
    if settings.get("display_announcements") or settings.get("display_updates"):
        _api(url, "PUT", "/settings", {"display_announcements": False, "display_updates": False})
    user = _api(url, "GET", "/current-user?hydrate=true")
    meta = (user.get("metadata") or {}).get("user_metadata") or {}
    if user["body"].get("email_opted_in") is None or not meta.get(SURVEY_DONE):
        _api(url, "PUT", "/current-user",  # why not /users/{id}: ZenML 0.98 drops email_opted_in there
             {"email_opted_in": bool(user["body"].get("email_opted_in")), "user_metadata": {**meta, SURVEY_DONE: True}})


def _api(url: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/api/v1{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def start_server(store_url: str, state: Path, *, port: int | None = None, auth: Auth = "none",
                 local_stores: Path | None = None) -> ZenServer:
    """Start a server on ``store_url`` at 127.0.0.1, wait until ``/health`` answers and, for the local dashboard
    (``auth="none"``), take its first-visit gates off."""
    try:
        import uvicorn  # noqa: F401  # the server extra (zenml[server]) brings it
        import zenml.zen_server  # noqa: F401
    except ImportError as err:
        raise StackError("the ZenML server is not installed: pip install -c constraints.txt -e '.[server]'") from err
    state.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = state / "server.log"
    cmd = [sys.executable, "-m", "uvicorn", "zenml.zen_server.zen_server_api:app", "--host", HOST,
           "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, env=server_env(store_url, state, auth, local_stores), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ZenServer(f"http://{HOST}:{port}", process, log)
    try:  # why: the server runs in a session of its own, so nothing else stops it if starting it fails
        _wait_until_healthy(server)
        if auth == "none":
            _settle(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_healthy(server: ZenServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise StackError(f"the ZenML server stopped while starting (exit {server.process.returncode}); "
                             f"{server.log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise StackError(f"the ZenML server did not answer on {server.url} within {STARTUP_SECONDS:.0f} s "
                     f"(log: {server.log})")


def _settle(server: ZenServer) -> None:
    try:
        settle_local_dashboard(server.url)
    except (OSError, ValueError, KeyError) as err:  # unreachable, not JSON (JSONDecodeError), not ZenML's answer
        raise StackError(f"the ZenML server at {server.url} refused the local dashboard's settings: {err} "
                         f"(log: {server.log})") from err


@contextmanager
def running_server(store_url: str, state: Path, **kw) -> Iterator[ZenServer]:
    """A server for the duration of the block."""
    server = start_server(store_url, state, **kw)
    try:
        yield server
    finally:
        server.stop()
