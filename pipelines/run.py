"""Executing the training pipeline: resolve the configuration, prepare the stack, run, collect the outputs.

Kept apart from the pipeline definition (which only wires steps) so that importing the pipeline never
runs anything, and so that the CLI and the tests share one way of running it.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from integrations import dvc_store
from integrations.expectations import ValidationConfig, ValidationReport
from pipelines.cluster import ClusterConfig, cluster_run_settings
from steps.data_ingester import DataConfig
from steps.model_evaluator import EvalConfig
from steps.model_registrar import RegistryConfig
from udon_core import overrides
from udon_core.errors import StackError, UdonUserError
from udon_core.overrides import deep_merge, first_field_error, load_run_config
from udon_core.training import TrainingJobConfig

PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "validation": ValidationConfig, "training": TrainingJobConfig, "evaluation": EvalConfig,
    "registry": RegistryConfig,
}
TRACKED_STEPS = ("model_trainer", "model_evaluator", "model_registrar")


class ConfigError(UdonUserError, ValueError):
    """A run configuration that cannot be used; the message names the file and the field."""


class PipelineRunError(UdonUserError, RuntimeError):
    """A step failed; the message is that step's own error (ZenML only says which step failed)."""


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ", re.MULTILINE)


def failed_step_errors(run_name: str) -> dict[str, tuple[str, str, str]]:
    """``{step: (exception class name, message, traceback)}`` of every failed step, as ZenML stored them."""
    from zenml.client import Client

    run = Client().get_pipeline_run(run_name)
    out = {}
    for name, step in run.steps.items():
        info = step.exception_info
        if str(step.status).endswith("failed") and info is not None:
            starts = list(_EXCEPTION_LINE.finditer(info.traceback))
            text = info.traceback[starts[-1].start():] if starts else info.traceback
            kind, _, message = text.partition(": ")
            out[name] = (kind.rsplit(".", 1)[-1], message.strip(), info.traceback)
    return out


