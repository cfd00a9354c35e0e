"""Cluster settings, defined once: the ZenML step-operator pod and the torchrun Job / PyTorchJob manifests.

`configs/cluster.yaml` is read into a `ClusterConfig`; one pod-parts builder turns it into Kubernetes objects
(resources, volumes, tolerations, security contexts, env), and both consumers take their pieces from it:

- `step_operator_settings` / `docker_settings`: what ZenML's Kubernetes step operator puts in the pod of the
  `model_trainer` step (GPU limits go in `pod_settings.resources`; ZenML 0.98 does not turn
  `ResourceSettings` into pod resources);
- `render_manifests`: a namespace, service accounts, least-privilege RBAC, a PVC for data and checkpoints,
  the training config as a ConfigMap, and a single-node `batch/v1` Job (``torchrun --standalone``) or a
  Kubeflow `PyTorchJob` (Master 1 + Workers N-1, ``torchrun`` with the operator's ``PET_*`` rendezvous env).

So the image, the resources and the mounts of a ZenML run and of a manifest run cannot drift apart.

Restart semantics: every manifest container runs ``torchrun ... -m udon_core.train --config <file> --resume
auto`` with ``UDON_CHECKPOINT_DIR=<checkpoint_path>/<job name>`` on the shared volume; a restarted pod (Job
backoff, PyTorchJob ``OnFailure``) resumes from the newest verified checkpoint there. Same job name = same run = resume.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

import yaml
from kubernetes import client as k8s
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.pod_security import pod_specs, restricted_violations
from udon_core.overrides import deep_merge
from udon_core.errors import InvalidValueError, StackError, UdonUserError

if TYPE_CHECKING:
    from zenml.config import DockerSettings
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings

MIN_KUBERNETES = "1.30.0"  # oldest Kubernetes minor still in upstream or common vendor support
ENTRY_MODULE = "udon_core.train"
CONFIG_KEY = "train.yaml"  # the ConfigMap key, and the file name under config_mount_path
PYTORCHJOB_API = "kubeflow.org/v1"
PYTORCHJOB_CONTAINER = "pytorch"  # the training operator finds the container by this name
PYTORCHJOB_PORT = ("pytorchjob-port", 23456)  # the operator's default port name and number (release 1.9)
RENDER_MARK = "# Rendered by `udon k8s render`"  # write_manifests only ever replaces files that start with it

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


class ClusterConfigError(UdonUserError, ValueError):
    """A cluster configuration that cannot be used; the message names the file and the field."""


class ManifestError(UdonUserError, ValueError):
    """Rendered manifests that Kubernetes or the training operator would reject; one line per problem."""


def quantity(text: str) -> float:
    """A Kubernetes quantity ('500m', '16Gi', '2') as a number (cores or bytes)."""
    match = _QUANTITY.match(text)
    if not match:
        raise InvalidValueError(f"'{text}' is not a Kubernetes quantity (e.g. '8', '500m', '64Gi')")
    return float(match.group(1)) * _SUFFIX[match.group(3) or ""]


class Toleration(BaseModel):
    """A pod toleration, with the Kubernetes field names (tolerationSeconds is not needed for GPU taints)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _value_only_with_equal(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise InvalidValueError("a toleration with operator 'Exists' takes no value")
        return self

    def to_k8s(self) -> k8s.V1Toleration:
        return k8s.V1Toleration(key=self.key, operator=self.operator, value=self.value, effect=self.effect)


def _gpu_taint() -> tuple[Toleration, ...]:
    return (Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),)


