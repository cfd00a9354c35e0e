"""The real pipeline compiled for Kubeflow Pipelines by ZenML's orchestrator, read back with kfp's own loader.

This is the check that breaks when a kfp or ZenML upgrade stops the pipeline compiling, drops the train
step's GPU, or lets a path of the launching machine into a pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import tiny_run_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
STEPS = ["data_ingester", "data_validator", "model_trainer", "model_evaluator", "model_registrar", "model_promoter"]
REMOTE = "s3://udon-data/dvc"


def udon(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def compiled(tiny_repo, tmp_path_factory):
    """The KFP spec of the tiny run, rendered from inside the data repository as a user would."""
    tmp = tmp_path_factory.mktemp("kfp")
    run_config = tiny_run_config(tiny_repo, tmp / "run.yaml", data={"repo": "."})
    out = tmp / "udon-pipeline.yaml"
    done = udon("k8s", "render", "--config", str(ROOT / "configs" / "cluster.yaml"), "--kubeflow-pipeline", str(out),
                "--run-config", str(run_config), "--set", f"data.remote={REMOTE}", cwd=tiny_repo)
    assert done.returncode == 0, done.stdout + done.stderr
    from kfp.components import load_component_from_file

    return load_component_from_file(str(out)).pipeline_spec, out, tmp, tiny_repo


def _tasks(spec) -> dict:
    """Tasks by the step they run (KFP keys them by a DNS-safe form of the name)."""
    return {task.task_info.name: task for task in spec.root.dag.tasks.values()}


def _executor(spec, task) -> dict:
    from google.protobuf.json_format import MessageToDict

    component = spec.components[task.component_ref.name]
    return MessageToDict(spec.deployment_spec)["executors"][component.executor_label]["container"]


def test_every_step_is_a_task_in_pipeline_order(compiled):
    spec = compiled[0]
    tasks, key = _tasks(spec), {t.task_info.name: k for k, t in spec.root.dag.tasks.items()}
    assert sorted(tasks) == sorted(STEPS), sorted(tasks)
    for before, after in zip(STEPS, STEPS[1:]):
        assert key[before] in tasks[after].dependent_tasks, (after, list(tasks[after].dependent_tasks))


def test_each_task_runs_its_step_in_the_cluster_image(compiled):
    spec = compiled[0]
    for name, task in _tasks(spec).items():
        container = _executor(spec, task)
        assert container["image"] == CLUSTER["image"], name
        assert container["args"][container["args"].index("--step_name") + 1] == name


def test_the_train_task_gets_the_gpu_and_resources_of_the_cluster_config(compiled):
    spec, out = compiled[0], compiled[1]
    tasks = _tasks(spec)
    train = _executor(spec, tasks["model_trainer"])["resources"]
    assert train["accelerator"]["resourceCount"] == str(CLUSTER["step_gpus"])
    assert train["accelerator"]["resourceType"] == CLUSTER["gpu_resource"]
    assert train["resourceCpuRequest"] == CLUSTER["cpu_request"]
    assert "resourceCpuLimit" not in train  # cpu_limit: null means no limit (it throttles the data loaders)
    assert train["resourceMemoryRequest"] == CLUSTER["memory_request"]
    assert train["resourceMemoryLimit"] == CLUSTER["memory_limit"]
    for name in set(STEPS) - {"model_trainer"}:
        assert "accelerator" not in _executor(spec, tasks[name]).get("resources", {}), name
    platform = next(d for d in yaml.safe_load_all(out.read_text()) if "platforms" in d)
    pod = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert list(pod) == [spec.components[tasks["model_trainer"].component_ref.name].executor_label]
    (pod,) = pod.values()
    assert pod["tolerations"] == CLUSTER["tolerations"]
    assert pod["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": CLUSTER["shm_size"],
                                      "volumeName": "dshm"}]


def test_no_task_refers_to_a_path_of_the_launching_machine(compiled):
    from pipelines.cluster.kubeflow import steps_file

    _, out, tmp, repo = compiled
    steps = json.loads(steps_file(out).read_text())
    assert sorted(steps) == sorted(STEPS)
    text = out.read_text() + json.dumps(steps)
    for local in {str(repo), str(tmp), str(ROOT), str(Path.home()), sys.prefix}:
        assert local not in text, f"{local} in the compiled spec or its step configurations"
    data = steps["data_ingester"]["parameters"]["config"]
    assert data["repo"] == "." and data["remote"] == REMOTE  # a pod without the repository pulls from the remote
    assert data["pinned_md5"].endswith(".dir") and data["pinned_path"] == "data"


def test_a_local_dvc_remote_is_refused_before_anything_compiles(tiny_repo, tmp_path):
    run_config = tiny_run_config(tiny_repo, tmp_path / "run.yaml", data={"repo": "."})
    out = tmp_path / "spec.yaml"
    done = udon("k8s", "render", "--config", str(ROOT / "configs" / "cluster.yaml"), "--kubeflow-pipeline", str(out),
                "--run-config", str(run_config), cwd=tiny_repo)
    assert done.returncode != 0 and not out.exists()
    assert "data.remote" in done.stderr and "is a folder on this machine" in done.stderr, done.stderr
    assert str(tiny_repo.parent / "remote") in done.stderr
