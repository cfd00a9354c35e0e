"""Rendered manifests checked before they reach a cluster: the Kubernetes OpenAPI schemas of the supported
versions, the training operator's own PyTorchJob checks, torchrun's flags and Pod Security 'restricted'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from pipelines.cluster.config import DNS1035_LABEL, MIN_KUBERNETES
from pipelines.cluster.manifests import PYTORCHJOB_API, PYTORCHJOB_CONTAINER
from pipelines.cluster.pod_security import pod_specs, restricted_violations
from udon_core.errors import UdonUserError

if TYPE_CHECKING:
    pass


class ManifestError(UdonUserError, ValueError):
    """Rendered manifests that Kubernetes or the training operator would reject; one line per problem."""


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
    if not DNS1035_LABEL.match(name) or len(name) > 63:
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
    Pod Security Standard "restricted" profile (pipelines/cluster/pod_security.py).

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
