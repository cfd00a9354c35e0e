"""The data path at UnED scale, in one run: the training loader per core, DVC per 10,000 images, packing.

    python bench/data_path.py --images 20000 --work /tmp/udon-data-path

generates a UnED-shaped benchmark of photo-like JPEGs (udon_core/data/uned_like.py; kept in --work and
reused by later runs of the same size), packs it twice (original bytes, and pre-resized to --short-side)
and prints, measured in this run:
- loader: images per CPU-second of one process (torch on 1 thread, no workers: per core) through the
  training loader (DomainStream) for the loader as it was before #22 (loose files, full decode, float
  normalisation in the worker) and as it is now (JPEG draft decoding, uint8 out) on loose, packed original
  bytes and packed pre-resized data. CPU time, not wall time, because the machine may be shared;
- DVC: `dvc add`, `dvc push` to a local remote and a pod's `fetch_pinned` (a throwaway repository pulls the
  pinned hash) per 10,000 images, loose and packed;
- pack: images/s of `udon data pack` with --pack-workers processes.

With --gpu (and a CUDA device) it also runs the real training loop on the packed benchmark against the
synthetic-batch step of bench/train_throughput.py, in the same process, with the GPU's utilisation:

    python bench/data_path.py --images 20000 --gpu --backbone vit_base_patch16_224 --image-size 224 \\
        --batch 128 --workers 8 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torchvision.transforms import v2 as T

from udon_core.data import (
    DomainStream,
    PackConfig,
    Preprocess,
    image_source,
    num_train_classes,
    pack_benchmark,
    read_manifest,
    records_of,
    resolve_benchmark_spec,
    train_decode_side,
    train_transform,
)
from udon_core.data.uned_like import UnedLikeConfig, write_uned_like_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import synthetic_step  # noqa: E402

# why: the cores this process may run on (a container's or taskset's share), as PackConfig's default workers;
# os.cpu_count() counts the whole machine's
USABLE_CORES = len(os.sched_getaffinity(0))


def generated(work: Path, images: int, workers: int) -> Path:
    """The generated loose benchmark of ``images`` images in ``work`` (made once, then reused)."""
    root = work / f"uned-like-{images}"
    stamp = root / ".complete"
    if not stamp.is_file():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        write_uned_like_benchmark(root, UnedLikeConfig(images=images, workers=workers))
        stamp.write_text(f"{time.perf_counter() - started:.1f} s\n")
    return root


def packed(loose: Path, work: Path, short_side: int | None, workers: int) -> tuple[Path, dict]:
    """Pack ``loose`` afresh; the folder and the pack's throughput."""
    out = work / f"{loose.name}-{'keep' if short_side is None else short_side}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = pack_benchmark(loose, out, PackConfig(short_side=short_side, workers=workers), progress=False)
    took = time.perf_counter() - started
    return out, {"images": result.images, "seconds": took, "images_per_s": result.images / took,
                 "per_worker": result.images / took / workers, "workers": workers,
                 "packed_mb": result.packed_bytes / 2**20, "source_mb": result.source_bytes / 2**20}


def train_records(root: Path) -> list:
    """Every domain's train records, in manifest order (one stream over all of them)."""
    spec = resolve_benchmark_spec("auto", root)
    manifest = read_manifest(root, spec)
    return [r for d in spec.domains for r in records_of(manifest, d.name, d.train)]


def loader_rate(root: Path, transform, draft: int | None, images: int, batch: int) -> dict:
    """Images per CPU-second (and per wall-second) of one DomainStream without workers, after one warm batch."""
    stream = DomainStream(image_source(root), train_records(root), transform, batch, seed=0, draft=draft)
    stream.next()
    cpu, wall = time.process_time(), time.perf_counter()
    n = 0
    while n < images:
        n += len(stream.next()[1])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"images": n, "cpu_s": cpu, "per_core": n / cpu, "per_wall_s": n / wall}


