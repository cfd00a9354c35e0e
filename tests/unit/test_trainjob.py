"""Kubeflow Trainer v2 (issue #23): the TrainJob from configs/cluster.yaml, checked with the API package's own models
and Pod Security "restricted" on the pods Trainer would build; submit and watch against a fake cluster (no API
server can run here); the `udon_trainjob` step operator's TrainJob, field by field; the PET_* environment."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID, uuid4

import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client import ApiException

from pipelines.cli.k8s import k8s
from pipelines.cluster import (
    TRAINJOB_FLAVOR,
    ClusterConfig,
    ManifestError,
    cluster_run_settings,
    load_cluster_config,
    render_manifests,
    validate_manifests,
)
from pipelines.cluster import submit as submit_mod
from pipelines.cluster.submit import ClusterAccessError, TrainJobFailed, TrainJobUnavailable, submit_trainjob
from pipelines.cluster.trainjob import NODE, TORCH_DISTRIBUTED, TrainJobSettings, effective_pods
from udon_core.errors import InvalidValueError
from udon_core.torchrun_env import torch_env

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.30.0", "1.37.0")
TRAIN_CONFIG = {"training": {"train": {"steps": 50, "batch_size": 128}}, "data": {"benchmark": "uned"}}
README_HASH = "<sha256 of the training config>"


def _trainjob(manifests: dict) -> dict:
    (job,) = [m for m in manifests.values() if m["kind"] == "TrainJob"]
    return job


def _patch_pod(job: dict) -> dict:
    (patch,) = job["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return rjob["template"]["spec"]["template"]


@pytest.fixture(scope="module")
def project() -> ClusterConfig:
    return load_cluster_config(ROOT / "configs/cluster.yaml")


@pytest.fixture(scope="module")
def two_by_eight(project) -> dict:
    return render_manifests(project, TRAIN_CONFIG, nodes=2, gpus_per_node=8, trainjob=True)


# --- the TrainJob ------------------------------------------------------------------------------------------------


def test_trainjob_of_the_project_config_is_valid_and_says_what_runs_where(project, two_by_eight):
    summary = validate_manifests(two_by_eight, VERSIONS)
    assert summary.kinds["TrainJob"] == 1 and summary.pods == 1
    job = _trainjob(two_by_eight)
    assert list(two_by_eight)[-1] == "07-trainjob-udon-train.yaml"
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["metadata"]["namespace"] == project.namespace and job["metadata"]["name"] == project.job_name
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                         "apiGroup": "trainer.kubeflow.org"}
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["image"]) == (2, 8, project.image)
    # torchrun takes nodes, processes, rank and master from PET_*: the command names none of them
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["-m", "udon_core.train", "--config", "/etc/udon/train.yaml", "--resume", "auto"]
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "8", "memory": "64Gi"},
                                           "limits": {"memory": "64Gi", "nvidia.com/gpu": "8"}}
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["UDON_CHECKPOINT_DIR"] == "/mnt/udon/checkpoints/udon-train" and env["UDON_DATA_ROOT"] == "/mnt/udon/data"
    pod = _patch_pod(job)
    assert job["spec"]["runtimePatches"][0]["manager"] == "udon-pipeline"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == project.service_account
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": project.shm_size}} in spec["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": project.data_pvc}} in spec["volumes"]
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["securityContext"]["runAsUser"] == project.run_as_user
    (container,) = spec["containers"]
    assert container["name"] == NODE and {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == "udon-train"


def test_the_pod_trainer_builds_carries_the_trainer_fields_the_torch_env_and_the_patch(two_by_eight):
    pods = effective_pods(_trainjob(two_by_eight), TORCH_DISTRIBUTED)
    (container,) = pods[NODE]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "8" and env["PET_MASTER_PORT"] == "29400"
    assert env["PET_MASTER_ADDR"] == "udon-train-node-0-0.udon-train"
    assert env["PET_NODE_RANK"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert container["command"] == ["torchrun"] and container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {v["name"] for v in pods[NODE]["spec"]["volumes"]} == {"dshm", "data", "train-config"}


def test_multi_node_overlay_renders_a_valid_trainjob():
    cfg = load_cluster_config(ROOT / "configs/cluster.yaml", ROOT / "k8s/overlays/multi-node.yaml")
    manifests = render_manifests(cfg, TRAIN_CONFIG, trainjob=True)
    validate_manifests(manifests, VERSIONS)
    trainer = _trainjob(manifests)["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": "64", "memory": "512Gi"}
    assert _patch_pod(_trainjob(manifests))["spec"]["nodeSelector"] == {"nvidia.com/gpu.count": "8"}


def test_the_trainjob_in_the_readme_is_the_one_rendered(two_by_eight):
    text = (ROOT / "k8s/README.md").read_text()
    block = re.search(r"<!-- trainjob: --nodes 2 --gpus-per-node 8 -->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert block, "k8s/README.md shows the rendered TrainJob"
    shown = yaml.safe_load(block.group(1))
    rendered = copy.deepcopy(_trainjob(two_by_eight))
    rendered["metadata"]["annotations"]["udon-pipeline/train-config-sha256"] = README_HASH
    assert shown == rendered
    validate_manifests({"README": {**shown, "metadata": {**shown["metadata"], "annotations": {}}}}, VERSIONS)


@pytest.mark.parametrize(("text", "field", "message"), [
    ("gpus_per_node: eight\n", "gpus_per_node", "Input should be a valid integer"),
    ('gpus_per_node: "8"\n', "gpus_per_node", "Input should be a valid integer"),
    ("nodes: -2\n", "nodes", "Input should be greater than or equal to 1"),
    ("nodes: 2.5\n", "nodes", "Input should be a valid integer"),
    ("trainjob_runtime: Torch_Distributed\n", "trainjob_runtime", "not a Kubernetes name"),
])
def test_a_broken_config_is_one_sentence_naming_the_field(tmp_path, text, field, message):
    config = tmp_path / "cluster.yaml"
    config.write_text(text)
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(TRAIN_CONFIG))
    result = CliRunner().invoke(k8s, ["render", "--config", str(config), "--train-config", str(train),
                                      "--trainjob", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {config}: field '{field}': ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out.yaml").exists()


def test_cli_writes_one_file_that_validate_reads_back(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(TRAIN_CONFIG))
    out = tmp_path / "run" / "trainjob.yaml"
    args = ["render", "--config", str(ROOT / "configs/cluster.yaml"), "--train-config", str(train),
            "--nodes", "2", "--gpus-per-node", "8", "--trainjob", str(out), "--data-version", "5f1c.dir",
            "--zenml-run", "training_pipeline-2026_12_03"]
    result = CliRunner().invoke(k8s, args)
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs][-1] == "TrainJob" and len(docs) == 10
    assert docs[-1]["metadata"]["labels"]["udon-pipeline/data-version"] == "5f1c.dir"
    assert docs[-1]["metadata"]["labels"]["udon-pipeline/zenml-run"] == "training_pipeline-2026_12_03"
    role = next(d for d in docs if d["kind"] == "Role")
    assert any("trainjobs" in r["resources"] for r in role["rules"])
    result = CliRunner().invoke(k8s, ["validate", str(out.parent)])
    assert result.exit_code == 0 and "10 manifests" in result.output, result.output
    (tmp_path / "mine.yaml").write_text("kept: true\n")
    refused = CliRunner().invoke(k8s, [*args[:-6], "--trainjob", str(tmp_path / "mine.yaml")])
    assert refused.exit_code == 2 and "not written by `udon k8s render`" in refused.output


def test_pytorchjob_route_is_kept_and_marked_legacy(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(TRAIN_CONFIG))
    result = CliRunner().invoke(k8s, ["render", "--config", str(ROOT / "configs/cluster.yaml"), "--train-config",
                                      str(train), "--nodes", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and "PyTorchJob is the legacy route" in result.output


# --- checked with the API's models and Trainer's rules -------------------------------------------------------------


def _broken(two_by_eight: dict, change) -> dict:
    job = copy.deepcopy(_trainjob(two_by_eight))
    change(job)
    return job


@pytest.mark.parametrize(("change", "message"), [
    (lambda j: j["spec"]["trainer"].update(numNodes="2"), "Trainer.numNodes: Input should be a valid integer"),
    (lambda j: j["spec"]["trainer"].update(numNodes=True), "Trainer.numNodes: Input should be a valid integer"),
    (lambda j: j["spec"]["trainer"].update(gpus=8), "spec.trainer.gpus: not a field of TrainJob"),
    (lambda j: j["spec"].update(podTemplateOverrides=[{"targetJobs": [{"name": "node"}]}]),
     "spec.podTemplateOverrides: not a field of TrainJob"),
    (lambda j: j["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "4"}),
     "sets ['PET_NNODES'], which the torch runtime reserves"),
    (lambda j: j["spec"]["trainer"]["args"].insert(0, "--standalone"), "every node would train alone"),
    (lambda j: j["spec"]["trainer"]["args"].insert(0, "--nnodes=4"), "torchrun --nnodes=4 but spec.trainer.numNodes is 2"),
    (lambda j: j["spec"]["trainer"].update(numProcPerNode=4), "numProcPerNode=4 but each node has 8 x nvidia.com/gpu"),
    (lambda j: _patch_pod(j)["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}]),
     "sets env on container 'node'"),
    (lambda j: _patch_pod(j)["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "pod security: baseline Sysctls"),
    (lambda j: _patch_pod(j)["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     "baseline HostPath Volumes"),
    (lambda j: j["spec"].pop("runtimePatches"), "restricted Privilege Escalation"),
])
def test_a_broken_trainjob_is_reported_field_by_field(two_by_eight, change, message):
    with pytest.raises(ManifestError, match=re.escape(message)):
        validate_manifests({"tj.yaml": _broken(two_by_eight, change)}, VERSIONS)


def test_the_runtime_among_the_manifests_is_the_one_its_pods_are_checked_on(two_by_eight):
    runtime = copy.deepcopy(TORCH_DISTRIBUTED)
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    rjob["template"]["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1"})
    with pytest.raises(ManifestError) as err:
        validate_manifests({"tj.yaml": _trainjob(two_by_eight), "rt.yaml": runtime}, VERSIONS)
    assert "containers[sidecar].securityContext.allowPrivilegeEscalation" in str(err.value)
    summary = validate_manifests({"tj.yaml": _trainjob(two_by_eight), "rt.yaml": TORCH_DISTRIBUTED}, VERSIONS)
    assert summary.kinds == {"TrainJob": 1, "ClusterTrainingRuntime": 1}
    (note,) = summary.notes  # the runtime alone makes no pod; without the TrainJob's patches they would not pass
    assert "meets restricted only with a TrainJob's runtime patches" in note
    broken = copy.deepcopy(TORCH_DISTRIBUTED)
    broken["spec"]["mlPolicy"]["numNodes"] = "one"
    with pytest.raises(ManifestError, match="MLPolicy.numNodes"):
        validate_manifests({"rt.yaml": broken}, VERSIONS)


def test_settings_carry_the_names_of_zenmls_upstream_trainer_step_operator():
    # src/zenml/integrations/kubeflow/flavors/kubeflow_trainer_step_operator_flavor.py at fabeee3 (k8s/README.md)
    upstream = {"runtime_ref_name", "runtime_ref_kind", "runtime_ref_api_group", "num_nodes", "num_proc_per_node",
                "trainer_overrides", "trainer_env", "pod_template_overrides", "poll_interval_seconds",
                "timeout_seconds", "delete_trainjob_after_completion", "kubernetes_namespace", "incluster",
                "kubernetes_context", "image"}
    assert set(TrainJobSettings.model_fields) == upstream


# --- submit and watch, against a fake cluster ----------------------------------------------------------------------


class FakeCluster:
    """The CustomObjectsApi and CoreV1Api of a cluster with (or without) Kubeflow Trainer; calls are recorded."""

    def __init__(self, *, crd: bool = True, runtime: dict | None = TORCH_DISTRIBUTED, prune=None,
                 conditions: list[list[dict]] | None = None, log: str = "step 50: loss 0.1",
                 read_errors: list[Exception] | None = None):
        self.crd, self.runtime, self.prune = crd, runtime, prune  # prune: what an older CRD drops
        self.read_errors = list(read_errors or [])  # raised, in order, by the next reads of the TrainJob
        self.conditions = conditions if conditions is not None else [[], [{"type": "Complete", "status": "True"}]]
        self.trainjobs: dict[str, dict] = {}
        self.config_maps: dict[str, dict] = {}
        self.calls: list[str] = []
        self.log = log

    def get_api_resources(self, group, version):
        self.calls.append(f"discover {group}/{version}")
        if not self.crd:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(resources=[SimpleNamespace(name=n) for n in ("trainjobs", "trainjobs/status")])

    def get_cluster_custom_object(self, group, version, plural, name):
        self.calls.append(f"get {plural}/{name}")
        if self.runtime is None or self.runtime["metadata"]["name"] != name:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.runtime)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(f"create {plural}/{body['metadata']['name']}")
        if body["metadata"]["name"] in self.trainjobs:
            raise ApiException(status=409, reason="Conflict")
        stored = copy.deepcopy(body)
        if self.prune:
            self.prune(stored)
        self.trainjobs[body["metadata"]["name"]] = stored
        return stored

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(f"get {plural}/{name}")
        if self.read_errors:
            raise self.read_errors.pop(0)
        job = copy.deepcopy(self.trainjobs[name])
        job["status"] = {"conditions": self.conditions.pop(0) if len(self.conditions) > 1 else self.conditions[0]}
        return job

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(f"delete {plural}/{name}")
        self.trainjobs.pop(name)

    def create_namespaced_config_map(self, namespace, body):
        if body["metadata"]["name"] in self.config_maps:
            raise ApiException(status=409, reason="Conflict")
        self.config_maps[body["metadata"]["name"]] = body

    def replace_namespaced_config_map(self, name, namespace, body):
        self.calls.append(f"replace configmaps/{name}")
        self.config_maps[name] = body

    def list_namespaced_pod(self, namespace, label_selector):
        self.calls.append(f"pods {label_selector}")
        meta = SimpleNamespace(name="udon-train-node-0-0-abcde", creation_timestamp=datetime(2026, 1, 1))
        return SimpleNamespace(items=[SimpleNamespace(metadata=meta)])

    def read_namespaced_pod_log(self, name, namespace, container, tail_lines):
        self.calls.append(f"log {name}/{container}")
        return self.log


def _submit(manifests: dict, cluster: FakeCluster, **kw):
    lines: list[str] = []
    outcome = submit_trainjob(manifests, cluster, cluster, versions=VERSIONS, echo=lines.append,
                              sleep=lambda s: None, **kw)
    return outcome, lines


def test_submit_creates_the_config_map_and_the_trainjob_and_watches_it_to_complete(two_by_eight):
    cluster = FakeCluster()
    outcome, lines = _submit(two_by_eight, cluster)
    assert outcome.status == "Complete" and outcome.name == "udon-train"
    assert cluster.trainjobs["udon-train"] == _trainjob(two_by_eight)  # exactly what was rendered and validated
    assert "udon-train-config" in cluster.config_maps
    assert cluster.calls[:3] == ["discover trainer.kubeflow.org/v1alpha1", "get clustertrainingruntimes/torch-distributed",
                                 "create trainjobs/udon-train"]
    assert lines[-1] == "TrainJob udon-train: Complete=True"
    again, _ = _submit(two_by_eight, FakeCluster(conditions=[[]]), wait=False)
    assert again.status == "Submitted"


def test_a_failed_trainjob_says_why_with_node_zeros_last_lines(two_by_eight):
    cluster = FakeCluster(log="step 7\ntorch.OutOfMemoryError: CUDA out of memory", conditions=[
        [{"type": "Created", "status": "True"}],
        [{"type": "Failed", "status": "True", "reason": "TrainingJobFailed", "message": "node-1 exited 1"}]])
    with pytest.raises(TrainJobFailed) as err:
        _submit(two_by_eight, cluster)
    text = str(err.value)
    assert text.startswith("TrainJob udon-train failed: TrainingJobFailed: node-1 exited 1")
    assert "CUDA out of memory" in text
    assert ("pods jobset.sigs.k8s.io/jobset-name=udon-train,jobset.sigs.k8s.io/replicatedjob-name=node,"
            "batch.kubernetes.io/job-completion-index=0") in cluster.calls
    assert "log udon-train-node-0-0-abcde/node" in cluster.calls


def test_the_trainjob_carries_a_deadline_and_the_watch_ends_after_it(two_by_eight):
    job = _trainjob(two_by_eight)
    assert job["spec"]["activeDeadlineSeconds"] == 72 * 3600  # Trainer fails it (DeadlineExceeded) after that
    assert submit_mod.watch_timeout(job) == 72 * 3600 + 300
    assert submit_mod.watch_timeout({"spec": {}}) == 72 * 3600 + 300  # no deadline: still bounded
    assert submit_mod.watch_timeout({"spec": {"activeDeadlineSeconds": 600}}) == 900
    # suspended in a queue (no deadline counts down): the watch gives up and says what it last saw
    cluster = FakeCluster(conditions=[[{"type": "Suspended", "status": "True"}]])
    cluster.trainjobs["udon-train"] = job
    now = [0.0]
    with pytest.raises(TrainJobFailed) as err:
        submit_mod.watch_trainjob(cluster, cluster, "udon", "udon-train", poll_seconds=60, timeout_seconds=900,
                                  echo=lambda line: None, sleep=lambda s: now.__setitem__(0, now[0] + s),
                                  clock=lambda: now[0])
    assert str(err.value) == ("TrainJob udon-train did not finish within 900 s (last status: Suspended=True; the "
                              "cluster ends it at its activeDeadlineSeconds): kubectl -n udon describe trainjob "
                              "udon-train")
    assert cluster.calls.count("get trainjobs/udon-train") == 17  # t = 0, 60, ..., 960


def test_the_watch_rides_out_transient_errors_and_names_the_lasting_ones(two_by_eight):
    from urllib3.exceptions import ProtocolError

    waits: list[float] = []
    blips = [ApiException(status=503, reason="Service Unavailable"), ProtocolError("Connection aborted."),
             ApiException(status=429, reason="Too Many Requests")]
    cluster = FakeCluster(read_errors=blips)
    cluster.trainjobs["udon-train"] = _trainjob(two_by_eight)
    outcome = submit_mod.watch_trainjob(cluster, cluster, "udon", "udon-train", timeout_seconds=3600,
                                        echo=lambda line: None, sleep=waits.append)
    assert outcome.status == "Complete" and waits == [5, 10, 20, 10]  # three retries, then one poll
    down = FakeCluster(read_errors=[ApiException(status=502, reason="Bad Gateway")] * 7)
    down.trainjobs["udon-train"] = _trainjob(two_by_eight)
    with pytest.raises(ClusterAccessError, match=r"^cannot read TrainJob udon-train \(7 tries over 315 s\): Bad "
                                                 r"Gateway \(it may still run: kubectl -n udon get trainjob"):
        submit_mod.watch_trainjob(down, down, "udon", "udon-train", timeout_seconds=3600, echo=lambda line: None,
                                  sleep=lambda s: None)
    refused = FakeCluster(read_errors=[ApiException(status=403, reason="Forbidden")])
    refused.trainjobs["udon-train"] = _trainjob(two_by_eight)
    with pytest.raises(ClusterAccessError, match=r"^cannot read TrainJob udon-train: Forbidden"):
        submit_mod.watch_trainjob(refused, refused, "udon", "udon-train", timeout_seconds=3600,
                                  echo=lambda line: None, sleep=lambda s: pytest.fail("a 403 is not retried"))


def test_no_trainjob_crd_no_runtime_or_an_old_trainer_is_one_sentence(two_by_eight, monkeypatch, tmp_path):
    with pytest.raises(TrainJobUnavailable, match=r"^the cluster has no TrainJob CRD \(trainer.kubeflow.org/v1alpha1\)"):
        _submit(two_by_eight, FakeCluster(crd=False))
    with pytest.raises(TrainJobUnavailable, match="has no ClusterTrainingRuntime 'torch-distributed'"):
        _submit(two_by_eight, FakeCluster(runtime=None))
    old = FakeCluster(prune=lambda job: job["spec"].pop("runtimePatches"))
    with pytest.raises(TrainJobUnavailable, match=r"dropped spec.runtimePatches \(a Trainer older than 2.2"):
        _submit(two_by_eight, old)
    assert old.trainjobs == {} and "delete trainjobs/udon-train" in old.calls
    partial = FakeCluster(prune=lambda job: _patch_pod(job)["spec"].pop("securityContext"))
    with pytest.raises(TrainJobUnavailable, match=r"dropped spec.runtimePatches\[0\].*\.spec\.securityContext"):
        _submit(two_by_eight, partial)
    with pytest.raises(ClusterAccessError, match="already exists"):
        cluster = FakeCluster()
        _submit(two_by_eight, cluster, wait=False)
        _submit(two_by_eight, cluster, wait=False)
    # the command line: one sentence, exit code 2
    monkeypatch.setattr(submit_mod, "kube_apis", lambda *a, **k: (FakeCluster(crd=False),) * 2)
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(TRAIN_CONFIG))
    result = CliRunner().invoke(k8s, ["submit", "--trainjob", "--config", str(ROOT / "configs/cluster.yaml"),
                                      "--train-config", str(train)])
    assert result.exit_code == 2
    assert result.output.startswith("error: the cluster has no TrainJob CRD") and len(result.output.splitlines()) == 1


def test_the_clusters_runtime_is_checked_before_anything_is_created(two_by_eight):
    runtime = copy.deepcopy(TORCH_DISTRIBUTED)
    runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "hostNetwork"] = True
    cluster = FakeCluster(runtime=runtime)
    with pytest.raises(ManifestError, match="spec.hostNetwork: true is not allowed"):
        _submit(two_by_eight, cluster)
    assert cluster.trainjobs == {} and cluster.config_maps == {}


# --- the udon_trainjob step operator -----------------------------------------------------------------------------


BUILT_IMAGE = "registry.example.com/udon/zenml:training_pipeline-udon_trainjob_step_operator"


def _step_info(settings_key: str, settings) -> SimpleNamespace:
    data = SimpleNamespace(config=SimpleNamespace(parameters={"config": {"pinned_md5": "5f1c9a.dir"}}))
    return SimpleNamespace(
        run_id=UUID("0f3e2a11-2222-4333-8444-555566667777"), run_name="training_pipeline-2026_12_03-10_00_00_000000",
        step_run_id=UUID("11111111-2222-4333-8444-555566667777"), pipeline=SimpleNamespace(name="training_pipeline"),
        pipeline_step_name="model_trainer", pipeline_configuration=SimpleNamespace(settings={settings_key: settings}),
        snapshot=SimpleNamespace(step_configurations={"data_ingester": data}), get_image=lambda key: BUILT_IMAGE,
        force_write_logs=lambda: None)


def test_step_operator_submits_model_trainer_as_a_trainjob_field_by_field(monkeypatch):
    from zenml.enums import StackComponentType

    from pipelines.cluster.trainjob_operator import (
        TrainJobEntrypointConfiguration,
        TrainJobStepOperator,
        TrainJobStepOperatorConfig,
    )

    cfg = load_cluster_config(ROOT / "configs/cluster.yaml", ROOT / "k8s/overlays/multi-node.yaml")
    _, trainer_step = cluster_run_settings(cfg, "local", "udon-trainjob", TRAINJOB_FLAVOR)
    operator = TrainJobStepOperator(
        name="udon-trainjob", id=uuid4(), config=TrainJobStepOperatorConfig(kubernetes_namespace="udon"),
        flavor=TRAINJOB_FLAVOR, type=StackComponentType.STEP_OPERATOR, user=uuid4(), created=datetime.now(),
        updated=datetime.now())
    assert operator.entrypoint_config_class is TrainJobEntrypointConfiguration
    cluster = FakeCluster()
    monkeypatch.setattr(submit_mod, "kube_apis", lambda context, incluster: (cluster, cluster))
    info = _step_info("step_operator:udon-trainjob", trainer_step["settings"]["step_operator"])
    entrypoint = ["python", "-m", "zenml.entrypoints.entrypoint", "--entrypoint_config_source",
                  "pipelines.cluster.trainjob_operator.TrainJobEntrypointConfiguration", "--snapshot_id", "abc",
                  "--step_name", "model_trainer", "--step_run_id", "def"]
    operator.launch(info, entrypoint, {"ZENML_STORE_URL": "https://zenml.example.com", "HF_HOME": "/zenml/hf"})

    (job,) = cluster.trainjobs.values()
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "udon-0f3e2a11-model-trainer" and meta["namespace"] == cfg.namespace
    assert meta["labels"] == {
        "udon-pipeline/zenml-run": "training_pipeline-2026_12_03-10_00_00_000000",
        "udon-pipeline/zenml-run-id": "0f3e2a11-2222-4333-8444-555566667777",
        "udon-pipeline/zenml-pipeline": "training_pipeline", "udon-pipeline/zenml-step": "model_trainer",
        "udon-pipeline/data-version": "5f1c9a.dir"}
    assert meta["annotations"] == {"zenml.step_name": "model_trainer",
                                   "zenml.step_run_id": "11111111-2222-4333-8444-555566667777"}
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                  "apiGroup": "trainer.kubeflow.org"}
    trainer = spec["trainer"]
    # the image ZenML built for the step (the pipeline's code on cfg.image), not the parent image
    assert trainer["image"] == BUILT_IMAGE and trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["-m", "zenml.entrypoints.entrypoint", *entrypoint[3:]]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "64", "memory": "512Gi"},
                                           "limits": {"memory": "512Gi", "nvidia.com/gpu": "8"}}
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["ZENML_STORE_URL"] == "https://zenml.example.com"  # ZenML's step environment reaches every node
    assert env["HF_HOME"] == "/mnt/udon/cache/huggingface"  # the cluster config wins over ZenML's
    assert "UDON_CHECKPOINT_DIR" not in env  # the step's config says where to checkpoint
    pod = _patch_pod(job)
    assert pod["spec"]["serviceAccountName"] == cfg.service_account
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.count": "8"}
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"dshm", "data"}  # no config map: ZenML passes the config
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    validate_manifests({"step": job}, VERSIONS)  # the API model keeps every field (model_errors' round trip)
    # an image the user sets for the step replaces ZenML's build
    cluster = FakeCluster()
    mine = trainer_step["settings"]["step_operator"].model_copy(update={"image": "registry.example.com/udon/mine:2"})
    operator.launch(_step_info("step_operator:udon-trainjob", mine), entrypoint, {})
    (job,) = cluster.trainjobs.values()
    assert job["spec"]["trainer"]["image"] == "registry.example.com/udon/mine:2"


def test_followers_train_the_steps_model_with_the_steps_inputs_and_publish_nothing(monkeypatch):
    import steps.model_trainer as trainer_step
    import udon_core.training as training
    from pipelines.cluster import trainjob_operator as op

    calls = {}
    dataset = SimpleNamespace(benchmark="bench", local_root=lambda: Path("/data/pinned"))
    artifacts = {"manifest": "manifest-frame", "dataset": dataset, "validation": "report"}
    step_run = SimpleNamespace(
        inputs={k: [SimpleNamespace(load=lambda v=v: v)] for k, v in artifacts.items()},
        config=SimpleNamespace(parameters={"config": {"checkpoint_dir": "/mnt/udon/checkpoints/run-1"}}))
    monkeypatch.setattr(training, "build_model", lambda config, manifest, spec: ("model", manifest, spec))
    monkeypatch.setattr(trainer_step, "run_training", lambda *a, **k: calls.update(args=a, kwargs=k))
    monkeypatch.setattr(trainer_step, "mlflow_tracking_uri", lambda: None)
    op.follow_model_trainer(step_run)
    model, config, root, manifest, bench = calls["args"]
    assert model == ("model", "manifest-frame", "bench") and (root, manifest, bench) == (
        Path("/data/pinned"), "manifest-frame", "bench")
    assert calls["kwargs"] == {"callback": None, "checkpoint_dir": Path("/mnt/udon/checkpoints/run-1"),
                               "progress": False}
    ran = []
    monkeypatch.setattr(op, "follow_model_trainer", lambda step_run: ran.append("follower"))
    monkeypatch.setattr(op.StepOperatorEntrypointConfiguration, "_run_step", lambda self, s, d: ran.append("step"))
    entry = op.TrainJobEntrypointConfiguration.__new__(op.TrainJobEntrypointConfiguration)
    entry._step_run = SimpleNamespace()
    step = SimpleNamespace(config=SimpleNamespace(name="model_trainer"))
    for rank in ("0", "3"):
        monkeypatch.setenv("RANK", rank)
        entry._run_step(step, None)
    assert ran == ["step", "follower"]


def test_the_flavor_registers_in_zenml_and_the_stack_picks_trainjob_settings():
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from pipelines.cluster.trainjob_operator import FLAVOR_SOURCE, TrainJobStepOperatorSettings

    client = Client()
    if not client.get_flavors_by_type(component_type=StackComponentType.STEP_OPERATOR).items or all(
            f.name != TRAINJOB_FLAVOR for f in client.get_flavors_by_type(StackComponentType.STEP_OPERATOR).items):
        client.create_flavor(source=FLAVOR_SOURCE, component_type=StackComponentType.STEP_OPERATOR)
    name = f"udon-trainjob-{uuid4().hex[:6]}"
    client.create_stack_component(name=name, flavor=TRAINJOB_FLAVOR, component_type=StackComponentType.STEP_OPERATOR,
                                  configuration={"kubernetes_namespace": "udon", "runtime_ref_name": "torch-distributed",
                                                 "incluster": True})
    _, trainer = cluster_run_settings(load_cluster_config(ROOT / "configs/cluster.yaml"), "local", name)
    assert isinstance(trainer["settings"]["step_operator"], TrainJobStepOperatorSettings)
    assert trainer["step_operator"] == name


def test_register_stack_builds_a_trainjob_stack():
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DRY_RUN": "1", "KUBE_CONTEXT": "ctx",
           "STEP_OPERATOR": "trainjob", "ARTIFACT_STORE_PATH": "s3://bucket/zenml",
           "CONTAINER_REGISTRY_URI": "registry.example.com/udon", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    done = subprocess.run(["bash", "k8s/register_stack.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "zenml step-operator flavor register pipelines.cluster.trainjob_operator.TrainJobStepOperatorFlavor" \
        in done.stdout
    assert ("zenml step-operator register udon-trainjob --flavor=udon_trainjob --kubernetes_namespace=udon "
            "--runtime_ref_name=torch-distributed --runtime_ref_kind=ClusterTrainingRuntime "
            "--kubernetes_context=ctx") in done.stdout
    assert "-s udon-trainjob" in done.stdout and "udon-k8s-gpu" not in done.stdout
    refused = subprocess.run(["bash", "k8s/register_stack.sh"], cwd=ROOT, capture_output=True, text=True,
                             env={**env, "ORCHESTRATOR": "kubeflow", "KUBEFLOW_HOSTNAME": "https://kfp"})
    assert refused.returncode == 2 and "STEP_OPERATOR=trainjob needs ORCHESTRATOR" in refused.stderr


# --- the PET_* environment without a launcher ----------------------------------------------------------------------


def test_pet_variables_stand_for_torchruns_when_no_launcher_set_them():
    pet = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "job-node-0-0.job",
           "PET_MASTER_PORT": "29400"}
    assert torch_env(pet) == {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "job-node-0-0.job",
                              "MASTER_PORT": "29400"}
    assert torch_env({**pet, "WORLD_SIZE": "16"}) == {}  # torchrun already set them: PET_* are its defaults
    assert torch_env({}) == {}
    with pytest.raises(InvalidValueError, match="start the trainer with torchrun"):
        torch_env({**pet, "PET_NPROC_PER_NODE": "8"})
    with pytest.raises(InvalidValueError, match="PET_MASTER_ADDR"):
        torch_env({k: v for k, v in pet.items() if k != "PET_MASTER_ADDR"})
