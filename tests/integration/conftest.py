"""A tiny, real, DVC-versioned benchmark repository shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.repos import init_repo, track_data


def commit_data(repo: Path, message: str) -> None:
    track_data(repo, message, push=True)


TINY_DEMO = dict(
    emoji_val_classes=6, emoji_test_classes=8, emoji_train_classes=16,
    glyph_train_fonts=3, glyph_val_fonts=2, glyph_test_fonts=2,
    animals_train_per_class=6, animals_val_per_class=2, animals_test_per_class=3,
)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """git + DVC repo with a tiny demo benchmark in data/, tracked by data.dvc and pushed to a local remote."""
    from udon_core.data import DemoConfig, build_demo_benchmark

    repo = tmp_path_factory.mktemp("repo")
    init_repo(repo, remote=repo.parent / "remote")
    build_demo_benchmark(repo / "data", DemoConfig(**TINY_DEMO), progress=False)
    commit_data(repo, "tiny benchmark")
    return repo


def tiny_run_config(repo: Path, path: Path, **sections) -> Path:
    """A run configuration for the tiny repo: a small CNN at 32 px for a handful of steps."""
    params = {
        "data": {"repo": str(repo)},
        "training": {
            "model": {"backbone": {"name": "tf_efficientnet_lite0", "pretrained": "efficientnet-lite0-package"},
                      "preprocess": {"image_size": 32}},
            "train": {"steps": 6, "batch_size": 8, "frozen_steps": 2, "log_every": 1,
                      "sampler": {"update_every": 3}},
        },
        "evaluation": {"split": "test"},
        "registry": {"model_name": "udon-test-model"},
    }
    for key, value in sections.items():
        params[key] = {**params.get(key, {}), **value}
    path.write_text(yaml.safe_dump({"enable_cache": True, "parameters": params}))
    return path
