"""The Kubernetes Pod Security Standard "restricted" profile, checked on a pod spec.

A namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` rejects any pod that breaks one of
these rules (https://kubernetes.io/docs/concepts/security/pod-security-standards/, profile v1.25+), so a
rendered manifest that breaks one would only fail at admission, on the cluster. Each violation names the
field; a rule is met when the container sets it or, where the standard allows, the pod does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Volume types the restricted profile allows (everything else, hostPath first, is refused).
ALLOWED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                             "projected", "secret"})
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})


def _containers(spec: dict) -> Iterable[tuple[str, dict]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield f"{kind}[{c.get('name', '?')}]", c


def _volume_violations(spec: dict) -> list[str]:
    out = []
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        bad = sorted(k for k in kinds if k not in ALLOWED_VOLUMES)
        if bad:
            out.append(f"volumes[{volume.get('name', '?')}]: type {bad[0]} is not allowed (restricted allows "
                       f"{', '.join(sorted(ALLOWED_VOLUMES))})")
    return out


def _host_violations(spec: dict) -> list[str]:
    out = [f"{field}: must be unset or false" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    for where, c in _containers(spec):
        out += [f"{where}.ports[{p.get('containerPort')}].hostPort: must be unset or 0"
                for p in c.get("ports") or [] if p.get("hostPort")]
    return out


def _container_violations(where: str, sc: dict, pod_sc: dict) -> list[str]:
    out = []
    if sc.get("privileged"):
        out.append(f"{where}.securityContext.privileged: must be false")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{where}.securityContext.capabilities.drop: must include ALL")
    added = [c for c in caps.get("add") or [] if c != "NET_BIND_SERVICE"]
    if added:
        out.append(f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE is allowed, found {added}")
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        out.append(f"{where}.securityContext.runAsNonRoot: must be true (here or in the pod's securityContext)")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        out.append(f"{where}.securityContext.runAsUser: must not be 0")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        out.append(f"{where}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost "
                   f"(here or in the pod's securityContext), found {seccomp}")
    return out


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every way the pod ``spec`` (camelCase, as in a manifest) breaks the restricted profile; empty if none."""
    pod_sc = spec.get("securityContext") or {}
    out = _volume_violations(spec) + _host_violations(spec)
    if pod_sc.get("runAsUser") == 0:
        out.append("securityContext.runAsUser: must not be 0")
    for where, c in _containers(spec):
        out += _container_violations(where, c.get("securityContext") or {}, pod_sc)
    return out


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload manifest (Pod, Job, PyTorchJob replicas); none for other kinds."""
    kind = obj.get("kind")
    if kind == "Pod":
        return [obj.get("spec") or {}]
    if kind == "Job":
        return [obj.get("spec", {}).get("template", {}).get("spec") or {}]
    if kind == "PyTorchJob":
        replicas = obj.get("spec", {}).get("pytorchReplicaSpecs") or {}
        return [r.get("template", {}).get("spec") or {} for r in replicas.values()]
    return []
