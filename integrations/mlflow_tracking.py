"""Experiment tracking glue: the library reports metrics through a callback, this turns it into MLflow calls."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from udon_core.overrides import flatten  # noqa: F401  (the shape MLflow params need; steps import it from here)

MetricsCallback = Callable[[dict[str, float], int], None]
# The MLflow UI opens an experiment in its classic-ML view (runs, metrics, models) with this kind.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
NOT_METRICS = ("domain",)  # the trainer's per-step drawn-domain index: shown on the progress bar, not a metric


def _tracker_active() -> bool:
    from zenml import get_step_context

    try:
        return get_step_context().step_run.config.experiment_tracker is not None
    except RuntimeError:
        return False


def active_tracker_logger(params: dict[str, Any] | None = None) -> MetricsCallback:
    """A metrics callback for the MLflow run ZenML opened for this step (a no-op without a tracker)."""
    if not _tracker_active():
        return lambda metrics, step: None
    import mlflow

    mark_model_training()
    if params:
        # why: MLflow caps a param value at 6000 chars and rejects None; stringify and trim.
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items() if k not in NOT_METRICS},
                           step=step)

    return log


def mark_model_training() -> None:
    """Tag the active run's experiment as model training (MLflow otherwise may open it as a GenAI one)."""
    import mlflow

    mlflow.set_experiment_tag(*EXPERIMENT_KIND)


def log_dataset_input(benchmark: str, source: str, dvc_md5: str, manifest: Any | None = None) -> None:
    """The benchmark as the run's input dataset, named ``<benchmark>@<md5 prefix>`` with the DVC hash as its
    digest: with the manifest's schema and size when ``manifest`` is given, else by reference only (a
    register step whose train step was cached)."""
    if not _tracker_active():
        return
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    # why: MLflow warns that a local path matches two equivalent source types, and that an int column cannot
    # hold missing values; neither applies to a manifest.
    name = f"{benchmark}@{dvc_md5[:8]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if manifest is not None:
            table = manifest[["domain", "split", "row", "path"]]  # labels are lists: no MLflow schema type
            dataset = mlflow.data.from_pandas(table, source=source, name=name, digest=dvc_md5)
        else:
            dataset = MetaDataset(resolve_dataset_source(source), name=name, digest=dvc_md5)
        mlflow.log_input(dataset, context="training")  # the schema is inferred here


def log_evaluation(reports: dict[str, dict[str, Any]], report_markdown: str) -> None:
    """Per-domain and mean metrics of each report (``eval/<report>/<domain>/<metric>``), the report as
    Markdown and the metrics documents as JSON, to the step's MLflow run (a no-op without a tracker)."""
    if not _tracker_active():
        return
    import mlflow
    import pandas as pd

    mark_model_training()
    metrics: dict[str, float] = {}
    rows = []
    for name, doc in reports.items():
        key = name.replace(" ", "_").replace("(", "").replace(")", "")
        for domain, values in doc["per_domain"].items():
            metrics.update({f"eval/{key}/{domain}/{m}": float(values[m]) for m in ("r_at_1", "mmp_at_5")})
            rows.append({"model": name, "domain": domain, "r_at_1": float(values["r_at_1"]),
                         "mmp_at_5": float(values["mmp_at_5"])})
        metrics.update({f"eval/{key}/mean_{m}": float(doc[f"mean_{m}"]) for m in ("r_at_1", "mmp_at_5")})
        mlflow.log_dict(doc, f"evaluation/{key}.json")
    mlflow.log_metrics(metrics)
    # one table per run: the MLflow UI's artifact view shows it as a sortable grid (per model and domain)
    mlflow.log_table(pd.DataFrame(rows), artifact_file="evaluation/per_domain.json")
    mlflow.log_text(report_markdown, "evaluation/report.md")


VALIDATION_ARTIFACTS = "validation"  # report.html (the page) and report.json, in the training run


def log_validation_report(report: dict[str, Any], page: str) -> None:
    """The data validation report the run trained after, as JSON and as its page, to the step's MLflow run
    (the training run; the MLflow UI shows the page in its artifact view). A no-op without a tracker."""
    if not _tracker_active():
        return
    import mlflow

    mlflow.log_dict(report, f"{VALIDATION_ARTIFACTS}/report.json")
    mlflow.log_text(page, f"{VALIDATION_ARTIFACTS}/report.html")


LINEAGE_ARTIFACT = "lineage.json"


def log_lineage(document: dict[str, Any]) -> None:
    """The version's lineage document (see steps/model_registrar.py) to the step's MLflow run."""
    if not _tracker_active():
        return
    import mlflow

    mlflow.log_dict(document, LINEAGE_ARTIFACT)


def active_run_id() -> str | None:
    """The MLflow run ZenML opened for this step, if the step has the tracker."""
    if not _tracker_active():
        return None
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


def mlflow_tracking_uri() -> str | None:
    """The tracking URI of the active stack's MLflow tracker, for `mlflow ui`, the CLI and registry reads."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    return tracker.get_tracking_uri() if tracker is not None and hasattr(tracker, "get_tracking_uri") else None
