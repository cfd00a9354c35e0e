"""Manifests checked before they reach a cluster: the Kubernetes OpenAPI schemas of the supported versions, a
TrainJob and its runtime with Kubeflow Trainer's own API models, the training operator's PyTorchJob checks
(legacy), torchrun's flags, and the Pod Security Standards over every pod found in any object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.cluster.config import DNS1035_LABEL, MIN_KUBERNETES
from pipelines.cluster.files import expand_lists
from pipelines.cluster.manifests import PYTORCHJOB_API, PYTORCHJOB_CONTAINER
from pipelines.cluster.pod import torchrun_flag
from pipelines.cluster.pod_security import pod_templates, violations
from pipelines.cluster.trainjob import TORCH_DISTRIBUTED, effective_pods, model_errors, trainer_errors
from udon_core.errors import UdonUserError

RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")


class ManifestError(UdonUserError, ValueError):
    """Rendered manifests that Kubernetes or the training operator would reject; one line per problem."""


@dataclass
class ValidationSummary:
    """What was checked: objects by kind, pods checked against the profile, and notes on what could not be."""

    kinds: dict[str, int] = field(default_factory=dict)
    pods: int = 0
    notes: list[str] = field(default_factory=list)


def _schema_errors(obj: dict, versions: Sequence[str], where: str) -> tuple[list[str], bool]:
    """``(errors, known)``: strict validation against each version's schema; ``known`` is False for a kind
    kubernetes-validate has no schema of (a CRD), which is then not an error."""
    import kubernetes_validate as kv

    errors = []
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as err:
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{where} (Kubernetes {version}): {path}: {err.message}")
        except kv.SchemaNotFoundError:
            return [], False
        except Exception as err:  # noqa: BLE001 - a version kubernetes-validate does not ship, say, named
            errors.append(f"{where} (Kubernetes {version}): cannot validate: {getattr(err, 'message', err)}")
    return errors, True


def _template_schema_errors(template: dict, versions: Sequence[str], where: str) -> list[str]:
    # why: kubernetes-validate has no CRD schemas, but a pod template inside one is a real PodTemplateSpec.
    doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    return _schema_errors(doc, versions, where)[0]


def _torchrun_errors(container: dict, gpu_resource: str, nnodes: int, where: str) -> list[str]:
    """The torchrun flags must agree with the pod: processes = GPUs, nodes = replicas."""
    if container.get("command") != ["torchrun"]:
        return []
    args = container.get("args") or []
    errors = []
    gpus = ((container.get("resources") or {}).get("limits") or {}).get(gpu_resource)
    nproc = torchrun_flag(args, "nproc-per-node")
    if gpus is None or nproc != str(gpus):
        errors.append(f"{where}: torchrun --nproc-per-node={nproc} but the {gpu_resource} limit is {gpus}")
    if torchrun_flag(args, "nnodes") != str(nnodes):
        errors.append(f"{where}: torchrun --nnodes={torchrun_flag(args, 'nnodes')} but the run has {nnodes} pods")
    return errors


def _pytorchjob_errors(obj: dict, versions: Sequence[str], where: str, gpu_resource: str) -> list[str]:
    """What the training operator's webhook (release 1.9) checks, plus each pod template against Kubernetes."""
    errors = []
    if obj.get("apiVersion") != PYTORCHJOB_API:
        errors.append(f"{where}: apiVersion must be {PYTORCHJOB_API}, not {obj.get('apiVersion')}")
    name = (obj.get("metadata") or {}).get("name") or ""
    if not DNS1035_LABEL.match(name) or len(name) > 63:
        errors.append(f"{where}: metadata.name '{name}' is not a DNS-1035 label")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if not isinstance(spec.get("runPolicy"), dict):
        errors.append(f"{where}: spec.runPolicy is required")
    if (spec.get("elasticPolicy") or {}).get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
        errors.append(f"{where}: spec.elasticPolicy.nProcPerNode must not be used with spec.nprocPerNode")
    replicas = spec.get("pytorchReplicaSpecs") if isinstance(spec.get("pytorchReplicaSpecs"), dict) else {}
    if "Master" not in replicas:
        errors.append(f"{where}: spec.pytorchReplicaSpecs.Master is required (torchrun's rendezvous host)")
    total = sum(int(r.get("replicas") or 0) for r in replicas.values() if isinstance(r, dict))
    for role, rspec in replicas.items():
        path = f"{where}: spec.pytorchReplicaSpecs.{role}"
        if role not in ("Master", "Worker") or not isinstance(rspec, dict):
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
    return errors


def _pod_security(template: Mapping[str, Any], versions: Sequence[str]) -> list[str]:
    spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    return violations(template.get("metadata"), spec, versions)


def _pod_errors(where: str, template: Mapping[str, Any], versions: Sequence[str], schema: bool) -> list[str]:
    errors = [f"{where}: pod security: {v}" for v in _pod_security(template, versions)]
    return errors + (_template_schema_errors(dict(template), versions, where) if schema else [])


