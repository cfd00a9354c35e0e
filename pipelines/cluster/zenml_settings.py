"""ZenML settings built from the cluster config: the Kubernetes step operator's pod, the image, and the train
step's resources and scheduling on Kubeflow Pipelines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.cluster.config import KUBEFLOW_FLAVOR, TRAINJOB_FLAVOR, ClusterConfig, quantity
from pipelines.cluster.pod import k8s_json, pod_parts
from udon_core.errors import StackError

if TYPE_CHECKING:
    from zenml.config import DockerSettings
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings


def step_operator_settings(cfg: ClusterConfig) -> KubernetesStepOperatorSettings:
    """ZenML's Kubernetes step-operator settings for the ``model_trainer`` step: GPUs, shm, volume, security."""
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings
    from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

    parts = pod_parts(cfg, cfg.step_gpus, with_config=False)
    pod = KubernetesPodSettings(
        node_selectors=parts.node_selector,
        tolerations=k8s_json(parts.tolerations),
        resources=k8s_json(parts.resources),
        volumes=k8s_json(parts.volumes),
        volume_mounts=k8s_json(parts.volume_mounts),
        env=k8s_json(parts.env),
        labels={**cfg.labels, "app.kubernetes.io/component": "zenml-step"},
        image_pull_secrets=list(cfg.image_pull_secrets),
        container_security_context=k8s_json(parts.container_security),
        additional_pod_spec_args={"security_context": k8s_json(parts.pod_security)},
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


def trainjob_step_settings(cfg: ClusterConfig) -> dict[str, Any]:
    """``settings=`` for the ``model_trainer`` step on a stack with the ``udon_trainjob`` step operator: a TrainJob
    of ``nodes`` x ``gpus_per_node`` with the pod parts every route shares (the step config says where to
    checkpoint; ZenML hands the step its configuration, so no config map)."""
    from pipelines.cluster.trainjob import trainjob_settings
    from pipelines.cluster.trainjob_operator import TrainJobStepOperatorSettings

    plain = trainjob_settings(cfg, nodes=cfg.nodes, gpus=cfg.gpus_per_node, job_name=None, with_config=False)
    return {"step_operator": TrainJobStepOperatorSettings(**plain.model_dump()), "docker": docker_settings(cfg)}


def _step_operator_flavor(name: str) -> str:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    return Client().get_stack_component(StackComponentType.STEP_OPERATOR, name).flavor_name


def kubeflow_train_step_settings(cfg: ClusterConfig) -> dict[str, Any]:
    """``settings=`` for the ``model_trainer`` step on a Kubeflow Pipelines stack (``udon_kubeflow`` flavor):
    GPUs and the CPU limit (if any) as ``ResourceSettings`` (what ZenML hands to KFP), memory, CPU request,
    node selector, tolerations, shm and pull secrets as orchestrator settings (pipelines/cluster/kubeflow.py)."""
    from zenml.config import ResourceSettings

    from pipelines.cluster.kubeflow import UdonKubeflowSettings

    orchestrator = UdonKubeflowSettings(
        accelerator_type=cfg.gpu_resource, cpu_request=cfg.cpu_request, memory_request=cfg.memory_request,
        memory_limit=cfg.memory_limit, node_selector=dict(cfg.node_selector),
        tolerations=[t.model_dump(exclude_none=True) for t in cfg.tolerations], shm_size=cfg.shm_size,
        image_pull_secrets=list(cfg.image_pull_secrets),
    )
    # why cpu_count only for a limit: ZenML turns it into a CPU limit, and the config's null limit means none
    cpu_limit = float(quantity(cfg.cpu_limit)) if cfg.cpu_limit else None
    return {"resources": ResourceSettings(gpu_count=cfg.step_gpus, cpu_count=cpu_limit), "orchestrator": orchestrator}


def kubeflow_pipeline_settings(cfg: ClusterConfig) -> dict[str, Any]:
    """Pipeline-level ``settings=`` on Kubeflow Pipelines, where every step runs in a pod: the image.

    With ``zenml_skip_build`` the image is the code (its tag pins it), so nothing is uploaded beside it; else
    ZenML builds a code image on ``cfg.image`` with the stack's image builder.
    """
    from zenml.config import DockerSettings

    if not cfg.zenml_skip_build:
        return {"docker": docker_settings(cfg)}
    return {"docker": DockerSettings(parent_image=cfg.image, skip_build=True, allow_download_from_artifact_store=False,
                                     allow_download_from_code_repository=False, allow_including_files_in_images=False)}


def cluster_run_settings(cfg: ClusterConfig, orchestrator_flavor: str, step_operator: str | None,
                         step_operator_flavor: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(pipeline settings, model_trainer step configuration)`` that put a run on the cluster, for a stack
    with that orchestrator flavor and step operator: every step a KFP task (``udon_kubeflow``), the train step
    as a multi-node TrainJob (``udon_trainjob`` step operator), or in the Kubernetes step operator's pod.
    ``step_operator_flavor``: looked up in ZenML when not given."""
    if orchestrator_flavor == KUBEFLOW_FLAVOR:
        return kubeflow_pipeline_settings(cfg), {"settings": kubeflow_train_step_settings(cfg)}
    if orchestrator_flavor == "kubeflow":
        raise StackError("the active stack's orchestrator is ZenML's own 'kubeflow' flavor, which drops the train "
                         f"step's GPU under KFP 2.x: register the '{KUBEFLOW_FLAVOR}' flavor instead "
                         "(k8s/register_stack.sh with ORCHESTRATOR=kubeflow)")
    if step_operator:
        flavor = step_operator_flavor or _step_operator_flavor(step_operator)
        settings = trainjob_step_settings(cfg) if flavor == TRAINJOB_FLAVOR else train_step_settings(cfg)
        return {}, {"step_operator": step_operator, "settings": settings}
    raise StackError(f"the active stack has neither the '{KUBEFLOW_FLAVOR}' orchestrator nor a step operator, so "
                     "nothing would run on the cluster: activate a stack from k8s/register_stack.sh")
