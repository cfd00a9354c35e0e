"""Submitting a TrainJob and watching it, with the Kubernetes client: status, failure reason, logs of node 0.

Used by ``udon k8s submit --trainjob`` and by the ``udon_trainjob`` step operator, with the Kubernetes client's
``CustomObjectsApi`` and ``CoreV1Api`` (or fakes of them in tests). Before anything is created: the cluster must
serve the TrainJob API (a sentence, not a 404, when Kubeflow Trainer is not installed), the runtime must exist,
and the pods Trainer would build from *that* runtime must pass Pod Security "restricted". After creating, the
stored object must still hold our ``runtimePatches``: a Trainer older than 2.2 drops them silently, and its pods
would start without their volumes and security contexts, so the TrainJob is deleted again and the run refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.cluster.trainjob import (
    API_VERSION,
    DEFAULT_TIMEOUT_SECONDS,
    GROUP,
    NODE,
    PLURAL,
    RUNTIME_PLURALS,
    SUPPORTED_TRAINER,
    VERSION,
    unknown_fields,
)
from udon_core.errors import UdonUserError

JOBSET_LABEL, REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/jobset-name", "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
LEGACY_HINT = "or use the legacy PyTorchJob route (`udon k8s render --nodes N`) on a Training Operator v1 cluster"


class ClusterAccessError(UdonUserError, RuntimeError):
    """The cluster cannot be reached or refused a request; the message says which and why."""


class TrainJobUnavailable(UdonUserError, RuntimeError):
    """The cluster has no TrainJob API, no such runtime, or a Trainer too old for our TrainJob."""


class TrainJobFailed(UdonUserError, RuntimeError):
    """The TrainJob ended failed (or the watch timed out); the message has the reason and node 0's last lines."""


@dataclass(frozen=True)
class TrainJobOutcome:
    name: str
    namespace: str
    status: str  # Complete, or Submitted when not waited for
    message: str = ""


def _status(err: Exception) -> int | None:
    return getattr(err, "status", None)


def _reason(err: Exception) -> str:
    import json

    body = getattr(err, "body", None)
    try:
        return json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(getattr(err, "reason", None) or err).strip()


def require_trainjob_api(custom: Any) -> None:
    """Raise TrainJobUnavailable unless the API server serves trainjobs in trainer.kubeflow.org/v1alpha1."""
    try:
        resources = custom.get_api_resources(GROUP, VERSION)
    except Exception as err:  # noqa: BLE001 - ApiException or a transport error, told apart below
        if _status(err) == 404:
            raise TrainJobUnavailable(
                f"the cluster has no TrainJob CRD ({API_VERSION}): install Kubeflow Trainer "
                f"{' or '.join(SUPPORTED_TRAINER)}, {LEGACY_HINT}") from err
        raise ClusterAccessError(f"cannot ask the cluster for the TrainJob API: {_reason(err)}") from err
    names = {getattr(r, "name", None) for r in getattr(resources, "resources", None) or []}
    if PLURAL not in names:
        raise TrainJobUnavailable(f"the cluster serves {API_VERSION} but not its trainjobs resource: install "
                                  f"Kubeflow Trainer {' or '.join(SUPPORTED_TRAINER)}, {LEGACY_HINT}")


def fetch_runtime(custom: Any, ref: Mapping[str, Any], namespace: str) -> dict | None:
    """The runtime a TrainJob refers to; None when this account may not read it (the webhook still checks)."""
    kind = ref.get("kind") or "ClusterTrainingRuntime"
    try:
        if kind == "ClusterTrainingRuntime":
            return custom.get_cluster_custom_object(GROUP, VERSION, RUNTIME_PLURALS[kind], ref["name"])
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNTIME_PLURALS[kind], ref["name"])
    except Exception as err:  # noqa: BLE001
        if _status(err) == 404:
            where = "" if kind == "ClusterTrainingRuntime" else f" in namespace {namespace}"
            raise TrainJobUnavailable(
                f"the cluster has no {kind} '{ref['name']}'{where}: list them with `kubectl get "
                f"{RUNTIME_PLURALS[kind]}` and set trainjob_runtime in the cluster configuration") from err
        if _status(err) == 403:
            return None
        raise ClusterAccessError(f"cannot read {kind} '{ref['name']}': {_reason(err)}") from err


