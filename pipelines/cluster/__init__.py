"""Cluster settings, defined once: the ZenML step-operator pod and the torchrun Job / PyTorchJob manifests.

`configs/cluster.yaml` is read into a `ClusterConfig` (config.py); one pod-parts builder (pod.py) turns it
into Kubernetes objects (resources, volumes, tolerations, security contexts, env), and both consumers take
their pieces from it:

- zenml_settings.py: what ZenML's Kubernetes step operator puts in the pod of the `model_trainer` step (GPU
  limits go in `pod_settings.resources`; ZenML 0.98 does not turn `ResourceSettings` into pod resources);
- manifests.py: a namespace, service accounts, least-privilege RBAC, a PVC for data and checkpoints, the
  training config as a ConfigMap, and the run: a Kubeflow Trainer v2 `TrainJob` (trainjob.py: N nodes x G
  GPUs, ``torchrun`` with the runtime's ``PET_*`` env, pod settings as runtime patches), a single-node
  `batch/v1` Job (``torchrun --standalone``), or the legacy Kubeflow `PyTorchJob` (Training Operator v1);
- submit.py: creates a TrainJob and watches it; trainjob_operator.py: the `udon_trainjob` step operator flavor,
  `model_trainer` as a TrainJob (imported only where ZenML runs);
- kubeflow.py: the `udon_kubeflow` orchestrator flavor, ZenML's Kubeflow Pipelines orchestrator with the train
  step's GPUs, memory and scheduling applied to its KFP task (imported only where ZenML's kubeflow integration is);
- validation.py and pod_security.py check what was rendered (Pod Security baseline + restricted over every pod
  of any object); files.py writes and reads it.

So the image, the resources and the mounts of a ZenML run and of a manifest run cannot drift apart.

Restart semantics: every manifest container runs ``torchrun ... -m udon_core.train --config <file> --resume
auto`` with ``UDON_CHECKPOINT_DIR=<checkpoint_path>/<job name>`` on the shared volume; a restarted pod (Job
backoff, PyTorchJob ``OnFailure``) resumes from the newest verified checkpoint there. Same job name = same run = resume.
"""

from __future__ import annotations

from pipelines.cluster.config import (
    KUBEFLOW_FLAVOR,
    TRAINJOB_FLAVOR,
    ClusterConfig,
    ClusterConfigError,
    load_cluster_config,
    read_yaml_mapping,
)
from pipelines.cluster.files import expand_lists, read_manifests, write_manifest_file, write_manifests
from pipelines.cluster.manifests import render_manifests
from pipelines.cluster.pod import pod_parts, trainer_args
from pipelines.cluster.pod_security import PodTemplate, pod_templates, violations
from pipelines.cluster.validation import ManifestError, ValidationSummary, default_versions, validate_manifests
from pipelines.cluster.zenml_settings import (
    cluster_run_settings,
    docker_settings,
    kubeflow_pipeline_settings,
    kubeflow_train_step_settings,
    step_operator_settings,
    train_step_settings,
    trainjob_step_settings,
)

__all__ = [
    "KUBEFLOW_FLAVOR", "TRAINJOB_FLAVOR", "ClusterConfig", "ClusterConfigError", "ManifestError", "cluster_run_settings",
    "default_versions", "docker_settings",
    "kubeflow_pipeline_settings", "kubeflow_train_step_settings",
    "PodTemplate", "ValidationSummary", "expand_lists",
    "load_cluster_config", "pod_parts", "pod_templates", "read_manifests", "read_yaml_mapping", "render_manifests",
    "step_operator_settings", "train_step_settings", "trainjob_step_settings", "trainer_args", "validate_manifests", "violations",
    "write_manifest_file", "write_manifests",
]
