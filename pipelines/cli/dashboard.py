"""`udon dashboard`: the open-source ZenML dashboard over this project's runs (DAGs, step logs, artifacts and
their visualizations), served from the embedded store on 127.0.0.1. Its Models and Artifacts tabs are ZenML Pro
pages: models are reviewed in the MLflow UI and with `udon models` / `udon lineage`."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail

DEFAULT_PORT = 8237  # ZenML's own port for a local server


@click.command("dashboard")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
def dashboard_cmd(port: int) -> None:
    """Serve the ZenML dashboard of this project's runs at http://127.0.0.1:PORT until Ctrl-C."""
    from zenml.config.global_config import GlobalConfiguration

    from pipelines.run_records import udon_home
    from pipelines.zen_server import embedded_store_url, start_server

    try:
        config = GlobalConfiguration()
        store = embedded_store_url(config.store_configuration.url)
        server = start_server(store, udon_home() / "dashboard", port=port, local_stores=Path(config.local_stores_path))
    except USER_ERRORS as err:
        fail(err)
    # why our own handlers: Ctrl-C or a SIGTERM (a service manager) must stop the server whichever handler an
    # imported library installed, and not only while this process happens to be in a wait it can interrupt.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"ZenML dashboard: {server.url}  (runs, DAGs, artifact visualizations, step logs of {store}); "
               "Ctrl-C stops it")
    try:
        while not stop.wait(0.5) and server.process.poll() is None:
            pass
    finally:
        click.echo("stopping the dashboard" if stop.is_set() else f"the server stopped; its log: {server.log}")
        server.stop()
