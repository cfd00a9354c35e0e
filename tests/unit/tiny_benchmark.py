"""A tiny on-disk benchmark (2 domains of 16 px PNGs), a tiny model config and a training callback that crashes
at a given step, shared by unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from udon_core.data import BenchmarkSpec, DomainSpec, EvalSet, ImageRecord, Preprocess, info_file_path, write_info_file
from udon_core.model import BackboneConfig, ModelConfig

SPEC = BenchmarkSpec(
    name="tiny",
    domains=(
        DomainSpec(name="shapes", evals={"val": EvalSet(query="val", index="val")}, classes_disjoint=False),
        DomainSpec(name="colors", evals={"val": EvalSet(query="val", index="val")}, classes_disjoint=False),
    ),
)
TINY_MODEL = ModelConfig(
    backbone=BackboneConfig(name="test_vit", img_size=16), student_dim=8, teacher_dim=12,
    preprocess=Preprocess(image_size=16),
)


def write_tiny_benchmark(root: Path, per_class: int = 6, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for d, domain in enumerate(SPEC.domain_names):
        for split, n in (("train", per_class), ("val", 2)):
            records = []
            for c in range(classes):
                base = rng.integers(0, 255, size=3) * (c + 1) % 255
                for i in range(n):
                    pixels = np.clip(base + rng.normal(0, 20, (16, 16, 3)) + d * 40, 0, 255).astype(np.uint8)
                    path = f"{domain}/{split}/{c}_{i}.png"
                    (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(root / "images" / path)
                    records.append(ImageRecord(path, (c,)))
            write_info_file(info_file_path(root, domain, split), records)
    return root


class Crash(Exception):
    """What ``crash_at`` raises: a run that dies mid-training."""


def crash_at(step_to_crash: int):
    """A ``train(callback=...)`` that raises ``Crash`` when called for step ``step_to_crash``."""
    def callback(metrics, step):
        if step == step_to_crash:
            raise Crash

    return callback
