"""`udon run`, `udon evaluate` and `udon embed`: the pipeline, and a model's retrieval numbers and embeddings."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail, print_outcome
from udon_core.errors import InvalidValueError


@click.command("run")
@click.option("--config", "config_path", default="zenml.yaml", show_default=True, type=click.Path(path_type=Path),
              help="run configuration (parameters, step settings, model)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a parameter, e.g. --set training.train.steps=50 (repeatable)")
@click.option("--cluster", "cluster_path", type=click.Path(path_type=Path),
              help="put the train step on the active stack's cluster with this cluster configuration "
              "(configs/cluster.yaml): a Kubeflow Pipelines task or the Kubernetes step operator's pod")
def run_cmd(config_path: Path, overrides: tuple[str, ...], cluster_path: Path | None) -> None:
    """Run the training pipeline: ingest -> validate -> train -> evaluate -> register -> promote."""
    from pipelines.run import run_pipeline

    try:
        cluster = None
        if cluster_path is not None:
            from pipelines.cluster import load_cluster_config

            cluster = load_cluster_config(cluster_path)
        outcome = run_pipeline(config_path, list(overrides), cluster)
    except USER_ERRORS as err:
        fail(err)
    print_outcome(outcome)


def _model(uri: str):
    """The model a ``--model`` names: a folder, or a ``models:/`` URI resolved in the stack's registry (a
    typo is one sentence naming what exists; an unreachable registry one sentence after seconds)."""
    from integrations.mlflow_models import load_registered_model
    from integrations.model_registry import interactive_http, require_store
    from integrations.model_uri import is_model_uri
    from pipelines.stack import registry_uri

    if not is_model_uri(uri):
        return load_registered_model(uri)
    registry = registry_uri()
    require_store(registry)
    with interactive_http():
        return load_registered_model(uri, registry)


def _data_folder(data_dir: Path) -> Path:
    """``--data``, which must be a folder (one sentence, before any info file is looked for)."""
    from udon_core.errors import MissingFileError

    if not data_dir.is_dir():
        raise MissingFileError(f"{data_dir}: no such data folder (--data: a benchmark folder with info_files/ and "
                               "images/; in this checkout `udon data status` says where the pinned data is)")
    return data_dir


@click.command("evaluate")
@click.option("--model", "model_uri", help="models:/NAME/VERSION, models:/NAME@ALIAS, an exported folder, or "
              "(for --protocol oracle-teacher) a training-model folder")
@click.option("--embeddings", "embeddings_in", type=click.Path(path_type=Path),
              help="score saved embeddings (.npz from --save-embeddings) instead of embedding again")
@click.option("--data", "data_dir", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--benchmark", default="auto", show_default=True, help="'auto', 'uned', 'demo' or a JSON file")
@click.option("--split", default="test", show_default=True)
@click.option("--protocol", default="merged", show_default=True,
              type=click.Choice(["merged", "separate", "oracle-teacher"]))
@click.option("--save-embeddings", "embeddings_out", type=click.Path(path_type=Path),
              help="keep the split's embeddings in this .npz to re-score later")
@click.option("--out", type=click.Path(path_type=Path), help="write the metrics JSON here")
def evaluate_cmd(model_uri: str | None, embeddings_in: Path | None, data_dir: Path, benchmark: str, split: str,
                 protocol: str, embeddings_out: Path | None, out: Path | None) -> None:
    """Score a model on a benchmark folder: per-domain R@1 and mMP@5 (UnED protocol)."""
    import json

    from integrations import dvc_store
    from udon_core.data import read_manifest, resolve_benchmark_spec
    from udon_core.evaluation import format_table

    try:
        if (model_uri is None) == (embeddings_in is None):
            raise click.UsageError("give exactly one of --model and --embeddings")
        data_dir = _data_folder(data_dir)
        # a registered model is resolved before the benchmark is read: a typo in its URI is reported at once
        model = _model(model_uri) if model_uri is not None and protocol != "oracle-teacher" else None
        links = dvc_store.link_roots_of(data_dir)  # files may link into the DVC cache, nowhere else
        spec = resolve_benchmark_spec(benchmark, data_dir, links)
        report, embeddings = _score(model_uri, model, embeddings_in, data_dir,
                                    read_manifest(data_dir, spec, link_roots=links), spec, split, protocol)
        if embeddings_out and embeddings is not None:
            embeddings.save(embeddings_out)
    except USER_ERRORS as err:
        fail(err)
    click.echo(format_table(report))
    if embeddings_out:
        click.echo(f"embeddings written to {embeddings_out}")
    if out:
        out.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
        click.echo(f"metrics written to {out}")


def _score(model_uri, model, embeddings_in, data_dir, manifest, spec, split, protocol):
    """(report, the embeddings it scored or None for oracle teachers) of a model or of saved embeddings."""
    from udon_core.evaluation import EmbeddingSet, embed_split, evaluate_embeddings, evaluate_oracle_teachers
    from udon_core.model import UdonModel

    if protocol == "oracle-teacher":
        if model_uri is None or model_uri.startswith("models:/"):
            raise InvalidValueError("--protocol oracle-teacher needs a training-model folder (every teacher head), "
                             "e.g. <checkpoint dir>/training_model from python -m udon_core.train")
        return evaluate_oracle_teachers(UdonModel.load(model_uri), data_dir, manifest, spec, split=split), None
    if embeddings_in is not None:
        embeddings = EmbeddingSet.load(embeddings_in)
        if embeddings.split != split:
            raise InvalidValueError(f"{embeddings_in} holds the '{embeddings.split}' split, not '{split}' (--split)")
    else:
        embeddings = embed_split(model, data_dir, manifest, spec, split, source=model_uri)
    return evaluate_embeddings(embeddings.vectors, manifest, spec, split=split, protocol=protocol), embeddings


@click.command("embed")
@click.argument("image_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS or an exported folder")
@click.option("--out", required=True, type=click.Path(path_type=Path), help=".npy (+ .paths.txt) or .parquet")
@click.option("--batch-size", default=128, show_default=True)
def embed_cmd(image_dir: Path, model_uri: str, out: Path, batch_size: int) -> None:
    """Embed the images of IMAGE_DIR with a registered model (sorted paths, one 64-d unit vector each); a benchmark
    folder, loose or packed, gives its images with their paths relative to images/."""
    from udon_core.device import resolve_device
    from udon_core.evaluation import embed_folder

    try:
        if out.suffix not in (".npy", ".parquet"):
            raise InvalidValueError(f"{out}: the output must end in .npy or .parquet")
        paths, vectors = embed_folder(_model(model_uri), image_dir, batch_size=batch_size, device=resolve_device("auto"))
        _write_embeddings(out, paths, vectors)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"{len(paths)} embeddings of dimension {vectors.shape[1]} written to {out}")


def _write_embeddings(out: Path, paths: list[str], vectors) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, vectors)
        out.with_suffix(".paths.txt").write_text("\n".join(paths) + "\n")
        return
    import pandas as pd

    pd.DataFrame({"path": paths, "embedding": list(vectors)}).to_parquet(out, index=False)
