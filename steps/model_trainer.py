"""Train step: UDON on the validated benchmark; per-step metrics go to the stack's experiment tracker."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType

from integrations.expectations import ValidationReport
from integrations.mlflow_tracking import (
    active_run_id,
    active_tracker_logger,
    flatten,
    log_dataset_input,
    log_validation_report,
    mlflow_tracking_uri,
)
from integrations.teacher_sources import resolve_teacher_sources
from integrations.validation_page import report_html
from steps.data_ingester import DatasetVersion
from steps.materializers import ModelFolderMaterializer
from udon_core.model import EmbeddingModel, UdonModel
from udon_core.training import TrainingJobConfig, build_model, run_training
from udon_core.training.loop import TrainResult


@step(output_materializers={"embedding_model": ModelFolderMaterializer, "untrained_model": ModelFolderMaterializer,
                             "training_model": ModelFolderMaterializer})
def model_trainer(
    manifest: pd.DataFrame, dataset: DatasetVersion, validation: ValidationReport, config: TrainingJobConfig
) -> tuple[
    Annotated[EmbeddingModel, ArtifactConfig(name="embedding_model", artifact_type=ArtifactType.MODEL)],
    Annotated[EmbeddingModel, "untrained_model"],
    Annotated[UdonModel, "training_model"],
    Annotated[dict[str, Any], "train_summary"],
]:
    """Train UDON; return the deployable model, the same model at step 0 (the baseline), the whole trained
    model with its teacher heads (for the oracle-teacher evaluation), and a summary."""
    model = build_model(config, manifest, dataset.benchmark)
    untrained = model.embedding_model()
    log = active_tracker_logger(params={"data.dvc_md5": dataset.dvc_md5, **flatten(config.model_dump(mode="json"))})
    log_dataset_input(dataset.benchmark.name, dataset.root, dataset.dvc_md5, manifest)
    log_validation_report(validation.model_dump(mode="json"), report_html(validation))
    result, teachers = train_on_pinned_data(model, config, manifest, dataset, callback=log)
    # why: with the train step cached, later runs register in new MLflow runs; this names the training curves' run.
    summary = {**result.summary(), "mlflow_run_id": active_run_id() or "", "teachers": teachers,
               "method": config.train.method, "trains_teacher_heads": config.train.trains_teacher_heads}
    log_metadata(metadata={"train": summary, "validation_passed": validation.success}, infer_model=True)
    log_metadata(metadata={"train": summary})
    return result.model.embedding_model(), untrained, result.model, summary


def train_on_pinned_data(model: UdonModel, config: TrainingJobConfig, manifest: pd.DataFrame, dataset: DatasetVersion,
                         callback: Callable[[dict[str, float], int], None] | None, progress: bool = True,
                         ) -> tuple[TrainResult, dict[str, dict[str, str]]]:
    """Fetch the frozen teachers the config names, then train ``model`` on the pinned data version: what the
    train step runs, and what every other rank of a multi-node step runs with the same inputs
    (``pipelines.cluster.trainjob_operator``). Returns the result and the teachers' records."""
    with tempfile.TemporaryDirectory() as teachers_dir:
        resolved, teachers = resolve_teacher_sources(config, Path(teachers_dir), mlflow_tracking_uri())
        result = run_training(
            model, resolved, dataset.local_root(), manifest, dataset.benchmark, callback=callback,
            checkpoint_dir=Path(config.checkpoint_dir) if config.checkpoint_dir else None, progress=progress,
        )
    return result, teachers
