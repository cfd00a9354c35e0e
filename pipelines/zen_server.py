"""A ZenML server on this machine, bound to 127.0.0.1: the dashboard over the embedded store (`udon dashboard`),
and the throwaway server that `udon k8s render --kubeflow-pipeline` compiles against.

The server runs in its own process (uvicorn on ZenML's FastAPI app, as ZenML's own local deployment does)
with its own config folder, so the client of this machine sees it as a server, not as its local store.
"""

from __future__ import annotations

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


def server_env(store_url: str, state: Path, auth: Auth) -> dict[str, str]:
    """The server process's environment: its store, its own config folder, and how clients sign in.

    ``auth='none'`` is ZenML's own choice for a local dashboard (one user, loopback only); ``'password'`` is
    the default user with an empty password, which a ZenML client can log in with as to any server.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_STORE_")}
    env.update(
        ZENML_CONFIG_PATH=str(state / "config"), ZENML_STORE_URL=store_url, ZENML_SERVER="true",
        ZENML_SERVER_DEPLOYMENT_TYPE="other", ZENML_SERVER_AUTO_ACTIVATE="true",
        ZENML_SERVER_AUTH_SCHEME="NO_AUTH" if auth == "none" else "OAUTH2_PASSWORD_BEARER",
        ZENML_DEFAULT_USER_NAME="default", ZENML_DEFAULT_USER_PASSWORD="",
        ZENML_SERVER_JWT_SECRET_KEY=secrets.token_hex(32), ZENML_ANALYTICS_OPT_IN="false",
        ZENML_ENABLE_RICH_TRACEBACK="false",
    )
    return env


def start_server(store_url: str, state: Path, *, port: int | None = None, auth: Auth = "none") -> ZenServer:
    """Start a server on ``store_url`` at 127.0.0.1 and wait until ``/health`` answers."""
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
        process = subprocess.Popen(cmd, env=server_env(store_url, state, auth), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ZenServer(f"http://{HOST}:{port}", process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise StackError(f"the ZenML server stopped while starting (exit {process.returncode}); {log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise StackError(f"the ZenML server did not answer on {server.url} within {STARTUP_SECONDS:.0f} s (log: {log})")


@contextmanager
def running_server(store_url: str, state: Path, **kw) -> Iterator[ZenServer]:
    """A server for the duration of the block."""
    server = start_server(store_url, state, **kw)
    try:
        yield server
    finally:
        server.stop()
