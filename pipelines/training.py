"""The training pipeline: ingest -> validate -> train -> evaluate -> register. Wiring only."""

from __future__ import annotations

from zenml import Model, pipeline

from steps.data_ingester import DataConfig, data_ingester
from steps.data_validator import data_validator
from steps.model_evaluator import EvalConfig, model_evaluator
from steps.model_registrar import RegistryConfig, model_registrar
from steps.model_trainer import model_trainer
from udon_core.train import TrainingConfig

MODEL_NAME = "udon-universal-embedding"


@pipeline(
    model=Model(
        name=MODEL_NAME,
        description="UDON universal image embedding: shared backbone + 64-d student head (deployable part).",
        tags=["udon", "universal-embedding"],
    )
)
def training_pipeline(
    data: DataConfig,
    training: TrainingConfig,
    evaluation: EvalConfig,
    registry: RegistryConfig,
) -> None:
    """Train and register a universal embedding on a DVC-versioned, validated benchmark."""
    manifest, dataset = data_ingester(config=data)
    validation, _ = data_validator(manifest=manifest, dataset=dataset)
    model, untrained, training_model, _ = model_trainer(
        manifest=manifest, dataset=dataset, validation=validation, config=training
    )
    metrics, *_ = model_evaluator(
        manifest=manifest, dataset=dataset, model=model, untrained=untrained, training_model=training_model,
        config=evaluation,
    )
    model_registrar(model=model, metrics=metrics, dataset=dataset, config=registry)
