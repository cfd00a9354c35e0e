"""The pod, defined once: resources, volumes, env, tolerations and security contexts that the ZenML step pod
and every manifest share, and the container command of the training pods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s

from pipelines.cluster.config import ClusterConfig

if TYPE_CHECKING:
    pass


ENTRY_MODULE = "udon_core.train"


CONFIG_KEY = "train.yaml"  # the ConfigMap key, and the file name under config_mount_path


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


def k8s_json(obj: Any) -> Any:
    """A client model (or list / dict of them) as the camelCase JSON Kubernetes takes."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


def trainer_args(cfg: ClusterConfig) -> list[str]:
    """What follows ``torchrun ...``: the library's entry point on the mounted config; resume is automatic."""
    return ["-m", ENTRY_MODULE, "--config", f"{cfg.config_mount_path}/{CONFIG_KEY}", "--resume", "auto"]


def torchrun_flag(args: Sequence[Any], flag: str) -> str | None:
    """The value of ``--<flag>`` in torchrun's arguments, written ``--flag=V`` or ``--flag V``; None if absent."""
    args = [a for a in args if isinstance(a, str)]
    for i, arg in enumerate(args):
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
        if arg == f"--{flag}" and i + 1 < len(args):
            return args[i + 1]
    return None


def trainer_container(cfg: ClusterConfig, parts: PodParts, name: str, args: list[str],
               ports: list[k8s.V1ContainerPort] | None = None) -> k8s.V1Container:
    return k8s.V1Container(
        name=name, image=cfg.image, image_pull_policy=cfg.image_pull_policy, command=["torchrun"], args=args,
        resources=parts.resources, volume_mounts=parts.volume_mounts, env=parts.env, ports=ports,
        security_context=parts.container_security,
    )


def pod_settings(cfg: ClusterConfig, parts: PodParts) -> dict[str, Any]:
    """The pod-level fields every route's pods share (``V1PodSpec`` keyword arguments): account, security context,
    volumes, tolerations, node selector, pull secrets; each one a Trainer runtime patch may also set."""
    return {"service_account_name": cfg.service_account, "security_context": parts.pod_security,
            "volumes": parts.volumes, "tolerations": parts.tolerations or None,
            "node_selector": parts.node_selector or None,
            "image_pull_secrets": [k8s.V1LocalObjectReference(name=s) for s in cfg.image_pull_secrets] or None}


def pod_template(cfg: ClusterConfig, parts: PodParts, container: k8s.V1Container, restart_policy: str,
                  labels: dict[str, str]) -> k8s.V1PodTemplateSpec:
    spec = k8s.V1PodSpec(containers=[container], restart_policy=restart_policy, automount_service_account_token=False,
                         **pod_settings(cfg, parts))
    return k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=spec)
