"""The pod entry point: `python -m udon_core.train` alone and under torchrun with 2 CPU processes (gloo).

Two ranks must train the same model as one process (each rank loads half of every global batch, gradients
are averaged, the relational loss is per rank), and a run whose rank is killed must be restarted by torchrun
and resume from the last checkpoint to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipelines.zen_server import free_port
from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, write_tiny_benchmark
from udon_core.data import save_benchmark_spec
from udon_core.training import EXPORT_DIR, checkpoint_files, main

pytestmark = pytest.mark.slow
STEPS = 40
TRAIN = {"steps": STEPS, "batch_size": 4, "frozen_steps": 3, "log_every": 1, "checkpoint_every": 2,
         "deterministic": True, "device": "cpu", "sampler": {"update_every": 4}}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    write_tiny_benchmark(root)
    save_benchmark_spec(SPEC, root)  # data.benchmark 'auto' reads it
    config = {"parameters": {"data": {"benchmark": "auto"},
                             "training": {"model": TINY_MODEL.model_dump(mode="json"), "train": TRAIN}}}
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, root


def _env(root: Path) -> dict[str, str]:
    # One thread per process: 2 ranks on 2 cores. MASTER_* come from torchrun --standalone.
    return {**os.environ, "OMP_NUM_THREADS": "1", "UDON_DATA_ROOT": str(root), "PYTHONPATH": os.getcwd()}


def _torchrun(run_file: Path, root: Path, checkpoints: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *extra,
           "-m", "udon_core.train", "--config", str(run_file), "--resume", "auto", "--no-progress"]
    env = {**_env(root), "UDON_CHECKPOINT_DIR": str(checkpoints)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _export(checkpoints: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = checkpoints / EXPORT_DIR
    return load_file(str(folder / "model.safetensors")), json.loads((folder / "summary.json").read_text())


def _rank_pid(launcher: psutil.Process, rank: int) -> int | None:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.fixture(scope="module")
def two_ranks(run_file, tmp_path_factory) -> tuple[dict, dict]:
    path, root = run_file
    checkpoints = tmp_path_factory.mktemp("two_ranks")
    out = _finish(_torchrun(path, root, checkpoints))
    assert f"all 2 ranks hold identical weights after step {STEPS}" in out  # checked by an all_gather
    return _export(checkpoints)


def test_two_gloo_ranks_train_the_model_one_process_trains(run_file, two_ranks, tmp_path, monkeypatch):
    path, root = run_file
    monkeypatch.setenv("UDON_DATA_ROOT", str(root))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.set_num_threads(1)
    assert main(["--config", str(path), "--checkpoint-dir", str(tmp_path), "--no-progress"]) == 0
    single, single_summary = _export(tmp_path)
    weights, summary = two_ranks
    assert summary["steps"] == single_summary["steps"] == STEPS
    assert summary["domain_steps"] == single_summary["domain_steps"]  # the same domain schedule
    # Same batches, same maths; only the order of floating-point sums differs.
    for key, value in single.items():
        assert torch.allclose(weights[key], value, atol=1e-3), key


def test_a_killed_rank_is_restarted_and_the_run_resumes_to_the_same_weights(run_file, two_ranks, tmp_path):
    path, root = run_file
    launcher = _torchrun(path, root, tmp_path, "--max-restarts", "1")
    killed_at = None
    deadline = time.monotonic() + 180
    while killed_at is None and launcher.poll() is None and time.monotonic() < deadline:
        if checkpoint_files(tmp_path) and (pid := _rank_pid(psutil.Process(launcher.pid), 1)):
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
        time.sleep(0.02)
    assert killed_at is not None, "the run ended before a rank could be killed"
    out = _finish(launcher)
    assert "resumed from" in out and "all 2 ranks hold identical weights" in out, out[-3000:]
    resumed_step = int(out.split("resumed from")[1].split("at step")[1].split()[0])
    assert 0 < resumed_step < STEPS
    weights, summary = _export(tmp_path)
    reference, reference_summary = two_ranks
    assert summary["domain_steps"] == reference_summary["domain_steps"]
    assert all(torch.equal(weights[k], v) for k, v in reference.items())


def test_the_entry_point_names_what_is_missing(run_file, tmp_path, monkeypatch, capsys):
    path, root = run_file
    monkeypatch.delenv("UDON_DATA_ROOT", raising=False)
    monkeypatch.delenv("UDON_CHECKPOINT_DIR", raising=False)
    assert main(["--config", str(path), "--checkpoint-dir", str(tmp_path)]) == 2
    assert "UDON_DATA_ROOT" in capsys.readouterr().err
    (tmp_path / "checkpoint-000000001.pt").write_bytes(b"")
    assert main(["--config", str(path), "--data", str(root), "--checkpoint-dir", str(tmp_path),
                 "--resume", "never"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"train": {"steps": 0}}}))
    assert main(["--config", str(bad), "--data", str(root), "--checkpoint-dir", str(tmp_path / "x")]) == 2
    assert "training.train.steps" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", ["torchrun", "none"])
def test_two_trainer_v2_nodes_form_one_group_from_the_pet_variables(run_file, tmp_path, launcher):
    """Two local "nodes" get exactly what Kubeflow Trainer's torch runtime sets (PET_NNODES, PET_NPROC_PER_NODE,
    PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT) and the TrainJob's command: `torchrun -m udon_core.train`
    with no flags (torchrun reads PET_*), or, one process per node, `python -m udon_core.train` itself. They
    form one group of 2, and every rank's weights equal rank 0's after the steps (the trainer's all_gather)."""
    path, root = run_file
    port, steps = free_port(), 6
    launch = [sys.executable, "-m", "torch.distributed.run"] if launcher == "torchrun" else [sys.executable]
    torchrun_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    base = {k: v for k, v in _env(root).items() if k not in torchrun_vars and not k.startswith(("PET_", "TORCHELASTIC"))}
    procs = []
    for node_rank in (0, 1):
        env = {**base, "UDON_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),  # one shared volume
               "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node_rank),
               "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
        cmd = [*launch, "-m", "udon_core.train", "--config", str(path), "--resume", "auto", "--no-progress",
               "--set", f"train.steps={steps}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [_finish(p) for p in procs]
    assert f"all 2 ranks hold identical weights after step {steps}" in outs[0], outs[0][-3000:]
    assert "Traceback" not in outs[1]
    weights, summary = _export(tmp_path / "checkpoints")
    assert summary["steps"] == steps and weights
