"""Validation at UnED size without images: info files of 4.1M records through reading and the GE manifest suite.

    python bench/manifest_scale.py --scale 1.0 --layout packed     # the packed index answers the file checks
    python bench/manifest_scale.py --scale 1.0 --layout none       # no image checks at all (check_files off)
    python bench/manifest_scale.py --scale 0.5 --layout loose      # a stat per record (files absent: a lower bound)

Writes UnED's info files at ``--scale`` of their record counts (research/udon.md section 5.1; paths and class
ids of the right shape, no images) and, for ``packed``, an index of the same records pointing into fake
shards, into ``--work`` (reused). Then, in a fresh process each, times reading the manifest, annotating it
(with the file checks the layout allows) and running the GE manifest suite, and reports the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# UnED's records per domain and info file (research/udon.md section 5.1): 4,179,293 records in all.
UNED_FILES = {
    "food2k": {"train": 472_349, "val": 49_323, "test": 9_979},
    "cars": {"train": 6_346, "val": 1_708, "test": 8_131},
    "sop": {"train": 48_942, "val": 10_609, "test": 60_502},
    "inshop": {"train": 20_897, "val": 4_982, "test": 14_218, "index": 12_612},
    "inat": {"train": 273_929, "val": 51_917, "test": 136_093},
    "met": {"train": 397_121, "small_index": 38_307, "val": 129, "test": 1_003},
    "gldv2": {"train": 1_422_914, "val": 157_556, "test": 1_129, "index": 761_757},
    "rp2k": {"train": 188_724, "val": 17_185, "test": 10_931},
}


def write_info_files(root: Path, scale: float) -> int:
    """UnED-shaped info files: train ids in range, eval classes disjoint (Met: its train classes), >= 2 per class."""
    from udon_core.data import UNED, save_benchmark_spec

    rng = np.random.default_rng(0)
    total = 0
    for domain, files in UNED_FILES.items():
        k = UNED.domain(domain).num_train_classes
        written: dict[str, np.ndarray] = {}
        for stem, n in files.items():
            n = max(4, int(n * scale))
            if stem == "train":
                labels = np.sort(rng.integers(0, k, n))
            elif domain == "met":  # small_index and test query the train classes, val the small index's
                labels = np.repeat(written["small_index" if stem == "val" else "train"], 2)[:n]
            else:  # held-out classes in pairs; a separate index repeats the query classes
                labels = k + 10 * np.minimum(np.arange(n) // 2, (n - 2) // 2)  # an odd last one joins a pair
                if stem == "test" and "index" in files:
                    labels = k + 10 * (np.arange(n) % max(1, int(files["index"] * scale) // 2))
            written[stem] = labels
            items = [{"path": f"{domain}/{stem}/{i:08d}.jpg", "class_id": int(c)} for i, c in enumerate(labels)]
            path = root / "info_files" / domain / f"{stem}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(items, separators=(",", ":")))
            total += n
    save_benchmark_spec(UNED, root)
    return total


def write_fake_index(root: Path) -> None:
    """A packed index of every record, pointing into shards of 3,000 records (no shard is written)."""
    import pyarrow as pa

    from udon_core.data import read_manifest, resolve_benchmark_spec
    from udon_core.data.shards import INDEX_SCHEMA, write_index

    m = read_manifest(root, resolve_benchmark_spec("auto", root))
    n = len(m)
    first = ~m["path"].duplicated().to_numpy()
    rows = {"domain": m["domain"].tolist(), "split": m["split"].tolist(), "row": m["row"].to_numpy(),
            "path": m["path"].tolist(), "identity": [None] * n, "labels": m["labels"].tolist(),
            "stored": ["resized"] * n,
            "shard": [f"packed/{d}/{s}-{r // 3000:06d}.tar" for d, s, r in zip(m["domain"], m["split"], m["row"])],
            "offset": np.arange(n) * 30_000, "length": np.full(n, 27_000), "crc32": np.zeros(n, dtype=np.int64),
            "width": np.full(n, 384, dtype=np.int32), "height": np.full(n, 288, dtype=np.int32),
            "mode": ["RGB"] * n, "source_bytes": np.full(n, 83_000), "problem": [None] * n}
    assert first.all()
    write_index(root, {k: pa.array(v, type=INDEX_SCHEMA.field(k).type) for k, v in rows.items()})
    (root / "packed" / "pack.json").write_text(json.dumps({"format": "udon-packed/1", "short_side": 288}))


def measure(root: Path, layout: str) -> dict:
    """Read, annotate, run the suite; seconds of each and the peak RSS (this process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from integrations.expectations import manifest_suite, run_suite
    from udon_core.data import annotate_manifest, num_train_classes, read_manifest, resolve_benchmark_spec

    spec = resolve_benchmark_spec("auto", root)
    t = time.perf_counter()
    manifest = read_manifest(root, spec)
    read = time.perf_counter() - t
    classes = num_train_classes(manifest, spec)
    t = time.perf_counter()
    frame = annotate_manifest(manifest, spec, None if layout == "none" else root, classes)
    annotate = time.perf_counter() - t
    t = time.perf_counter()
    report = run_suite(frame, manifest_suite(spec, classes, check_files=layout != "none"))
    suite = time.perf_counter() - t
    failed = [o.check for o in report.outcomes if not o.success]
    return {"records": len(manifest), "layout": layout, "read_s": read, "annotate_s": annotate, "suite_s": suite,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "failed": failed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--layout", choices=["none", "loose", "packed"], default="packed")
    p.add_argument("--work", type=Path, default=Path("/tmp/udon-manifest-scale"))
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    root = args.work / f"scale-{args.scale}"
    if args.measure:
        print(json.dumps(measure(root, args.layout)))
        return
    if not (root / "benchmark.json").is_file():
        print(f"wrote {write_info_files(root, args.scale):,} records to {root}", flush=True)
    if args.layout == "packed" and not (root / "packed" / "index.parquet").is_file():
        write_fake_index(root)
    elif args.layout != "packed" and (root / "packed").exists():
        import shutil

        shutil.rmtree(root / "packed")
    out = subprocess.run([sys.executable, __file__, "--scale", str(args.scale), "--layout", args.layout, "--work",
                          str(args.work), "--measure"], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # why: with no image files every stat fails at the first missing name, cheaper than a present file's
    absent = " (files absent: a lower bound)" if r["layout"] == "loose" else ""
    print(f"{r['records']:,} records, file checks: {r['layout']}{absent}: read {r['read_s']:.1f} s, annotate "
          f"{r['annotate_s']:.1f} s, suite {r['suite_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB; "
          f"failed checks: {r['failed'] or 'none'}")


if __name__ == "__main__":
    main()
