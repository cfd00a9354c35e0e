"""What every `udon` command shares: user errors end in one sentence and exit code 2, the tools' state stays
under $UDON_HOME, and a pipeline run is summarised the same way by `udon run` and `udon retrain`."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import click

from udon_core.errors import UdonUserError

# Errors that explain themselves (bad config, data that does not match its pin, failed validation, missing
# or damaged files): the project's own UdonUserError types. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UdonUserError,)


def project_home_env() -> None:
    """Keep every tool's state under the project's home and switch off every tool's telemetry.

    The home is $UDON_HOME, else the ``.udon`` of the udon-pipeline checkout holding the working directory
    (``run_records.udon_home``); outside a checkout without $UDON_HOME this raises a StackError before any tool
    writes to the home directory. $UDON_HOME is then set (absolute) for the tools' own subprocesses.
    why: ZenML, MLflow, DVC, GE and matplotlib read these once, at import, so this runs before they load.
    Nothing of theirs is then written to the home directory (tests/unit/test_udon_home.py checks it).
    """
    from pipelines.run_records import udon_home

    for key, value in {"ZENML_ANALYTICS_OPT_IN": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                       "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
                       "ZENML_LOGGING_VERBOSITY": "WARN", "ZENML_ENABLE_RICH_TRACEBACK": "false",
                       "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    home = str(udon_home())
    os.environ["UDON_HOME"] = home
    state = {
        "ZENML_CONFIG_PATH": "zenml", "DVC_SITE_CACHE_DIR": "dvc-site", "DVC_GLOBAL_CONFIG_DIR": "dvc-global",
        "MPLCONFIGDIR": "matplotlib", "XDG_CONFIG_HOME": "config", "XDG_CACHE_HOME": "cache", "HF_HOME": "hf",
        "TORCH_HOME": "torch",
    }
    for key, sub in state.items():
        os.environ.setdefault(key, f"{home}/{sub}")


def fail(err: BaseException) -> None:
    message = str(err).strip() or type(err).__name__
    click.secho(f"error: {message}", fg="red", err=True)
    if debugging():
        raise err
    sys.exit(2)


def debugging() -> bool:
    return bool(os.environ.get("UDON_DEBUG"))


def print_outcome(outcome) -> None:
    """The run's status, data version, metrics table, registered version and gate verdict."""
    from udon_core.evaluation import RetrievalReport, format_by_metric

    reports = {"untrained (step 0)": RetrievalReport.from_dict(outcome.untrained_metrics),
               "trained": RetrievalReport.from_dict(outcome.metrics)}
    if outcome.oracle_teacher_metrics:
        reports["oracle teacher"] = RetrievalReport.from_dict(outcome.oracle_teacher_metrics)
    click.echo(f"\nPipeline run {outcome.run_name}: {outcome.status}")
    for name, status, seconds in outcome.steps:
        took = "" if seconds is None or status.endswith("cached") else f"{seconds:6.1f} s"
        click.echo(f"  {name:16} {status.rsplit('.', 1)[-1]:10} {took:>8}  {_step_result(name, outcome)}")
    print_validation(outcome.validation, outcome.validation_page)
    click.echo()
    click.echo(format_by_metric(reports))
    reg = outcome.registration
    click.echo(f"\nRegistered model: {reg['name']} version {reg['version']} ({reg['model_uri']})")
    verdict = outcome.gate_verdict
    standing = {"promote": "champion (production)", "hold": "challenger (staging), awaiting review",
                "reject": "rejected"}[verdict["decision"]]
    click.echo(f"Gate: {verdict['decision']} -> {standing}")
    for reason in verdict["reasons"]:
        click.echo(f"  {reason}")
    for line in next_commands(reg["version"], reg["tracking_uri"]):
        click.echo(line)


def next_commands(version: str | int, tracking_uri: str) -> list[str]:
    """Where to look next, written so that each command runs when pasted where this one was started: `make`
    targets under make (MAKELEVEL is what make exports to its commands), else the udon that was called."""
    if os.environ.get("MAKELEVEL"):
        return [f"Review: make models; make lineage V={version}",
                "MLflow UI: make mlflow-ui, then http://127.0.0.1:5000",
                "ZenML dashboard (runs, DAGs, artifact visualizations, step logs): make dashboard, then "
                "http://127.0.0.1:8237"]
    udon = udon_command()
    script = sys.argv[0] if Path(sys.argv[0]).name == "udon" else sys.executable
    mlflow = "mlflow" if udon == "udon" else shlex.quote(str(Path(script).parent / "mlflow"))  # the same venv
    return [f"Review: {udon} models; {udon} lineage {version}",
            f"MLflow UI: MLFLOW_DISABLE_TELEMETRY=true {mlflow} ui --backend-store-uri {shlex.quote(tracking_uri)}",
            f"ZenML dashboard (runs, DAGs, artifact visualizations, step logs): {udon} dashboard, then "
            "http://127.0.0.1:8237"]


def udon_command() -> str:
    """This `udon` as the user can call it again: `udon` when that is the one on PATH, else the path it was
    called by (`.venv/bin/udon`), or `python -m pipelines.cli` with this interpreter."""
    script = sys.argv[0]
    if Path(script).name != "udon":
        return f"{shlex.quote(sys.executable)} -m pipelines.cli"
    on_path = shutil.which("udon")
    return "udon" if on_path and Path(on_path).resolve() == Path(script).resolve() else shlex.quote(script)


def _step_result(step: str, outcome) -> str:
    """The one fact each step contributes, for its line of the run summary."""
    reg, verdict, metrics = outcome.registration, outcome.gate_verdict, outcome.metrics
    return {
        "data_ingester": f"data {outcome.dataset_md5}",
        "data_validator": f"{'passed' if outcome.validation.success else 'FAILED'}, "
                          f"{len(outcome.validation.warnings) or 'no'} warning(s)",
        "model_trainer": _final_loss(outcome.train_summary),
        "model_evaluator": f"mean mMP@5 {metrics['mean_mmp_at_5']:.3f}, R@1 {metrics['mean_r_at_1']:.3f}",
        "model_registrar": f"{reg['name']} version {reg['version']}",
        "model_promoter": f"gate: {verdict['decision']}",
    }.get(step, "")


def _final_loss(summary: dict) -> str:
    """The last step's batch loss and its domain: what the last `train:` progress line shows."""
    last, domains = summary["last"], list(summary["domain_steps"])
    domain = f", domain {domains[int(last['domain'])]}" if "domain" in last else ""
    loss = last.get("loss/total", float("nan"))
    return f"{summary['steps']} steps, final loss {loss:.3f} (step {summary['steps']}{domain})"


def print_validation(report, page: str) -> None:
    """Passed or not, the warnings with a few rows each, and where the full report is."""
    warnings = report.warnings
    click.echo(f"Data validation: {'passed' if report.success else 'FAILED'}, "
               f"{sum(o.success for o in report.outcomes)}/{report.evaluated} checks held"
               + (f", {len(warnings)} warning(s):" if warnings else ", no warnings"))
    if warnings:
        for line in report.model_copy(update={"outcomes": warnings}).summary(rows_per_failure=3).splitlines()[1:]:
            click.echo(f"  {line}")
    click.echo(f"  full report: {page}/output.html (ZenML artifact validation_page)")
