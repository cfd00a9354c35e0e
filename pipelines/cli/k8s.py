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
    """Kubernetes: training runs (Kubeflow Trainer v2 TrainJob, Job, legacy PyTorchJob) from configs/cluster.yaml."""


def _shape_options(func):
    """The options that say what one run looks like; shared by render and submit."""
    options = [
        click.option("--config", "config_path", default="configs/cluster.yaml", show_default=True,
                     type=click.Path(path_type=Path),
                     help="the cluster configuration (image, namespace, GPUs, storage...)"),
        click.option("--overlay", "overlays", multiple=True, type=click.Path(path_type=Path),
                     help="a YAML file merged over --config, e.g. k8s/overlays/multi-node.yaml (repeatable)"),
        click.option("--train-config", "train_path", type=click.Path(path_type=Path),
                     help="the training config YAML that `python -m udon_core.train --config` reads (goes into a "
                          "ConfigMap)"),
        click.option("--nodes", type=click.IntRange(min=1), help="nodes (pods) of the run [config: nodes]"),
        click.option("--gpus-per-node", type=click.IntRange(min=1), help="GPUs = torchrun processes per pod [config]"),
        click.option("--job-name", help="the run's name; the same name resumes the same run [config: job_name]"),
        click.option("--data-version", help="label the run with this data version (DVC hash) [the pin in data.dvc]"),
        click.option("--zenml-run", help="label the run with the ZenML run it belongs to"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _render(config_path: Path, overlays: tuple[Path, ...], train_path: Path | None, nodes: int | None,
            gpus_per_node: int | None, job_name: str | None, data_version: str | None, zenml_run: str | None,
            trainjob: bool):
    """``(cluster config, manifests, validation summary, versions)`` of one run, validated; user errors raise."""
    from pipelines.cluster import (
        default_versions,
        load_cluster_config,
        read_yaml_mapping,
        render_manifests,
        validate_manifests,
    )
    from udon_core.training import load_run_file

    if train_path is None:
        raise click.UsageError("--train-config is required to render manifests (or give --kubeflow-pipeline)")
    cfg = load_cluster_config(config_path, *overlays)
    train_config = read_yaml_mapping(train_path, "training config")
    load_run_file(train_path)  # the pod's own parser: a bad field fails here, not in a GPU pod
    manifests = render_manifests(cfg, train_config, nodes=nodes, gpus_per_node=gpus_per_node, job_name=job_name,
                                 trainjob=trainjob, run_labels=_run_labels(data_version, zenml_run))
    versions = default_versions()
    summary = validate_manifests(manifests, versions, gpu_resource=cfg.gpu_resource)
    return cfg, manifests, summary, versions


def _run_labels(data_version: str | None, zenml_run: str | None) -> dict[str, str]:
    """Labels that tie a run to its data version (default: the pin of ./data.dvc) and to a ZenML run."""
    from pipelines.cluster.trainjob import label_value

    if data_version is None and Path("data.dvc").is_file():
        from integrations import dvc_store

        data_version = dvc_store.read_pin(Path("."), "data.dvc").md5
    labels = {"udon-pipeline/data-version": data_version, "udon-pipeline/zenml-run": zenml_run}
    return {k: label_value(v) for k, v in labels.items() if v}


@k8s.command("render")
@_shape_options
@click.option("--trainjob", "trainjob_out", type=click.Path(path_type=Path),
              help="Kubeflow Trainer v2: write every object of the run, the TrainJob last, to this one YAML file")
@click.option("--kubeflow-pipeline", "kfp_out", type=click.Path(path_type=Path),
              help="instead of manifests: compile the whole pipeline for Kubeflow Pipelines (ZenML's orchestrator, "
              "offline) into this KFP PipelineSpec YAML")
@click.option("--run-config", "run_config", default="zenml.yaml", show_default=True, type=click.Path(path_type=Path),
              help="with --kubeflow-pipeline: the pipeline's run configuration, as `udon run --config`")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="with --kubeflow-pipeline: override a run parameter (repeatable)")
@click.option("--out", "out_dir", default="k8s/rendered", show_default=True, type=click.Path(path_type=Path),
              help="without --trainjob: one file per object here (a Job, or the legacy PyTorchJob for nodes > 1)")
def render_cmd(config_path: Path, overlays: tuple[Path, ...], train_path: Path | None, nodes: int | None,
               gpus_per_node: int | None, job_name: str | None, data_version: str | None, zenml_run: str | None,
               trainjob_out: Path | None, kfp_out: Path | None, run_config: Path, overrides: tuple[str, ...],
               out_dir: Path) -> None:
    """Render every object of a training run, validate it and write it: a Kubeflow Trainer v2 TrainJob
    (--trainjob), a single-node Job, or the legacy PyTorchJob (Training Operator v1); or, with
    --kubeflow-pipeline, the pipeline as a Kubeflow Pipelines spec."""
    if kfp_out is not None:
        _render_kubeflow_pipeline(config_path, overlays, run_config, list(overrides), kfp_out)
        return
    from pipelines.cluster import write_manifest_file, write_manifests

    source = " + ".join(map(str, [config_path, *overlays]))
    try:
        cfg, manifests, summary, versions = _render(config_path, overlays, train_path, nodes, gpus_per_node,
                                                     job_name, data_version, zenml_run, trainjob_out is not None)
        paths = ([write_manifest_file(manifests, trainjob_out, source)] if trainjob_out
                 else write_manifests(manifests, out_dir, source=source))
    except (*USER_ERRORS, click.UsageError) as err:
        fail(err)
    workload = manifests[max(manifests)]
    click.echo(f"{workload['kind']} {workload['metadata']['name']} in namespace {cfg.namespace}, "
               f"valid for Kubernetes {' and '.join(versions)}:")
    for path in paths:
        click.echo(f"  {path}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    if workload["kind"] == "PyTorchJob":
        click.echo("note: PyTorchJob is the legacy route (Kubeflow Training Operator v1, maintenance only); on "
                   "Kubeflow Trainer v2 render a TrainJob with --trainjob FILE")
    click.echo(f"apply with: kubectl apply -f {trainjob_out or out_dir}")


@k8s.command("submit")
@_shape_options
@click.option("--trainjob", "trainjob", is_flag=True, required=True,
              help="submit the run as a Kubeflow Trainer v2 TrainJob (the only kind submit creates)")
@click.option("--context", help="kubeconfig context [the current one]")
@click.option("--wait/--no-wait", default=True, show_default=True, help="watch the TrainJob until it ends")
@click.option("--timeout", "timeout_s", type=click.IntRange(min=1),
              help="stop watching after this many seconds [the TrainJob's activeDeadlineSeconds, 72 h, + 5 min]")
def submit_cmd(config_path: Path, overlays: tuple[Path, ...], train_path: Path | None, nodes: int | None,
               gpus_per_node: int | None, job_name: str | None, data_version: str | None, zenml_run: str | None,
               trainjob: bool, context: str | None, wait: bool, timeout_s: int | None) -> None:
    """Render and validate the run, then create its ConfigMap and TrainJob and watch it (status, failure reason,
    the last lines of node 0). The namespace, accounts and volume come first from `render --trainjob`."""
    from pipelines.cluster.submit import kube_apis, submit_trainjob

    try:
        cfg, manifests, _, versions = _render(config_path, overlays, train_path, nodes, gpus_per_node, job_name,
                                              data_version, zenml_run, True)
        custom, core = kube_apis(context)
        outcome = submit_trainjob(manifests, custom, core, versions=versions, gpu_resource=cfg.gpu_resource,
                                  wait=wait, timeout_seconds=timeout_s, echo=click.echo)
    except (*USER_ERRORS, click.UsageError) as err:
        fail(err)
    click.echo(f"TrainJob {outcome.name}: {outcome.status}{f' ({outcome.message})' if outcome.message else ''}")


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
    """Validate every manifest in DIRECTORY (*.yaml, *.yml, *.json; kind: List expanded): strict Kubernetes
    schemas, TrainJob / runtime / PyTorchJob checks, and Pod Security "restricted" over every pod of every kind."""
    from pipelines.cluster import default_versions, read_manifests, validate_manifests

    try:
        manifests = read_manifests(directory)
        versions = versions or default_versions()
        summary = validate_manifests(manifests, versions)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"{len(manifests)} manifests in {directory} are valid for Kubernetes {' and '.join(versions)} "
               f"({summary.pods} pod templates meet Pod Security restricted)")
    for note in summary.notes:
        click.echo(f"note: {note}")