def apply_config_map(core: Any, config_map: Mapping[str, Any]) -> None:
    """Create the training config map, or replace it when it exists (a resubmitted run may change it)."""
    meta = config_map["metadata"]
    try:
        core.create_namespaced_config_map(meta["namespace"], config_map)
    except Exception as err:  # noqa: BLE001
        if _status(err) == 409:
            core.replace_namespaced_config_map(meta["name"], meta["namespace"], config_map)
        elif _status(err) == 404:
            raise ClusterAccessError(
                f"namespace {meta['namespace']} does not exist: apply the rendered setup objects first "
                "(udon k8s render --trainjob OUT.yaml --train-config ... && kubectl apply -f OUT.yaml)") from err
        else:
            raise ClusterAccessError(f"cannot write config map {meta['name']}: {_reason(err)}") from err


def create_trainjob(custom: Any, job: Mapping[str, Any]) -> dict:
    """Create the TrainJob; refuse (and delete it again) when the server dropped its runtime patches."""
    meta = job["metadata"]
    try:
        stored = custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, job)
    except Exception as err:  # noqa: BLE001
        if _status(err) == 409:
            raise ClusterAccessError(
                f"TrainJob {meta['name']} already exists in namespace {meta['namespace']}: delete it to run again "
                "(the same name resumes from its checkpoints) or choose another --job-name") from err
        raise ClusterAccessError(f"the cluster refused TrainJob {meta['name']}: {_reason(err)}") from err
    dropped = unknown_fields(job["spec"], (stored or {}).get("spec") or {}, "spec")
    if dropped:  # why: a CRD prunes fields it does not know, silently; the pods would lack what they name
        custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        raise TrainJobUnavailable(
            f"this cluster's Kubeflow Trainer dropped {', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''} "
            "(a Trainer older than 2.2, or one without these fields), so the pods would start without them; "
            f"TrainJob {meta['name']} was deleted again: use Trainer {' or '.join(SUPPORTED_TRAINER)}, {LEGACY_HINT}")
    return stored


