"""Training without ZenML: ``python -m udon_core.train`` (one process, or every rank under ``torchrun``).

This is the entry point of the Kubernetes pods (k8s/README.md): it reads a run configuration (the
``training`` section of ``zenml.yaml`` / ``configs/uned.yaml``, or the same file whole), the benchmark from
a folder, checkpoints to shared storage and resumes from the last checkpoint when a pod is restarted::

    torchrun --nproc-per-node 8 -m udon_core.train --config /etc/udon/train.yaml --resume auto

Rank 0 exports the deployable model (backbone + 64-d student head) to ``<checkpoint dir>/model`` and
writes ``summary.json`` there; ``udon evaluate --model <that folder>`` scores it. The whole model, teacher
heads included, goes to ``<checkpoint dir>/training_model`` (``--protocol oracle-teacher``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from udon_core.data.benchmark import BenchmarkSpec, resolve_benchmark_spec
from udon_core.data.image_source import ImageSource, as_source, image_source
from udon_core.data.uned import num_train_classes, read_manifest
from udon_core.errors import InvalidValueError, UdonUserError
from udon_core.evaluation.scoring import evaluate_model
from udon_core.model.udon_model import EmbeddingModel, ModelConfig, UdonModel
from udon_core.overrides import deep_merge, parse_override
from udon_core.training.checkpoint import checkpoint_files
from udon_core.training.config import TrainConfig
from udon_core.training.distributed import current_context
from udon_core.training.loop import TrainResult, train

DATA_ENV, CHECKPOINT_ENV = "UDON_DATA_ROOT", "UDON_CHECKPOINT_DIR"
EXPORT_DIR = "model"  # the deployable model: backbone + student head
TRAINING_MODEL_DIR = "training_model"  # with every teacher head and classifier (oracle-teacher evaluation)


class TrainingJobConfig(BaseModel):
    """The model to build and how to train it; the defaults are the paper's (udon_core owns them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    validate_every: int | None = Field(
        default=None, description="steps between kNN validations on the merged val split (None: no validation)"
    )
    checkpoint_dir: str | None = Field(
        default=None, description="where checkpoints are kept (the last two, hashed); a restarted run resumes from the newest (None: no checkpoints)"
    )


class RunFileError(UdonUserError, ValueError):
    """A run configuration file that cannot be used, with the file and field named."""