def _user_error_names() -> set[str]:
    found, todo = set(), [UdonUserError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    return found


@dataclass
class RunOutcome:
    run_name: str
    status: str
    cached_steps: list[str]
    metrics: dict[str, Any]
    untrained_metrics: dict[str, Any]
    oracle_teacher_metrics: dict[str, Any]
    registration: dict[str, Any]
    gate_verdict: dict[str, Any]
    dataset_md5: str
    validation: ValidationReport
    validation_page: str  # where the HTML report is (artifact store path)
    steps: list[tuple[str, str, float | None]]  # (step, status, seconds) in run order
    train_summary: dict[str, Any]


def parse_override(text: str) -> dict:
    """``"training.train.steps=10"`` -> ``{"training": {"train": {"steps": 10}}}`` (value parsed as YAML)."""
    try:
        return overrides.parse_override(text)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _validate_parameters(params: dict, source: str) -> dict[str, BaseModel]:
    unknown = sorted(set(params) - set(PARAMETER_MODELS))
    if unknown:
        raise ConfigError(f"{source}: unknown parameter section(s) {unknown}; expected {sorted(PARAMETER_MODELS)}")
    out = {}
    for section, model in PARAMETER_MODELS.items():
        try:
            out[section] = model.model_validate(params.get(section) or {})
        except ValidationError as err:
            field, message = first_field_error(err, section)
            raise ConfigError(f"{source}: parameters field '{field}': {message}") from err
    return out


def resolve_config(config_path: Path, overrides: list[str] = ()) -> dict:
    """The run configuration file with the overrides applied and every parameter section validated.

    The data section gets the pinned DVC hash, so the ingest step's cache key changes exactly when the
    data version changes; when the data is absent from disk the ingest step runs uncached (to pull it).
    """
    path = Path(config_path)
    doc = load_run_config(path, overrides, error=ConfigError)
    params = _validate_parameters(doc.get("parameters") or {}, str(path))
    data: DataConfig = params["data"]  # type: ignore[assignment]
    pin = dvc_store.read_pin(Path(data.repo), data.dvc_file)
    state = dvc_store.workspace_state(Path(data.repo), data.dvc_file)
    if state == "modified":
        dvc_store.ensure_data(Path(data.repo), data.dvc_file)  # raises the explanatory DataVersionError
    # why the path and the remote: a step pod of a remote orchestrator has no copy of the repository; it pulls
    # exactly this version from the remote (DatasetVersion.local_root). A remote given in the run configuration
    # wins over the repository's default, which may be a folder on this machine.
    params["data"] = data.model_copy(update={"pinned_md5": pin.md5, "pinned_path": pin.path,
                                             "remote": data.remote or dvc_store.remote_url(Path(data.repo))})
    doc["parameters"] = {k: v.model_dump(mode="json") for k, v in params.items()}
    _pin_uncached_steps(doc, path)
    if state == "missing":
        # why: a cached ingest would skip pulling the data back. ZenML still records this run's cache key,
        # which is the key of every later run with the data present, so those reuse it.
        doc.setdefault("steps", {}).setdefault("data_ingester", {})["enable_cache"] = False
    return doc


def _pin_uncached_steps(doc: dict, path: Path) -> None:
    """Steps that must never be cached get ``enable_cache: false`` of their own, which beats a top-level
    ``enable_cache: true`` (pipelines/training.py, never_cached); asking to cache one is an error."""
    from pipelines.training import never_cached

    steps = doc.get("steps") or {}
    for name in never_cached():
        step = steps.get(name) or {}
        if step.get("enable_cache") is True:
            raise ConfigError(f"{path}: steps.{name}.enable_cache: {name} is never cached (it judges against the "
                              "current champion, which changes between runs)")
        steps[name] = {**step, "enable_cache": False}
    doc["steps"] = steps


def place_on_cluster(doc: dict, cluster: ClusterConfig, orchestrator_flavor: str,
                     step_operator: str | None = None) -> tuple[dict, dict]:
    """The resolved run configuration with the train step placed on the cluster for a stack with that
    orchestrator flavor and step operator, and the pipeline-level settings, both as plain data (a run
    configuration file holds them). The data must be on a remote the pods can pull from."""
    dvc_store.require_shared_remote(doc["parameters"]["data"]["remote"])
    pipeline_settings, trainer = cluster_run_settings(cluster, orchestrator_flavor, step_operator)
    return deep_merge(doc, {"steps": {"model_trainer": _plain(trainer)}}), _plain(pipeline_settings)


def _plain(obj: Any) -> Any:
    """Settings objects as the plain mappings a ZenML run configuration file holds."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_unset=True)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _with_tracker(doc: dict, tracker: str | None) -> dict:
    if tracker is None:
        return doc
    steps = doc.setdefault("steps", {})
    for name in TRACKED_STEPS:
        steps.setdefault(name, {}).setdefault("experiment_tracker", tracker)
    return doc


def _explain_failure(err: RuntimeError, run_name: str) -> RuntimeError:
    """A user error as one PipelineRunError naming each failed step and its message; a bug (any exception
    type that is not one of the project's UdonUserError types) stays the original error, traceback and all."""
    try:
        errors = failed_step_errors(run_name)
    except KeyError:  # the run was never created
        return err
    if not errors:
        return err
    if not all(kind in _user_error_names() for kind, _, _ in errors.values()):
        # a bug: the step's own traceback (ZenML's console log of it is silenced without --debug)
        tracebacks = "\n".join(f"step '{step}':\n{tb}" for step, (_, _, tb) in errors.items())
        return RuntimeError(f"pipeline run {run_name} failed with an unexpected error:\n{tracebacks}")
    detail = "\n".join(f"step '{step}' failed: {msg}" for step, (_, msg, _) in errors.items())
    return PipelineRunError(f"pipeline run {run_name} failed.\n{detail}")


def _output(run, step: str, name: str) -> Any:
    return run.steps[step].outputs[name][0].load()


def run_pipeline(config_path: Path, overrides: list[str] = (), cluster: ClusterConfig | None = None) -> RunOutcome:
    """Resolve the configuration, ensure the embedded stack, run the pipeline and load its key outputs.

    With ``cluster`` (configs/cluster.yaml), the active stack's cluster route gets the train step's GPUs,
    resources and image from it (``place_on_cluster``)."""
    from zenml.exceptions import StackValidationError

    from integrations.mlflow_tracking import mlflow_tracking_uri
    from pipelines.run_records import close_abandoned_runs, recorded_run, udon_home
    from pipelines.stack import cluster_route, ensure_local_stack, experiment_tracker_name
    from pipelines.training import training_pipeline, zenml_model

    doc = resolve_config(config_path, overrides)
    ensure_local_stack()
    close_abandoned_runs(udon_home(), mlflow_tracking_uri())
    doc = _with_tracker(doc, experiment_tracker_name())
    settings: dict = {}
    if cluster is not None:
        doc, settings = place_on_cluster(doc, cluster, *cluster_route())
    runs_dir = udon_home() / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=runs_dir, delete=False) as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    model_name = doc["parameters"]["registry"]["model_name"]
    # Our own run name, known before the run starts: the run record that lets a later command clean up after
    # a killed process refers to it (pipelines/run_records.py).
    run_name = f"training_pipeline-{datetime.now(timezone.utc):%Y_%m_%d-%H_%M_%S_%f}"
    pipeline = training_pipeline.with_options(config_path=fh.name, model=zenml_model(model_name), run_name=run_name,
                                              settings=settings)
    try:
        with recorded_run(udon_home(), run_name):
            run = pipeline()
    except StackValidationError as err:
        raise StackError(f"the active ZenML stack cannot run this pipeline: {err}") from err
    except RuntimeError as err:
        raise _explain_failure(err, run_name) from err
    return RunOutcome(
        run_name=run.name, status=str(run.status),
        cached_steps=sorted(n for n, s in run.steps.items() if str(s.status).endswith("cached")),
        metrics=_output(run, "model_evaluator", "retrieval_metrics"),
        untrained_metrics=_output(run, "model_evaluator", "untrained_metrics"),
        oracle_teacher_metrics=_output(run, "model_evaluator", "oracle_teacher_metrics"),
        registration=_output(run, "model_registrar", "registration"),
        gate_verdict=_output(run, "model_promoter", "gate_verdict"),
        dataset_md5=_output(run, "data_ingester", "dataset").dvc_md5,
        validation=_output(run, "data_validator", "validation_report"),
        validation_page=str(run.steps["data_validator"].outputs["validation_page"][0].uri),
        steps=[(name, str(step.status), (step.end_time - step.start_time).total_seconds()
                if step.start_time and step.end_time else None) for name, step in run.steps.items()],
        train_summary=_output(run, "model_trainer", "train_summary"),
    )
