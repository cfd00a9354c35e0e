"""Evaluate step: per-domain R@1 and mMP@5 (UnED protocol, exact faiss kNN) of the model, of its step-0 self,
and of its teacher heads (oracle teacher); the embeddings are kept so the split can be re-scored."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from zenml import log_metadata, step
from zenml.types import MarkdownString

from integrations.mlflow_tracking import log_evaluation
from steps.data_ingester import DatasetVersion
from steps.materializers import EmbeddingSetMaterializer
from udon_core.data import image_source
from udon_core.evaluation import (
    EmbeddingSet,
    embed_split,
    evaluate_embeddings,
    evaluate_model,
    evaluate_oracle_teachers,
    format_markdown,
    plot_report,
)
from udon_core.model import EmbeddingModel, UdonModel


class EvalConfig(BaseModel):
    """Which split and protocol the reported numbers come from (UnED standard: merged test)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split: str = "test"
    protocol: Literal["merged", "separate"] = Field(default="merged", description="merged = the UnED standard")
    oracle_teacher: bool = Field(
        default=True, description="also score each domain's teacher head on its own domain (an upper reference)"
    )
    batch_size: int = 128
    device: str = "auto"


@step(output_materializers={"test_embeddings": EmbeddingSetMaterializer})
def model_evaluator(
    manifest: pd.DataFrame, dataset: DatasetVersion, model: EmbeddingModel, untrained: EmbeddingModel,
    training_model: UdonModel, train_summary: dict[str, Any], config: EvalConfig,
) -> tuple[
    Annotated[dict[str, Any], "retrieval_metrics"],
    Annotated[dict[str, Any], "untrained_metrics"],
    Annotated[dict[str, Any], "oracle_teacher_metrics"],
    Annotated[EmbeddingSet, "test_embeddings"],
    Annotated[MarkdownString, "metrics_table"],
    Annotated[Image.Image, "metrics_chart"],
]:
    """Score the models on the same split; the table and chart show them side by side.

    ``oracle_teacher_metrics`` is empty when ``config.oracle_teacher`` is off or the method trains no teacher
    heads (the baselines, specialists, unic, udon-offline); it covers the domains the model has heads for.
    """
    images, spec = image_source(dataset.local_root()), dataset.benchmark  # located once for the three models
    kw = dict(split=config.split, batch_size=config.batch_size, device=config.device)
    embeddings = embed_split(model, images, manifest, spec, source="trained", **kw)
    trained = evaluate_embeddings(embeddings.vectors, manifest, spec, split=config.split, protocol=config.protocol)
    baseline = evaluate_model(untrained, images, manifest, spec, protocol=config.protocol, label="untrained", **kw)
    reports = {"untrained (step 0)": baseline, "trained": trained}
    if config.oracle_teacher and train_summary.get("trains_teacher_heads", True):
        own = spec.restrict([d for d in spec.domain_names if d in training_model.domains])
        reports["oracle teacher"] = evaluate_oracle_teachers(training_model, images, manifest, own, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        chart = Image.open(plot_report(reports, Path(tmp) / "metrics.png"))
        chart.load()
    log_metadata(metadata={"mean_mmp_at_5": trained.mean_mmp_at_5, "mean_r_at_1": trained.mean_r_at_1,
                           "untrained_mean_mmp_at_5": baseline.mean_mmp_at_5}, infer_model=True)
    oracle = reports["oracle teacher"].to_dict() if "oracle teacher" in reports else {}
    table = format_markdown(reports)
    log_evaluation({name: r.to_dict() for name, r in reports.items()}, table)
    return trained.to_dict(), baseline.to_dict(), oracle, embeddings, MarkdownString(table), chart