class ClusterConfig(BaseModel):
    """Where and how training pods run. Defaults fit one ViT-B/16 UDON run (configs/uned.yaml) on one GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- image
    image: str = Field(
        default="registry.example.com/udon/udon-pipeline:0.1.0",
        description="the training image (k8s/Dockerfile), pinned by tag or digest; ':latest' is refused "
                    "because pods restarted days apart must run the same code",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        default="IfNotPresent", description="a pinned tag never changes, so nodes may reuse the pulled image"
    )
    image_pull_secrets: tuple[str, ...] = Field(default=(), description="secrets for a private registry")
    # --- where
    namespace: str = Field(default="udon", description="every object lives here (Pod Security: baseline enforced)")
    service_account: str = Field(
        default="udon-trainer", description="training pods run as this account; it gets no API rights and no token"
    )
    launcher_service_account: str = Field(
        default="udon-launcher",
        description="the account that submits and watches runs (CI, an in-cluster ZenML orchestrator); the Role "
                    "grants it jobs, pytorchjobs, pods/log and the config map, in this namespace only",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="e.g. {'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3'} (GPU feature discovery labels); "
                    "empty: any node with free GPUs, which the nvidia.com/gpu limit already guarantees",
    )
    tolerations: tuple[Toleration, ...] = Field(
        default_factory=_gpu_taint, description="GPU nodes are usually tainted nvidia.com/gpu:NoSchedule"
    )
    # --- shape (the CLI may override both for one render)
    nodes: int = Field(default=1, ge=1, description="pods of the training run; >1 renders a Kubeflow PyTorchJob")
    gpus_per_node: int = Field(
        default=1, ge=1, le=16,
        description="GPUs (= torchrun processes) per pod; the image is a CUDA image and the trainer needs a GPU, "
                    "so 0 is refused (run on CPU with the default ZenML stack instead)",
    )
    step_gpus: int = Field(
        default=1, ge=1, le=16,
        description="GPUs of the ZenML model_trainer pod; the step trains in one process on one device, so more "
                    "would sit idle (multi-GPU goes through `udon k8s render`)",
    )
    gpu_resource: str = Field(default="nvidia.com/gpu", description="the NVIDIA device plugin's resource name")
    # --- per-pod resources
    cpu_request: str = Field(default="8", description="8 data-loader workers per process (configs/uned.yaml)")
    cpu_limit: str | None = Field(
        default=None, description="none by default: a CPU limit throttles data-loader bursts (CFS quota)"
    )
    memory_request: str = Field(default="64Gi", description="decoded image batches, loader queues and shm")
    memory_limit: str = Field(default="64Gi", description="= request: the pod is never killed for borrowing")
    shm_size: str = Field(
        default="16Gi",
        description="memory-backed /dev/shm for data-loader workers and NCCL (the container default is 64Mi); "
                    "it counts against memory_limit, so it must stay below it",
    )
    # --- storage
    data_pvc: str = Field(default="udon-data", description="one volume for data, caches and checkpoints")
    storage_class: str | None = Field(
        default=None, description="must offer ReadWriteMany for multi-node (NFS, CephFS, EFS, Filestore...); "
                                  "None: the cluster default"
    )
    storage_size: str = Field(default="1Ti", description="UnED images (~2.8M train) plus checkpoints and caches")
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany", description="every node of a multi-node run mounts the same volume"
    )
    data_mount_path: str = Field(default="/mnt/udon", description="where the volume is mounted in every pod")
    data_dir: str = Field(default="/mnt/udon/data", description="the benchmark folder (UnED layout), UDON_DATA_ROOT")
    checkpoint_path: str = Field(
        default="/mnt/udon/checkpoints",
        description="checkpoints go to <checkpoint_path>/<job name>/checkpoint-<step>.pt, on the volume so restarts resume",
    )
    # --- run
    job_name: str = Field(default="udon-train", max_length=40, description="Job / PyTorchJob name (also the run id)")
    config_map: str = Field(default="udon-train-config", description="holds the training config YAML")
    config_mount_path: str = Field(default="/etc/udon", description="the config map is mounted here, read-only")
    max_restarts: int = Field(
        default=3, ge=0, description="pod restarts before the run fails; each one resumes from the last checkpoint"
    )
    ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0, description="keep finished runs a week")
    run_as_user: int = Field(default=10001, ge=1, description="the non-root UID of k8s/Dockerfile")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "udon", "app.kubernetes.io/part-of": "udon-pipeline"},
        description="on every object and pod",
    )
    zenml_skip_build: bool = Field(
        default=True,
        description="ZenML runs the train step in `image` as is (it already holds the project and its locked "
                    "dependencies); false: ZenML builds a code image on top of it with the stack's image builder",
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, image: str) -> str:
        if "@sha256:" in image:
            return image
        name = image.rsplit("/", 1)[-1]
        if ":" not in name:
            raise InvalidValueError(f"'{image}' has no tag; pin it (e.g. '{image}:0.1.0') so restarts run the same code")
        if name.rsplit(":", 1)[1] == "latest":
            raise InvalidValueError(f"'{image}' uses ':latest'; pin a version tag or a digest")
        return image

    @field_validator("namespace", "service_account", "launcher_service_account", "data_pvc", "config_map")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS1123_LABEL.match(value):
            raise InvalidValueError(f"'{value}' is not a Kubernetes name (lowercase letters, digits and '-', at most 63)")
        return value

    @field_validator("job_name")
    @classmethod
    def _dns1035(cls, value: str) -> str:
        if not _DNS1035_LABEL.match(value):
            raise InvalidValueError(f"'{value}' must start with a letter and hold only lowercase letters, digits and '-'")
        return value

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", "shm_size", "storage_size")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None:
            quantity(value)
        return value

    @field_validator("data_mount_path", "data_dir", "checkpoint_path", "config_mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise InvalidValueError(f"'{value}' must be an absolute path inside the container")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if quantity(self.memory_limit) < quantity(self.memory_request):
            raise InvalidValueError(f"memory_limit ({self.memory_limit}) is below memory_request ({self.memory_request})")
        if self.cpu_limit is not None and quantity(self.cpu_limit) < quantity(self.cpu_request):
            raise InvalidValueError(f"cpu_limit ({self.cpu_limit}) is below cpu_request ({self.cpu_request})")
        if quantity(self.shm_size) >= quantity(self.memory_limit):
            raise InvalidValueError(f"shm_size ({self.shm_size}) must be below memory_limit ({self.memory_limit}): "
                             "a memory-backed /dev/shm counts against the container's memory")
        volume = PurePosixPath(self.data_mount_path)
        for field in ("data_dir", "checkpoint_path"):
            if not PurePosixPath(getattr(self, field)).is_relative_to(volume):
                raise InvalidValueError(f"{field} ({getattr(self, field)}) must lie under data_mount_path "
                                 f"({self.data_mount_path}), or it is lost when a pod restarts")
        if self.nodes > 1 and self.access_mode != "ReadWriteMany":
            raise InvalidValueError("nodes > 1 needs access_mode ReadWriteMany: every node mounts the same volume")
        return self

    def checkpoint_dir(self, job_name: str | None = None) -> str:
        """Where a manifest run keeps its checkpoints: one folder per job name, so the same name resumes."""
        return f"{self.checkpoint_path}/{job_name or self.job_name}"


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty mapping); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ClusterConfigError(f"{path}: {what} not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClusterConfigError(f"{path}: not valid YAML: {err}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ClusterConfigError(f"{path}: {what} must be a mapping of settings, not {type(doc).__name__}")
    return doc


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(settings together)"
        lines.append(f"{source}: field '{field}': {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_cluster_config(path: str | Path, *overlays: str | Path) -> ClusterConfig:
    """Read a cluster configuration; each overlay file is merged over it key by key (base + overlays).

    Raises:
        ClusterConfigError: a missing or malformed file, or a field that fails validation (file and field named).
    """
    files = [Path(path), *map(Path, overlays)]
    merged: dict = {}
    for file in files:
        merged = deep_merge(merged, read_yaml_mapping(file, "cluster configuration"))
    try:
        return ClusterConfig.model_validate(merged)
    except ValidationError as err:
        raise ClusterConfigError(_describe(err, " + ".join(map(str, files)))) from err


# ---------------------------------------------------------------------------------------------------------------
# The pod, defined once


@dataclass(frozen=True)
class PodParts:
    """Every pod-level setting the ZenML pod and the manifests share, as Kubernetes client models."""

    resources: k8s.V1ResourceRequirements
    volumes: list[k8s.V1Volume]
    volume_mounts: list[k8s.V1VolumeMount]
    env: list[k8s.V1EnvVar]
    tolerations: list[k8s.V1Toleration]
    node_selector: dict[str, str]
    pod_security: k8s.V1PodSecurityContext
    container_security: k8s.V1SecurityContext


def pod_parts(cfg: ClusterConfig, gpus: int, *, job_name: str | None = None, with_config: bool = True) -> PodParts:
    """The shared pod settings for ``gpus`` GPUs.

    ``job_name`` (manifest runs) sets ``UDON_CHECKPOINT_DIR`` to that run's folder on the volume; the ZenML pod
    gets none, its step config says where to checkpoint. ``with_config`` mounts the training config map.
    """
    requests = {"cpu": cfg.cpu_request, "memory": cfg.memory_request}
    # why: extended resources are set as limits only; Kubernetes makes the request equal to it.
    limits = {"memory": cfg.memory_limit, cfg.gpu_resource: str(gpus)}
    if cfg.cpu_limit:
        limits["cpu"] = cfg.cpu_limit
    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=cfg.shm_size)),
        k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=cfg.data_pvc)),
    ]
    mounts = [k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
              k8s.V1VolumeMount(name="data", mount_path=cfg.data_mount_path)]
    if with_config:
        volumes.append(k8s.V1Volume(name="train-config", config_map=k8s.V1ConfigMapVolumeSource(name=cfg.config_map)))
        mounts.append(k8s.V1VolumeMount(name="train-config", mount_path=cfg.config_mount_path, read_only=True))
    cache = f"{cfg.data_mount_path}/cache"
    env = {
        "UDON_DATA_ROOT": cfg.data_dir,
        **({"UDON_CHECKPOINT_DIR": cfg.checkpoint_dir(job_name)} if job_name else {}),
        # why: pretrained weights are fetched once into the shared volume, not once per pod and restart.
        "HF_HOME": f"{cache}/huggingface", "TORCH_HOME": f"{cache}/torch",
        "PYTHONUNBUFFERED": "1", "ZENML_ANALYTICS_OPT_IN": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    uid = cfg.run_as_user
    return PodParts(
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
        volumes=volumes,
        volume_mounts=mounts,
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        tolerations=[t.to_k8s() for t in cfg.tolerations],
        node_selector=dict(cfg.node_selector),
        # why: fsGroup makes the volume writable by the non-root user; RuntimeDefault seccomp, non-root and no
        # escalation / capabilities are what the Pod Security 'restricted' profile requires.
        pod_security=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        container_security=k8s.V1SecurityContext(
            run_as_non_root=True, allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
    )


def _plain(obj: Any) -> Any:
    """A client model (or list / dict of them) as the camelCase JSON Kubernetes takes."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