def loader_table(loose: Path, keep: Path, small: Path, image_size: int, images: int, batch: int,
                 repeats: int) -> list[tuple]:
    """Each loader row ``repeats`` times, round robin (so a burst of load on a shared machine hits every row
    alike); per row the run with the least CPU time (the least disturbed)."""
    p = Preprocess(image_size=image_size)
    before = T.Compose([train_transform(p), T.ToDtype(torch.float32, scale=True), T.Normalize(p.mean, p.std)])
    now, draft = train_transform(p), train_decode_side(p)
    rows = {"before #22: loose, full decode, float in the worker": (loose, before, None),
            "loose, draft decode, uint8": (loose, now, draft),
            "packed original bytes, draft decode, uint8": (keep, now, draft),
            "packed pre-resized, uint8": (small, now, draft)}
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, (root, transform, d) in rows.items():
            r = loader_rate(root, transform, d, images, batch)
            if name not in best or r["per_core"] > best[name]["per_core"]:
                best[name] = r
    return list(best.items())


def dvc_cycle(folder: Path, work: Path, name: str, images: int, fetch_repeats: int = 3) -> dict:
    """``dvc add`` + ``dvc push`` of a copy of ``folder`` in a fresh repository, then a pod's ``fetch_pinned``
    (``fetch_repeats`` times); seconds per 10,000 images."""
    from dvc.repo import Repo

    from integrations import dvc_store

    base = work / f"dvc-{name}"
    shutil.rmtree(base, ignore_errors=True)
    repo_dir, remote, fetched = base / "repo", base / "remote", base / "fetched"
    repo_dir.mkdir(parents=True)
    shutil.copytree(folder, repo_dir / "data", ignore=shutil.ignore_patterns(".complete"))
    files = sum(1 for p in (repo_dir / "data").rglob("*") if p.is_file())
    Repo.init(str(repo_dir), no_scm=True)
    with Repo(str(repo_dir)) as repo:
        with repo.config.edit() as conf:
            conf["core"]["remote"] = "local"
            conf["core"]["analytics"] = False
            conf["remote"]["local"] = {"url": str(remote)}
    timings = {}
    with Repo(str(repo_dir)) as repo:
        os.sync()  # why: the copy's writeback must not land in the timed operations
        t = time.perf_counter()
        repo.add(str(repo_dir / "data"))
        timings["add"] = time.perf_counter() - t
        os.sync()
        t = time.perf_counter()
        repo.push()
        timings["push"] = time.perf_counter() - t
    pin = dvc_store.read_pin(repo_dir)
    fetches = []
    for i in range(fetch_repeats):  # a pod's fetch into an empty data cache each time; the fastest is kept
        os.sync()
        t = time.perf_counter()
        dvc_store.fetch_pinned(pin.md5, pin.path, str(remote), cache_root=fetched / str(i))
        fetches.append(time.perf_counter() - t)
        shutil.rmtree(fetched / str(i))
    timings["fetch"] = min(fetches)
    shutil.rmtree(base, ignore_errors=True)
    return {"files": files, **{k: v * 10_000 / images for k, v in timings.items()}}


