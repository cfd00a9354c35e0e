"""Kubeflow Trainer v2: the training run as a ``TrainJob`` (trainer.kubeflow.org/v1alpha1), built from and checked
with the API's own models (``kubeflow-trainer-api`` 2.3).

Supported: Kubeflow Trainer 2.2 and 2.3. Pod-level settings (volumes, mounts, security contexts, tolerations, node
selector, service account, pull secrets, pod labels) go in ``spec.runtimePatches``, the mechanism those releases
have (2.2 replaced the ``podTemplateOverrides`` of 2.0/2.1, which the 2.3 models do not have and a 2.2+ server
drops); image, command, env, nodes, processes and resources per node go in ``spec.trainer``.

The runtime (``torch-distributed`` by default) runs our ``torchrun`` command on every node with ``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` set; torchrun reads
``PET_<FLAG>`` as the default of each flag, so the command names none of them (numNodes and numProcPerNode are
the one source). The settings use the names of ZenML's upstream Kubeflow Trainer step operator
(``TrainJobSettings``), so the render, our step operator and a later move to ZenML's flavor share one vocabulary.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from kubernetes import client as k8s
from pydantic import BaseModel, Field, PositiveInt
from pydantic import ValidationError as PydanticError

from pipelines.cluster.config import ClusterConfig
from pipelines.cluster.pod import k8s_json, pod_parts, pod_settings, torchrun_flag, trainer_args
from udon_core.overrides import deep_merge
from udon_core.torchrun_env import PET_ENV

if TYPE_CHECKING:
    from kubeflow_trainer_api import models as tm

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
RUNTIME_PLURALS = {"ClusterTrainingRuntime": "clustertrainingruntimes", "TrainingRuntime": "trainingruntimes"}
SUPPORTED_TRAINER = ("2.2", "2.3")
NODE = "node"  # the trainer's replicated job and container in Trainer's torch runtimes
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
PATCH_MANAGER = "udon-pipeline"  # our entry in spec.runtimePatches (each manager owns one)
TRAINER_PORT = 29400  # the port Trainer's torch plugin opens on the node container and names in PET_MASTER_PORT
# why bounded: a TrainJob that never starts (Pending on nodes, ImagePullBackOff) never fails by itself, and a
# watch without an end would hold the ZenML step (and its GPUs' quota) forever. 72 h is several full UnED runs.
DEFAULT_TIMEOUT_SECONDS = 72 * 3600
JOB_INDEX_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"

# The shape of upstream's `torch-distributed` ClusterTrainingRuntime (Trainer 2.2/2.3): one replicated job `node`
# with one container `node` and no security context. A TrainJob is checked against it when its runtime is not at
# hand; `udon k8s submit` checks against the cluster's own runtime instead.
TORCH_DISTRIBUTED: dict[str, Any] = {
    "apiVersion": API_VERSION, "kind": "ClusterTrainingRuntime", "metadata": {"name": "torch-distributed"},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [{
        "name": NODE, "template": {"metadata": {"labels": {ANCESTOR_LABEL: "trainer"}}, "spec": {"template": {
            "spec": {"containers": [{"name": NODE, "image": "pytorch/pytorch"}]}}}}}]}}},
}


class TrainJobSettings(BaseModel):
    """What a TrainJob is made of, named as ZenML's upstream Kubeflow Trainer step operator names its settings
    (src/zenml/integrations/kubeflow/flavors/kubeflow_trainer_step_operator_flavor.py, k8s/README.md)."""

    runtime_ref_name: str = Field(default="torch-distributed", description="the training runtime")
    runtime_ref_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    runtime_ref_api_group: str = GROUP
    num_nodes: PositiveInt = Field(default=1, description="spec.trainer.numNodes")
    num_proc_per_node: PositiveInt | None = Field(default=None, description="spec.trainer.numProcPerNode (GPUs)")
    trainer_overrides: dict[str, Any] = Field(default_factory=dict, description="merged into spec.trainer")
    trainer_env: dict[str, str] = Field(default_factory=dict, description="env of the trainer container")
    pod_template_overrides: list[dict[str, Any]] = Field(
        default_factory=list, description="upstream's override entries ({targetJobs: [{name}], metadata, spec}); "
                                          "applied as our spec.runtimePatches entry on Trainer 2.2+")
    poll_interval_seconds: float = Field(default=10.0, gt=0, description="status polling while watching")
    timeout_seconds: PositiveInt | None = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        description="the TrainJob's spec.activeDeadlineSeconds (Trainer stops its pods and marks it Failed, "
                    "DeadlineExceeded, this long after it starts; a suspended one does not count down), and the "
                    "watch gives up 5 min later; None: no deadline, and the watch gives up after the default 72 h")
    delete_trainjob_after_completion: bool = False
    kubernetes_namespace: str = "default"
    incluster: bool = False
    kubernetes_context: str | None = None
    image: str | None = Field(default=None, description="replaces the image ZenML built for the step (None: that "
                                                          "image; a manifest run names the configuration's)")


def trainjob_settings(cfg: ClusterConfig, *, nodes: int, gpus: int, job_name: str | None,
                      with_config: bool = True) -> TrainJobSettings:
    """The TrainJob settings of ``configs/cluster.yaml``: the same pod parts as every other route (pod.py).

    No ``image``: a manifest run names ``cfg.image`` itself (``render_trainjob``), and the step operator runs the
    image ZenML built for the step (``cfg.image`` as is with ``zenml_skip_build``, else a code image on it); an
    image in these settings would override ZenML's build, and ZenML keeps every setting that differs from its
    default."""
    parts = pod_parts(cfg, gpus, job_name=job_name, with_config=with_config)
    labels = {**cfg.labels, "app.kubernetes.io/component": "trainer"}
    if job_name:
        labels["app.kubernetes.io/instance"] = job_name
    # why only mounts and security context on the container: Trainer takes image, command, env and resources from
    # spec.trainer, and the patch model has no other container field
    container = k8s.V1Container(name=NODE, volume_mounts=parts.volume_mounts,
                                security_context=parts.container_security)
    spec = k8s_json(k8s.V1PodSpec(containers=[container], **pod_settings(cfg, parts)))
    override = {"targetJobs": [{"name": NODE}], "metadata": {"labels": labels}, "spec": spec}
    return TrainJobSettings(
        runtime_ref_name=cfg.trainjob_runtime, runtime_ref_kind=cfg.trainjob_runtime_kind, num_nodes=nodes,
        num_proc_per_node=gpus, trainer_env={e.name: e.value for e in parts.env},
        trainer_overrides={"resourcesPerNode": k8s_json(parts.resources)}, pod_template_overrides=[override],
        kubernetes_namespace=cfg.namespace)


def _runtime_patch(overrides: Sequence[Mapping[str, Any]]) -> tm.TrainerV1alpha1RuntimePatch | None:
    """Upstream's override entries as one ``runtimePatches`` entry of ours (Trainer 2.2+)."""
    from kubeflow_trainer_api import models as tm  # why here: the 389 API models take ~3 s to import

    jobs = [{"name": target["name"], "template": {"spec": {"template": {
                **({"metadata": o["metadata"]} if o.get("metadata") else {}), "spec": o.get("spec") or {}}}}}
            for o in overrides for target in o.get("targetJobs") or []]
    if not jobs:
        return None
    return tm.TrainerV1alpha1RuntimePatch.from_dict({
        "manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": jobs}}}})


