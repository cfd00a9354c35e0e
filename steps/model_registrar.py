"""Register step: the deployable model (backbone + student head) in the MLflow registry and ZenML's Model Control Plane."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict
from zenml import get_step_context, log_metadata, step

from steps.data_ingester import DatasetVersion
from steps.mlflow_registry import register_embedding_model
from udon_core.model import EmbeddingModel


class RegistryConfig(BaseModel):
    """Where the model is registered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = "udon-universal-embedding"


@step
def model_registrar(
    model: EmbeddingModel, metrics: dict[str, Any], dataset: DatasetVersion, config: RegistryConfig
) -> Annotated[dict[str, Any], "registration"]:
    """Log the model with its signature and tags to MLflow, register a version, link it to the ZenML model."""
    context = get_step_context()
    registration = register_embedding_model(
        model, config.model_name, metrics=metrics, dataset_tags={
            "data.dvc_md5": dataset.dvc_md5, "data.dvc_file_git_rev": dataset.dvc_file_git_rev or "",
            "zenml.pipeline_run": str(context.pipeline_run.name),
        },
    )
    log_metadata(metadata={"mlflow": registration}, infer_model=True)
    return registration
