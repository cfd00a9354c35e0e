"""Kubeflow Pipelines through ZenML: the ``udon_kubeflow`` orchestrator flavor.

It is ZenML's Kubeflow orchestrator with what its 0.98 release loses on the way to a KFP 2.x PipelineSpec put
back, from ``configs/cluster.yaml`` through the step's settings (``kubeflow_train_step_settings``):

- the GPU request: ZenML only turns ``ResourceSettings.gpu_count`` into an accelerator when an
  ``accelerator`` node selector reaches it, and its settings drop every node selector;
- memory: ZenML hands kfp a float, which kfp refuses; here the limit and the request are the cluster
  config's Kubernetes quantities;
- CPU request, node selector, tolerations, the memory-backed ``/dev/shm`` and image pull secrets, through
  ``kfp-kubernetes`` (the platform spec KFP 2.x honours; other pod settings are ignored by KFP 2.x).

``pipeline_file`` (a component setting) writes the compiled PipelineSpec there instead of submitting it:
``udon k8s render --kubeflow-pipeline`` uses it to compile the real pipeline offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import (
    KubeflowOrchestratorConfig,
    KubeflowOrchestratorFlavor,
    KubeflowOrchestratorSettings,
)
from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator

from pipelines.cluster.config import KUBEFLOW_FLAVOR as FLAVOR

if TYPE_CHECKING:
    from kfp import dsl
    from zenml.config import ResourceSettings

FLAVOR_SOURCE = "pipelines.cluster.kubeflow.UdonKubeflowOrchestratorFlavor"


class UdonKubeflowSettings(KubeflowOrchestratorSettings):
    """Per-step pod settings that reach a KFP 2.x task (all empty: ZenML's behaviour)."""

    accelerator_type: str = Field(default="nvidia.com/gpu", description="the GPU resource a GPU step requests")
    cpu_request: str | None = Field(default=None, description="Kubernetes quantity, e.g. '8'")
    memory_request: str | None = Field(default=None, description="Kubernetes quantity, e.g. '48Gi'")
    memory_limit: str | None = Field(default=None, description="Kubernetes quantity, e.g. '64Gi'")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="key, operator, value, effect")
    shm_size: str | None = Field(default=None, description="memory-backed /dev/shm of this size")
    image_pull_secrets: list[str] = Field(default_factory=list)


class UdonKubeflowOrchestratorConfig(KubeflowOrchestratorConfig, UdonKubeflowSettings):
    """ZenML's Kubeflow orchestrator config, plus the settings above and ``pipeline_file``."""

    pipeline_file: str | None = Field(
        default=None, description="write the compiled PipelineSpec to this file instead of submitting it")


class UdonKubeflowOrchestrator(KubeflowOrchestrator):
    """ZenML's Kubeflow orchestrator with each step's resources and scheduling applied to its KFP task."""

    _snapshot: Any = None

    @property
    def config(self) -> UdonKubeflowOrchestratorConfig:
        return self._config  # type: ignore[return-value]

    @property
    def settings_class(self) -> type[UdonKubeflowSettings]:
        return UdonKubeflowSettings

    def submit_pipeline(self, snapshot: Any, *args: Any, **kwargs: Any) -> Any:
        # why: the per-task hook below gets the task, not the step; the snapshot maps its name to the step.
        self._snapshot = snapshot
        try:
            return super().submit_pipeline(snapshot, *args, **kwargs)
        finally:
            self._snapshot = None

    def _configure_container_resources(self, task: dsl.PipelineTask, resource_settings: ResourceSettings,
                                       node_selector_constraint: tuple[str, str] | None = None) -> dsl.PipelineTask:
        step = self._snapshot.step_configurations[task._task_spec.display_name]
        settings: UdonKubeflowSettings = self.get_settings(step)  # type: ignore[assignment]
        without_memory = resource_settings.model_copy(update={"memory": None})
        constraint = node_selector_constraint or ("accelerator", settings.accelerator_type)
        task = super()._configure_container_resources(task, without_memory, constraint)
        return apply_pod_settings(task, settings)

    def _upload_and_run_pipeline(self, snapshot: Any, pipeline_file_path: str, run_name: str) -> Any:
        if self.config.pipeline_file is None:
            return super()._upload_and_run_pipeline(snapshot, pipeline_file_path, run_name)
        out = Path(self.config.pipeline_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pipeline_file_path, out)
        # why: the spec's tasks only name a snapshot on the server; what each pod will run with (parameters,
        # settings) is in the snapshot, written beside the spec for review.
        steps = {name: step.config.model_dump(mode="json", exclude_defaults=True)
                 for name, step in snapshot.step_configurations.items()}
        steps_file(out).write_text(json.dumps(steps, indent=2, sort_keys=True) + "\n")
        return None


def steps_file(pipeline_file: Path) -> Path:
    """Where ``pipeline_file`` mode writes each step's configuration: beside the spec, ``<stem>.steps.json``."""
    return pipeline_file.with_name(f"{pipeline_file.stem}.steps.json")


def apply_pod_settings(task: dsl.PipelineTask, settings: UdonKubeflowSettings) -> dsl.PipelineTask:
    """Memory and CPU requests, node selector, tolerations, shm and pull secrets on one KFP task."""
    from kfp import kubernetes

    if settings.cpu_request:
        task.set_cpu_request(settings.cpu_request)
    if settings.memory_request:
        task.set_memory_request(settings.memory_request)
    if settings.memory_limit:
        task.set_memory_limit(settings.memory_limit)
    for key, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for t in settings.tolerations:
        kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                  effect=t.get("effect"), toleration_seconds=t.get("toleration_seconds"))
    if settings.shm_size:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=settings.shm_size)
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))
    return task


class UdonKubeflowOrchestratorFlavor(KubeflowOrchestratorFlavor):
    """Registered once per ZenML server: ``zenml orchestrator flavor register {FLAVOR_SOURCE}``."""

    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def config_class(self) -> type[UdonKubeflowOrchestratorConfig]:
        return UdonKubeflowOrchestratorConfig

    @property
    def implementation_class(self) -> type[UdonKubeflowOrchestrator]:
        return UdonKubeflowOrchestrator
