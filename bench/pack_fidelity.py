"""What pre-resizing costs in retrieval: the same training (same seed) on a loose benchmark, its packed copy
with the original bytes, and copies pre-resized to each --short-side, scored on the test split (merged index).

    python bench/pack_fidelity.py --config zenml.yaml --data data-loose --short-side 37 48 \\
        --set model.preprocess.image_size=32
    python bench/pack_fidelity.py --config zenml.yaml --data /tmp/uned-like-5000 --short-side 224 256 288 \\
        --set model.preprocess.image_size=224 --eval-only

Pre-resizing resamples twice (once when packing, once in the transform), so it can change what the model
sees; the original bytes decode bit-identically, so their row must equal the loose one. ``--eval-only``
scores the run file's model untrained (its pretrained backbone), which isolates the input's fidelity from
training noise and costs no training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from udon_core.data import PackConfig, pack_benchmark, read_manifest, resolve_benchmark_spec
from udon_core.evaluation import RetrievalReport, embed_split, evaluate_embeddings, format_comparison
from udon_core.training import apply_overrides, build_model, load_run_file, run_training


def copies(loose: Path, work: Path, sides: list[int]) -> dict[str, Path]:
    """The loose folder and its packed copies (made once in ``work``)."""
    out = {"loose": loose}
    for side in [None, *sides]:
        name = "packed, original bytes" if side is None else f"packed, short side {side}"
        target = work / f"{loose.name}-{'keep' if side is None else side}"
        if not target.is_dir():
            pack_benchmark(loose, target, PackConfig(short_side=side), progress=False)
        out[name] = target
    return out


def score(config, benchmark: str, root: Path, train: bool) -> RetrievalReport:
    spec = resolve_benchmark_spec(benchmark, root)
    manifest = read_manifest(root, spec)
    torch.manual_seed(config.train.seed)
    model = build_model(config, manifest, spec)
    if train:
        model = run_training(model, config, root, manifest, spec, checkpoint_dir=None, progress=False).model
    vectors = embed_split(model.embedding_model(), root, manifest, spec, progress=False).vectors
    return evaluate_embeddings(vectors, manifest, spec, protocol="merged")


@torch.inference_mode()
def drift(config, keep: Path, small: Path, images: int) -> dict[str, float]:
    """How far a pre-resized copy's inputs and features are from the original bytes', on ``images`` test
    images: PSNR (dB) of the eval and train transforms' uint8 outputs (the same random crop and flip), and
    the cosine between the run file's pretrained backbone's features of the two eval inputs."""
    from udon_core.data import eval_transform, image_source, train_transform
    from udon_core.data.transforms import normalize
    from udon_core.model import create_backbone

    p = config.model.preprocess
    spec = resolve_benchmark_spec("auto", keep)
    manifest = read_manifest(keep, spec)
    paths = list(manifest.loc[manifest["split"] == "test", "path"].drop_duplicates()[:images])
    a, b = image_source(keep).reader(paths), image_source(small).reader(paths)
    backbone = create_backbone(config.model.backbone)[0].eval()
    out: dict[str, list[float]] = {"eval_psnr": [], "train_psnr": [], "feature_cosine": []}
    for i in range(len(paths)):
        x, y = a.open(i)[0], b.open(i)[0]
        ex, ey = eval_transform(p)(x), eval_transform(p)(y)
        out["eval_psnr"].append(_psnr(ex, ey))
        torch.manual_seed(i)
        tx = train_transform(p)(x)
        torch.manual_seed(i)
        out["train_psnr"].append(_psnr(tx, train_transform(p)(y)))
        f = backbone(normalize(torch.stack([ex, ey]), p))
        out["feature_cosine"].append(float(torch.nn.functional.cosine_similarity(f[:1], f[1:])))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = (x.float() - y.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="zenml.yaml", type=Path)
    p.add_argument("--data", required=True, type=Path, help="a loose benchmark folder")
    p.add_argument("--short-side", type=int, nargs="+", default=[288])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--eval-only", action="store_true", help="score the untrained model (pretrained backbone)")
    p.add_argument("--drift", type=int, default=0, metavar="N", help="also compare N test images' inputs and "
                   "pretrained features, original bytes vs each short side")
    p.add_argument("--skip-scores", action="store_true", help="only the --drift comparison")
    p.add_argument("--work", type=Path, default=Path("/tmp/udon-pack-fidelity"))
    p.add_argument("--out", type=Path, default=Path("bench/out/pack_fidelity.json"))
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config, benchmark = load_run_file(args.config)
    config = apply_overrides(config, args.sets)
    folders = copies(args.data, args.work, args.short_side)
    result: dict = {}
    if not args.skip_scores:
        reports = {name: score(config, benchmark, root, not args.eval_only) for name, root in folders.items()}
        print(format_comparison(reports))
        result = {name: r.to_dict() for name, r in reports.items()}
    if args.drift:
        keep = folders["packed, original bytes"]
        result["drift"] = {f"short side {side}": drift(config, keep, folders[f"packed, short side {side}"], args.drift)
                           for side in args.short_side}
        print(f"\nagainst the original bytes, {args.drift} test images   eval PSNR   train PSNR   feature cosine")
        for name, d in result["drift"].items():
            print(f"  {name:40s} {d['eval_psnr']:7.1f} dB {d['train_psnr']:8.1f} dB {d['feature_cosine']:10.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