def step_operator_settings(cfg: ClusterConfig) -> KubernetesStepOperatorSettings:
    """ZenML's Kubernetes step-operator settings for the ``model_trainer`` step: GPUs, shm, volume, security."""
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings
    from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

    parts = pod_parts(cfg, cfg.step_gpus, with_config=False)
    pod = KubernetesPodSettings(
        node_selectors=parts.node_selector,
        tolerations=_plain(parts.tolerations),
        resources=_plain(parts.resources),
        volumes=_plain(parts.volumes),
        volume_mounts=_plain(parts.volume_mounts),
        env=_plain(parts.env),
        labels={**cfg.labels, "app.kubernetes.io/component": "zenml-step"},
        image_pull_secrets=list(cfg.image_pull_secrets),
        container_security_context=_plain(parts.container_security),
        additional_pod_spec_args={"security_context": _plain(parts.pod_security)},
    )
    return KubernetesStepOperatorSettings(
        pod_settings=pod, service_account_name=cfg.service_account, privileged=False,
        ttl_seconds_after_finished=cfg.ttl_seconds_after_finished,
    )


def docker_settings(cfg: ClusterConfig) -> DockerSettings:
    """The image of the ZenML step pods: ``cfg.image`` itself (skip_build) or a code image built on it."""
    from zenml.config import DockerSettings

    return DockerSettings(parent_image=cfg.image, skip_build=cfg.zenml_skip_build)


