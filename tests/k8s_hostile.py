"""Hostile and unlucky manifests for `udon k8s validate` (issue #25, Kubernetes): each case is a folder of files
that an enforcing Pod Security "restricted" namespace would reject (``rejected=True``), or would admit (the
controls, which must stay accepted). Used by tests/unit/test_pod_security.py, and runnable against any checkout
to count attempts and held cases (``python -m tests.k8s_hostile``)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable

import yaml

IMAGE = "registry.example.com/udon/udon-pipeline:0.1.0"


def safe_pod_spec() -> dict:
    """A pod spec that meets "restricted": the baseline every hostile case changes one thing of."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "main", "image": IMAGE, "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }


def pod(spec: dict, annotations: dict | None = None) -> dict:
    meta = {"name": "p", **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _template(spec: dict, annotations: dict | None = None) -> dict:
    meta = {"labels": {"app": "x"}, **({"annotations": annotations} if annotations else {})}
    return {"metadata": meta, "spec": spec}


def workload(kind: str, spec: dict) -> dict:
    """``spec`` as the pod template of a built-in workload kind (or a Pod / PodTemplate)."""
    selector = {"matchLabels": {"app": "x"}}
    if kind == "Pod":
        return pod(spec)
    if kind == "PodTemplate":
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "t"}, "template": _template(spec)}
    if kind == "Job":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "j"},
                "spec": {"template": _template({**spec, "restartPolicy": "Never"})}}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "c"}, "spec": {
            "schedule": "0 * * * *",
            "jobTemplate": {"spec": {"template": _template({**spec, "restartPolicy": "Never"})}}}}
    if kind == "ReplicationController":
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "r"},
                "spec": {"selector": {"app": "x"}, "template": _template(spec)}}
    body: dict[str, Any] = {"selector": selector, "template": _template(spec)}
    if kind == "StatefulSet":
        body["serviceName"] = "x"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"}, "spec": body}


def changed(change: Callable[[dict], Any]) -> dict:
    spec = copy.deepcopy(safe_pod_spec())
    change(spec)
    return spec


def _sc(spec: dict) -> dict:
    return spec["containers"][0]["securityContext"]


def _crd(spec: dict) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Experiment", "metadata": {"name": "e"},
            "spec": {"workers": [{"replicas": 2, "template": _template(spec)}]}}


@dataclass(frozen=True)
class Case:
    klass: str  # the class of failure in issue #25's words
    name: str
    files: dict[str, str]  # file name -> text
    rejected: bool  # what an enforcing restricted namespace does
    field: str = ""  # a fragment the error must name


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def _one(klass: str, name: str, obj: Any, rejected: bool, field: str = "", file: str = "m.yaml") -> Case:
    return Case(klass, name, {file: json.dumps(obj) if file.endswith(".json") else _yaml(obj)}, rejected, field)