def build_trainjob(settings: TrainJobSettings, *, name: str, namespace: str, image: str, command: Sequence[str],
                   args: Sequence[str], env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                   annotations: Mapping[str, str] | None = None) -> tm.TrainerV1alpha1TrainJob:
    """The TrainJob as the API package's model; ``env`` (e.g. ZenML's step environment) comes before
    ``settings.trainer_env``, which wins on a clash (as upstream orders them).

    Raises:
        pydantic.ValidationError: a field the TrainJob API refuses (the models are strict about types).
    """
    from kubeflow_trainer_api import models as tm

    merged_env = {**(env or {}), **settings.trainer_env}
    trainer: dict[str, Any] = {
        "image": settings.image or image, "command": list(command), "args": list(args),
        "numNodes": settings.num_nodes,
        **({"numProcPerNode": settings.num_proc_per_node} if settings.num_proc_per_node else {}),
        "env": [{"name": k, "value": v} for k, v in sorted(merged_env.items())] or None,
    }
    trainer = deep_merge({k: v for k, v in trainer.items() if v is not None}, settings.trainer_overrides)
    patch = _runtime_patch(settings.pod_template_overrides)
    return tm.TrainerV1alpha1TrainJob(
        api_version=API_VERSION, kind="TrainJob",
        metadata=tm.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels or {}) or None,
            annotations=dict(annotations or {}) or None),
        spec=tm.TrainerV1alpha1TrainJobSpec(
            runtime_ref=tm.TrainerV1alpha1RuntimeRef(name=settings.runtime_ref_name, kind=settings.runtime_ref_kind,
                                                     api_group=settings.runtime_ref_api_group),
            trainer=tm.TrainerV1alpha1Trainer.from_dict(trainer),
            runtime_patches=[patch] if patch else None, active_deadline_seconds=settings.timeout_seconds),
    )


