"""Run records: what a killed `udon run` leaves behind, found and closed by the next command.

A pipeline run on the embedded stack lives in the `udon run` process. Before it starts, a record
(``$UDON_HOME/runs/active/<run name>.json``: process id, its start time, host) is written; a run that ends
in any way the process survives (success, a failed step, Ctrl-C) removes it. A record whose process is
gone means the process was killed (kill -9, OOM killer, a lost machine): the next `udon run` or
`udon models` marks that ZenML run and its unfinished steps failed, ends its MLflow runs as FAILED, and
marks any model version it registered without a gate verdict ``incomplete``, so nothing is left
``running`` forever and no unjudged version looks like a candidate.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from udon_core.errors import StackError

log = logging.getLogger(__name__)
PROJECT = "udon-pipeline"  # the name in the checkout's pyproject.toml


@dataclass(frozen=True)
class RunRecord:
    run_name: str
    pid: int
    process_started: float  # psutil create_time: tells a live process from a later one reusing the pid
    host: str
    started_at: str


def udon_home() -> Path:
    """Where every tool keeps this project's state: $UDON_HOME, else ``.udon`` in the udon-pipeline checkout that
    holds the working directory. Never the home directory: outside a checkout without $UDON_HOME it is an error."""
    if os.environ.get("UDON_HOME"):
        return Path(os.environ["UDON_HOME"]).expanduser().absolute()
    checkout = find_checkout(Path.cwd())
    if checkout is None:
        raise StackError(f"{Path.cwd()} is not inside an {PROJECT} checkout and UDON_HOME is not set: run udon inside "
                         "the checkout (its state is the checkout's .udon) or set UDON_HOME to a folder for it")
    return checkout / ".udon"


def find_checkout(start: Path) -> Path | None:
    """The folder holding ``start`` (or ``start`` itself) whose pyproject.toml names this project, if any."""
    for folder in (start, *start.parents):
        try:
            project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(project, dict) and project.get("name") == PROJECT:
            return folder
    return None


def records_dir(home: Path) -> Path:
    return Path(home) / "runs" / "active"


@contextmanager
def recorded_run(home: Path, run_name: str) -> Iterator[RunRecord]:
    """Keep a record of ``run_name`` while the block runs in this process."""
    me = psutil.Process()
    record = RunRecord(run_name, me.pid, me.create_time(), socket.gethostname(),
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = records_dir(home) / f"{run_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record), indent=1) + "\n")
    try:
        yield record
    finally:
        path.unlink(missing_ok=True)


def _alive(record: RunRecord) -> bool:
    try:
        return abs(psutil.Process(record.pid).create_time() - record.process_started) < 1.0
    except psutil.Error:  # no such process, or one we may not inspect (then not ours)
        return False


def abandoned_runs(home: Path) -> list[RunRecord]:
    """Records of this host whose process is gone. Records of other hosts are left alone: we cannot tell."""
    out = []
    for path in sorted(records_dir(home).glob("*.json")):
        try:
            record = RunRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            log.warning("ignoring unreadable run record %s: %s", path, err)
            continue
        if record.host == socket.gethostname() and not _alive(record):
            out.append(record)
    return out


def close_abandoned_runs(home: Path, tracking_uri: str | None) -> list[str]:
    """Mark what every abandoned run left unfinished as failed or incomplete; one line per thing changed."""
    lines: list[str] = []
    for record in abandoned_runs(home):
        why = f"process {record.pid} ended without finishing the run (killed?)"
        lines += _fail_zenml_run(record.run_name, why)
        if tracking_uri:
            lines += _fail_mlflow_runs(record.run_name, tracking_uri)
            lines += _mark_unjudged_versions(record.run_name, tracking_uri, why)
        (records_dir(home) / f"{record.run_name}.json").unlink(missing_ok=True)
    for line in lines:
        log.warning("cleaned up after a killed run: %s", line)
    return lines


def _fail_zenml_run(run_name: str, why: str) -> list[str]:
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    client = Client()
    try:
        run = client.get_pipeline_run(run_name)
    except KeyError:
        return []  # killed before ZenML created the run
    now = datetime.now(timezone.utc)
    lines = []
    for name, step in run.steps.items():
        if not step.status.is_finished:
            client.zen_store.update_run_step(step.id, StepRunUpdate(status=ExecutionStatus.FAILED, end_time=now))
            lines.append(f"ZenML step {name} of run {run_name}: {step.status} -> failed")
    if not run.status.is_finished:
        client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED, status_reason=why))
        lines.append(f"ZenML run {run_name}: {run.status} -> failed ({why})")
    return lines


def _fail_mlflow_runs(run_name: str, tracking_uri: str) -> list[str]:
    from integrations.model_registry import registry_client

    client = registry_client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    # ZenML's MLflow tracker names the MLflow run of a pipeline run after it (and nests steps under it).
    found = client.search_runs(experiments, f"tags.mlflow.runName = '{run_name}' and attributes.status = 'RUNNING'")
    nested = [r for parent in found for r in client.search_runs(
        experiments, f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'")]
    for run in found + nested:
        client.set_terminated(run.info.run_id, status="FAILED")
    return [f"MLflow run {r.info.run_id} of {run_name}: RUNNING -> FAILED" for r in found + nested]


def _mark_unjudged_versions(run_name: str, tracking_uri: str, why: str) -> list[str]:
    """Versions the dead run registered and never judged: verdict ``incomplete``, as the registry records a
    verdict, under its lock (taking it first repairs a decision the run left half done, which may judge them)."""
    from integrations.model_registry import INCOMPLETE, PENDING, ModelRegistry, registry_client

    client = registry_client(tracking_uri)
    lines = []
    for mv in client.search_model_versions(f"tags.`zenml.pipeline_run` = '{run_name}'"):
        if (mv.tags or {}).get("gate.verdict", PENDING) != PENDING:
            continue
        registry = ModelRegistry(mv.name, client=client)
        with registry.locked():
            lines += [f"model {mv.name}: {line}" for line in registry.repaired]
            if registry.version(str(mv.version)).verdict != PENDING:
                continue
            registry.record_verdict(str(mv.version), INCOMPLETE,
                                    [f"registered, never judged: {why}; not a candidate unless promoted by hand"])
        lines.append(f"model {mv.name} version {mv.version}: never judged by the gate -> {INCOMPLETE}")
    return lines
