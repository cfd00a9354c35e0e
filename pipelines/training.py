"""The training pipeline: ingest -> validate -> train -> evaluate -> register -> promote. Wiring only."""

from __future__ import annotations

from zenml import Model, pipeline

from integrations.expectations import ValidationConfig
from steps.data_ingester import DataConfig, data_ingester
from steps.data_validator import data_validator
from steps.model_evaluator import EvalConfig, model_evaluator
from steps.model_promoter import model_promoter
from steps.model_registrar import RegistryConfig, model_registrar
from steps.model_trainer import model_trainer
from udon_core.training import TrainingJobConfig

MODEL_NAME = "udon-universal-embedding"
STEPS = (data_ingester, data_validator, model_trainer, model_evaluator, model_registrar, model_promoter)


def never_cached() -> tuple[str, ...]:
    """The steps declared ``enable_cache=False``.

    why a list: ZenML lets a run configuration's top-level ``enable_cache: true`` override every step's own
    declaration (the run level beats the decorator), and a cached promoter would replay an old verdict against
    a champion that has since changed; pipelines/run.py pins these steps off in every resolved configuration.
    """
    return tuple(s.name for s in STEPS if s.configuration.enable_cache is False)


def zenml_model(name: str = MODEL_NAME) -> Model:
    """The ZenML model a run adds a version to; it has the MLflow registered model's name, so that ZenML's
    stages and MLflow's aliases describe the same model."""
    return Model(name=name, tags=["udon", "universal-embedding"],
                 description="UDON universal image embedding: shared backbone + 64-d student head (deployable part).")


@pipeline(model=zenml_model())
def training_pipeline(
    data: DataConfig,
    validation: ValidationConfig,
    training: TrainingJobConfig,
    evaluation: EvalConfig,
    registry: RegistryConfig,
) -> None:
    """Train and register a universal embedding on a DVC-versioned, validated benchmark."""
    manifest, dataset = data_ingester(config=data)
    validation_report, _ = data_validator(manifest=manifest, dataset=dataset, config=validation)
    model, untrained, training_model, train_summary = model_trainer(
        manifest=manifest, dataset=dataset, validation=validation_report, config=training
    )
    metrics, *_ = model_evaluator(
        manifest=manifest, dataset=dataset, model=model, untrained=untrained, training_model=training_model,
        train_summary=train_summary, config=evaluation,
    )
    registration = model_registrar(model=model, training_model=training_model, metrics=metrics,
                                   train_summary=train_summary, dataset=dataset, validation=validation_report,
                                   training=training, config=registry)
    model_promoter(registration=registration, metrics=metrics, config=registry)