def train_step_settings(cfg: ClusterConfig) -> dict[str, Any]:
    """``settings=`` for the ``model_trainer`` step on a stack with the Kubernetes step operator."""
    return {"step_operator": step_operator_settings(cfg), "docker": docker_settings(cfg)}


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def trainer_args(cfg: ClusterConfig) -> list[str]:
    """What follows ``torchrun ...``: the library's entry point on the mounted config; resume is automatic."""
    return ["-m", ENTRY_MODULE, "--config", f"{cfg.config_mount_path}/{CONFIG_KEY}", "--resume", "auto"]


def _container(cfg: ClusterConfig, parts: PodParts, name: str, args: list[str],
               ports: list[k8s.V1ContainerPort] | None = None) -> k8s.V1Container:
    return k8s.V1Container(
        name=name, image=cfg.image, image_pull_policy=cfg.image_pull_policy, command=["torchrun"], args=args,
        resources=parts.resources, volume_mounts=parts.volume_mounts, env=parts.env, ports=ports,
        security_context=parts.container_security,
    )


def _pod_template(cfg: ClusterConfig, parts: PodParts, container: k8s.V1Container, restart_policy: str,
                  labels: dict[str, str]) -> k8s.V1PodTemplateSpec:
    spec = k8s.V1PodSpec(
        containers=[container], restart_policy=restart_policy, service_account_name=cfg.service_account,
        automount_service_account_token=False, node_selector=parts.node_selector or None,
        tolerations=parts.tolerations or None, volumes=parts.volumes, security_context=parts.pod_security,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in cfg.image_pull_secrets] or None,
    )
    return k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=spec)


