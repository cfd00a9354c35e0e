"""UDON against the UnED baselines and per-domain specialists, trained and scored the same way.

    python bench/ablation.py --config zenml.yaml --data data --methods udon uscrr ujcrr specialist

Every method starts from the run file's model and training settings (the demo: EfficientNet-Lite0 at 64 px,
300 steps of 32) and changes only what its preset changes, so the rows differ by method alone. Universal
models are scored on the test split with the merged index (the UnED standard) and with separate indexes;
``specialist`` trains one model per domain and scores each on its own domain's index, which is the paper's
"Specialist+Oracle" reference (the router knows the domain), so only its separate row exists.
Prints a table per protocol and writes every report as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from udon_core.benchmark import BenchmarkSpec, resolve_benchmark_spec
from udon_core.evaluation import evaluate_model
from udon_core.report import format_comparison
from udon_core.retrieval import RetrievalReport
from udon_core.train import TrainingConfig, build_model, load_run_file, run_training
from udon_core.uned import read_manifest

UNIVERSAL = ("udon", "uscrr", "uscds", "ujcrr", "ujcds")


def _with_method(config: TrainingConfig, method: str, domain: str | None = None) -> TrainingConfig:
    """The run file's config with ``method``'s preset filling what the method changes (steps stay the run's)."""
    train = config.train.model_dump(exclude_unset=True)
    for key in ("loss", "sampler"):  # the preset decides these for a baseline; keep only the run's rhythm
        train.pop(key, None)
    update_every = config.train.sampler.update_every
    train = {**train, "method": method, "steps": config.train.steps,
             "sampler": {"update_every": update_every}, **({"domains": [domain]} if domain else {})}
    return config.model_copy(update={"train": type(config.train).model_validate(train)})


def _train_and_score(config: TrainingConfig, root: Path, manifest, spec: BenchmarkSpec,
                     protocols: tuple[str, ...]) -> dict[str, RetrievalReport]:
    model = build_model(config, manifest, spec)
    result = run_training(model, config, root, manifest, spec, checkpoint_dir=None, progress=False)
    embedding = result.model.embedding_model()
    return {p: evaluate_model(embedding, root, manifest, spec, protocol=p, progress=False) for p in protocols}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="zenml.yaml", type=Path, help="run file (training section)")
    parser.add_argument("--data", default="data", type=Path, help="benchmark folder")
    parser.add_argument("--methods", nargs="+", default=["udon", "uscrr", "ujcrr", "specialist"],
                        choices=[*UNIVERSAL, "specialist"])
    parser.add_argument("--out", default=Path("bench/out/ablation.json"), type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config, benchmark = load_run_file(args.config)
    spec = resolve_benchmark_spec(benchmark, args.data)
    manifest = read_manifest(args.data, spec)
    reports: dict[str, dict[str, RetrievalReport]] = {"merged": {}, "separate": {}}
    for method in args.methods:
        start = time.perf_counter()
        if method == "specialist":
            per_domain = {d: _train_and_score(_with_method(config, method, d), args.data, manifest,
                                              spec.restrict([d]), ("separate",))["separate"].per_domain[d]
                          for d in spec.domain_names}
            reports["separate"]["specialist+oracle"] = RetrievalReport("test", "separate", per_domain)
        else:
            for protocol, report in _train_and_score(_with_method(config, method), args.data, manifest, spec,
                                                     ("merged", "separate")).items():
                reports[protocol][method] = report
        print(f"{method}: trained and scored in {time.perf_counter() - start:.0f} s", flush=True)
    for protocol, by_method in reports.items():
        if by_method:
            print()
            print(format_comparison(by_method))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({p: {m: r.to_dict() for m, r in rs.items()} for p, rs in reports.items()},
                                   indent=1))
    print(f"\nreports: {args.out}")


if __name__ == "__main__":
    main()
