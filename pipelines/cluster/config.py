"""`configs/cluster.yaml` as a typed `ClusterConfig`: image, resources, GPUs, storage, scheduling, security.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import yaml
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from udon_core.errors import InvalidValueError, UdonUserError
from udon_core.overrides import deep_merge

if TYPE_CHECKING:
    pass


KUBEFLOW_FLAVOR = "udon_kubeflow"  # the orchestrator flavor of pipelines/cluster/kubeflow.py
TRAINJOB_FLAVOR = "udon_trainjob"  # the step operator flavor of pipelines/cluster/trainjob_operator.py
MIN_KUBERNETES = "1.30.0"  # oldest Kubernetes minor still in upstream or common vendor support


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ClusterConfigError(UdonUserError, ValueError):
    """A cluster configuration that cannot be used; the message names the file and the field."""


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity ('500m', '16Gi', '2') as a number (cores or bytes), refused with the value named."""
    try:
        return parse_quantity(text)
    except ValueError as err:
        raise InvalidValueError(f"'{text}' is not a Kubernetes quantity (e.g. '8', '500m', '64Gi')") from err


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
                    "grants it jobs, pytorchjobs, trainjobs, pods/log and the config map in this namespace, and a "
                    "ClusterRole reading ClusterTrainingRuntimes, nothing else cluster-wide",
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
    nodes: int = Field(
        default=1, ge=1, strict=True,
        description="nodes (pods) of the training run: a TrainJob's numNodes; >1 without --trainjob renders the "
                    "legacy Kubeflow PyTorchJob")
    gpus_per_node: int = Field(
        default=1, ge=1, le=16, strict=True,
        description="GPUs (= torchrun processes) per pod; the image is a CUDA image and the trainer needs a GPU, "
                    "so 0 is refused (run on CPU with the default ZenML stack instead)",
    )
    step_gpus: int = Field(
        default=1, ge=1, le=16, strict=True,
        description="GPUs of the ZenML model_trainer pod; the step trains in one process on one device, so more "
                    "would sit idle (multi-GPU goes through `udon k8s render`)",
    )
    gpu_resource: str = Field(default="nvidia.com/gpu", description="the NVIDIA device plugin's resource name")
    # --- Kubeflow Trainer v2 (TrainJob)
    trainjob_runtime: str = Field(
        default="torch-distributed",
        description="the training runtime a TrainJob refers to (Trainer's default torch runtime: it starts no "
                    "launcher itself, sets PET_* and runs our `torchrun` command)")
    trainjob_runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        default="ClusterTrainingRuntime", description="cluster-wide runtime, or one in `namespace`")
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
        default=3, ge=0, strict=True, description="pod restarts before the run fails; each one resumes from the last checkpoint"
    )
    ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0, strict=True, description="keep finished runs a week")
    run_as_user: int = Field(default=10001, ge=1, strict=True, description="the non-root UID of k8s/Dockerfile")
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

    @field_validator("namespace", "service_account", "launcher_service_account", "data_pvc", "config_map",
                     "trainjob_runtime")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63 or not DNS1123_LABEL.match(value):
            raise InvalidValueError(f"'{value}' is not a Kubernetes name (lowercase letters, digits and '-', at most 63)")
        return value

    @field_validator("job_name")
    @classmethod
    def _dns1035(cls, value: str) -> str:
        if not DNS1035_LABEL.match(value):
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


def describe_validation_error(err: ValidationError, source: str) -> str:
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
        raise ClusterConfigError(describe_validation_error(err, " + ".join(map(str, files)))) from err