class GpuUtilisation:
    """Mean GPU utilisation (%) from ``nvidia-smi`` sampled every 200 ms while in the ``with`` block."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "GpuUtilisation":
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                           "-lms", "200", "-i", "0"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


def real_loop(root: Path, backbone: str, image_size: int, batch: int, steps: int, warmup: int, workers: int,
              device: str = "cuda", student_dim: int = 64, teacher_dim: int = 256) -> dict:
    """Images/s of ``udon_core.training.train`` on the benchmark at ``root`` (steps after ``warmup``), with
    the GPU's mean utilisation. Domains with fewer train images than a batch are left out."""
    from udon_core.model import BackboneConfig, ModelConfig, UdonModel
    from udon_core.training import TrainConfig, train

    spec = resolve_benchmark_spec("auto", root)
    manifest = read_manifest(root, spec)
    sizes = manifest[manifest["split"] == "train"].groupby("domain").size()
    spec = spec.restrict([d for d in spec.domain_names if sizes.get(d, 0) >= batch])
    model = UdonModel(ModelConfig(backbone=BackboneConfig(name=backbone, img_size=image_size, pretrained=None),
                                  student_dim=student_dim, teacher_dim=teacher_dim,
                                  preprocess=Preprocess(image_size=image_size)), num_train_classes(manifest, spec))
    cfg = TrainConfig(steps=warmup + steps, batch_size=batch, num_workers=workers, device=device, log_every=1,
                      frozen_steps=0, checkpoint_every=10**9)
    stamps: dict[int, float] = {}

    def at(_metrics, step):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps[step] = time.perf_counter()

    with GpuUtilisation() as gpu:
        train(model, root, manifest, spec, cfg, callback=at, progress=False)
    seconds = stamps[warmup + steps] - stamps[warmup]
    return {"images_per_s": batch * steps / seconds, "step_ms": 1000 * seconds / steps, "gpu_util": gpu.mean,
            "domains": len(spec.domains), "workers_per_domain": workers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000, help="generated images (UnED's shape)")
    p.add_argument("--work", type=Path, default=Path("/tmp/udon-data-path"), help="where data and copies go")
    p.add_argument("--short-side", type=int, default=288, help="the pre-resized pack's shorter side")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--loader-images", type=int, default=2_000, help="images timed per loader row")
    p.add_argument("--repeats", type=int, default=3, help="loader measurements per row (the best is kept)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--pack-workers", type=int, default=USABLE_CORES)
    p.add_argument("--skip-dvc", action="store_true")
    p.add_argument("--gpu", action="store_true", help="also the real training loop vs synthetic batches (CUDA)")
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--workers", type=int, default=8, help="loader workers per domain in the --gpu run")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    loose = generated(args.work, args.images, args.pack_workers)
    keep, keep_pack = packed(loose, args.work, None, args.pack_workers)
    small, small_pack = packed(loose, args.work, args.short_side, args.pack_workers)
    figures: dict = {"images": args.images, "load_before": load, "cores": USABLE_CORES,
                     "pack": {"keep-bytes": keep_pack, f"short-side {args.short_side}": small_pack}}
    rows = loader_table(loose, keep, small, args.image_size, args.loader_images, 32, args.repeats)
    figures["loader"] = dict(rows)
    if not args.skip_dvc:
        figures["dvc"] = {name: dvc_cycle(folder, args.work, name, args.images)
                          for name, folder in (("loose", loose), ("packed original bytes", keep),
                                               (f"packed {args.short_side} px", small))}
    if args.gpu and torch.cuda.is_available():
        torch.set_num_threads(USABLE_CORES)
        med, mem = synthetic_step(args.backbone, args.image_size, args.batch, steps=20)
        figures["gpu"] = {"device": torch.cuda.get_device_name(), "synthetic_images_per_s": args.batch / med,
                          "synthetic_peak_gib": mem,
                          "real_loop": real_loop(small, args.backbone, args.image_size, args.batch, args.steps, 5,
                                                 args.workers)}
    figures["load_after"] = os.getloadavg()
    report(figures, args)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


def report(f: dict, args) -> None:
    print(f"\n{f['images']:,} generated UnED-shaped JPEGs; {f['cores']} cores; load average "
          f"{f['load_before'][0]:.1f} before, {f['load_after'][0]:.1f} after")
    print("\npack (udon data pack)            images/s  per worker  source MiB  packed MiB")
    for name, r in f["pack"].items():
        print(f"  {name:30s} {r['images_per_s']:8.0f}  {r['per_worker']:10.0f}  {r['source_mb']:10.0f}  "
              f"{r['packed_mb']:10.0f}")
    base = next(iter(f["loader"].values()))["per_core"]
    print(f"\nloader, {args.image_size} px train transform   images/s per core   vs before")
    for name, r in f["loader"].items():
        print(f"  {name:52s} {r['per_core']:8.0f}   {r['per_core'] / base:5.2f}x")
    if "dvc" in f:
        print("\nDVC, seconds per 10,000 images      files    add   push   fetch (a pod's fetch_pinned)")
        for name, r in f["dvc"].items():
            print(f"  {name:32s} {r['files']:8d} {r['add']:6.1f} {r['push']:6.1f} {r['fetch']:7.1f}")
        loose = f["dvc"]["loose"]["fetch"]
        for name, r in list(f["dvc"].items())[1:]:
            print(f"  fetch {name}: {loose / r['fetch']:.1f}x faster than loose")
    if "gpu" in f:
        g, loop = f["gpu"], f["gpu"]["real_loop"]
        print(f"\n{g['device']}: synthetic batches {g['synthetic_images_per_s']:.0f} images/s; real loop on the "
              f"pre-resized pack {loop['images_per_s']:.0f} images/s ({loop['step_ms']:.1f} ms/step, GPU utilisation "
              f"{loop['gpu_util']:.0f}%, {loop['domains']} domains x {loop['workers_per_domain']} workers)")


if __name__ == "__main__":
    main()