def _meta(cfg: ClusterConfig, name: str, labels: dict[str, str] | None = None, **kw: Any) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(name=name, namespace=cfg.namespace, labels={**cfg.labels, **(labels or {})}, **kw)


def _single_node_job(cfg: ClusterConfig, job_name: str, gpus: int, annotations: dict) -> k8s.V1Job:
    parts = pod_parts(cfg, gpus, job_name=job_name)
    labels = {**cfg.labels, "app.kubernetes.io/component": "trainer", "app.kubernetes.io/instance": job_name}
    args = ["--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", *trainer_args(cfg)]
    template = _pod_template(cfg, parts, _container(cfg, parts, "trainer", args), "Never", labels)
    # why: exit code 2 is a user error (bad config): retrying cannot help. A preempted or evicted pod is not
    # the run's fault and must not use up the restart budget.
    failure_policy = k8s.V1PodFailurePolicy(rules=[
        k8s.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
            container_name="trainer", operator="In", values=[2])),
        k8s.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
    ])
    return k8s.V1Job(
        api_version="batch/v1", kind="Job", metadata=_meta(cfg, job_name, labels, annotations=annotations),
        spec=k8s.V1JobSpec(
            backoff_limit=cfg.max_restarts, completions=1, parallelism=1, template=template,
            ttl_seconds_after_finished=cfg.ttl_seconds_after_finished, pod_failure_policy=failure_policy),
    )


def _pytorch_job(cfg: ClusterConfig, job_name: str, nodes: int, gpus: int, annotations: dict) -> Any:
    try:
        from kubeflow.training import (KubeflowOrgV1PyTorchJob, KubeflowOrgV1PyTorchJobSpec,
                                       KubeflowOrgV1ReplicaSpec, KubeflowOrgV1RunPolicy)
    except ImportError as err:  # pragma: no cover - an install problem, not a code path
        raise StackError("multi-node manifests need the Kubeflow training SDK: "
                           "pip install kubeflow-training==1.9.4") from err
    parts = pod_parts(cfg, gpus, job_name=job_name)
    labels = {**cfg.labels, "app.kubernetes.io/component": "trainer", "app.kubernetes.io/instance": job_name}
    # why: --node-rank, --master-addr and --master-port come from PET_NODE_RANK / PET_MASTER_ADDR /
    # PET_MASTER_PORT, which the training operator sets on every replica and torchrun reads as defaults.
    args = [f"--nnodes={nodes}", f"--nproc-per-node={gpus}", *trainer_args(cfg)]
    port = k8s.V1ContainerPort(name=PYTORCHJOB_PORT[0], container_port=PYTORCHJOB_PORT[1], protocol="TCP")

    def replica(count: int) -> KubeflowOrgV1ReplicaSpec:
        container = _container(cfg, parts, PYTORCHJOB_CONTAINER, args, ports=[port])
        # why: OnFailure restarts a failed container in place; the other ranks then fail their collectives,
        # restart too, and every rank resumes from the same checkpoint.
        return KubeflowOrgV1ReplicaSpec(replicas=count, restart_policy="OnFailure",
                                        template=_pod_template(cfg, parts, container, "OnFailure", labels))

    return KubeflowOrgV1PyTorchJob(
        api_version=PYTORCHJOB_API, kind="PyTorchJob", metadata=_meta(cfg, job_name, labels, annotations=annotations),
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(gpus),
            pytorch_replica_specs={"Master": replica(1), "Worker": replica(nodes - 1)},
            run_policy=KubeflowOrgV1RunPolicy(
                backoff_limit=cfg.max_restarts, clean_pod_policy="None",
                ttl_seconds_after_finished=cfg.ttl_seconds_after_finished),
        ),
    )