def cases() -> list[Case]:
    """Every hostile case (and the controls that must pass), grouped by the classes issue #25 names."""
    fields: list[Case] = [
        _one("unsafe field values", "unsafe sysctl", pod(changed(lambda s: s["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "65536"}]))), True, "sysctls[kernel.msgmax]"),
        _one("unsafe field values", "procMount Unmasked", pod(changed(lambda s: _sc(s).update(procMount="Unmasked"))),
             True, "procMount"),
        _one("unsafe field values", "SELinux type", pod(changed(lambda s: _sc(s).update(
            seLinuxOptions={"type": "spc_t"}))), True, "seLinuxOptions.type"),
        _one("unsafe field values", "SELinux user", pod(changed(lambda s: s["securityContext"].update(
            seLinuxOptions={"user": "system_u"}))), True, "seLinuxOptions.user"),
        _one("unsafe field values", "SELinux role", pod(changed(lambda s: _sc(s).update(
            seLinuxOptions={"role": "sysadm_r"}))), True, "seLinuxOptions.role"),
        _one("unsafe field values", "AppArmor Unconfined (pod field)", pod(changed(lambda s: s["securityContext"].update(
            appArmorProfile={"type": "Unconfined"}))), True, "appArmorProfile.type"),
        _one("unsafe field values", "AppArmor Unconfined (container field)", pod(changed(lambda s: _sc(s).update(
            appArmorProfile={"type": "Unconfined"}))), True, "appArmorProfile.type"),
        _one("unsafe field values", "AppArmor unconfined (annotation)", pod(safe_pod_spec(), {
            "container.apparmor.security.beta.kubernetes.io/main": "unconfined"}), True, "apparmor"),
        _one("unsafe field values", "Windows HostProcess", pod(changed(lambda s: _sc(s).update(
            windowsOptions={"hostProcess": True}))), True, "hostProcess"),
        _one("unsafe field values", "seccomp Unconfined at pod level", pod(changed(lambda s: (
            s["securityContext"].update(seccompProfile={"type": "Unconfined"}),
            _sc(s).update(seccompProfile={"type": "RuntimeDefault"})))), True, "seccompProfile"),
        _one("unsafe field values", "runAsNonRoot false at pod level", pod(changed(lambda s: (
            s["securityContext"].update(runAsNonRoot=False), _sc(s).update(runAsNonRoot=True)))), True, "runAsNonRoot"),
        _one("unsafe field values", "capability beyond the baseline set", pod(changed(lambda s: _sc(s)[
            "capabilities"].update(add=["SYS_ADMIN"]))), True, "capabilities.add"),
        _one("unsafe field values", "hostPID", pod(changed(lambda s: s.update(hostPID=True))), True, "hostPID"),
        _one("unsafe field values", "host in an HTTP probe", pod(changed(lambda s: s["containers"][0].update(
            livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}))), True, "livenessProbe.httpGet.host"),
    ]
    controls = [
        _one("accepted (controls)", "safe sysctl", pod(changed(lambda s: s["securityContext"].update(
            sysctls=[{"name": "kernel.shm_rmid_forced", "value": "1"}]))), False),
        _one("accepted (controls)", "AppArmor RuntimeDefault and a localhost annotation", pod(changed(
            lambda s: _sc(s).update(appArmorProfile={"type": "RuntimeDefault"})),
            {"container.apparmor.security.beta.kubernetes.io/main": "localhost/udon"}), False),
        _one("accepted (controls)", "SELinux container_t, procMount Default", pod(changed(lambda s: _sc(s).update(
            seLinuxOptions={"type": "container_t"}, procMount="Default"))), False),
    ]
    privileged = changed(lambda s: _sc(s).update(privileged=True))
    kinds = [_one("pod-bearing kinds not looked at", f"privileged {kind}", workload(kind, privileged), True,
                  "privileged") for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                                             "ReplicationController", "CronJob", "PodTemplate")]
    safe_file = {"ok.yaml": _yaml(pod(safe_pod_spec()))}
    files = [
        Case("file types not read", "privileged Pod in a .json file beside a good .yaml",
             {**safe_file, "bad.json": json.dumps(pod(privileged))}, True, "privileged"),
        Case("file types not read", "privileged Pod in a .yml file", {"bad.yml": _yaml(pod(privileged))}, True,
             "privileged"),
        _one("file types not read", "good Pod in a .json file", pod(safe_pod_spec()), False, file="ok.json"),
    ]
    lists = {"apiVersion": "v1", "kind": "List", "items": [pod(safe_pod_spec()), workload("Deployment", privileged)]}
    crashes = [
        _one("crashes (kind: List, unknown CRDs)", "kind: List with a privileged Deployment", lists, True,
             "privileged"),
        _one("crashes (kind: List, unknown CRDs)", "unknown CRD with a privileged pod template", _crd(privileged),
             True, "privileged"),
        _one("crashes (kind: List, unknown CRDs)", "unknown CRD with a safe pod template", _crd(safe_pod_spec()),
             False),
        _one("crashes (kind: List, unknown CRDs)", "kind: List of good objects",
             {"apiVersion": "v1", "kind": "List", "items": [pod(safe_pod_spec())]}, False),
    ]
    return fields + controls + kinds + files + crashes


def run_case(case: Case, folder) -> tuple[bool, str]:
    """``(held, output)``: run `udon k8s validate` on the case's files; held = rejected with the field named
    (a hostile case) or accepted (a control), and never a traceback."""
    from click.testing import CliRunner

    from pipelines.cli.k8s import k8s

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in case.files.items():
        (folder / name).write_text(text)
    result = CliRunner().invoke(k8s, ["validate", str(folder)])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if case.rejected:
        held = not crashed and result.exit_code == 2 and case.field in result.output
    else:
        held = not crashed and result.exit_code == 0
    return held, result.output + (repr(result.exception) if crashed else "")


if __name__ == "__main__":  # attempts and held per class, for the README's reliability table
    import tempfile
    from collections import Counter
    from pathlib import Path

    attempts, held = Counter(), Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases()):
            ok, _ = run_case(case, Path(tmp) / str(i))
            attempts[case.klass] += 1
            held[case.klass] += ok
    for klass in attempts:
        print(f"{klass}: {held[klass]}/{attempts[klass]} held")
