"""The ``udon_trainjob`` step operator flavor: the ``model_trainer`` step as a Kubeflow Trainer v2 TrainJob.

ZenML 0.98 (the newest on PyPI) has no TrainJob step operator; ZenML's upstream one (not yet released) names its
settings as ``TrainJobSettings`` does (k8s/README.md names the file and commit), so that moving to it later is a
configuration change. What differs, and why:

- every node runs ``torchrun -m zenml.entrypoints.entrypoint <ZenML's step arguments>``: ``numProcPerNode``
  processes per pod (8-GPU pods keep NVLink inside a node), where upstream starts one process per pod;
- pod-level settings (``pod_template_overrides``, upstream's shape) go in ``spec.runtimePatches``: the API of
  Trainer 2.2+, whose servers drop upstream's ``podTemplateOverrides`` (``submit.create_trainjob`` refuses an older
  Trainer instead of starting pods without their volumes);
- rank 0 runs the ZenML step (inputs, MLflow logging, outputs, lineage); every other rank loads the same inputs
  through ZenML's client and runs the same training with them (``follow_model_trainer``), publishing nothing.
  The ranks meet in one process group (``udon_core.training.distributed``) and end with one model, which the
  trainer checks by comparing every rank's weights.

Registered per ZenML server with ``zenml step-operator flavor register {FLAVOR_SOURCE}`` (k8s/register_stack.sh,
STEP_OPERATOR=trainjob).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, cast

from zenml.config.base_settings import BaseSettings
from zenml.config.build_configuration import BuildConfiguration
from zenml.enums import StackComponentType
from zenml.logger import get_logger
from zenml.stack import StackValidator
from zenml.step_operators import BaseStepOperator, BaseStepOperatorConfig, BaseStepOperatorFlavor
from zenml.step_operators.step_operator_entrypoint_configuration import StepOperatorEntrypointConfiguration

from pipelines.cluster.config import TRAINJOB_FLAVOR as FLAVOR
from pipelines.cluster.trainjob import TrainJobSettings, build_trainjob, label_value

if TYPE_CHECKING:
    from zenml.config.step_run_info import StepRunInfo
    from zenml.models import PipelineSnapshotBase, StepRunResponse

logger = get_logger(__name__)
FLAVOR_SOURCE = "pipelines.cluster.trainjob_operator.TrainJobStepOperatorFlavor"
DOCKER_KEY = "udon_trainjob_step_operator"


class TrainJobStepOperatorSettings(BaseSettings, TrainJobSettings):
    """Per-step settings (``settings={"step_operator": ...}``), with upstream's names."""


class TrainJobStepOperatorConfig(BaseStepOperatorConfig, TrainJobStepOperatorSettings):
    """The component's configuration: defaults for every step it runs."""

    @property
    def is_remote(self) -> bool:
        return True


class TrainJobEntrypointConfiguration(StepOperatorEntrypointConfiguration):
    """ZenML's step entrypoint on every rank: rank 0 runs the step, the others follow it (module docstring)."""

    def _run_step(self, step: Any, snapshot: Any) -> None:
        if int(os.environ.get("RANK", "0")) == 0:
            super()._run_step(step, snapshot)
            return
        logger.info("rank %s: training replica of step %s; rank 0 publishes", os.environ["RANK"], step.config.name)
        follow_model_trainer(self.step_run)


def follow_model_trainer(step_run: StepRunResponse) -> None:
    """What ``steps.model_trainer`` does with its inputs, for a rank that is not 0: the same model (same seed),
    the same teachers, the same data version and checkpoint folder, no tracker and no outputs."""
    from steps.model_trainer import train_on_pinned_data
    from udon_core.training import TrainingJobConfig, build_model

    inputs = {name: artifacts[0].load() for name, artifacts in step_run.inputs.items()}
    config = TrainingJobConfig.model_validate(step_run.config.parameters["config"])
    manifest, dataset = inputs["manifest"], inputs["dataset"]
    model = build_model(config, manifest, dataset.benchmark)
    train_on_pinned_data(model, config, manifest, dataset, callback=None, progress=False)


def trainjob_name(run_id: str, step_name: str) -> str:
    """A DNS-1035 name, unique per step run: ``udon-<8 hex of the run>-<step>`` (at most 40 characters)."""
    step = re.sub(r"[^a-z0-9-]+", "-", step_name.lower()).strip("-")[:22] or "step"
    return f"udon-{re.sub(r'[^a-f0-9]', '', str(run_id).lower())[:8]}-{step}".rstrip("-")