def terminal_status(job: Mapping[str, Any]) -> tuple[bool, str] | None:
    """``(succeeded, reason)`` once the TrainJob is Complete or Failed; None while it runs (or is suspended)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if str(condition.get("status")).lower() != "true":
            continue
        detail = ": ".join(str(x) for x in (condition.get("reason"), condition.get("message")) if x)
        if condition.get("type") == "Complete":
            return True, detail
        if condition.get("type") == "Failed":
            return False, detail or "no reason given"
    return None


def node0_logs(core: Any, namespace: str, name: str, tail: int = 40) -> str:
    """The last ``tail`` lines of the trainer container of node 0 (rank 0 logs the run); a note if none."""
    selector = f"{JOBSET_LABEL}={name},{REPLICATED_JOB_LABEL}={NODE},{JOB_INDEX_LABEL}=0"
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if not pods:
            return "(no pod of node 0 found)"
        pod = max(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))
        return core.read_namespaced_pod_log(pod.metadata.name, namespace, container=NODE, tail_lines=tail)
    except Exception as err:  # noqa: BLE001 - the logs are a courtesy; the status already says what happened
        return f"(no logs of node 0: {_reason(err)})"


# why these waits: an API server restart or a control-plane upgrade answers 5xx or drops connections for a minute
# or two; a watch of hours must outlive that, and still fail in minutes when the cluster is really gone.
READ_RETRY_SECONDS = (5, 10, 20, 40, 80, 160)
WATCH_GRACE_SECONDS = 300  # past the TrainJob's deadline, for Trainer to mark it Failed (DeadlineExceeded)


def _transient(err: Exception) -> bool:
    """A server error (5xx), throttling (429), or a connection that failed or broke: worth another try."""
    import urllib3

    status = _status(err)
    if status:
        return status == 429 or status >= 500
    return status == 0 or isinstance(err, (OSError, urllib3.exceptions.HTTPError))  # 0: the client's SSL error


def read_trainjob(custom: Any, namespace: str, name: str, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The TrainJob as stored, with a few tries over ~5 min on transient errors (``READ_RETRY_SECONDS``).

    Raises:
        ClusterAccessError: a refusal (403, 404), or transient errors past the last try.
    """
    for attempt, wait in enumerate((*READ_RETRY_SECONDS, None)):
        try:
            return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as err:  # noqa: BLE001 - ApiException or a transport error, told apart by _transient
            if wait is None or not _transient(err):
                tries = f" ({attempt + 1} tries over {sum(READ_RETRY_SECONDS[:attempt]):.0f} s)" if attempt else ""
                raise ClusterAccessError(f"cannot read TrainJob {name}{tries}: {_reason(err)} (it may still run: "
                                         f"kubectl -n {namespace} get trainjob {name})") from err
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def watch_trainjob(custom: Any, core: Any, namespace: str, name: str, *, poll_seconds: float = 10.0,
                   timeout_seconds: float, echo: Callable[[str], None] = print,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> TrainJobOutcome:
    """Poll the TrainJob until it is Complete (returned) or Failed (TrainJobFailed with node 0's log tail), for at
    most ``timeout_seconds`` (TrainJobFailed naming its last status: a Suspended TrainJob waits for its queue, a
    Pending one for nodes or its image, and neither ever fails by itself)."""
    start, last = clock(), None
    while True:
        job = read_trainjob(custom, namespace, name, sleep)
        conditions = [f"{c.get('type')}={c.get('status')}" for c in (job.get("status") or {}).get("conditions") or []]
        if conditions != last:
            echo(f"TrainJob {name}: {', '.join(conditions) or 'created, no status yet'}")
            last = conditions
        done = terminal_status(job)
        if done and done[0]:
            return TrainJobOutcome(name, namespace, "Complete", done[1])
        if done:
            raise TrainJobFailed(f"TrainJob {name} failed: {done[1]}\nlast lines of node 0:\n"
                                 f"{node0_logs(core, namespace, name)}")
        if clock() - start > timeout_seconds:
            ends = ("the cluster ends it at its activeDeadlineSeconds" if (job.get("spec") or {}).get(
                "activeDeadlineSeconds") else "it goes on")
            raise TrainJobFailed(f"TrainJob {name} did not finish within {timeout_seconds:.0f} s (last status: "
                                 f"{', '.join(conditions) or 'none'}; {ends}): kubectl -n {namespace} describe "
                                 f"trainjob {name}")
        sleep(poll_seconds)


def watch_timeout(job: Mapping[str, Any]) -> float:
    """How long to watch ``job`` by default: its ``spec.activeDeadlineSeconds`` and the time Trainer takes to mark
    it Failed, else the default deadline (``trainjob.DEFAULT_TIMEOUT_SECONDS``): never unbounded."""
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    return float(deadline or DEFAULT_TIMEOUT_SECONDS) + WATCH_GRACE_SECONDS


def submit_trainjob(manifests: Mapping[str, Mapping[str, Any]], custom: Any, core: Any, *,
                    versions: Sequence[str] | None = None, gpu_resource: str = "nvidia.com/gpu", wait: bool = True,
                    poll_seconds: float = 10.0, timeout_seconds: float | None = None,
                    echo: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> TrainJobOutcome:
    """Submit the TrainJob of ``manifests`` (and its ConfigMap, if any) and, with ``wait``, watch it to the end or
    for ``timeout_seconds`` (None: ``watch_timeout``, the TrainJob's own deadline and a grace).

    Raises:
        TrainJobUnavailable: no TrainJob API, no such runtime, or a Trainer that drops runtime patches.
        ManifestError: the pods Trainer would build from the cluster's runtime break Pod Security "restricted".
        ClusterAccessError / TrainJobFailed: the cluster refused a request, or the run failed.
    """
    from pipelines.cluster.validation import validate_manifests

    (job,) = [m for m in manifests.values() if m.get("kind") == "TrainJob"]
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    require_trainjob_api(custom)
    runtime = fetch_runtime(custom, job["spec"]["runtimeRef"], namespace)
    if runtime is None:
        echo(f"note: this account may not read runtime '{job['spec']['runtimeRef']['name']}'; its pods were checked "
             "on the shape of torch-distributed, and Trainer's webhook checks the reference")
    validate_manifests({f"TrainJob {name}": job}, versions, gpu_resource=gpu_resource,
                       runtimes={job["spec"]["runtimeRef"]["name"]: runtime} if runtime else None)
    for config_map in (m for m in manifests.values() if m.get("kind") == "ConfigMap"):
        apply_config_map(core, config_map)
    create_trainjob(custom, job)
    echo(f"TrainJob {name} created in namespace {namespace} (runtime {job['spec']['runtimeRef']['name']})")
    if not wait:
        return TrainJobOutcome(name, namespace, "Submitted")
    return watch_trainjob(custom, core, namespace, name, poll_seconds=poll_seconds, echo=echo, sleep=sleep,
                          timeout_seconds=watch_timeout(job) if timeout_seconds is None else timeout_seconds)


def kube_apis(context: str | None = None, incluster: bool = False) -> tuple[Any, Any]:
    """``(CustomObjectsApi, CoreV1Api)`` from the kubeconfig (or the pod's service account)."""
    from kubernetes import client, config

    try:
        if incluster:
            config.load_incluster_config()
        else:
            config.load_kube_config(context=context)
    except (config.ConfigException, OSError, TypeError) as err:
        raise ClusterAccessError(f"no Kubernetes cluster to submit to ({err}): set KUBECONFIG or --context") from err
    api = client.ApiClient()
    return client.CustomObjectsApi(api), client.CoreV1Api(api)
