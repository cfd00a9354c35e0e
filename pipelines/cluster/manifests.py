"""Kubernetes manifests of a training run: namespace, service accounts, least-privilege RBAC, the data PVC,
the training config as a ConfigMap, and the run itself: a Kubeflow Trainer v2 `TrainJob` (trainjob.py), a
single-node `batch/v1` Job, or, for clusters still on Training Operator v1, the legacy Kubeflow `PyTorchJob`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Mapping

import yaml
from kubernetes import client as k8s
from pydantic import ValidationError

from pipelines.cluster.config import ClusterConfig, ClusterConfigError, describe_validation_error
from pipelines.cluster.pod import CONFIG_KEY, k8s_json, pod_parts, pod_template, trainer_args, trainer_container
from udon_core.errors import StackError

if TYPE_CHECKING:
    pass


PYTORCHJOB_API = "kubeflow.org/v1"


PYTORCHJOB_CONTAINER = "pytorch"  # the training operator finds the container by this name


PYTORCHJOB_PORT = ("pytorchjob-port", 23456)  # the operator's default port name and number (release 1.9)


def _meta(cfg: ClusterConfig, name: str, labels: dict[str, str] | None = None, **kw: Any) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(name=name, namespace=cfg.namespace, labels={**cfg.labels, **(labels or {})}, **kw)


def _single_node_job(cfg: ClusterConfig, job_name: str, gpus: int, annotations: dict) -> k8s.V1Job:
    parts = pod_parts(cfg, gpus, job_name=job_name)
    labels = {**cfg.labels, "app.kubernetes.io/component": "trainer", "app.kubernetes.io/instance": job_name}
    args = ["--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", *trainer_args(cfg)]
    template = pod_template(cfg, parts, trainer_container(cfg, parts, "trainer", args), "Never", labels)
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
    """Legacy: Training Operator v1 (maintenance only upstream); Kubeflow Trainer v2 runs a TrainJob instead."""
    try:
        from kubeflow.training import (
            KubeflowOrgV1PyTorchJob,
            KubeflowOrgV1PyTorchJobSpec,
            KubeflowOrgV1ReplicaSpec,
            KubeflowOrgV1RunPolicy,
        )
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
        container = trainer_container(cfg, parts, PYTORCHJOB_CONTAINER, args, ports=[port])
        # why: OnFailure restarts a failed container in place; the other ranks then fail their collectives,
        # restart too, and every rank resumes from the same checkpoint.
        return KubeflowOrgV1ReplicaSpec(replicas=count, restart_policy="OnFailure",
                                        template=pod_template(cfg, parts, container, "OnFailure", labels))

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
                          # submit creates, polls and (on a dropped runtime patch) deletes; list/watch for kubectl
                          rule(api_groups=["trainer.kubeflow.org"], resources=["trainjobs"],
                               verbs=["create", "get", "list", "watch", "delete"]),
                          rule(api_groups=["trainer.kubeflow.org"], resources=["trainingruntimes"], verbs=["get"]),
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


def _cluster_access_objects(cfg: ClusterConfig) -> list[Any]:
    """The launcher's one cluster-wide right: reading ClusterTrainingRuntimes (cluster-scoped, so no Role can grant
    it), which ``submit`` checks a TrainJob's pods against before creating it."""
    name = f"{cfg.namespace}-{cfg.launcher_service_account}-runtimes"  # ClusterRoles share one cluster-wide space
    meta = k8s.V1ObjectMeta(name=name, labels=dict(cfg.labels))
    role = k8s.V1ClusterRole(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole", metadata=meta, rules=[
        k8s.V1PolicyRule(api_groups=["trainer.kubeflow.org"], resources=["clustertrainingruntimes"], verbs=["get"])])
    binding = k8s.V1ClusterRoleBinding(
        api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding", metadata=meta,
        role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=cfg.launcher_service_account,
                                    namespace=cfg.namespace)])
    return [role, binding]


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
                     gpus_per_node: int | None = None, job_name: str | None = None, *, trainjob: bool = False,
                     run_labels: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Every object of a training run as plain dicts, keyed by a stable file name in apply order.

    ``nodes`` / ``gpus_per_node`` / ``job_name`` override the configuration for this render. With ``trainjob``
    the run is a Kubeflow Trainer v2 TrainJob on any number of nodes; otherwise one node gives a ``batch/v1``
    Job and more the legacy Kubeflow ``PyTorchJob``. ``train_config`` becomes the ConfigMap's YAML;
    ``run_labels`` (the ZenML run, the data version) go on the run object and its pods.
    """
    updates = {k: v for k, v in {"nodes": nodes, "gpus_per_node": gpus_per_node, "job_name": job_name}.items()
               if v is not None}
    try:
        cfg = ClusterConfig.model_validate({**cfg.model_dump(), **updates})
    except ValidationError as err:
        raise ClusterConfigError(describe_validation_error(err, "render options")) from err
    if not isinstance(train_config, Mapping):
        raise ClusterConfigError(f"the training config must be a mapping, not {type(train_config).__name__}")
    config_text = yaml.safe_dump(dict(train_config), sort_keys=True)
    if len(config_text.encode()) > 900_000:
        raise ClusterConfigError("the training config is over the 1 MiB a ConfigMap can hold")
    annotations = {"udon-pipeline/train-config-sha256": hashlib.sha256(config_text.encode()).hexdigest()}
    objects: list[Any] = [*_access_objects(cfg), *_storage_objects(cfg, config_text)]
    out = {}
    for index, obj in enumerate(objects):
        plain = k8s_json(obj)
        out[f"{index:02d}-{plain['kind'].lower()}-{plain['metadata']['name']}.yaml"] = plain
    # why the Role's and the RoleBinding's numbers: the setup stays 00-06 and the run 07 (k8s/README.md's apply
    # commands), and each cluster-wide object sorts beside its namespaced twin
    slots = {type(obj).__name__: index for index, obj in enumerate(objects)}
    for obj in _cluster_access_objects(cfg):
        plain = k8s_json(obj)
        index = slots[type(obj).__name__.replace("Cluster", "")]
        out[f"{index:02d}-{plain['kind'].lower()}-{plain['metadata']['name']}.yaml"] = plain
    out = dict(sorted(out.items()))
    if trainjob:
        from pipelines.cluster.trainjob import render_trainjob

        labels = {**cfg.labels, **(run_labels or {}), "app.kubernetes.io/component": "trainer",
                  "app.kubernetes.io/instance": cfg.job_name}
        workload = render_trainjob(cfg, labels=labels, annotations=annotations)
    else:
        workload = k8s_json(_single_node_job(cfg, cfg.job_name, cfg.gpus_per_node, annotations) if cfg.nodes == 1
                            else _pytorch_job(cfg, cfg.job_name, cfg.nodes, cfg.gpus_per_node, annotations))
    out[f"{len(objects):02d}-{workload['kind'].lower()}-{workload['metadata']['name']}.yaml"] = workload
    return out