def step_labels(info: StepRunInfo) -> dict[str, str]:
    """What ties the TrainJob to ZenML (run, pipeline, step) and to the data version the run pinned."""
    labels = {"udon-pipeline/zenml-run": str(info.run_name), "udon-pipeline/zenml-run-id": str(info.run_id),
              "udon-pipeline/zenml-pipeline": str(info.pipeline.name), "udon-pipeline/zenml-step":
              info.pipeline_step_name}
    try:
        data = info.snapshot.step_configurations["data_ingester"].config.parameters["config"]
        labels["udon-pipeline/data-version"] = str(data["pinned_md5"])
    except (KeyError, TypeError, AttributeError):
        pass
    return {k: label_value(v) for k, v in labels.items() if v and v != "None"}


def step_trainjob(settings: TrainJobSettings, info: StepRunInfo, entrypoint_command: list[str],
                  environment: dict[str, str], image: str) -> dict:
    """The TrainJob of one step run: ZenML's step entrypoint under torchrun on every node."""
    namespace = settings.kubernetes_namespace
    job = build_trainjob(
        settings, name=trainjob_name(str(info.run_id), info.pipeline_step_name), namespace=namespace, image=image,
        command=["torchrun"], args=["-m", entrypoint_command[2], *entrypoint_command[3:]], env=environment,
        labels=step_labels(info), annotations={"zenml.step_name": info.pipeline_step_name,
                                               "zenml.step_run_id": str(info.step_run_id)})
    return job.to_dict()


class TrainJobStepOperator(BaseStepOperator):
    """Runs a step as a TrainJob and waits for it: status, failure reason and node 0's logs in the step's log."""

    @property
    def config(self) -> TrainJobStepOperatorConfig:
        return cast(TrainJobStepOperatorConfig, self._config)

    @property
    def settings_class(self) -> type[BaseSettings]:
        return TrainJobStepOperatorSettings

    @property
    def entrypoint_config_class(self) -> type[StepOperatorEntrypointConfiguration]:
        return TrainJobEntrypointConfiguration

    @property
    def validator(self) -> StackValidator:
        def remote_artifacts(stack: Any) -> tuple[bool, str]:
            if stack.artifact_store.config.is_local:
                return False, (f"the TrainJob pods cannot reach the local artifact store "
                               f"'{stack.artifact_store.name}': use a remote one (k8s/register_stack.sh)")
            return True, ""

        return StackValidator(required_components={StackComponentType.CONTAINER_REGISTRY,
                                                   StackComponentType.IMAGE_BUILDER},
                              custom_validation_function=remote_artifacts)

    def get_docker_builds(self, snapshot: PipelineSnapshotBase) -> list[BuildConfiguration]:
        return [BuildConfiguration(key=DOCKER_KEY, settings=step.config.docker_settings, step_name=name)
                for name, step in snapshot.step_configurations.items() if step.config.uses_step_operator(self.name)]

    def launch(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> None:
        from pipelines.cluster.submit import kube_apis, submit_trainjob
        from pipelines.cluster.trainjob import GROUP, PLURAL, VERSION

        settings = cast(TrainJobStepOperatorSettings, self.get_settings(info))
        # why: the image ZenML built for this step holds the pipeline's code; only an image the user set for
        # the step (or the component) replaces it.
        image = settings.image or info.get_image(key=DOCKER_KEY)
        job = step_trainjob(settings, info, entrypoint_command, environment, image)
        custom, core = kube_apis(settings.kubernetes_context, settings.incluster)
        info.force_write_logs()
        try:
            # the watch's bound follows the TrainJob's deadline (settings.timeout_seconds) with a grace
            submit_trainjob({"TrainJob": job}, custom, core, poll_seconds=settings.poll_interval_seconds,
                            echo=logger.info)
        finally:
            if settings.delete_trainjob_after_completion:
                meta = job["metadata"]
                try:
                    custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
                except Exception as err:  # noqa: BLE001 - cleanup only; the run's own outcome is what counts
                    logger.warning("could not delete TrainJob %s: %s", meta["name"], err)


class TrainJobStepOperatorFlavor(BaseStepOperatorFlavor):
    """``udon_trainjob``: registered once per ZenML server (k8s/register_stack.sh STEP_OPERATOR=trainjob)."""

    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def config_class(self) -> type[TrainJobStepOperatorConfig]:
        return TrainJobStepOperatorConfig

    @property
    def implementation_class(self) -> type[TrainJobStepOperator]:
        return TrainJobStepOperator
