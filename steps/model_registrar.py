"""Register step: the deployable model (backbone + student head) in the MLflow registry and ZenML's Model Control Plane."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from zenml import get_step_context, log_metadata, step
from zenml.client import Client

from integrations.expectations import ValidationReport
from integrations.mlflow_models import register_embedding_model
from integrations.mlflow_tracking import log_dataset_input, log_evaluation, log_lineage
from integrations.model_registry import ZENML_VERSION_TAG, ModelRegistry
from steps.data_ingester import DatasetVersion
from udon_core.evaluation import RetrievalReport, format_markdown
from udon_core.model import EmbeddingModel, UdonModel
from udon_core.registry import GatePolicy, benchmark_digest
from udon_core.training import TrainingJobConfig


class RegistryConfig(BaseModel):
    """Where the model is registered and what it must show to become the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = "udon-universal-embedding"
    gate: GatePolicy = Field(default_factory=GatePolicy, description="the promotion policy (udon_core/registry/gate.py)")
    log_training_model: bool = Field(
        default=True, description="also keep every head and classifier with the version (udon_training_model): "
        "what a later udon-offline run distils from models:/NAME/VERSION"
    )


def lineage_document(pipeline_run: Any, validation: ValidationReport, training: TrainingJobConfig) -> dict[str, Any]:
    """What `udon lineage` shows of the ZenML side, recorded with the version so that reading it needs only
    MLflow (starting ZenML costs most of a CLI call): the run's steps as they stood at registration, the
    validation verdict and the training configuration."""
    failed = [o for o in validation.outcomes if not o.success]
    return {
        "zenml": {"pipeline_run": str(pipeline_run.name), "pipeline_run_id": str(pipeline_run.id),
                  "steps_at_registration": {n: str(s.status).rsplit(".", 1)[-1] for n, s in pipeline_run.steps.items()}},
        "validation": {"suite": validation.suite, "passed": validation.success, "evaluated": validation.evaluated,
                       "met": validation.evaluated - len(failed),
                       "failed": [{"severity": o.severity, "check": o.check, "expectation": o.expectation,
                                   "column": o.column, "rows": o.unexpected_count} for o in failed]},
        "training_config": training.model_dump(mode="json"),
    }


@step
def model_registrar(
    model: EmbeddingModel, training_model: UdonModel, metrics: dict[str, Any], train_summary: dict[str, Any],
    dataset: DatasetVersion, validation: ValidationReport, training: TrainingJobConfig, config: RegistryConfig,
) -> Annotated[dict[str, Any], "registration"]:
    """Log the model with its signature, tags, evaluation and lineage to MLflow, register a version, link it
    to the ZenML model version. A registered model holds models of one benchmark: another is refused."""
    context = get_step_context()
    digest = benchmark_digest(dataset.benchmark)
    ModelRegistry(config.model_name).bind_benchmark(dataset.benchmark.name, digest)  # the step's MLflow registry
    # The version's own run carries its evaluation even when the evaluate step was cached (an earlier run).
    log_evaluation({"trained": metrics}, format_markdown(RetrievalReport.from_dict(metrics)))
    log_lineage(lineage_document(Client().get_pipeline_run(context.pipeline_run.id), validation, training))
    log_dataset_input(dataset.benchmark.name, dataset.root, dataset.dvc_md5)
    registration = register_embedding_model(
        model, config.model_name, metrics=metrics, dataset_tags={
            "data.benchmark": dataset.benchmark.name, "data.benchmark_sha256": digest,
            "data.dvc_md5": dataset.dvc_md5, "data.dvc_file_git_rev": dataset.dvc_file_git_rev or "",
            "zenml.pipeline_run": str(context.pipeline_run.name), ZENML_VERSION_TAG: str(context.model_version.id),
            "training.mlflow_run_id": str(train_summary.get("mlflow_run_id", "")),
            # the student's lineage back to its frozen teachers (udon-offline, unic)
            **({"training.teachers": json.dumps(teachers)[:4900]} if (teachers := train_summary.get("teachers")) else {}),
        },
        training_model=training_model if config.log_training_model else None,
    )
    log_metadata(metadata={"mlflow": registration}, infer_model=True)
    return registration
