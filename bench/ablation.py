"""UDON against the UnED baselines, per-domain specialists, and the distillation alternatives, trained and
scored the same way.

    python bench/ablation.py --config zenml.yaml --data data --methods udon uscrr ujcrr specialist
    python bench/ablation.py --config zenml.yaml --data data --methods udon udon-offline unic udon+unic \\
        --set model.backbone.name=vit_tiny_patch16_224 --set model.backbone.pretrained=null \\
        --set model.backbone.img_size=64 --out bench/out/distillation.json

Every method starts from the run file's model and training settings (the demo: EfficientNet-Lite0 at 64 px,
300 steps of 32) and changes only what its preset changes, so the rows differ by method alone, at equal
student steps. Universal models are scored on the test split with the merged index (the UnED standard) and
with separate indexes. ``specialist`` trains one model per domain (each all the steps on its domain) and
scores each on its own domain's index: the paper's "Specialist+Oracle" reference. ``udon-offline`` distils
those specialists (trained first, with the same steps); ``unic`` and ``udon+unic`` distil ``--unic-teacher``
(default: the ImageNet EfficientNet-Lite0 that ships offline) and need a ViT student (``--set``).
Prints a table per protocol and writes every report as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from udon_core.data import BenchmarkSpec, read_manifest, resolve_benchmark_spec
from udon_core.evaluation import RetrievalReport, embed_split, evaluate_embeddings, format_comparison
from udon_core.training import TrainingJobConfig, apply_overrides, build_model, load_run_file, run_training

UNIVERSAL = ("udon", "uscrr", "uscds", "ujcrr", "ujcds", "udon-offline", "unic", "unic-published", "udon+unic")
# The student's 64 px images at 64 px: a CPU-sized teacher pass (its native 224 would cost 12x more).
LITE0_TEACHER = {"name": "lite0", "timm_model": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package",
                 "img_size": 64}


def _with_method(config: TrainingJobConfig, method: str, **extra) -> TrainingJobConfig:
    """The run file's config with ``method``'s preset filling what the method changes (steps stay the run's)."""
    train = config.train.model_dump(exclude_unset=True)
    for key in ("loss", "sampler", "frozen_steps"):  # the preset decides these; keep only the run's rhythm
        train.pop(key, None)
    if method not in ("unic", "unic-published"):
        train["frozen_steps"] = config.train.frozen_steps
    sampler = {"update_every": config.train.sampler.update_every}
    if method == "udon-offline":
        sampler["signal"] = "loss/student_ce"
    train = {**train, "method": method, "steps": config.train.steps, "sampler": sampler, **extra}
    return config.model_copy(update={"train": type(config.train).model_validate(train)})


def _train(config: TrainingJobConfig, root: Path, manifest, spec: BenchmarkSpec):
    model = build_model(config, manifest, spec)
    return run_training(model, config, root, manifest, spec, checkpoint_dir=None, progress=False).model


def _scores(model, root: Path, manifest, spec: BenchmarkSpec, protocols: tuple[str, ...]) -> dict[str, RetrievalReport]:
    vectors = embed_split(model.embedding_model(), root, manifest, spec, progress=False).vectors  # once
    return {p: evaluate_embeddings(vectors, manifest, spec, protocol=p) for p in protocols}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="zenml.yaml", type=Path, help="run file (training section)")
    parser.add_argument("--data", default="data", type=Path, help="benchmark folder")
    parser.add_argument("--methods", nargs="+", default=["udon", "uscrr", "ujcrr", "specialist"],
                        choices=[*UNIVERSAL, "specialist"])
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training field for every method, e.g. model.backbone.name=... (repeatable)")
    parser.add_argument("--out", default=Path("bench/out/ablation.json"), type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config, benchmark = load_run_file(args.config)
    config = apply_overrides(config, args.sets)
    root = args.data
    spec = resolve_benchmark_spec(benchmark, root)
    manifest = read_manifest(root, spec)
    reports: dict[str, dict[str, RetrievalReport]] = {"merged": {}, "separate": {}}
    specialists: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "specialist" in args.methods or "udon-offline" in args.methods:
            start = time.perf_counter()
            per_domain = {}
            for d in spec.domain_names:
                model = _train(_with_method(config, "specialist", domains=[d]), root, manifest, spec)
                specialists[d] = str(model.save(Path(tmp) / d))
                per_domain[d] = _scores(model, root, manifest, spec.restrict([d]), ("separate",))["separate"].per_domain[d]
            reports["separate"]["specialist+oracle"] = RetrievalReport("test", "separate", per_domain)
            print(f"specialists: trained and scored in {time.perf_counter() - start:.0f} s", flush=True)
        for method in (m for m in args.methods if m != "specialist"):
            start = time.perf_counter()
            extra = {"specialists": specialists} if method == "udon-offline" else (
                {"unic": {"teachers": [LITE0_TEACHER]}} if method in ("unic", "unic-published", "udon+unic") else {})
            model = _train(_with_method(config, method, **extra), root, manifest, spec)
            for protocol, report in _scores(model, root, manifest, spec, ("merged", "separate")).items():
                reports[protocol][method] = report
            print(f"{method}: trained and scored in {time.perf_counter() - start:.0f} s", flush=True)
    for by_method in reports.values():
        if by_method:
            print()
            print(format_comparison(by_method))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({p: {m: r.to_dict() for m, r in rs.items()} for p, rs in reports.items()},
                                   indent=1))
    print(f"\nreports: {args.out}")


if __name__ == "__main__":
    main()
