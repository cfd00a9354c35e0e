"""The Kubernetes Pod Security Standards, "baseline" and "restricted", as data; one walk that finds the pods.

A namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` rejects any pod that breaks one of these
controls (https://kubernetes.io/docs/concepts/security/pod-security-standards/; restricted includes baseline), so a
rendered manifest that breaks one would only fail at admission, on the cluster. Each rule below is one control of
the standard with the standard's own "restricted fields" and "allowed values"; ``violations`` evaluates them for a
pod (metadata + spec), and ``pod_templates`` finds every pod in any object: Pod, the template of a Deployment,
StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate, PyTorchJob replicas,
JobSet / training-runtime replicated jobs, or a CRD this module has never heard of.

Field paths: ``spec.{containers}[*]`` stands for ``containers``, ``initContainers`` and ``ephemeralContainers``;
``[*]`` is every list item, ``[glob]`` every map key matching the glob. Rules gated by Kubernetes version carry the
first version that has them (``since``; values allowed only from a version on: ``newer_values``), so a check for
several versions reports what any of them rejects. Not modelled: the Windows exemptions (``spec.os.name:
windows``) and the "optional" non-root-groups guidance, which the standard does not enforce.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

BASELINE, RESTRICTED = "baseline", "restricted"
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
MISSING: Any = object()  # a field that is not set (None counts as unset too)

Check = Literal["allowed", "required", "includes", "not", "volume_types"]


@dataclass(frozen=True)
class Rule:
    """One control of the standard.

    ``check``: ``allowed`` (unset, or one of ``values``; globs match strings), ``required`` (must be one of
    ``values``; a container field may fall back to the pod-level ``fallback``), ``includes`` (a list that must
    hold ``values[0]``), ``not`` (unset, or none of ``values``), ``volume_types`` (every volume of one of
    ``values``).
    """

    control: str
    level: str
    fields: tuple[str, ...]
    check: Check
    values: tuple[Any, ...] = ()
    newer_values: Mapping[Any, str] = field(default_factory=dict)
    fallback: str | None = None
    since: str = "1.0"


def _each_container(*paths: str) -> tuple[str, ...]:
    return tuple(p.replace("{containers}", c) for p in paths for c in CONTAINER_LISTS)


BASELINE_CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
# The safe sysctls and the version each joined, as Pod Security admission has them (k8s.io/pod-security-admission
# policy/check_sysctls.go: sysctlsAllowedV1Dot0, ...V1Dot27, ...V1Dot29, ...V1Dot32, and ...V1Dot37, added in
# April 2026 for Kubernetes 1.37).
SAFE_SYSCTLS = ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range")
NEWER_SAFE_SYSCTLS = {"net.ipv4.ip_local_reserved_ports": "1.27", "net.ipv4.tcp_keepalive_time": "1.29",
                      "net.ipv4.tcp_fin_timeout": "1.29", "net.ipv4.tcp_keepalive_intvl": "1.29",
                      "net.ipv4.tcp_keepalive_probes": "1.29", "net.ipv4.tcp_rmem": "1.32",
                      "net.ipv4.tcp_wmem": "1.32", "net.ipv4.tcp_slow_start_after_idle": "1.37",
                      "net.ipv4.tcp_notsent_lowat": "1.37"}
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret")
_PROBES = tuple(f"spec.{{containers}}[*].{p}.{h}.host" for p in ("livenessProbe", "readinessProbe", "startupProbe")
                for h in ("httpGet", "tcpSocket")) + tuple(
    f"spec.{{containers}}[*].lifecycle.{p}.{h}.host" for p in ("postStart", "preStop") for h in ("httpGet", "tcpSocket"))

RULES: tuple[Rule, ...] = (
    # --- baseline
    Rule("HostProcess", BASELINE, ("spec.securityContext.windowsOptions.hostProcess",
                                   *_each_container("spec.{containers}[*].securityContext.windowsOptions.hostProcess")),
         "allowed", (False,)),
    Rule("Host Namespaces", BASELINE, ("spec.hostNetwork", "spec.hostPID", "spec.hostIPC"), "allowed", (False,)),
    Rule("Privileged Containers", BASELINE, _each_container("spec.{containers}[*].securityContext.privileged"),
         "allowed", (False,)),
    Rule("Capabilities", BASELINE, _each_container("spec.{containers}[*].securityContext.capabilities.add[*]"),
         "allowed", BASELINE_CAPABILITIES),
    Rule("HostPath Volumes", BASELINE, ("spec.volumes[*].hostPath",), "allowed", ()),
    Rule("Host Ports", BASELINE, _each_container("spec.{containers}[*].ports[*].hostPort"), "allowed", (0,)),
    Rule("Host Probes / Lifecycle Hooks", BASELINE, _each_container(*_PROBES), "allowed", ("",), since="1.34"),
    Rule("AppArmor", BASELINE, ("spec.securityContext.appArmorProfile.type",
                                *_each_container("spec.{containers}[*].securityContext.appArmorProfile.type")),
         "allowed", ("RuntimeDefault", "Localhost")),
    Rule("AppArmor", BASELINE, ("metadata.annotations[container.apparmor.security.beta.kubernetes.io/*]",),
         "allowed", ("runtime/default", "localhost/*")),
    Rule("SELinux", BASELINE, ("spec.securityContext.seLinuxOptions.type",
                               *_each_container("spec.{containers}[*].securityContext.seLinuxOptions.type")),
         "allowed", ("", "container_t", "container_init_t", "container_kvm_t"),
         newer_values={"container_engine_t": "1.31"}),
    Rule("SELinux", BASELINE, ("spec.securityContext.seLinuxOptions.user", "spec.securityContext.seLinuxOptions.role",
                               *_each_container("spec.{containers}[*].securityContext.seLinuxOptions.user",
                                                "spec.{containers}[*].securityContext.seLinuxOptions.role")),
         "allowed", ("",)),
    Rule("/proc Mount Type", BASELINE, _each_container("spec.{containers}[*].securityContext.procMount"),
         "allowed", ("Default",)),
    Rule("Seccomp", BASELINE, ("spec.securityContext.seccompProfile.type",
                               *_each_container("spec.{containers}[*].securityContext.seccompProfile.type")),
         "allowed", ("RuntimeDefault", "Localhost")),
    Rule("Sysctls", BASELINE, ("spec.securityContext.sysctls[*].name",), "allowed", SAFE_SYSCTLS,
         newer_values=NEWER_SAFE_SYSCTLS),
    # --- restricted (everything above, and:)
    Rule("Volume Types", RESTRICTED, ("spec.volumes[*]",), "volume_types", RESTRICTED_VOLUMES),
    Rule("Privilege Escalation", RESTRICTED,
         _each_container("spec.{containers}[*].securityContext.allowPrivilegeEscalation"), "required", (False,),
         since="1.8"),
    Rule("Running as Non-root", RESTRICTED, ("spec.securityContext.runAsNonRoot",), "allowed", (True,)),
    Rule("Running as Non-root", RESTRICTED, _each_container("spec.{containers}[*].securityContext.runAsNonRoot"),
         "required", (True,), fallback="spec.securityContext.runAsNonRoot"),
    Rule("Running as Non-root user", RESTRICTED, ("spec.securityContext.runAsUser",
                                                  *_each_container("spec.{containers}[*].securityContext.runAsUser")),
         "not", (0,), since="1.23"),
    Rule("Seccomp", RESTRICTED, _each_container("spec.{containers}[*].securityContext.seccompProfile.type"),
         "required", ("RuntimeDefault", "Localhost"), fallback="spec.securityContext.seccompProfile.type",
         since="1.19"),
    Rule("Capabilities", RESTRICTED, _each_container("spec.{containers}[*].securityContext.capabilities.drop"),
         "includes", ("ALL",), since="1.22"),
    Rule("Capabilities", RESTRICTED, _each_container("spec.{containers}[*].securityContext.capabilities.add[*]"),
         "allowed", ("NET_BIND_SERVICE",), since="1.22"),
)

_SEGMENT = re.compile(r"([^.\[\]]+)(?:\[([^\]]+)\])?")


def _split(path: str) -> list[str]:
    """``a.b[x.y/*].c`` -> ``['a', 'b[x.y/*]', 'c']`` (dots inside brackets are part of a map key)."""
    return [m.group(0) for m in _SEGMENT.finditer(path)]


def _resolve(node: Any, parts: Sequence[str], where: str) -> Iterator[tuple[str, Any]]:
    """``(concrete path, value)`` for every place ``parts`` names in ``node``; MISSING where a field is unset.

    A list under ``[*]`` that is absent yields nothing (no containers, no violations); anything that is not a
    mapping where one is expected counts as unset (the schema check reports its type).
    """
    if not parts:
        yield where, node
        return
    name, selector = _SEGMENT.fullmatch(parts[0]).groups()  # type: ignore[union-attr]
    path = f"{where}.{name}" if where else name
    child = node.get(name, MISSING) if isinstance(node, dict) else MISSING
    if selector is None:
        if child is MISSING or child is None:
            yield ".".join([path, *parts[1:]]), MISSING
        else:
            yield from _resolve(child, parts[1:], path)
    elif selector == "*":
        for i, item in enumerate(child if isinstance(child, list) else []):
            label = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else i
            yield from _resolve(item, parts[1:], f"{path}[{label}]")
    else:
        for key in sorted(child) if isinstance(child, dict) else []:
            if fnmatch.fnmatchcase(str(key), selector):
                yield from _resolve(child[key], parts[1:], f"{path}[{key}]")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _matches(value: Any, allowed: Sequence[Any]) -> bool:
    for option in allowed:
        if isinstance(option, str) and isinstance(value, str) and "*" in option:
            if fnmatch.fnmatchcase(value, option):
                return True
        elif type(value) is type(option) and value == option:  # why the type: True == 1, False == 0 in Python
            return True
    return False


def _show(value: Any) -> str:
    if value is MISSING:
        return "unset"
    return json.dumps(value) if isinstance(value, bool) or value is None else repr(value)


def _describe(values: Sequence[Any]) -> str:
    if len(values) > 4:  # the sysctl and capability lists: the first few, and where the rest is
        return f"one of the {len(values)} the standard lists: {', '.join(map(_show, values[:3]))}, ..."
    return " or ".join(_show(v) for v in values)


def _rule_problems(rule: Rule, pod: dict, version: str) -> Iterator[tuple[str, str]]:
    allowed = (*rule.values, *(v for v, since in rule.newer_values.items() if _version(since) <= _version(version)))
    fallback = dict(_resolve(pod, _split(rule.fallback), "")) if rule.fallback else {}
    fallback_value = next(iter(fallback.values()), MISSING)
    for path in rule.fields:
        for where, value in _resolve(pod, _split(path), ""):
            if rule.check == "allowed" and value is not MISSING and not _matches(value, allowed):
                yield where, f"{_show(value)} is not allowed ({'unset or ' + _describe(allowed) if allowed else 'must be unset'})"
            elif rule.check == "not" and value is not MISSING and _matches(value, allowed):
                yield where, f"must not be {_describe(allowed)}"
            elif rule.check == "required":
                effective = fallback_value if value is MISSING else value
                if effective is MISSING or not _matches(effective, allowed):
                    where_else = f" (here or in {rule.fallback})" if rule.fallback else ""
                    yield where, f"must be {_describe(allowed)}{where_else}, found {_show(effective)}"
            elif rule.check == "includes" and not (isinstance(value, list) and allowed[0] in value):
                yield where, f"must include {allowed[0]}, found {_show(value)}"
            elif rule.check == "volume_types" and isinstance(value, dict):
                bad = sorted(k for k in value if k != "name" and k not in allowed)
                if bad:
                    yield where, f"type {bad[0]} is not allowed ({', '.join(allowed)})"


def violations(metadata: Mapping[str, Any] | None, spec: Mapping[str, Any],
               versions: Sequence[str] = ("1.30",), level: str = RESTRICTED) -> list[str]:
    """Every way a pod (its ``metadata`` and ``spec``, camelCase as in a manifest) breaks the profile ``level``
    ("restricted" includes "baseline") on any of the Kubernetes ``versions``; empty if none. One line each:
    ``<level> <control>: <field path>: <problem>``, with the version where not every version rejects it."""
    pod = {"metadata": dict(metadata or {}), "spec": dict(spec)}
    levels = (BASELINE,) if level == BASELINE else (BASELINE, RESTRICTED)
    found: dict[str, list[str]] = {}
    for version in versions:
        for rule in RULES:
            if rule.level in levels and _version(rule.since) <= _version(version):
                for where, problem in _rule_problems(rule, pod, version):
                    found.setdefault(f"{rule.level} {rule.control}: {where}: {problem}", []).append(version)
    return [line if len(seen) == len(versions) else f"{line} (Kubernetes {', '.join(seen)})"
            for line, seen in found.items()]


@dataclass(frozen=True)
class PodTemplate:
    """A pod found inside an object: where it is, its metadata (labels, annotations) and its spec."""

    where: str
    metadata: dict
    spec: dict


def _is_pod_spec(value: Any) -> bool:
    containers = value.get("containers") if isinstance(value, dict) else None
    return isinstance(containers, list) and all(isinstance(c, dict) for c in containers)


def pod_templates(obj: Any, where: str = "") -> list[PodTemplate]:
    """Every pod inside ``obj``, whatever its kind: an object or template with a ``spec`` holding ``containers``
    (Pod, every workload template, PyTorchJob replicas, JobSet and training-runtime replicated jobs, unknown
    CRDs), or a bare pod spec. Never raises on malformed input: what is not a mapping or list is skipped."""
    if isinstance(obj, dict):
        if _is_pod_spec(obj.get("spec")):
            meta = obj.get("metadata")
            return [PodTemplate(f"{where}.spec" if where else "spec", meta if isinstance(meta, dict) else {},
                                obj["spec"])]
        if _is_pod_spec(obj) and where:
            return [PodTemplate(where, {}, obj)]
        items = obj.items()
    elif isinstance(obj, list):
        items = ((f"[{i}]", v) for i, v in enumerate(obj))
    else:
        return []
    out: list[PodTemplate] = []
    for key, value in items:
        child = f"{where}{key}" if str(key).startswith("[") else (f"{where}.{key}" if where else str(key))
        out += pod_templates(value, child)
    return out