def _access_objects(cfg: ClusterConfig) -> list[Any]:
    """Namespace, the two service accounts and the launcher's namespaced Role + RoleBinding."""
    # why: our pods meet Pod Security 'restricted', but the training operator (1.9) adds an `init-pytorch`
    # container without a security context to PyTorchJob workers, which 'restricted' would reject. Enforce
    # 'baseline' (no privileged, host namespaces or hostPath) and report anything short of 'restricted'.
    security = {"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/audit": "restricted",
                "pod-security.kubernetes.io/warn": "restricted"}
    namespace = k8s.V1Namespace(api_version="v1", kind="Namespace",
                                metadata=k8s.V1ObjectMeta(name=cfg.namespace, labels={**cfg.labels, **security}))
    # why: training pods never call the Kubernetes API, so their account carries no token and no Role.
    trainer = k8s.V1ServiceAccount(api_version="v1", kind="ServiceAccount", automount_service_account_token=False,
                                   metadata=_meta(cfg, cfg.service_account))
    launcher = k8s.V1ServiceAccount(api_version="v1", kind="ServiceAccount",
                                    metadata=_meta(cfg, cfg.launcher_service_account))
    rule = k8s.V1PolicyRule
    role = k8s.V1Role(api_version="rbac.authorization.k8s.io/v1", kind="Role",
                      metadata=_meta(cfg, cfg.launcher_service_account), rules=[
                          rule(api_groups=["batch"], resources=["jobs"],
                               verbs=["create", "get", "list", "watch", "delete"]),
                          rule(api_groups=["kubeflow.org"], resources=["pytorchjobs"],
                               verbs=["create", "get", "list", "watch", "delete"]),
                          rule(api_groups=[""], resources=["pods", "events"], verbs=["get", "list", "watch"]),
                          rule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
                          rule(api_groups=[""], resources=["configmaps"], verbs=["create"]),
                          rule(api_groups=[""], resources=["configmaps"], resource_names=[cfg.config_map],
                               verbs=["get", "update", "patch"]),
                      ])
    binding = k8s.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding",
        metadata=_meta(cfg, cfg.launcher_service_account),
        role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=cfg.launcher_service_account),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=cfg.launcher_service_account,
                                    namespace=cfg.namespace)],
    )
    return [namespace, trainer, launcher, role, binding]


