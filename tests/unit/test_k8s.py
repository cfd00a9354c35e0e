"""The cluster side: one configuration -> the ZenML GPU pod and the torchrun Job / PyTorchJob, all valid.

No API server can run here, so objects are checked against the real Kubernetes schemas (kubernetes-validate,
strict, oldest supported and newest shipped version), PyTorchJobs as the training operator's webhook does, and
the ZenML pod is the one ZenML's own `build_pod_manifest` builds from our settings.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli.k8s import k8s
from pipelines.cluster import (
    KUBEFLOW_FLAVOR,
    ClusterConfig,
    ClusterConfigError,
    ManifestError,
    cluster_run_settings,
    docker_settings,
    load_cluster_config,
    pod_templates,
    render_manifests,
    step_operator_settings,
    train_step_settings,
    validate_manifests,
    violations,
    write_manifests,
)
from udon_core.errors import StackError

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
TRAIN_CONFIG = {"training": {"train": {"steps": 50, "batch_size": 128}}, "data": {"benchmark": "uned"}}
CFG = ClusterConfig(node_selector={"nvidia.com/gpu.present": "true"})


def _workload(manifests: dict) -> dict:
    (obj,) = [m for m in manifests.values() if m["kind"] in ("Job", "PyTorchJob")]
    return obj


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "Job":
        return [obj["spec"]["template"]["spec"]]
    return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]


@pytest.fixture(scope="module")
def single() -> dict:
    return render_manifests(CFG, TRAIN_CONFIG, nodes=1, gpus_per_node=2)


@pytest.fixture(scope="module")
def multi() -> dict:
    return render_manifests(CFG, TRAIN_CONFIG, nodes=3, gpus_per_node=8)


# --- rendered manifests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["single", "multi"])
def test_every_rendered_manifest_validates_strictly_for_two_versions(shape, request):
    manifests = request.getfixturevalue(shape)
    kinds = sorted(m["kind"] for m in manifests.values())
    workload = "Job" if shape == "single" else "PyTorchJob"
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                            "ClusterRoleBinding", "PersistentVolumeClaim", "ConfigMap", workload])
    validate_manifests(manifests, VERSIONS)
    for name, obj in manifests.items():  # the same check spelled out for the built-in kinds
        if obj["kind"] != "PyTorchJob":
            for version in VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
    assert list(manifests) == sorted(manifests) and list(manifests)[0].startswith("00-namespace")


def test_single_node_job_runs_torchrun_over_the_library(single):
    job = _workload(single)
    assert job["apiVersion"] == "batch/v1" and job["spec"]["backoffLimit"] == CFG.max_restarts
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["torchrun"]
    assert container["args"] == ["--standalone", "--nnodes=1", "--nproc-per-node=2", "-m", "udon_core.train",
                                 "--config", "/etc/udon/train.yaml", "--resume", "auto"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["UDON_CHECKPOINT_DIR"] == "/mnt/udon/checkpoints/udon-train"  # on the volume: restarts resume
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [2] and rules[1]["action"] == "Ignore"


def test_pytorchjob_has_master_one_workers_n_minus_one_and_the_gpu_limits(multi):
    job = _workload(multi)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["spec"]["nprocPerNode"] == "8"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    assert "runPolicy" in job["spec"] and job["spec"]["runPolicy"]["backoffLimit"] == CFG.max_restarts
    for spec in replicas.values():
        assert spec["restartPolicy"] == "OnFailure"
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["args"][:2] == ["--nnodes=3", "--nproc-per-node=8"]
        assert not any(a.startswith(("--node-rank", "--master-addr")) for a in container["args"])  # from PET_*
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container["ports"]


def test_every_training_pod_has_shm_volume_security_and_the_shared_volume(single, multi):
    for manifests in (single, multi):
        for spec in _pod_specs(_workload(manifests)):
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": CFG.shm_size}
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == CFG.data_pvc
            assert volumes["train-config"]["configMap"]["name"] == CFG.config_map
            (container,) = spec["containers"]
            assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
            assert container["securityContext"] == {
                "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
            assert spec["securityContext"]["runAsUser"] == CFG.run_as_user and spec["securityContext"]["fsGroup"]
            assert spec["serviceAccountName"] == CFG.service_account
            assert spec["automountServiceAccountToken"] is False
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_config_map_carries_the_training_config_and_its_hash_annotates_the_run(single):
    (cm,) = [m for m in single.values() if m["kind"] == "ConfigMap"]
    assert yaml.safe_load(cm["data"]["train.yaml"]) == TRAIN_CONFIG
    import hashlib

    digest = hashlib.sha256(cm["data"]["train.yaml"].encode()).hexdigest()
    assert _workload(single)["metadata"]["annotations"]["udon-pipeline/train-config-sha256"] == digest


def test_the_rendered_command_is_the_library_entry_point_and_its_config_loads(single, multi, tmp_path):
    from udon_core.training import job

    config_map = next(m for m in single.values() if m["kind"] == "ConfigMap")
    (tmp_path / "train.yaml").write_text(config_map["data"]["train.yaml"])
    config, benchmark = job.load_run_file(tmp_path / "train.yaml")  # what the pod reads from the ConfigMap
    assert (config.train.steps, config.train.batch_size, benchmark) == (50, 128, "uned")
    for manifests in (single, multi):
        for spec in _pod_specs(_workload(manifests)):
            (container,) = spec["containers"]
            args = container["args"]
            module = args[args.index("-m") + 1]
            assert module == "udon_core.train" and importlib.util.find_spec(module) is not None
            parsed = job.parse_args(args[args.index("-m") + 2:])
            assert (str(parsed.config), parsed.resume) == ("/etc/udon/train.yaml", "auto")
            env = {e["name"] for e in container["env"]}
            assert {job.DATA_ENV, job.CHECKPOINT_ENV} <= env


def test_rbac_is_namespaced_and_training_pods_get_no_api_rights(single):
    by_kind = {}
    for m in single.values():
        by_kind.setdefault(m["kind"], []).append(m)
    (role,) = by_kind["Role"]
    verbs = {(g, r): rule["verbs"] for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("", "secrets") not in verbs and all("*" not in v for v in verbs.values())
    (binding,) = by_kind["RoleBinding"]
    assert binding["subjects"][0]["name"] == CFG.launcher_service_account
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    trainer = next(s for s in by_kind["ServiceAccount"] if s["metadata"]["name"] == CFG.service_account)
    assert trainer["automountServiceAccountToken"] is False
    assert CFG.service_account not in {s["name"] for s in binding["subjects"]}
    assert verbs[("trainer.kubeflow.org", "trainjobs")] == ["create", "get", "list", "watch", "delete"]  # no patch
    # the one cluster-wide right: reading the ClusterTrainingRuntime that submit checks pods against (no Role can)
    (cluster_role,) = by_kind["ClusterRole"]
    assert cluster_role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
                                      "verbs": ["get"]}]
    assert "namespace" not in cluster_role["metadata"]
    (cluster_binding,) = by_kind["ClusterRoleBinding"]
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": "udon-udon-launcher-runtimes"}
    assert cluster_binding["subjects"] == [{"kind": "ServiceAccount", "name": CFG.launcher_service_account,
                                            "namespace": CFG.namespace}]


def test_broken_pytorchjob_is_reported_field_by_field(multi):
    import copy

    broken = copy.deepcopy(multi)
    job = _workload(broken)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] = "4"
    del job["spec"]["runPolicy"]
    with pytest.raises(ManifestError) as err:
        validate_manifests(broken, VERSIONS)
    text = str(err.value)
    assert "Master.replicas must be 1" in text
    assert "needs a container named 'pytorch'" in text
    assert "spec.runPolicy is required" in text
    assert "--nproc-per-node=8 but the nvidia.com/gpu limit is 4" in text


@pytest.mark.parametrize("shape", ["single", "multi"])
def test_torchrun_flags_written_with_a_space_are_read_too(shape, request):
    import copy

    manifests = copy.deepcopy(request.getfixturevalue(shape))
    containers = [c for spec in _pod_specs(_workload(manifests)) for c in spec["containers"]]
    nodes = "1" if shape == "single" else "3"
    for container in containers:  # "--nnodes=3" -> "--nnodes", "3": the same command to torchrun
        container["args"] = [part for arg in container["args"] for part in arg.split("=", 1)]
        assert container["args"][container["args"].index("--nnodes") + 1] == nodes
    validate_manifests(manifests, VERSIONS)
    for container in containers:
        container["args"][container["args"].index("--nnodes") + 1] = "4"
    with pytest.raises(ManifestError, match="torchrun --nnodes=4 but the run has"):
        validate_manifests(manifests, VERSIONS)


def test_broken_builtin_manifest_names_version_and_path(single):
    import copy

    broken = copy.deepcopy(single)
    _workload(broken)["spec"]["backoffLimit"] = "zero"
    with pytest.raises(ManifestError, match=r"07-job-udon-train.yaml \(Job\) \(Kubernetes 1.30.0\): spec.backoffLimit"):
        validate_manifests(broken, VERSIONS)


# --- the ZenML pod -----------------------------------------------------------------------------------------


def _zenml_pod_model(cfg: ClusterConfig, drop_null_snake_keys: bool = False):
    """The pod ZenML 0.98's Kubernetes step operator submits for the train step, built as it does.

    ZenML merges our container security context into ``V1SecurityContext.to_dict()``, which adds every field
    again in snake_case with a null value. The API server drops unknown fields (with a warning) and a null
    carries nothing, so with ``drop_null_snake_keys`` this is the pod the server stores.
    """
    from zenml.integrations.kubernetes import kube_utils
    from zenml.integrations.kubernetes.manifest_utils import build_pod_manifest
    from zenml.step_operators.step_operator_entrypoint_configuration import StepOperatorEntrypointConfiguration

    settings = step_operator_settings(cfg)
    command = StepOperatorEntrypointConfiguration.get_entrypoint_command()
    pod_settings = kube_utils.apply_default_resource_requests(memory="400Mi", pod_settings=settings.pod_settings)
    pod = build_pod_manifest(
        pod_name=None, image_name=docker_settings(cfg).parent_image, command=command[:3], args=command[3:],
        privileged=settings.privileged, pod_settings=pod_settings, service_account_name=settings.service_account_name,
        labels={"step_name": "model_trainer"},
    )
    if drop_null_snake_keys:
        for container in pod.spec.containers:
            sc = container.security_context
            container.security_context = {k: v for k, v in sc.items() if not ("_" in k and v is None)}
    return pod


def _zenml_pod(cfg: ClusterConfig, drop_null_snake_keys: bool = False) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(_zenml_pod_model(cfg, drop_null_snake_keys))


def test_zenml_step_pod_validates_and_carries_gpu_shm_and_security():
    pod = _zenml_pod(CFG)
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=False)  # as ZenML builds it
        kubernetes_validate.validate(_zenml_pod(CFG, drop_null_snake_keys=True), version, strict=True)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(CFG.step_gpus)
    assert container["resources"]["requests"]["memory"] == CFG.memory_request  # ZenML's 400Mi default not used
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": CFG.shm_size}} in spec["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsUser"] == CFG.run_as_user
    assert spec["serviceAccountName"] == CFG.service_account
    assert spec["nodeSelector"] == CFG.node_selector
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    env = {e["name"] for e in container["env"]}
    assert "UDON_DATA_ROOT" in env and "UDON_CHECKPOINT_DIR" not in env  # the step config says where


def test_zenml_job_around_the_pod_validates():
    from kubernetes import client
    from zenml.integrations.kubernetes.manifest_utils import build_job_manifest, pod_template_manifest_from_pod

    pod = _zenml_pod_model(CFG, drop_null_snake_keys=True)
    job = build_job_manifest(job_name="x-model-trainer", backoff_limit=0, ttl_seconds_after_finished=60,
                             pod_template=pod_template_manifest_from_pod(pod))
    # why: ZenML leaves apiVersion/kind unset; the typed client's URL (batch/v1 jobs) supplies them.
    job.api_version, job.kind = "batch/v1", "Job"
    for version in VERSIONS:
        kubernetes_validate.validate(client.ApiClient().sanitize_for_serialization(job), version, strict=True)


def test_zenml_pod_and_manifests_share_image_resources_and_volumes(single, multi):
    zenml_pod = _zenml_pod(CFG)
    assert docker_settings(CFG).parent_image == CFG.image == zenml_pod["spec"]["containers"][0]["image"]
    assert docker_settings(CFG).skip_build is True
    zenml_volumes = zenml_pod["spec"]["volumes"]
    for manifests in (single, multi):
        for spec in _pod_specs(_workload(manifests)):
            (container,) = spec["containers"]
            assert container["image"] == CFG.image
            assert all(v in spec["volumes"] for v in zenml_volumes)  # shm + data volume, defined once
            zenml_res, res = zenml_pod["spec"]["containers"][0]["resources"], container["resources"]
            assert zenml_res["requests"] == res["requests"]
            assert {k: v for k, v in zenml_res["limits"].items() if k != "nvidia.com/gpu"} == \
                   {k: v for k, v in res["limits"].items() if k != "nvidia.com/gpu"}


def test_settings_plug_into_a_step():
    from zenml import step

    @step
    def trainer_like() -> None:
        return None

    configured = trainer_like.with_options(step_operator="udon-k8s-gpu", settings=train_step_settings(CFG))
    assert configured.configuration.step_operator == "udon-k8s-gpu"
    assert set(configured.configuration.settings) == {"step_operator", "docker"}


# --- configuration errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "message"), [
    ("gpus_per_node: 0\n", "gpus_per_node", "greater than or equal to 1"),
    ("image: registry.example.com/udon:latest\n", "image", "':latest'"),
    ("image: registry.example.com/udon\n", "image", "has no tag"),
    ("gpu_per_node: 2\n", "gpu_per_node", "Extra inputs are not permitted"),
    ("shm_size: 16GB\n", "shm_size", "not a Kubernetes quantity"),
    ("namespace: Udon_NS\n", "namespace", "not a Kubernetes name"),
    ("tolerations: [{key: nvidia.com/gpu, operator: Exists, value: x}]\n", "tolerations.0", "takes no value"),
])
def test_broken_config_names_the_file_and_the_field(tmp_path, text, field, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ClusterConfigError) as err:
        load_cluster_config(path)
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("shm_size: 64Gi\n", "shm_size (64Gi) must be below memory_limit (64Gi)"),
    ("checkpoint_path: /tmp/ckpt\n", "checkpoint_path (/tmp/ckpt) must lie under data_mount_path"),
    ("memory_limit: 32Gi\nshm_size: 8Gi\n", "memory_limit (32Gi) is below memory_request (64Gi)"),
    ("nodes: 2\naccess_mode: ReadWriteOnce\n", "nodes > 1 needs access_mode ReadWriteMany"),
])
def test_inconsistent_config_says_which_settings_disagree(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ClusterConfigError, match=re.escape(message)):
        load_cluster_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ClusterConfigError, match="cluster configuration not found"):
        load_cluster_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ClusterConfigError, match="must be a mapping"):
        load_cluster_config(tmp_path / "list.yaml")


def test_render_options_are_validated_too():
    with pytest.raises(ClusterConfigError, match="field 'gpus_per_node'"):
        render_manifests(CFG, TRAIN_CONFIG, nodes=1, gpus_per_node=0)


def test_project_config_and_overlay_load_and_render():
    base = load_cluster_config(ROOT / "configs/cluster.yaml")
    assert base.nodes == 1 and base.gpus_per_node == 1
    merged = load_cluster_config(ROOT / "configs/cluster.yaml", ROOT / "k8s/overlays/multi-node.yaml")
    assert (merged.nodes, merged.gpus_per_node, merged.image) == (2, 8, base.image)
    validate_manifests(render_manifests(merged, TRAIN_CONFIG), VERSIONS)


# --- command line ------------------------------------------------------------------------------------------


def _train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(TRAIN_CONFIG))
    return path


def test_cli_renders_validates_and_replaces_a_stale_render(tmp_path):
    out = tmp_path / "rendered"
    out.mkdir()
    (out / "mine.yaml").write_text("kept: true\n")  # not ours: never deleted
    base = ["render", "--config", str(ROOT / "configs/cluster.yaml"), "--train-config", str(_train_file(tmp_path)),
            "--out", str(out)]
    result = CliRunner().invoke(k8s, [*base, "--nodes", "3", "--gpus-per-node", "8"])
    assert result.exit_code == 0, result.output
    assert "PyTorchJob udon-train" in result.output and str(out / "07-pytorchjob-udon-train.yaml") in result.output
    text = (out / "07-pytorchjob-udon-train.yaml").read_text()
    assert text.startswith("# Rendered by `udon k8s render`")
    assert yaml.safe_load(text)["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2

    result = CliRunner().invoke(k8s, [*base, "--nodes", "1", "--gpus-per-node", "2", "--job-name", "udon-run-2"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.glob("*.yaml"))
    assert "07-job-udon-run-2.yaml" in names and "07-pytorchjob-udon-train.yaml" not in names
    assert "mine.yaml" in names

    (out / "mine.yaml").unlink()
    result = CliRunner().invoke(k8s, ["validate", str(out)])
    assert result.exit_code == 0 and "10 manifests" in result.output


def test_cli_errors_are_one_sentence(tmp_path):
    result = CliRunner().invoke(k8s, ["render", "--config", str(ROOT / "configs/cluster.yaml"),
                                      "--train-config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'nope.yaml'}: training config not found"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"training": {"train": {"batch_size": 1}}}))
    result = CliRunner().invoke(k8s, ["render", "--config", str(ROOT / "configs/cluster.yaml"),
                                      "--train-config", str(wrong), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "training.train.batch_size" in result.output  # caught before any pod runs
    assert not (tmp_path / "r").exists()

    bad = tmp_path / "bad"
    write_manifests({"job.yaml": {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
                                  "spec": {"backoffLimit": "zero", "template": {"spec": {"containers": []}}}}}, bad)
    result = CliRunner().invoke(k8s, ["validate", str(bad)])
    assert result.exit_code == 2 and "spec.backoffLimit" in result.output


# --- image and stack recipes -------------------------------------------------------------------------------


def test_dockerfile_pins_the_projects_torch_and_runs_as_non_root():
    text = (ROOT / "k8s/Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = project["project"]["dependencies"]
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:  # every package is in the image
        assert f"COPY {package.rstrip('*')}/ {package.rstrip('*')}/" in text
    torch = next(p for p in pins if p.startswith("torch==")).split("==")[1]
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert base.startswith(f"pytorch/pytorch:{torch}-cuda") and not base.endswith(":latest")
    assert 'pip install -c constraints.txt ".[gpu,kubeflow]"' in text  # s3fs: the pods read the S3 artifact store
    assert "pip install --no-deps -c constraints.txt animal-mnist==0.4" in text
    assert re.search(r"^USER \$\{UID\}$", text, re.MULTILINE) and "ARG UID=10001" in text
    assert str(ClusterConfig().run_as_user) == "10001"
    assert 'ENTRYPOINT ["udon"]' in text


def test_register_stack_script_documents_and_checks_its_variables():
    script = ROOT / "k8s/register_stack.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACT_STORE", "CONTAINER_REG", "MLFLOW_T"))}
    env.update(PYTHON=sys.executable, DRY_RUN="1", KUBE_CONTEXT="")
    missing = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "ARTIFACT_STORE_PATH" in missing.stderr
    env.update(ARTIFACT_STORE_PATH="s3://bucket/zenml", CONTAINER_REGISTRY_URI="registry.example.com/udon",
               MLFLOW_TRACKING_URI="http://mlflow:5000", S3_ENDPOINT_URL="http://minio:9000")
    done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "zenml step-operator register udon-k8s-gpu --flavor=kubernetes --kubernetes_namespace=udon " \
           "--incluster=true" in done.stdout
    assert "-s udon-k8s-gpu -e udon-mlflow-server -r udon-mlflow-server-registry" in done.stdout
    header = script.read_text().split("set -euo pipefail")[0]
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)[:}\-]", script.read_text())) - {"UID"}
    assert all(re.search(rf"^#\s+{name}\b", header, re.MULTILINE) for name in used), used


def test_register_stack_script_builds_a_kubeflow_stack_without_a_step_operator():
    script = ROOT / "k8s/register_stack.sh"
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "KUBE_CONTEXT": "", "ORCHESTRATOR": "kubeflow",
           "ARTIFACT_STORE_PATH": "s3://bucket/zenml", "CONTAINER_REGISTRY_URI": "registry.example.com/udon",
           "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    env.pop("KUBEFLOW_HOSTNAME", None)
    missing = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "KUBEFLOW_HOSTNAME" in missing.stderr
    env.update(KUBEFLOW_HOSTNAME="https://kubeflow.example.com/pipeline", KUBEFLOW_USER_NAMESPACE="team-a")
    done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "zenml orchestrator flavor register pipelines.cluster.kubeflow.UdonKubeflowOrchestratorFlavor" in done.stdout
    assert (f"zenml orchestrator register udon-kfp --flavor={KUBEFLOW_FLAVOR} "
            "--kubeflow_hostname=https://kubeflow.example.com/pipeline --synchronous=true --timeout=86400 "
            "--user_namespace=team-a") in done.stdout
    (stack,) = [line for line in done.stdout.splitlines() if "stack register" in line]
    assert "-o udon-kfp" in stack and " -s " not in stack
    assert "step-operator" not in done.stdout


def test_the_active_stack_decides_how_the_train_step_reaches_the_cluster():
    from zenml.config import ResourceSettings

    from pipelines.cluster.kubeflow import UdonKubeflowSettings

    pipeline, trainer = cluster_run_settings(CFG, KUBEFLOW_FLAVOR, None)
    assert pipeline["docker"].parent_image == CFG.image and pipeline["docker"].skip_build
    resources, pod = trainer["settings"]["resources"], trainer["settings"]["orchestrator"]
    assert isinstance(resources, ResourceSettings) and resources.gpu_count == CFG.step_gpus
    assert resources.cpu_count is None  # cpu_limit: null -> no CPU limit
    assert isinstance(pod, UdonKubeflowSettings) and pod.node_selector == CFG.node_selector
    assert (pod.cpu_request, pod.memory_request, pod.shm_size) == (CFG.cpu_request, CFG.memory_request, CFG.shm_size)
    assert cluster_run_settings(CFG.model_copy(update={"cpu_limit": "12"}), KUBEFLOW_FLAVOR, None)[1][
        "settings"]["resources"].cpu_count == 12.0
    pipeline, trainer = cluster_run_settings(CFG, "local", "udon-k8s-gpu", "kubernetes")
    assert pipeline == {} and trainer["step_operator"] == "udon-k8s-gpu"
    assert set(trainer["settings"]) == {"step_operator", "docker"}
    with pytest.raises(StackError, match="ZenML's own 'kubeflow' flavor, which drops the train step's GPU"):
        cluster_run_settings(CFG, "kubeflow", None)
    with pytest.raises(StackError, match="neither the 'udon_kubeflow' orchestrator nor a step operator"):
        cluster_run_settings(CFG, "local", None)


def test_manifests_in_the_readme_are_valid_and_match_the_configuration():
    text = (ROOT / "k8s/README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "kind: Pod" in b]
    assert blocks, "the README's loader pod is checked here"
    cfg = load_cluster_config(ROOT / "configs/cluster.yaml")
    for obj in blocks:
        validate_manifests({"README": obj}, VERSIONS)
        spec = obj["spec"]
        assert spec["containers"][0]["image"] == cfg.image and spec["securityContext"]["runAsUser"] == cfg.run_as_user
        assert obj["metadata"]["namespace"] == cfg.namespace


# --- Pod Security Standard "restricted" ------------------------------------------------------------------------


def test_every_rendered_pod_passes_the_restricted_pod_security_profile(single, multi):
    pods = [t.spec for manifests in (single, multi) for obj in manifests.values() for t in pod_templates(obj)]
    pods.append(_zenml_pod(CFG, drop_null_snake_keys=True)["spec"])  # the pod ZenML submits for the train step
    assert len(pods) == 4  # the Job, the PyTorchJob's master and worker, ZenML's step pod
    for spec in pods:
        assert violations(None, spec, VERSIONS) == []


@pytest.mark.parametrize("change, violation", [
    (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "allowPrivilegeEscalation: must be false, found unset"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "capabilities.drop: must include ALL"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
     "capabilities.add[0]: 'SYS_ADMIN' is not allowed (unset or 'NET_BIND_SERVICE')"),
    (lambda s: (s["containers"][0]["securityContext"].pop("runAsNonRoot"), s["securityContext"].pop("runAsNonRoot", 0)),
     "runAsNonRoot: must be true"),
    (lambda s: (s["containers"][0]["securityContext"].pop("seccompProfile"), s["securityContext"].pop("seccompProfile", 0)),
     "seccompProfile.type"),
    (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "type hostPath is not allowed"),
    (lambda s: s.update(hostNetwork=True), "spec.hostNetwork: true is not allowed (unset or false)"),
    (lambda s: s["securityContext"].update(runAsUser=0), "runAsUser: must not be 0"),
])
def test_each_restricted_rule_is_checked_and_named_by_validate(single, change, violation):
    import copy

    manifests = copy.deepcopy(single)
    job = _workload(manifests)
    change(job["spec"]["template"]["spec"])
    assert any(violation in v for v in violations(None, job["spec"]["template"]["spec"], VERSIONS))
    with pytest.raises(ManifestError, match=f"pod security: .*{re.escape(violation)}"):
        validate_manifests(manifests)
