"""The training pipeline compiled to a Kubeflow Pipelines PipelineSpec, offline, by ZenML's own orchestrator.

ZenML runs a remote orchestrator only against a ZenML server, so this starts a throwaway one on 127.0.0.1
(pipelines/zen_server.py) and, in a child process that is that server's client, registers a Kubeflow stack
(the ``udon_kubeflow`` orchestrator with ``pipeline_file`` set, an S3 artifact store, a container registry
and an image builder: registered, never contacted) and runs the real pipeline with the run configuration and
the cluster settings. ZenML builds the KFP pipeline and the KFP compiler writes the spec; nothing is submitted,
pushed or uploaded. The spec names that throwaway server and a token for it: submit pipelines with
``udon run`` against your own server, not this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipelines.cluster import KUBEFLOW_FLAVOR, ClusterConfig
from pipelines.run import place_on_cluster, resolve_config
from pipelines.zen_server import running_server
from udon_core.errors import StackError

STACK = "udon-kfp-render"
ARTIFACT_STORE = "s3://udon-render-only/zenml"  # registered, never used: nothing is uploaded
KUBEFLOW_HOST = "https://kubeflow.invalid/pipeline"  # never contacted: pipeline_file set


def render_kubeflow_pipeline(run_config: Path, cluster: ClusterConfig, out: Path,
                             overrides: list[str] = ()) -> Path:
    """Compile the pipeline as ``udon run --config run_config`` would run it, on Kubeflow Pipelines with the
    cluster's image and train-step resources, into ``out`` (a KFP IR YAML)."""
    out = Path(out).resolve()
    doc, settings = place_on_cluster(resolve_config(Path(run_config), list(overrides)), cluster, KUBEFLOW_FLAVOR)
    with tempfile.TemporaryDirectory(prefix="udon-kfp-") as tmp:
        state = Path(tmp)
        with running_server(f"sqlite:///{state / 'server' / 'zenml.db'}", state / "server", auth="password") as server:
            job = {"run_config": doc, "settings": settings, "cluster": cluster.model_dump(mode="json"), "out": str(out)}
            (state / "job.json").write_text(json.dumps(job))
            env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_")}
            env.update(ZENML_CONFIG_PATH=str(state / "client"), ZENML_STORE_URL=server.url,
                       ZENML_STORE_USERNAME="default", ZENML_STORE_PASSWORD="", ZENML_ANALYTICS_OPT_IN="false",
                       ZENML_ENABLE_RICH_TRACEBACK="false", ZENML_LOGGING_VERBOSITY="WARN",
                       ZENML_DISABLE_PIPELINE_LOGS_STORAGE="true")
            done = subprocess.run([sys.executable, "-m", "pipelines.kubeflow_render", str(state / "job.json")],
                                  env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise StackError(f"compiling the Kubeflow pipeline failed: {lines[-1] if lines else done.returncode}")
    return out


def _registry(image: str) -> str:
    """The registry part of an image reference ('registry.example.com/udon' of '.../udon/x:1')."""
    repo = image.split("@")[0].rsplit(":", 1)[0] if "/" in image else image
    return repo.rsplit("/", 1)[0] if "/" in repo else "docker.io"


def _register_stack(cluster: ClusterConfig, out: Path) -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    from pipelines.cluster.kubeflow import FLAVOR_SOURCE

    client = Client()
    client.create_flavor(source=FLAVOR_SOURCE, component_type=T.ORCHESTRATOR)
    client.create_stack_component("kfp", KUBEFLOW_FLAVOR, T.ORCHESTRATOR,
                                  {"kubeflow_hostname": KUBEFLOW_HOST, "synchronous": False, "pipeline_file": str(out)})
    client.create_stack_component("s3", "s3", T.ARTIFACT_STORE, {"path": ARTIFACT_STORE})
    client.create_stack_component("registry", "default", T.CONTAINER_REGISTRY, {"uri": _registry(cluster.image)})
    client.create_stack_component("builder", "local", T.IMAGE_BUILDER, {})
    client.create_stack(STACK, components={T.ORCHESTRATOR: "kfp", T.ARTIFACT_STORE: "s3",
                                           T.CONTAINER_REGISTRY: "registry", T.IMAGE_BUILDER: "builder"})
    client.activate_stack(STACK)


def _compile(job: dict) -> None:
    """In the server's client process: register the stack, then run the pipeline (which only compiles)."""
    from pipelines.training import training_pipeline, zenml_model

    cluster, out, doc = ClusterConfig.model_validate(job["cluster"]), Path(job["out"]), job["run_config"]
    _register_stack(cluster, out)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    pipeline = training_pipeline.with_options(
        config_path=fh.name, settings=job["settings"], enable_cache=False,
        model=zenml_model(doc["parameters"]["registry"]["model_name"]))
    pipeline()


if __name__ == "__main__":
    _compile(json.loads(Path(sys.argv[1]).read_text()))
