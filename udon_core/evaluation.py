"""Evaluate a model end to end: embed the split's query and index sets, then score them (UnED protocol)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from udon_core.benchmark import BenchmarkSpec
from udon_core.device import resolve_device
from udon_core.embedding import embed_benchmark
from udon_core.retrieval import RetrievalReport, evaluate_embeddings


def evaluate_model(
    model: torch.nn.Module,
    root: Path,
    manifest: pd.DataFrame,
    spec: BenchmarkSpec,
    split: str = "test",
    protocol: str = "merged",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> RetrievalReport:
    """R@1 and mMP@5 per domain of ``model`` (an EmbeddingModel: images -> unit vectors) on ``split``."""
    embeddings = embed_benchmark(
        model, root, manifest, spec, splits=(split,), preprocess=model.config.preprocess,
        batch_size=batch_size, device=resolve_device(device), progress=progress,
    )
    return evaluate_embeddings(embeddings, manifest, spec, split=split, protocol=protocol)
