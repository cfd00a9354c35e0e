"""bench/data_path.py: its CPU path, including the GPU section's loop run on the CPU (no GPU here)."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from udon_core.data import PackConfig, pack_benchmark
from udon_core.data.uned_like import UnedLikeConfig, write_uned_like_benchmark

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("data_path", BENCH / "data_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    loose = write_uned_like_benchmark(base / "loose", UnedLikeConfig(images=80, min_side=40, max_side=64, workers=1),
                                      progress=False)
    keep, small = base / "keep", base / "small"
    pack_benchmark(loose, keep, PackConfig(workers=1), progress=False)
    pack_benchmark(loose, small, PackConfig(workers=1, short_side=40), progress=False)
    return loose, keep, small


def test_the_loader_rows_time_every_layout_per_core(bench, benchmarks):
    rows = dict(bench.loader_table(*benchmarks, image_size=32, images=8, batch=4, repeats=2))
    assert list(rows)[0].startswith("before #22") and len(rows) == 4
    assert all(r["images"] >= 8 and r["per_core"] > 0 for r in rows.values())


def test_the_gpu_section_runs_the_real_loop_and_the_synthetic_step_on_the_cpu(bench, benchmarks):
    _, _, small = benchmarks
    torch.manual_seed(0)
    loop = bench.real_loop(small, "test_vit", 16, batch=4, steps=2, warmup=1, workers=0, device="cpu", student_dim=8,
                           teacher_dim=8)
    assert loop["images_per_s"] > 0 and loop["domains"] == 8 and loop["workers_per_domain"] == 0
    if shutil.which("nvidia-smi") is None:  # nothing to sample: no figure rather than a made-up 0%
        assert math.isnan(loop["gpu_util"])
    else:  # sampled every 200 ms: a two-step loop may end before the first sample
        assert math.isnan(loop["gpu_util"]) or 0 <= loop["gpu_util"] <= 100
    med, mem = bench.synthetic_step("test_vit", 16, 4, steps=1, warmup=0, device=torch.device("cpu"), student_dim=8,
                                    teacher_dim=8)
    assert med > 0 and math.isnan(mem)


def test_the_report_prints_the_ratios_of_the_figures(bench, capsys):
    nan = float("nan")
    figures = {"images": 80, "cores": 2, "load_before": (0.5, 1, 1), "load_after": (1.5, 1, 1),
               "pack": {"keep-bytes": {"images_per_s": 40.0, "per_worker": 20.0, "source_mb": 6.0, "packed_mb": 3.0}},
               "loader": {"before": {"per_core": 2.0}, "after": {"per_core": 5.0}},
               "dvc": {"loose": {"files": 9, "add": 2.0, "push": 2.0, "fetch": 6.0},
                       "packed": {"files": 3, "add": 1.0, "push": 1.0, "fetch": 1.5}},
               "gpu": {"device": "cpu", "synthetic_images_per_s": 250.0, "synthetic_peak_gib": nan,
                       "real_loop": {"images_per_s": 80.0, "step_ms": 50.0, "gpu_util": nan, "domains": 8,
                                     "workers_per_domain": 0}}}
    bench.report(figures, type("Args", (), {"image_size": 16})())
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "80 generated UnED-shaped JPEGs; 2 cores; load average 0.5 before, 1.5 after" in lines
    assert "keep-bytes 40 20 6 3" in lines
    assert "before 2 1.00x" in lines and "after 5 2.50x" in lines  # per core, and 5.0 / 2.0 of the first row
    assert "fetch packed: 4.0x faster than loose" in lines  # 6.0 s / 1.5 s
    assert ("cpu: synthetic batches 250 images/s; real loop on the pre-resized pack 80 images/s (50.0 ms/step, "
            "GPU utilisation nan%, 8 domains x 0 workers)") in lines