def _trainjob_errors(obj: dict, runtimes: Mapping[str, dict], versions: Sequence[str], where: str,
                     gpu_resource: str, summary: ValidationSummary) -> list[str]:
    from kubeflow_trainer_api import models as tm

    errors = model_errors(tm.TrainerV1alpha1TrainJob, obj, where)
    errors += trainer_errors(obj, where, gpu_resource)
    name = str(((obj.get("spec") or {}).get("runtimeRef") or {}).get("name"))
    runtime = runtimes.get(name)
    if runtime is None:
        runtime = TORCH_DISTRIBUTED
        summary.notes.append(f"{where}: runtime '{name}' is not among these manifests; its pods were checked on the "
                             "shape of Trainer's torch-distributed runtime (`udon k8s submit` checks the cluster's)")
    pods = effective_pods(obj, runtime)
    if not pods:
        errors.append(f"{where}: runtime '{name}' has no replicated jobs to run the TrainJob in")
    for job, template in pods.items():
        summary.pods += 1
        errors += _pod_errors(f"{where} pods of replicated job '{job}'", template, versions, schema=True)
    return errors


def default_versions() -> tuple[str, str]:
    import kubernetes_validate

    return (MIN_KUBERNETES, kubernetes_validate.latest_version())


def _objects(manifests: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, Any]]:
    items = manifests.items() if isinstance(manifests, Mapping) else \
        ((f"document {i}", m) for i, m in enumerate(manifests))
    return [pair for name, obj in items for pair in expand_lists(name, obj)]


def _object_errors(name: str, obj: dict, runtimes: Mapping[str, dict], versions: Sequence[str],
                   gpu_resource: str, summary: ValidationSummary) -> list[str]:
    from kubeflow_trainer_api import models as tm

    kind, where = obj["kind"], f"{name} ({obj['kind']})"
    if kind == "TrainJob":
        return _trainjob_errors(obj, runtimes, versions, where, gpu_resource, summary)
    templates = pod_templates(obj)
    summary.pods += len(templates)
    errors: list[str] = []
    known = True
    if kind == "PyTorchJob":
        errors += _pytorchjob_errors(obj, versions, where, gpu_resource)
        known = False
    elif kind in RUNTIME_KINDS:
        model = getattr(tm, f"TrainerV1alpha1{kind}")
        errors += model_errors(model, obj, where)
        known = False
    else:
        schema_errors, known = _schema_errors(obj, versions, where)
        errors += schema_errors
        if not known:
            summary.notes.append(f"{where}: no schema for {obj['apiVersion']} here; only its "
                                 f"{len(templates)} pod template(s) were checked")
    if kind == "Job":
        for container in ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
            errors += _torchrun_errors(container, gpu_resource, 1, where)
    for template in templates:
        pod, at = {"metadata": template.metadata, "spec": template.spec}, f"{where} {template.where}"
        if kind in RUNTIME_KINDS:  # why: a runtime makes no pods; its TrainJobs' pods are checked with their patches
            errors += _template_schema_errors(pod, versions, at) if not known else []
            security = _pod_security(pod, versions)
            if security:
                summary.notes.append(f"{at}: meets restricted only with a TrainJob's runtime patches "
                                     f"({len(security)} findings without, e.g. {security[0]})")
        else:
            errors += _pod_errors(at, pod, versions, schema=not known)
    return errors


def validate_manifests(manifests: Mapping[str, Any] | Iterable[Any], versions: Sequence[str] | None = None,
                       gpu_resource: str = "nvidia.com/gpu",
                       runtimes: Mapping[str, dict] | None = None) -> ValidationSummary:
    """Check every object (``kind: List`` expanded): built-in kinds strictly against the Kubernetes schemas of
    each version (oldest supported and newest shipped by kubernetes-validate by default); a TrainJob and training
    runtimes with Kubeflow Trainer's API models, the TrainJob's pods as Trainer would build them from its runtime
    (one of these manifests, else the shape of torch-distributed); PyTorchJobs as the training operator does;
    torchrun's flags against GPUs and nodes; every pod of every object (unknown CRDs included, their pod
    templates also against the PodTemplate schema) against Pod Security "restricted", which includes "baseline".
    ``runtimes``: training runtimes by name known from elsewhere (the cluster's), used for TrainJobs' pods.

    Raises:
        ManifestError: one line per problem, naming the manifest, the version and the field.
    """
    versions = tuple(versions or default_versions())
    objects = _objects(manifests)
    runtimes = {**{str((o.get("metadata") or {}).get("name")): o for _, o in objects
                   if isinstance(o, dict) and o.get("kind") in RUNTIME_KINDS}, **(runtimes or {})}
    summary, errors = ValidationSummary(), []
    for name, obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str) or "apiVersion" not in obj:
            errors.append(f"{name}: not a Kubernetes object (no kind / apiVersion)")
            continue
        summary.kinds[obj["kind"]] = summary.kinds.get(obj["kind"], 0) + 1
        errors += _object_errors(name, obj, runtimes, versions, gpu_resource, summary)
    if errors:
        raise ManifestError("\n".join(errors))
    return summary
