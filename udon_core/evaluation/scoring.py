"""Evaluate a model end to end: embed the split's query and index sets, then score them (UnED protocol)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.data.image_source import ImageSource
from udon_core.device import resolve_device
from udon_core.errors import InvalidValueError
from udon_core.evaluation.embedding import EmbeddingSet, embed_benchmark
from udon_core.evaluation.retrieval import RetrievalReport, evaluate_embeddings
from udon_core.model.udon_model import UdonModel

ORACLE_TEACHER = "oracle-teacher"


def embed_split(
    model: torch.nn.Module, root: Path | ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec,
    split: str = "test", batch_size: int = 128, device: str | torch.device = "auto", progress: bool = True,
    source: str = "",
) -> EmbeddingSet:
    """Every query and index image of ``split`` embedded by ``model`` (an EmbeddingModel: images -> unit vectors)."""
    vectors = embed_benchmark(model, root, manifest, spec, splits=(split,), preprocess=model.config.preprocess,
                              batch_size=batch_size, device=resolve_device(device), progress=progress, label=source)
    return EmbeddingSet(split, vectors, source)


def evaluate_model(
    model: torch.nn.Module,
    root: Path | ImageSource,
    manifest: pd.DataFrame,
    spec: BenchmarkSpec,
    split: str = "test",
    protocol: str = "merged",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    progress: bool = True,
    label: str = "",
) -> RetrievalReport:
    """R@1 and mMP@5 per domain of ``model`` (an EmbeddingModel: images -> unit vectors) on ``split``."""
    embeddings = embed_split(model, root, manifest, spec, split, batch_size, device, progress, source=label)
    return evaluate_embeddings(embeddings.vectors, manifest, spec, split=split, protocol=protocol)


def evaluate_oracle_teachers(
    model: UdonModel, root: Path | ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec,
    split: str = "test", batch_size: int = 128, device: str | torch.device = "auto", progress: bool = True,
) -> RetrievalReport:
    """The 'oracle teacher' protocol: each domain embedded by its own 256-d teacher head, searched in its own index.

    An upper reference for the student (the router is told the domain); domains without a teacher head in
    ``model`` are an error. The report's protocol reads 'oracle-teacher'.
    """
    missing = [d for d in spec.domain_names if d not in model.domains]
    if missing:
        raise InvalidValueError(f"the model has no teacher head for domain(s) {missing} (it has {model.domains})")
    vectors = embed_benchmark(model.teacher_embedding_model, root, manifest, spec, splits=(split,),
                              batch_size=batch_size, device=resolve_device(device), progress=progress,
                              label="oracle teacher")
    report = evaluate_embeddings(vectors, manifest, spec, split=split, protocol="separate")
    return dataclasses.replace(report, protocol=ORACLE_TEACHER)
