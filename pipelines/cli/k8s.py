"""`udon k8s`: render and check the training manifests from the one cluster configuration.

Attached to the main command line as `udon k8s ...`; also a click group of its own (`k8s`) for tests.
Imports nothing heavy until a command runs, so `udon --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail


@click.group("k8s")
def k8s() -> None:
    """Kubernetes: training manifests (Job / Kubeflow PyTorchJob) from configs/cluster.yaml."""


@k8s.command("render")
@click.option("--config", "config_path", default="configs/cluster.yaml", show_default=True,
              type=click.Path(path_type=Path), help="the cluster configuration (image, namespace, GPUs, storage...)")
@click.option("--overlay", "overlays", multiple=True, type=click.Path(path_type=Path),
              help="a YAML file merged over --config, e.g. k8s/overlays/multi-node.yaml (repeatable)")
@click.option("--train-config", "train_path", type=click.Path(path_type=Path),
              help="the training config YAML that `python -m udon_core.train --config` reads (goes into a ConfigMap)")
@click.option("--kubeflow-pipeline", "kfp_out", type=click.Path(path_type=Path),
              help="instead of manifests: compile the whole pipeline for Kubeflow Pipelines (ZenML's orchestrator, "
              "offline) into this KFP PipelineSpec YAML")
@click.option("--run-config", "run_config", default="zenml.yaml", show_default=True, type=click.Path(path_type=Path),
              help="with --kubeflow-pipeline: the pipeline's run configuration, as `udon run --config`")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="with --kubeflow-pipeline: override a run parameter (repeatable)")
@click.option("--nodes", type=click.IntRange(min=1), help="pods; >1 renders a Kubeflow PyTorchJob [config: nodes]")
@click.option("--gpus-per-node", type=click.IntRange(min=1), help="GPUs = torchrun processes per pod [config]")
@click.option("--job-name", help="Job / PyTorchJob name; the same name resumes the same run [config: job_name]")
@click.option("--out", "out_dir", default="k8s/rendered", show_default=True, type=click.Path(path_type=Path))
def render_cmd(config_path: Path, overlays: tuple[Path, ...], train_path: Path | None, kfp_out: Path | None,
               run_config: Path, overrides: tuple[str, ...], nodes: int | None, gpus_per_node: int | None,
               job_name: str | None, out_dir: Path) -> None:
    """Render every object of a training run, validate it, and write one YAML file per object; or, with
    --kubeflow-pipeline, the pipeline as a Kubeflow Pipelines spec."""
    if kfp_out is not None:
        _render_kubeflow_pipeline(config_path, overlays, run_config, list(overrides), kfp_out)
        return
    if train_path is None:
        fail(click.UsageError("--train-config is required to render manifests (or give --kubeflow-pipeline)"))
    from pipelines.cluster import (
        default_versions,
        load_cluster_config,
        read_yaml_mapping,
        render_manifests,
        validate_manifests,
        write_manifests,
    )
    from udon_core.training import load_run_file

    try:
        cfg = load_cluster_config(config_path, *overlays)
        train_config = read_yaml_mapping(train_path, "training config")
        load_run_file(train_path)  # the pod's own parser: a bad field fails here, not in a GPU pod
        manifests = render_manifests(cfg, train_config, nodes=nodes, gpus_per_node=gpus_per_node,
                                     job_name=job_name)
        versions = default_versions()
        validate_manifests(manifests, versions, gpu_resource=cfg.gpu_resource)
        paths = write_manifests(manifests, out_dir, source=" + ".join(map(str, [config_path, *overlays])))
    except USER_ERRORS as err:
        fail(err)
    workload = manifests[max(manifests)]
    click.echo(f"{workload['kind']} {workload['metadata']['name']} in namespace {cfg.namespace}, "
               f"valid for Kubernetes {' and '.join(versions)}:")
    for path in paths:
        click.echo(f"  {path}")
    click.echo(f"apply with: kubectl apply -f {out_dir}")


def _render_kubeflow_pipeline(config_path: Path, overlays: tuple[Path, ...], run_config: Path, overrides: list[str],
                              out: Path) -> None:
    from pipelines.cluster import load_cluster_config
    from pipelines.kubeflow_render import render_kubeflow_pipeline

    try:
        cfg = load_cluster_config(config_path, *overlays)
        path = render_kubeflow_pipeline(run_config, cfg, out, overrides)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"Kubeflow Pipelines spec of the training pipeline ({run_config}, image {cfg.image}): {path}")
    click.echo("compiled by ZenML's Kubeflow orchestrator against a throwaway local server; submit real runs on "
               "a Kubeflow stack with your own ZenML server (k8s/README.md, section 7c)")


@k8s.command("validate")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--version", "versions", multiple=True,
              help="Kubernetes version(s) to check against (default: 1.30.0 and the newest kubernetes-validate ships)")
def validate_cmd(directory: Path, versions: tuple[str, ...]) -> None:
    """Validate every manifest in DIRECTORY (strict Kubernetes schemas; PyTorchJob field checks)."""
    from pipelines.cluster import default_versions, read_manifests, validate_manifests

    try:
        manifests = read_manifests(directory)
        versions = versions or default_versions()
        validate_manifests(manifests, versions)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"{len(manifests)} manifests in {directory} are valid for Kubernetes {' and '.join(versions)}")