def load_run_file(path: Path) -> tuple[TrainingJobConfig, str]:
    """``(training config, benchmark name)`` from a YAML run file.

    Accepts a ZenML run configuration (``parameters: {training: ..., data: {benchmark: ...}}``) or its
    ``parameters`` mapping alone; the benchmark defaults to 'auto' (``benchmark.json`` in the data folder,
    else UnED).
    """
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RunFileError(f"{path}: cannot read the run configuration: {err}") from err
    params = doc.get("parameters", doc) if isinstance(doc, dict) else None
    if not isinstance(params, dict) or not isinstance(params.get("training", {}), dict):
        raise RunFileError(f"{path}: expected a mapping with a 'training' section")
    try:
        config = TrainingJobConfig.model_validate(params.get("training", {}))
    except ValidationError as err:
        problems = "; ".join(f"training.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise RunFileError(f"{path}: {problems}") from err
    data = params.get("data") or {}
    return config, str(data.get("benchmark", "auto")) if isinstance(data, dict) else "auto"


def val_r_at_1(root: Path | ImageSource, manifest: pd.DataFrame, spec: BenchmarkSpec
               ) -> Callable[[EmbeddingModel], float]:
    """The official model-selection score: mean merged R@1 on the val split."""
    source = as_source(root)  # why here: every validation then reuses it (a packed index is read once)

    def validate(model: EmbeddingModel) -> float:
        return evaluate_model(model, source, manifest, spec, split="val", progress=False).mean_r_at_1

    return validate


def build_model(config: TrainingJobConfig, manifest: pd.DataFrame, spec: BenchmarkSpec) -> UdonModel:
    """The UDON model for the benchmark's domains and class counts, its heads seeded by ``train.seed``."""
    classes = num_train_classes(manifest, spec)
    if config.train.domains is not None:
        unknown = sorted(set(config.train.domains) - set(classes))
        if unknown:
            raise InvalidValueError(f"train.domains names {unknown}, not domains of benchmark '{spec.name}' "
                             f"({', '.join(classes)})")
        classes = {d: n for d, n in classes.items() if d in config.train.domains}
    torch.manual_seed(config.train.seed)  # heads are randomly initialised: same seed, same model
    return UdonModel(config.model, classes)


def run_training(model: UdonModel, config: TrainingJobConfig, root: Path, manifest: pd.DataFrame, spec: BenchmarkSpec,
                 *, checkpoint_dir: Path | None, callback: Callable[[dict[str, float], int], None] | None = None,
                 progress: bool = True) -> TrainResult:
    """Train ``model`` as ``config`` says, with val R@1 model selection when ``validate_every`` is set."""
    source = image_source(root)  # one for training's streams and every validation
    return train(
        model, source, manifest, spec, config.train, callback=callback,
        validate=val_r_at_1(source, manifest, spec) if config.validate_every else None,
        validate_every=config.validate_every, checkpoint_dir=checkpoint_dir, progress=progress,
    )


def _checkpoint_dir(arg: str | None, config: TrainingJobConfig, resume: Literal["auto", "never"]) -> Path:
    value = arg or os.environ.get(CHECKPOINT_ENV) or config.checkpoint_dir
    if not value:
        raise RunFileError(f"no checkpoint folder: pass --checkpoint-dir, set {CHECKPOINT_ENV} "
                           "or training.checkpoint_dir (a restarted pod resumes from it)")
    folder = Path(value)
    if resume == "never" and (existing := checkpoint_files(folder)):
        raise RunFileError(f"{existing[0]} exists and --resume never was given: "
                           "use --resume auto to continue that run, or another folder")
    return folder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m udon_core.train`."""
    parser = argparse.ArgumentParser(prog="python -m udon_core.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="run configuration YAML (training section)")
    parser.add_argument("--data", help=f"benchmark folder (UnED layout) [env {DATA_ENV}]")
    parser.add_argument("--checkpoint-dir", help=f"shared folder for the checkpoints and the export [env {CHECKPOINT_ENV}]")
    parser.add_argument("--resume", choices=("auto", "never"), default="auto",
                        help="auto: continue from the newest checkpoint when present; never: refuse an existing run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training field, e.g. --set train.steps=100 (YAML value; repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay readable)")
    return parser.parse_args(argv)


def apply_overrides(config: TrainingJobConfig, overrides: Sequence[str]) -> TrainingJobConfig:
    """``config`` with each ``KEY=VALUE`` (a dotted field path and a YAML value) applied.

    Only the fields the run file or an override sets count as set, so a method preset still fills the rest
    (``--set train.method=uscrr`` gets the baseline's head group and classifier, not UDON's defaults).
    """
    data: dict[str, Any] = config.model_dump(exclude_unset=True)
    for item in overrides:
        try:
            data = deep_merge(data, parse_override(item))
        except ValueError as err:
            raise RunFileError(f"--set {item!r}: expected KEY=VALUE") from err
    try:
        return TrainingJobConfig.model_validate(data)
    except ValidationError as err:
        raise RunFileError(f"--set: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}") from err


def main(argv: Sequence[str] | None = None) -> int:
    """Train from a run file; rank 0 exports the deployable model. Returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {os.environ.get('RANK', 0)}: %(message)s")
    try:
        config, benchmark = load_run_file(args.config)
        config = apply_overrides(config, args.overrides)
        data = args.data or os.environ.get(DATA_ENV)
        if not data:
            raise RunFileError(f"no benchmark folder: pass --data or set {DATA_ENV}")
        root = Path(data)
        spec = resolve_benchmark_spec(benchmark, root)
        manifest = read_manifest(root, spec)
        folder = _checkpoint_dir(args.checkpoint_dir, config, args.resume)
        model = build_model(config, manifest, spec)
        result = run_training(model, config, root, manifest, spec, checkpoint_dir=folder,
                              progress=not args.no_progress)
    except UdonUserError as err:  # bad data, configuration or checkpoint: one sentence; anything else is a bug
        print(f"error: {err}", file=sys.stderr)
        return 2
    if current_context().is_main:
        out = result.model.embedding_model().save(folder / EXPORT_DIR)
        result.model.save(folder / TRAINING_MODEL_DIR)
        (folder / EXPORT_DIR / "summary.json").write_text(json.dumps(result.summary(), indent=2))
        print(f"trained {result.steps} steps; deployable model in {out}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