def _storage_objects(cfg: ClusterConfig, config_text: str) -> list[Any]:
    pvc = k8s.V1PersistentVolumeClaim(
        api_version="v1", kind="PersistentVolumeClaim", metadata=_meta(cfg, cfg.data_pvc),
        spec=k8s.V1PersistentVolumeClaimSpec(
            access_modes=[cfg.access_mode], storage_class_name=cfg.storage_class,
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": cfg.storage_size})),
    )
    config = k8s.V1ConfigMap(api_version="v1", kind="ConfigMap", metadata=_meta(cfg, cfg.config_map),
                             data={CONFIG_KEY: config_text})
    return [pvc, config]


def render_manifests(cfg: ClusterConfig, train_config: Mapping[str, Any], nodes: int | None = None,
                     gpus_per_node: int | None = None, job_name: str | None = None) -> dict[str, dict]:
    """Every object of a training run as plain dicts, keyed by a stable file name in apply order.

    ``nodes`` / ``gpus_per_node`` / ``job_name`` override the configuration for this render; one node gives a
    ``batch/v1`` Job, more give a Kubeflow ``PyTorchJob``. ``train_config`` becomes the ConfigMap's YAML.
    """
    updates = {k: v for k, v in {"nodes": nodes, "gpus_per_node": gpus_per_node, "job_name": job_name}.items()
               if v is not None}
    try:
        cfg = ClusterConfig.model_validate({**cfg.model_dump(), **updates})
    except ValidationError as err:
        raise ClusterConfigError(_describe(err, "render options")) from err
    if not isinstance(train_config, Mapping):
        raise ClusterConfigError(f"the training config must be a mapping, not {type(train_config).__name__}")
    config_text = yaml.safe_dump(dict(train_config), sort_keys=True)
    if len(config_text.encode()) > 900_000:
        raise ClusterConfigError("the training config is over the 1 MiB a ConfigMap can hold")
    annotations = {"udon-pipeline/train-config-sha256": hashlib.sha256(config_text.encode()).hexdigest()}
    workload = (_single_node_job(cfg, cfg.job_name, cfg.gpus_per_node, annotations) if cfg.nodes == 1
                else _pytorch_job(cfg, cfg.job_name, cfg.nodes, cfg.gpus_per_node, annotations))
    objects = [*_access_objects(cfg), *_storage_objects(cfg, config_text), workload]
    out = {}
    for index, obj in enumerate(objects):
        plain = _plain(obj)
        out[f"{index:02d}-{plain['kind'].lower()}-{plain['metadata']['name']}.yaml"] = plain
    return out


# ---------------------------------------------------------------------------------------------------------------
# Validation


def _schema_errors(obj: dict, versions: Sequence[str], where: str) -> list[str]:
    import kubernetes_validate as kv

    errors = []
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as err:
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{where} (Kubernetes {version}): {path}: {err.message}")
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as err:
            errors.append(f"{where} (Kubernetes {version}): {err.message}")
    return errors


def _torchrun_flag(args: list[str], flag: str) -> str | None:
    for arg in args:
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
    return None


def _torchrun_errors(container: dict, gpu_resource: str, nnodes: int, where: str) -> list[str]:
    """The torchrun flags must agree with the pod: processes = GPUs, nodes = replicas."""
    if container.get("command") != ["torchrun"]:
        return []
    args = container.get("args") or []
    errors = []
    gpus = ((container.get("resources") or {}).get("limits") or {}).get(gpu_resource)
    nproc = _torchrun_flag(args, "nproc-per-node")
    if gpus is None or nproc != str(gpus):
        errors.append(f"{where}: torchrun --nproc-per-node={nproc} but the {gpu_resource} limit is {gpus}")
    if _torchrun_flag(args, "nnodes") != str(nnodes):
        errors.append(f"{where}: torchrun --nnodes={_torchrun_flag(args, 'nnodes')} but the run has {nnodes} pods")
    return errors


def _pytorchjob_errors(obj: dict, versions: Sequence[str], where: str, gpu_resource: str) -> list[str]:
    """What the training operator's webhook (release 1.9) checks, plus each pod template against Kubernetes."""
    errors = []
    if obj.get("apiVersion") != PYTORCHJOB_API:
        errors.append(f"{where}: apiVersion must be {PYTORCHJOB_API}, not {obj.get('apiVersion')}")
    name = (obj.get("metadata") or {}).get("name") or ""
    if not _DNS1035_LABEL.match(name) or len(name) > 63:
        errors.append(f"{where}: metadata.name '{name}' is not a DNS-1035 label")
    spec = obj.get("spec") or {}
    if not isinstance(spec.get("runPolicy"), dict):
        errors.append(f"{where}: spec.runPolicy is required")
    if (spec.get("elasticPolicy") or {}).get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
        errors.append(f"{where}: spec.elasticPolicy.nProcPerNode must not be used with spec.nprocPerNode")
    replicas = spec.get("pytorchReplicaSpecs") or {}
    if "Master" not in replicas:
        errors.append(f"{where}: spec.pytorchReplicaSpecs.Master is required (torchrun's rendezvous host)")
    total = sum(int(r.get("replicas") or 0) for r in replicas.values() if isinstance(r, dict))
    for role, rspec in replicas.items():
        path = f"{where}: spec.pytorchReplicaSpecs.{role}"
        if role not in ("Master", "Worker"):
            errors.append(f"{path}: unsupported replica type (Master or Worker)")
            continue
        count = rspec.get("replicas")
        if role == "Master" and count != 1:
            errors.append(f"{path}.replicas must be 1, not {count}")
        if role == "Worker" and (not isinstance(count, int) or count < 1):
            errors.append(f"{path}.replicas must be at least 1, not {count}")
        if rspec.get("restartPolicy") not in ("Always", "OnFailure", "Never", "ExitCode"):
            errors.append(f"{path}.restartPolicy '{rspec.get('restartPolicy')}' is not a replica restart policy")
        template = rspec.get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        if not any(c.get("name") == PYTORCHJOB_CONTAINER for c in containers):
            errors.append(f"{path}.template.spec.containers: needs a container named '{PYTORCHJOB_CONTAINER}'")
        errors += [f"{path}.template.spec.containers[{i}].image is required"
                   for i, c in enumerate(containers) if not c.get("image")]
        for container in containers:
            errors += _torchrun_errors(container, gpu_resource, total, path)
        # why: kubernetes-validate has no CRD schemas, but each replica's template is a real PodTemplateSpec.
        errors += _schema_errors({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                                  "template": template}, versions, f"{path}.template")
    return errors


def default_versions() -> tuple[str, str]:
    import kubernetes_validate

    return (MIN_KUBERNETES, kubernetes_validate.latest_version())


def validate_manifests(manifests: Mapping[str, dict] | Iterable[dict], versions: Sequence[str] | None = None,
                       gpu_resource: str = "nvidia.com/gpu") -> None:
    """Check every manifest: built-in kinds strictly against the Kubernetes schemas of each version (oldest
    supported and newest shipped by kubernetes-validate by default), PyTorchJobs field by field as the
    training operator does, torchrun's flags against the pod's GPUs and replicas, and every pod against the
    Pod Security Standard "restricted" profile (pipelines/pod_security.py).

    Raises:
        ManifestError: one line per problem, naming the manifest, the version and the field.
    """
    versions = tuple(versions or default_versions())
    items = manifests.items() if isinstance(manifests, Mapping) else \
        ((f"document {i}", m) for i, m in enumerate(manifests))
    errors: list[str] = []
    for name, obj in items:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            errors.append(f"{name}: not a Kubernetes object (no kind / apiVersion)")
            continue
        where = f"{name} ({obj['kind']})"
        errors += [f"{where}: pod security (restricted): {v}" for spec in pod_specs(obj)
                   for v in restricted_violations(spec)]
        if obj["kind"] == "PyTorchJob":
            errors += _pytorchjob_errors(obj, versions, where, gpu_resource)
            continue
        errors += _schema_errors(obj, versions, where)
        if obj["kind"] == "Job":
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                errors += _torchrun_errors(container, gpu_resource, 1, where)
    if errors:
        raise ManifestError("\n".join(errors))


# ---------------------------------------------------------------------------------------------------------------
# Files


def write_manifests(manifests: Mapping[str, dict], out_dir: str | Path, source: str = "") -> list[Path]:
    """Write one YAML file per object (sorted keys); earlier renders in ``out_dir`` are replaced, other files kept.

    why: `kubectl apply -f DIR` applies every file, so a stale Job next to a new PyTorchJob would start both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        if old.name not in manifests and old.read_text().startswith(RENDER_MARK):
            old.unlink()
    header = f"{RENDER_MARK}{f' from {source}' if source else ''}; edit the configuration, not this file.\n"
    paths = []
    for name, obj in sorted(manifests.items()):
        path = out / name
        path.write_text(header + yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))
        paths.append(path)
    return paths


def read_manifests(directory: str | Path) -> dict[str, dict]:
    """Every object in the ``*.yaml`` / ``*.yml`` files of ``directory``, keyed by file (and document index)."""
    root = Path(directory)
    if not root.is_dir():
        raise ClusterConfigError(f"{root}: no such directory")
    out: dict[str, dict] = {}
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            raise ClusterConfigError(f"{path}: not valid YAML: {err}") from err
        for i, doc in enumerate(docs):
            out[path.name if len(docs) == 1 else f"{path.name}[{i}]"] = doc
    if not out:
        raise ClusterConfigError(f"{root}: no manifests (*.yaml) found")
    return out
