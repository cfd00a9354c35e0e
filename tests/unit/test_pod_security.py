"""`udon k8s validate` holds the whole Pod Security "restricted" profile (baseline included) over every pod of
every kind and file type (issue #25, Kubernetes). Each hostile case failed on the code before the fix: accepted,
not looked at, or a traceback (tests/k8s_hostile.py; the README's reliability table has the counts)."""

from __future__ import annotations

import pytest

from pipelines.cluster import pod_templates, violations
from pipelines.cluster.pod_security import RULES
from tests.k8s_hostile import cases, pod, run_case, safe_pod_spec, workload

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.klass}: {c.name}" for c in CASES])
def test_validate_rejects_what_restricted_rejects_and_names_the_field(case, tmp_path):
    held, output = run_case(case, tmp_path)
    assert held, output
    if case.rejected:  # one line per problem, no traceback
        assert output.startswith("error: ") and "Traceback" not in output


def test_every_kind_yields_its_pod_once_with_its_metadata():
    for kind in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
                 "CronJob", "PodTemplate"):
        (found,) = pod_templates(workload(kind, safe_pod_spec()))
        assert found.spec["containers"][0]["name"] == "main", kind
        assert found.metadata.get("labels", {}).get("app") == "x" or kind == "Pod"


def test_malformed_objects_never_crash_the_walk_or_the_rules():
    junk = [None, 3, "text", [], {"spec": "x"}, {"spec": {"containers": "x"}}, {"spec": {"containers": [1, "a"]}},
            {"kind": "Pod", "spec": {"containers": [{"securityContext": "x", "ports": "y"}], "volumes": [3]}}]
    for obj in junk:
        for found in pod_templates(obj):
            violations(found.metadata, found.spec, ("1.30", "1.37"))
    bad = {"containers": [{"name": "c", "securityContext": "x"}], "securityContext": [1], "volumes": [3, None]}
    assert any("allowPrivilegeEscalation" in v for v in violations(None, bad))


def test_version_gated_rules_name_the_versions_that_reject():
    spec = safe_pod_spec()
    spec["containers"][0]["securityContext"]["seLinuxOptions"] = {"type": "container_engine_t"}  # allowed from 1.31
    (line,) = violations(None, spec, ("1.30", "1.37"))
    assert line.endswith("(Kubernetes 1.30)") and "seLinuxOptions.type" in line
    assert violations(None, spec, ("1.31", "1.37")) == []
    probe = safe_pod_spec()
    probe["containers"][0]["readinessProbe"] = {"tcpSocket": {"host": "example.com", "port": 1}}
    assert [v for v in violations(None, probe, ("1.33", "1.34")) if "(Kubernetes 1.34)" in v]  # a 1.34 control


def test_rules_cover_every_control_of_both_profiles():
    controls = {(r.level, r.control) for r in RULES}
    assert {c for level, c in controls if level == "baseline"} == {
        "HostProcess", "Host Namespaces", "Privileged Containers", "Capabilities", "HostPath Volumes", "Host Ports",
        "Host Probes / Lifecycle Hooks", "AppArmor", "SELinux", "/proc Mount Type", "Seccomp", "Sysctls"}
    assert {c for level, c in controls if level == "restricted"} == {
        "Volume Types", "Privilege Escalation", "Running as Non-root", "Running as Non-root user", "Seccomp",
        "Capabilities"}


def test_baseline_level_leaves_out_the_restricted_rules():
    spec = safe_pod_spec()
    del spec["containers"][0]["securityContext"]  # restricted: escalation, capabilities; baseline: fine
    assert violations(None, spec, level="baseline") == []
    assert len(violations(None, spec)) == 2
    # the metadata is read: an AppArmor annotation that unconfines the container is a third finding
    unconfined = pod(spec, {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"})["metadata"]
    assert violations(unconfined, spec) == [
        "baseline AppArmor: metadata.annotations[container.apparmor.security.beta.kubernetes.io/main]: "
        "'unconfined' is not allowed (unset or 'runtime/default' or 'localhost/*')", *violations(None, spec)]
    confined = pod(spec, {"container.apparmor.security.beta.kubernetes.io/main": "localhost/udon"})["metadata"]
    assert violations(confined, spec) == violations(None, spec)


@pytest.mark.parametrize(("sysctl", "rejected_on"), [
    # Pod Security admission's allowed sets (policy/check_sysctls.go): V1Dot0, V1Dot27, V1Dot29, V1Dot32, V1Dot37
    ("kernel.shm_rmid_forced", []),
    ("net.ipv4.ip_local_reserved_ports", ["1.26"]),
    ("net.ipv4.tcp_keepalive_probes", ["1.26", "1.28"]),
    ("net.ipv4.tcp_rmem", ["1.26", "1.28", "1.31"]),
    ("net.ipv4.tcp_wmem", ["1.26", "1.28", "1.31"]),
    ("net.ipv4.tcp_slow_start_after_idle", ["1.26", "1.28", "1.31", "1.32", "1.36"]),
    ("net.ipv4.tcp_notsent_lowat", ["1.26", "1.28", "1.31", "1.32", "1.36"]),
    ("net.core.somaxconn", ["1.26", "1.28", "1.31", "1.32", "1.36", "1.37"]),
])
def test_each_safe_sysctl_is_allowed_from_the_version_that_added_it(sysctl, rejected_on):
    versions = ("1.26", "1.28", "1.31", "1.32", "1.36", "1.37")
    spec = safe_pod_spec()
    spec["securityContext"]["sysctls"] = [{"name": sysctl, "value": "1"}]
    for version in versions:
        lines = violations(None, spec, (version,))
        assert bool(lines) == (version in rejected_on), (sysctl, version, lines)
        if lines:
            (line,) = lines
            assert line.startswith(f"baseline Sysctls: spec.securityContext.sysctls[{sysctl}].name: ")
