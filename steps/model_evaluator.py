"""Evaluate step: per-domain R@1 and mMP@5 (UnED protocol, exact faiss kNN) for the model and its step-0 self."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from zenml import log_metadata, step
from zenml.types import MarkdownString

from steps.data_ingester import DatasetVersion
from udon_core.evaluation import evaluate_model
from udon_core.model import EmbeddingModel
from udon_core.report import format_comparison, plot_report


class EvalConfig(BaseModel):
    """Which split and protocol the reported numbers come from (UnED standard: merged test)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split: str = "test"
    protocol: Literal["merged", "separate"] = Field(default="merged", description="merged = the UnED standard")
    batch_size: int = 128
    device: str = "auto"


@step
def model_evaluator(
    manifest: pd.DataFrame, dataset: DatasetVersion, model: EmbeddingModel, untrained: EmbeddingModel, config: EvalConfig
) -> tuple[
    Annotated[dict[str, Any], "retrieval_metrics"],
    Annotated[dict[str, Any], "untrained_metrics"],
    Annotated[MarkdownString, "metrics_table"],
    Annotated[Image.Image, "metrics_chart"],
]:
    """Score both models on the same split and protocol; the table and chart show them side by side."""
    kw = dict(split=config.split, protocol=config.protocol, batch_size=config.batch_size, device=config.device)
    trained = evaluate_model(model, Path(dataset.root), manifest, dataset.benchmark, **kw)
    baseline = evaluate_model(untrained, Path(dataset.root), manifest, dataset.benchmark, **kw)
    reports = {"untrained (step 0)": baseline, "trained": trained}
    with tempfile.TemporaryDirectory() as tmp:
        chart = Image.open(plot_report(reports, Path(tmp) / "metrics.png"))
        chart.load()
    log_metadata(metadata={"mean_mmp_at_5": trained.mean_mmp_at_5, "mean_r_at_1": trained.mean_r_at_1,
                           "untrained_mean_mmp_at_5": baseline.mean_mmp_at_5}, infer_model=True)
    return trained.to_dict(), baseline.to_dict(), MarkdownString(format_comparison(reports)), chart