def render_trainjob(cfg: ClusterConfig, *, labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict:
    """The TrainJob of a manifest run of ``cfg`` (its nodes, GPUs and job name): ``torchrun -m udon_core.train
    --config <mounted config> --resume auto`` on every node, checkpoints in ``<checkpoint_path>/<job name>``."""
    settings = trainjob_settings(cfg, nodes=cfg.nodes, gpus=cfg.gpus_per_node, job_name=cfg.job_name)
    job = build_trainjob(settings, name=cfg.job_name, namespace=cfg.namespace, image=cfg.image, command=["torchrun"],
                         args=trainer_args(cfg), labels=labels, annotations=annotations)
    return job.to_dict()


# --- checks ---------------------------------------------------------------------------------------------------


def model_errors(model: type, obj: Any, where: str) -> list[str]:
    """``obj`` checked with a model of the API package: each refused field, and each field the model does not
    have (the models ignore unknown keys, so they are found by a round trip and named)."""
    try:
        parsed = model.from_dict(obj)
    except PydanticError as err:  # raised by the nested model that refused it: named by that model's type
        part = err.title.removeprefix("TrainerV1alpha1").removeprefix("IoK8sApiCoreV1")
        return [f"{where}: {part}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})"
                for e in err.errors()]
    except (AttributeError, TypeError) as err:  # a list or scalar where the model expects a mapping
        return [f"{where}: not the shape of a {model.__name__.removeprefix('TrainerV1alpha1')}: {err}"]
    return [f"{where}: {path}: not a field of {model.__name__.removeprefix('TrainerV1alpha1')} "
            f"(kubeflow-trainer-api 2.3)" for path in unknown_fields(obj, parsed.to_dict())]


def unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """The paths of keys in ``given`` that ``kept`` lost (None values count as absent)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = []
        for key, value in given.items():
            if value is None:
                continue
            child = f"{path}.{key}" if path else str(key)
            out += [child] if key not in kept else unknown_fields(value, kept[key], child)
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in unknown_fields(g, k, f"{path}[{i}]")]
    return []


def trainer_errors(obj: Mapping[str, Any], where: str, gpu_resource: str) -> list[str]:
    """What Trainer's webhook and torch plugin refuse, and what would run but not as one job."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    trainer = spec.get("trainer") if isinstance(spec.get("trainer"), dict) else {}
    errors = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(f"{where}: apiVersion must be {API_VERSION}, not {obj.get('apiVersion')}")
    ref = spec.get("runtimeRef") if isinstance(spec.get("runtimeRef"), dict) else {}
    if ref.get("kind", "ClusterTrainingRuntime") not in RUNTIME_PLURALS:
        errors.append(f"{where}: spec.runtimeRef.kind must be one of {sorted(RUNTIME_PLURALS)}")
    reserved = sorted({e.get("name") for e in trainer.get("env") or [] if isinstance(e, dict)} & set(PET_ENV))
    if reserved:
        errors.append(f"{where}: spec.trainer.env sets {reserved}, which the torch runtime reserves")
    args = [str(a) for a in trainer.get("args") or []]
    if trainer.get("command") == ["torchrun"] and "--standalone" in args:
        errors.append(f"{where}: spec.trainer.args has --standalone: every node would train alone")
    for flag, key in (("nnodes", "numNodes"), ("nproc-per-node", "numProcPerNode")):
        value = torchrun_flag(args, flag)
        if value is not None and value != str(trainer.get(key)):
            errors.append(f"{where}: torchrun --{flag}={value} but spec.trainer.{key} is {trainer.get(key)}")
    gpus = ((trainer.get("resourcesPerNode") or {}).get("limits") or {}).get(gpu_resource)
    if gpus is not None and trainer.get("numProcPerNode") is not None and str(gpus) != str(trainer["numProcPerNode"]):
        errors.append(f"{where}: spec.trainer.numProcPerNode={trainer['numProcPerNode']} but each node has "
                      f"{gpus} x {gpu_resource}: one process per GPU")
    for patch in spec.get("runtimePatches") or []:
        for job in _patched_jobs(patch):
            for c in _pod_patch(job).get("containers") or []:
                if isinstance(c, dict) and c.get("name") == NODE and c.get("env"):
                    errors.append(f"{where}: runtimePatches[{patch.get('manager')}] sets env on container "
                                  f"'{NODE}': Trainer only takes it from spec.trainer.env")
    return errors


# --- the pods a TrainJob makes ----------------------------------------------------------------------------------


def _patched_jobs(patch: Any) -> list[dict]:
    try:
        jobs = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    except (KeyError, TypeError):
        return []
    return [j for j in jobs if isinstance(j, dict)] if isinstance(jobs, list) else []


def _pod_patch(job: dict) -> dict:
    try:
        pod = job["template"]["spec"]["template"]["spec"]
    except (KeyError, TypeError):
        return {}
    return pod if isinstance(pod, dict) else {}


def _upsert(items: list, additions: list, key: str = "name") -> list:
    out = [i for i in items if not (isinstance(i, dict) and any(
        isinstance(a, dict) and a.get(key) == i.get(key) for a in additions))]
    return out + list(additions)


def _apply_pod_patch(template: dict, patch: Mapping[str, Any]) -> None:
    """One replicated job's runtime patch applied to its pod template, as Trainer merges it: named lists
    (volumes, containers' env and mounts) upserted by name, other lists appended, maps merged, the rest set."""
    meta = patch.get("metadata") or {}
    for key in ("labels", "annotations"):
        if meta.get(key):
            template.setdefault("metadata", {}).setdefault(key, {}).update(meta[key])
    pod = template.setdefault("spec", {})
    for key, value in (patch.get("spec") or {}).items():
        if key in ("containers", "initContainers"):
            for c_patch in value or []:
                target = next((c for c in pod.get(key) or [] if c.get("name") == c_patch.get("name")), None)
                if target is None:  # Trainer refuses a patch for a container the runtime does not have
                    continue
                for list_key in ("env", "volumeMounts"):
                    if c_patch.get(list_key):
                        target[list_key] = _upsert(target.get(list_key) or [], c_patch[list_key])
                if c_patch.get("securityContext") is not None:
                    target["securityContext"] = c_patch["securityContext"]
        elif key == "volumes":
            pod["volumes"] = _upsert(pod.get("volumes") or [], value or [])
        elif key in ("tolerations", "imagePullSecrets", "schedulingGates"):
            pod[key] = [*(pod.get(key) or []), *(value or [])]
        elif key == "nodeSelector":
            pod[key] = {**(pod.get(key) or {}), **(value or {})}
        else:
            pod[key] = value


def _apply_trainer(template: dict, trainer: Mapping[str, Any], num_nodes: int, name: str) -> None:
    """``spec.trainer`` on the runtime's ``node`` container, plus what the torch plugin adds (PET_*, port)."""
    for c in template.get("spec", {}).get("containers") or []:
        if c.get("name") != NODE:
            continue
        for key, field in (("image", "image"), ("command", "command"), ("args", "args"),
                           ("resources", "resourcesPerNode")):
            if trainer.get(field) is not None:
                c[key] = copy.deepcopy(trainer[field])
        torch_env = [{"name": "PET_NNODES", "value": str(num_nodes)},
                     {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode", "auto"))},
                     {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": JOB_INDEX_PATH}}},
                     {"name": "PET_MASTER_ADDR", "value": f"{name}-{NODE}-0-0.{name}"},
                     {"name": "PET_MASTER_PORT", "value": str(TRAINER_PORT)}]
        c["env"] = _upsert(_upsert(c.get("env") or [], copy.deepcopy(trainer.get("env") or [])), torch_env)
        c["ports"] = _upsert(c.get("ports") or [], [{"containerPort": TRAINER_PORT}], key="containerPort")


def effective_pods(trainjob: Mapping[str, Any], runtime: Mapping[str, Any]) -> dict[str, dict]:
    """``{replicated job: pod template}``: the pods Trainer would create for ``trainjob`` from ``runtime`` (its
    templates, then ``spec.trainer`` on the trainer job's ``node`` container, then every runtime patch in order),
    for the schema and Pod Security checks before anything reaches a cluster."""
    spec = trainjob.get("spec") if isinstance(trainjob.get("spec"), dict) else {}
    trainer = spec.get("trainer") if isinstance(spec.get("trainer"), dict) else {}
    try:
        jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
        policy_nodes = (runtime["spec"].get("mlPolicy") or {}).get("numNodes", 1)
    except (KeyError, TypeError, AttributeError):
        return {}
    out = {}
    for job in jobs if isinstance(jobs, list) else []:
        try:
            template = copy.deepcopy(job["template"]["spec"]["template"])
            job_labels = (job["template"].get("metadata") or {}).get("labels") or {}
        except (KeyError, TypeError, AttributeError):
            continue
        if job_labels.get(ANCESTOR_LABEL) == "trainer":
            name = str((trainjob.get("metadata") or {}).get("name"))
            _apply_trainer(template, trainer, trainer.get("numNodes") or policy_nodes, name)
        for patch in spec.get("runtimePatches") or []:
            for patched in _patched_jobs(patch):
                if patched.get("name") == job.get("name"):
                    _apply_pod_patch(template, (patched.get("template") or {}).get("spec", {}).get("template") or {})
        out[str(job.get("name"))] = template
    return out


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric."""
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63])
