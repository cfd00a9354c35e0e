"""Model files end to end, as processes: `mlflow models serve` refuses a damaged registered model in one
sentence, the check needs nothing of this package, and a pod killed between a checkpoint and its digest
restarts (python -m udon_core.train) instead of stopping for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, write_tiny_benchmark
from udon_core.data import save_benchmark_spec
from udon_core.model import EmbeddingModel
from udon_core.training import EXPORT_DIR, checkpoint_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def damaged_model(tmp_path_factory) -> Path:
    from integrations.mlflow_models import save_pt2_model

    torch.manual_seed(0)
    folder = save_pt2_model(EmbeddingModel(TINY_MODEL), tmp_path_factory.mktemp("served") / "model")
    pt2 = folder / "data" / "model.pt2"
    data = bytearray(pt2.read_bytes())
    data[len(data) // 3] ^= 0x20  # inside the weights
    pt2.write_bytes(bytes(data))
    return folder


def test_mlflow_models_serve_refuses_a_damaged_model_in_one_sentence(damaged_model, tmp_path):
    from pipelines.zen_server import free_port

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # its uvicorn
    proc = subprocess.run([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(damaged_model),
                           "--env-manager", "local", "--host", "127.0.0.1", "-p", str(free_port())],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    refusal = [line for line in out.splitlines() if line.startswith("error: refusing to serve the model: ")]
    assert len(refusal) == 1 and "model.pt2: content does not match its SHA-256 in model.pt2.sha256" in refusal[0]
    # the server says it in that sentence, without a traceback of its own (MLflow's CLI then reports its exit)
    assert "Traceback" not in out.split(refusal[0])[0] and "DamagedModelError" not in out


def test_the_check_runs_where_this_package_is_not_installed(damaged_model, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        for name in ("udon_core", "integrations", "steps", "pipelines"):
            sys.modules[name] = None  # importing any of them now fails, as in a serving image without them
        import mlflow
        try:
            mlflow.pyfunc.load_model({str(damaged_model)!r})
        except ValueError as err:
            print(type(err).__name__, err)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("DamagedModelError ") and "does not match its SHA-256" in proc.stdout


STEPS = 6
TRAIN = {"steps": STEPS, "batch_size": 4, "frozen_steps": 2, "log_every": 1, "checkpoint_every": 2,
         "deterministic": True, "device": "cpu", "sampler": {"update_every": 4}}
KILLED = """
import os, signal, sys
import udon_core.training.checkpoint as checkpoint
real = checkpoint.write_digest_file
def killed(digest_file, files):
    if digest_file.name == "checkpoint-000000002.pt.sha256":
        os.kill(os.getpid(), signal.SIGKILL)  # after checkpoint-000000002.pt is in place, before its digest
    real(digest_file, files)
checkpoint.write_digest_file = killed
from udon_core.training import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_pod_killed_between_a_checkpoint_and_its_digest_restarts_from_step_0(tmp_path):
    root = write_tiny_benchmark(tmp_path / "bench")
    save_benchmark_spec(SPEC, root)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"parameters": {"data": {"benchmark": "auto"}, "training": {
        "model": TINY_MODEL.model_dump(mode="json"), "train": TRAIN}}}))
    args = ["--config", str(run_file), "--data", str(root), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    killed = subprocess.run([sys.executable, "-c", KILLED, *args, "--checkpoint-dir", str(tmp_path / "ck")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [incomplete] = checkpoint_files(tmp_path / "ck")
    assert incomplete.name == "checkpoint-000000002.pt" and not Path(f"{incomplete}.sha256").exists()
    restarted = subprocess.run([sys.executable, "-m", "udon_core.train", *args, "--checkpoint-dir",
                                str(tmp_path / "ck")], env=env, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "its write was interrupted" in restarted.stderr and "starting from step 0" in restarted.stderr
    straight = subprocess.run([sys.executable, "-m", "udon_core.train", *args, "--checkpoint-dir",
                               str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed, straight = (load_file(str(tmp_path / d / EXPORT_DIR / "model.safetensors")) for d in ("ck", "straight"))
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
