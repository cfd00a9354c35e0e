"""Train step: UDON on the validated benchmark; per-step metrics go to the stack's experiment tracker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType

from steps.data_ingester import DatasetVersion
from steps.expectations import ValidationReport
from steps.tracking import active_tracker_logger, flatten
from udon_core.evaluation import evaluate_model
from udon_core.model import EmbeddingModel, ModelConfig, UdonModel
from udon_core.trainer import TrainConfig, train


class TrainingConfig(BaseModel):
    """The model to build and how to train it; the defaults are the paper's (udon_core owns them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    validate_every: int | None = Field(
        default=None, description="steps between kNN validations on the merged val split (None: no validation)"
    )
    checkpoint_dir: str | None = Field(
        default=None, description="where last.pt is kept; a restarted run resumes from it (None: no checkpoints)"
    )


def _validator(dataset: DatasetVersion, manifest: pd.DataFrame):
    def validate(model: EmbeddingModel) -> float:
        report = evaluate_model(model, Path(dataset.root), manifest, dataset.benchmark, split="val", progress=False)
        return report.mean_r_at_1

    return validate


@step
def model_trainer(
    manifest: pd.DataFrame, dataset: DatasetVersion, validation: ValidationReport, config: TrainingConfig
) -> tuple[
    Annotated[EmbeddingModel, ArtifactConfig(name="embedding_model", artifact_type=ArtifactType.MODEL)],
    Annotated[EmbeddingModel, "untrained_model"],
    Annotated[dict[str, Any], "train_summary"],
]:
    """Train UDON; return the deployable model, the same model at step 0 (the baseline), and a summary."""
    torch.manual_seed(config.train.seed)  # heads are randomly initialised: same seed, same model
    model = UdonModel(config.model, dataset.classes)
    untrained = model.embedding_model()
    log = active_tracker_logger(params={"data.dvc_md5": dataset.dvc_md5, **flatten(config.model_dump(mode="json"))})
    result = train(
        model, Path(dataset.root), manifest, dataset.benchmark, config.train, callback=log,
        validate=_validator(dataset, manifest) if config.validate_every else None,
        validate_every=config.validate_every,
        checkpoint_dir=Path(config.checkpoint_dir) if config.checkpoint_dir else None,
    )
    summary = result.summary()
    log_metadata(metadata={"train": summary, "validation_passed": validation.success}, infer_model=True)
    log_metadata(metadata={"train": summary})
    return result.model.embedding_model(), untrained, summary
