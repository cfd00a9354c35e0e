"""Time and peak memory of merged UnED evaluation (exact kNN search + R@1/mMP@5) up to the full UnED size.

UnED test: 241,986 queries against a merged index of 1,397,126 images in 8 domains, 64-d embeddings
(research/udon.md 5.1). Random unit vectors with each domain's query/index sizes and roughly its class
count (so n_q per query is realistic; GLDv2 queries carry 1-3 labels); ``--scale`` runs fractions of every
size (class counts scale too), and the table gives the rate from which the full size is extrapolated:
exact search costs queries x index, the square of the scale.

    python bench/knn_scale.py                                  # full size (1.0)
    python bench/knn_scale.py --scale 0.01 0.05 0.1 0.25       # fractions, then the extrapolation
    python bench/knn_scale.py --scale 0.1 1 --backend torch    # e.g. on a GPU machine

Memory columns: peak RSS of the process so far (ru_maxrss: it never goes down, so run scales in increasing
order), with ``--trace-numpy`` the tracemalloc peak of this scale's evaluation (NumPy and Python
allocations; faiss and torch CPU buffers are not traced; tracing slows the metrics part) and
torch.cuda.max_memory_allocated when CUDA is visible.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import pandas as pd

from udon_core.data import UNED
from udon_core.evaluation import retrieval

# domain: (test queries, test index (0: the queries are the index), classes)
UNED_TEST = {
    "food2k": (9_979, 0, 900), "cars": (8_131, 0, 98), "sop": (60_502, 0, 11_316), "inshop": (14_218, 12_612, 3_985),
    "inat": (136_093, 0, 4_552), "met": (1_003, 397_121, 224_408), "gldv2": (1_129, 761_757, 73_182),
    "rp2k": (10_931, 0, 1_074),
}
FULL_PAIRS = 241_986 * 1_397_126


def _labels(rng: np.random.Generator, n: int, classes: int, multi: bool) -> list[list[int]]:
    first = rng.integers(0, classes, n)
    if not multi:
        return [[int(c)] for c in first]
    extra = rng.integers(0, classes, (n, 2))
    return [[int(c), *map(int, e[: rng.integers(0, 3)])] for c, e in zip(first, extra)]


def synthetic(scale: float, dim: int = 64, seed: int = 0) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Unit-vector embeddings and a manifest for UnED's test protocol at ``scale`` x its sizes."""
    rng = np.random.default_rng(seed)
    emb, frames = {}, []
    for name, (nq, ni, classes) in UNED_TEST.items():
        ev = UNED.domain(name).evals["test"]
        c = max(2, int(classes * scale))
        sizes = {ev.query: max(2, int(nq * scale))} | ({} if ev.self_query else {ev.index: max(2, int(ni * scale))})
        for stem, n in sizes.items():
            x = rng.standard_normal((n, dim), dtype=np.float32)
            emb[f"{name}/{stem}"] = x / np.linalg.norm(x, axis=1, keepdims=True)
            labels = _labels(rng, n, c, multi=name == "gldv2" and stem == ev.query)
            frames.append(pd.DataFrame({"domain": name, "split": stem, "row": np.arange(n),
                                        "path": [f"{name}/{stem}/{i}.jpg" for i in range(n)], "labels": labels}))
    return emb, pd.concat(frames, ignore_index=True)


def _timed_search(log: list[float]):
    """Wrap ``retrieval.knn_search`` so the search time can be told apart from the metrics."""
    search = retrieval.knn_search

    def timed(*args, **kw):
        t0 = time.perf_counter()
        try:
            return search(*args, **kw)
        finally:
            log.append(time.perf_counter() - t0)

    return search, timed


def run(scale: float, backend: str, trace: bool = False) -> dict[str, float]:
    """One merged evaluation at ``scale``: sizes, seconds (total, search), memory peaks, mean mMP@5."""
    import torch

    emb, manifest = synthetic(scale)
    nq = sum(len(emb[f"{d.name}/{d.evals['test'].query}"]) for d in UNED.domains)
    ni = sum(len(emb[f"{d.name}/{d.evals['test'].index}"]) for d in UNED.domains)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    searches: list[float] = []
    original, retrieval.knn_search = _timed_search(searches)
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        report = retrieval.evaluate_embeddings(emb, manifest, UNED, split="test", protocol="merged", backend=backend)
    finally:
        seconds = time.perf_counter() - t0
        traced = tracemalloc.get_traced_memory()[1] if trace else float("nan")
        tracemalloc.stop()
        retrieval.knn_search = original
    return {"scale": scale, "queries": nq, "index": ni, "seconds": seconds, "search": sum(searches),
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "traced_gb": traced / 2**30,
            "cuda_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "mmp5": report.mean_mmp_at_5, "n0": sum(m.n_without_positive for m in report.per_domain.values())}


def _header(backend: str) -> str:
    import torch

    try:
        import faiss

        info = f"faiss_gpus={faiss.get_num_gpus()} faiss_threads={faiss.omp_get_max_threads()}"
    except ImportError:
        info = "faiss=absent"
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return (f"backend={retrieval.resolve_backend(backend)} (asked {backend}) {info} "
            f"torch_threads={torch.get_num_threads()} device={where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0], help="fractions of the UnED sizes")
    parser.add_argument("--backend", default="auto", choices=["auto", "faiss", "torch"])
    parser.add_argument("--trace-numpy", action="store_true",
                        help="also trace NumPy/Python allocations with tracemalloc (slows the metrics part)")
    args = parser.parse_args()
    print(_header(args.backend), flush=True)
    cols = ("scale", "queries", "index", "total s", "search s", "pairs/s", "RSS GB", "traced GB", "CUDA GB", "mMP@5")
    print(("{:>6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>7} {:>9} {:>8} {:>6}").format(*cols), flush=True)
    rows = []
    for scale in sorted(args.scale):
        r = run(scale, args.backend, args.trace_numpy)
        rows.append(r)
        rate = r["queries"] * r["index"] / r["search"]
        print(f"{scale:>6g} {r['queries']:>9,} {r['index']:>10,} {r['seconds']:>8.1f} {r['search']:>9.1f} "
              f"{rate:>9.3g} {r['rss_gb']:>7.2f} {r['traced_gb']:>9.2f} {r['cuda_gb']:>8.2f} {r['mmp5']:>6.3f}",
              flush=True)
    if rows and rows[-1]["scale"] < 1:
        print(_extrapolation(rows))


def _extrapolation(rows: list[dict[str, float]]) -> str:
    """Full-size estimate: search at the largest scale's pairs/s; the rest linear in the scale (two largest)."""
    big = rows[-1]
    search = FULL_PAIRS / (big["queries"] * big["index"] / big["search"])
    rest = [r["seconds"] - r["search"] for r in rows[-2:]]
    if len(rows) > 1 and big["scale"] > rows[-2]["scale"]:
        slope = (rest[1] - rest[0]) / (big["scale"] - rows[-2]["scale"])
        other = rest[1] + max(slope, 0.0) * (1 - big["scale"])
    else:
        other = rest[-1] / big["scale"]  # upper bound: fixed costs scaled up too
    return (f"extrapolated full size ({FULL_PAIRS:.3g} query-index pairs) from scale {big['scale']:g}: "
            f"search {search:,.0f} s + labels/metrics ~{other:,.0f} s")

if __name__ == "__main__":
    main()
