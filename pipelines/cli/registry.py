"""`udon models | promote | rollback | lineage | retrain`: reviewing and moving models in the registry.

The registry is the embedded stack's MLflow registry (ZenML stages mirror the aliases, see
integrations/model_registry.py). Exit codes: 0 done, 2 a user error (one sentence), 1 a failed pipeline run;
``retrain --if-data-changed`` exits 3 when the data is unchanged and nothing ran (CI: treat 0 and 3 as success).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail

DEFAULT_MODEL = "udon-universal-embedding"
EXIT_UNCHANGED = 3
model_option = click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
                            help="registered model name")


@contextmanager
def _registry(model_name: str) -> Iterator:
    """The stack's registry for ``model_name``, with MLflow's HTTP retries bounded to seconds (an unreachable
    server is one sentence, not minutes of retries), after cleaning up what killed processes left: an
    unfinished `udon run`, a half-done promotion (said on stderr)."""
    from integrations.model_registry import ModelRegistry, interactive_http
    from pipelines.run_records import close_abandoned_runs, udon_home
    from pipelines.stack import registry_uri

    with interactive_http():
        registry = ModelRegistry(model_name, registry_uri())
        for line in registry.repair():
            click.echo(f"note: model {model_name}: {line}", err=True)
        close_abandoned_runs(udon_home(), registry.client.tracking_uri)  # a killed `udon run` leaves no 'running'
        yield registry


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.command("models")
@model_option
@click.option("--tracking-uri", "print_uri", is_flag=True,
              help="print the MLflow tracking URI of the active stack (for mlflow ui / mlflow models serve) and exit")
def models_cmd(model_name: str, print_uri: bool) -> None:
    """Versions with their stage, aliases, gate verdict, key metrics and data version."""
    if print_uri:
        from pipelines.stack import tracking_uri

        click.echo(tracking_uri())
        return
    try:
        with _registry(model_name) as registry:
            versions = registry.versions()
    except USER_ERRORS as err:
        fail(err)
    rows = [["version", "stage", "aliases", "gate", "mMP@5", "R@1", "data md5", "created (UTC)"]]
    for v in versions:
        rows.append([v.version, v.stage, ",".join(v.aliases) or "-", v.tags.get("gate.verdict", "-"),
                     _fmt(v.mean_mmp_at_5), _fmt(v.mean_r_at_1), v.tags.get("data.dvc_md5", "-")[:12],
                     v.created.strftime("%Y-%m-%d %H:%M")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    click.echo(f"Registered model {model_name}:")
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@click.command("promote")
@click.argument("version")
@click.option("--reason", required=True, help="why (recorded with your name and the time)")
@click.option("--force", is_flag=True, help="promote a version the gate held with failed checks, rejected or never "
              "judged (the override is recorded: who, when, over which verdict)")
@model_option
def promote_cmd(version: str, reason: str, force: bool, model_name: str) -> None:
    """Approve VERSION after review: it becomes the champion (production); the old champion is archived."""
    from udon_core.errors import InvalidValueError

    try:
        if not reason.strip():
            raise InvalidValueError("--reason must say why the version is promoted")
        with _registry(model_name) as registry:
            event = registry.promote_recorded(version, reason, force=force)  # what was recorded, under the lock
    except USER_ERRORS as err:
        fail(err)
    former, objection = event["previous"], event.get("override")
    click.echo(f"version {version} is the champion (production)" + (f"; version {former} archived" if former else "")
               + (f"; recorded as an override of the gate's verdict {objection}" if objection else ""))


@click.command("rollback")
@click.option("--reason", default="rollback", show_default=True, help="why (recorded)")
@model_option
def rollback_cmd(reason: str, model_name: str) -> None:
    """Restore the previous champion; the current one is archived."""
    try:
        with _registry(model_name) as registry:
            removed, restored = registry.rollback(reason)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"version {restored} is the champion again; version {removed} archived")


@click.command("lineage")
@click.argument("version")
@model_option
def lineage_cmd(version: str, model_name: str) -> None:
    """The chain behind VERSION: MLflow run, ZenML run and steps, data, validation, code, training config."""
    from pipelines.lineage import lineage

    try:
        with _registry(model_name) as registry:
            chain = lineage(registry, version)
    except USER_ERRORS as err:
        fail(err)
    for title, items in chain:
        click.echo(title)
        for key, value in items:
            click.echo(f"  {key}: {value}")


@click.command("retrain")
@click.option("--config", "config_path", default="zenml.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--if-data-changed", is_flag=True, help="run only if the pinned data differs from the champion's")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a parameter (repeatable)")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="write the outcome as JSON (CI)")
def retrain_cmd(config_path: Path, if_data_changed: bool, overrides: tuple[str, ...], report_path: Path | None) -> None:
    """Retrain from CI: with --if-data-changed, only when data.dvc pins other data than the champion's."""
    from pipelines.cli.common import print_outcome
    from pipelines.run import resolve_config, run_pipeline

    try:
        doc = resolve_config(config_path, list(overrides))
        pinned = doc["parameters"]["data"]["pinned_md5"]
        model_name = doc["parameters"].get("registry", {}).get("model_name", DEFAULT_MODEL)
        champion = _champion_or_none(model_name)
        trained_on = champion.tags.get("data.dvc_md5") if champion else None
        if if_data_changed and trained_on == pinned:
            _write_report(report_path, {"ran": False, "data_md5": pinned, "champion": champion.version})
            click.echo(f"data unchanged ({pinned}): champion version {champion.version} was trained on it; "
                       "nothing to do")
            sys.exit(EXIT_UNCHANGED)
        click.echo(f"data {pinned} vs champion's {trained_on or '(no champion)'}: retraining")
        outcome = run_pipeline(config_path, list(overrides))
    except USER_ERRORS as err:
        fail(err)
    print_outcome(outcome)
    _write_report(report_path, {"ran": True, "data_md5": pinned, "version": outcome.registration["version"],
                                "decision": outcome.gate_verdict["decision"], "reasons": outcome.gate_verdict["reasons"]})


def _champion_or_none(model_name: str):
    """The champion; None only when the registry says the model does not exist yet. An unreachable registry
    (or a store that is gone) is an error: retraining on "no champion" would be a guess."""
    from integrations.model_registry import UnknownModelError

    try:
        with _registry(model_name) as registry:
            return registry.champion()
    except UnknownModelError:  # no registered model yet: the first run has nothing to compare with
        return None


def _write_report(path: Path | None, doc: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")


REGISTRY_COMMANDS = (models_cmd, promote_cmd, rollback_cmd, lineage_cmd, retrain_cmd)
