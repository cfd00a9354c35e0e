"""Training: the typed training config, the loop (optimiser, schedule, sampler, checkpoints, resume),
data-parallel helpers, and the job that the pods and ``python -m udon_core.train`` run.
"""

from __future__ import annotations

from udon_core.training.checkpoint import (
    checkpoint_files,
    load_checkpoint,
    load_latest,
    read_tensors_file,
    save_checkpoint,
)
from udon_core.training.config import TrainConfig
from udon_core.training.distributed import (
    DistContext,
    check_ranks_agree,
    current_context,
    mean_over_ranks,
    shard_size,
    weights_fingerprint,
)
from udon_core.training.job import (
    CHECKPOINT_ENV,
    DATA_ENV,
    EXPORT_DIR,
    TRAINING_MODEL_DIR,
    RunFileError,
    TrainingJobConfig,
    apply_overrides,
    build_model,
    load_run_file,
    main,
    parse_args,
    run_training,
)
from udon_core.training.loop import build_loop, build_optimizer, learning_rates, per_rank_loss, train, train_step
from udon_core.training.sampler import DomainSampler, SamplerConfig

__all__ = [
    "CHECKPOINT_ENV", "DATA_ENV", "EXPORT_DIR", "TRAINING_MODEL_DIR", "parse_args",
    "apply_overrides", "build_loop", "build_model", "build_optimizer", "check_ranks_agree", "checkpoint_files",
    "current_context", "DistContext", "DomainSampler", "learning_rates", "load_checkpoint", "load_latest",
    "load_run_file", "main", "mean_over_ranks", "per_rank_loss", "read_tensors_file", "run_training", "RunFileError",
    "SamplerConfig", "save_checkpoint", "shard_size", "train", "train_step", "TrainConfig", "TrainingJobConfig",
    "weights_fingerprint",
]
