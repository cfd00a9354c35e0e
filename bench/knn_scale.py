"""Time and peak memory of merged UnED evaluation (exact kNN search + R@1/mMP@5) at UnED scale.

UnED test: 241,986 queries against a merged index of 1,397,126 images in 8 domains, 64-d embeddings.
Random unit vectors with each domain's real query/index sizes and class counts; `--scale` runs a
fraction of every size so the full size can be extrapolated where it does not fit the time budget.

    python bench/knn_scale.py --scale 0.01 0.05 0.1 [--backend faiss|torch] [--full]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from udon_core.benchmark import UNED
from udon_core.retrieval import evaluate_embeddings

# domain: (test queries, test index (0 = the queries themselves), classes), research/udon.md 5.1
UNED_TEST = {
    "food2k": (9_979, 0, 900), "cars": (8_131, 0, 98), "sop": (60_502, 0, 11_316), "inshop": (14_218, 12_612, 3_985),
    "inat": (136_093, 0, 4_552), "met": (1_003, 397_121, 224_408), "gldv2": (1_129, 761_757, 73_182),
    "rp2k": (10_931, 0, 1_074),
}


def synthetic(scale: float, dim: int = 64, seed: int = 0) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Embeddings and a manifest with UnED's test protocol at ``scale`` x its sizes."""
    rng = np.random.default_rng(seed)
    emb, rows = {}, []
    for name, (nq, ni, classes) in UNED_TEST.items():
        ev = UNED.domain(name).evals["test"]
        sizes = {ev.query: max(2, int(nq * scale))}
        if not ev.self_query:
            sizes[ev.index] = max(2, int(ni * scale))
        for stem, n in sizes.items():
            x = rng.standard_normal((n, dim), dtype=np.float32)
            emb[f"{name}/{stem}"] = x / np.linalg.norm(x, axis=1, keepdims=True)
            labels = rng.integers(0, max(2, int(classes * scale)), n)
            rows += [(name, stem, i, f"{name}/{stem}/{i}", [int(c)]) for i, c in enumerate(labels)]
    return emb, pd.DataFrame(rows, columns=["domain", "split", "row", "path", "labels"])


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run(scale: float, backend: str) -> dict[str, float]:
    emb, manifest = synthetic(scale)
    nq = sum(len(v) for k, v in emb.items() if k.endswith("/test"))
    ni = sum(len(emb[f"{d.name}/{d.evals['test'].index}"]) for d in UNED.domains)
    t0 = time.perf_counter()
    report = evaluate_embeddings(emb, manifest, UNED, split="test", protocol="merged", backend=backend)
    seconds = time.perf_counter() - t0
    return {"scale": scale, "queries": nq, "index": ni, "seconds": seconds, "peak_rss_gb": peak_rss_gb(),
            "mean_mmp5": report.mean_mmp_at_5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    parser.add_argument("--full", action="store_true", help="also run scale 1.0 (the real UnED size)")
    parser.add_argument("--backend", default="faiss", choices=["faiss", "torch"])
    args = parser.parse_args()
    import torch

    if args.backend == "faiss":
        import faiss

        print(f"backend=faiss gpus={faiss.get_num_gpus()} threads={faiss.omp_get_max_threads()}")
    else:
        print(f"backend=torch device={torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    print(f"{'scale':>6} {'queries':>9} {'index':>10} {'seconds':>9} {'q x i / s':>11} {'peak RSS GB':>12}")
    for scale in args.scale + ([1.0] if args.full else []):
        r = run(scale, args.backend)
        rate = r["queries"] * r["index"] / r["seconds"]
        print(f"{r['scale']:>6} {r['queries']:>9,} {r['index']:>10,} {r['seconds']:>9.1f} {rate:>11.3g} "
              f"{r['peak_rss_gb']:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
