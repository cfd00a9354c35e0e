"""Experiment tracking glue: the library reports metrics through a callback, this turns it into MLflow calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MetricsCallback = Callable[[dict[str, float], int], None]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``), the shape MLflow params need."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


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

    if params:
        # why: MLflow caps a param value at 6000 chars and rejects None; stringify and trim.
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items()}, step=step)

    return log
