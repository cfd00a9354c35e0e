"""A tiny, real, DVC-versioned benchmark repository shared by the pipeline tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def sh(cwd: Path, *cmd: str) -> None:
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", "dvc", *cmd[1:])
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def commit_data(repo: Path, message: str) -> None:
    sh(repo, "dvc", "add", "-q", "data")
    sh(repo, "dvc", "push", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)


TINY_DEMO = dict(
    emoji_val_classes=6, emoji_test_classes=8, emoji_train_classes=16,
    glyph_train_fonts=3, glyph_val_fonts=2, glyph_test_fonts=2,
    animals_train_per_class=6, animals_val_per_class=2, animals_test_per_class=3,
)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """git + DVC repo with a tiny demo benchmark in data/, tracked by data.dvc and pushed to a local remote."""
    from udon_core.demo import DemoConfig, build_demo_benchmark

    repo = tmp_path_factory.mktemp("repo")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.com")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "remote", "add", "-d", "local", str(repo.parent / "remote"))
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
