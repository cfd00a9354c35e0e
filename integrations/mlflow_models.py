"""MLflow registry glue: log the deployable model with a tensor signature and register a tagged version."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from integrations import udon_pt2_loader
from integrations.git import git_dirty, git_revision
from integrations.model_registry import METRICS_ARTIFACT, PENDING, registry_client, unavailable
from integrations.model_uri import is_model_uri, parse_model_uri
from udon_core.errors import CheckpointError, StackError
from udon_core.model import EmbeddingModel, UdonModel, UnsealedModelError, load_embedding_model

# why: logged with the model so `mlflow models serve`/`pyfunc.load_model` can rebuild the environment,
# and passing them explicitly skips MLflow's slow dependency inference (design.md section 6).
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


def code_version() -> dict[str, str]:
    """The git commit of the code that ran, and whether tracked files had uncommitted changes."""
    from zenml.utils.source_utils import get_source_root

    root = get_source_root()
    dirty = git_dirty(root)
    return {"code.git_commit": git_revision(root) or "unknown", "code.git_dirty": "unknown" if dirty is None else str(dirty)}


def _signature(model: EmbeddingModel, size: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    dim = model.config.student_dim
    # why unnamed: MLflow turns input for a *named* tensor spec into {name: array}, which the PyTorch pyfunc
    # rejects, so `pyfunc.load_model(...).predict` and `mlflow models serve` would fail on every request.
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]),
    )


def preprocessing(model: EmbeddingModel) -> dict[str, Any]:
    """What a client must do to an image before the model sees it (udon_core/data/transforms.py eval_transform)."""
    p = model.config.preprocess
    return {"image_size": p.image_size, "mean": list(p.mean), "std": list(p.std),
            "steps": ["decode to 8-bit RGB (alpha composited onto white, 16-bit grayscale scaled to 8 bits)",
                      f"resize the shorter side to {p.image_size} px (bilinear, antialiased)",
                      f"centre crop {p.image_size} x {p.image_size}",
                      "scale to [0, 1] float32, then (x - mean) / std per channel, layout [B, 3, H, W]"]}


class VerifiedPt2Flavor:
    """What ``mlflow.models.Model.log`` saves the deployable model with: MLflow's pytorch flavor in pt2 format,
    plus the SHA-256 of ``model.pt2`` and, as the ``python_function`` loader, ``udon_pt2_loader`` (shipped in
    the model's ``code/``), which checks it before MLflow loads the program."""

    @staticmethod
    def save_model(path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import mlflow

        mlflow.pytorch.save_model(path=path, mlflow_model=mlflow_model,
                                  code_paths=[udon_pt2_loader.__file__], **kwargs)
        udon_pt2_loader.write_digest(Path(path) / mlflow_model.flavors["pytorch"]["model_data"])
        mlflow_model.flavors["python_function"]["loader_module"] = udon_pt2_loader.__name__.rsplit(".", 1)[-1]
        mlflow_model.save(str(Path(path) / "MLmodel"))


def pt2_model_arguments(model: EmbeddingModel) -> dict[str, Any]:
    """The pt2 export of ``model`` as MLflow saves it: an example batch, the tensor signature, pinned
    requirements and the preprocessing in its metadata."""
    size = model.config.preprocess.image_size
    return {"pytorch_model": model.eval(), "input_example": np.zeros((2, 3, size, size), dtype=np.float32),
            "signature": _signature(model, size), "pip_requirements": PIP_REQUIREMENTS, "serialization_format": "pt2",
            "metadata": {"preprocess": preprocessing(model), "embedding_dim": model.config.student_dim,
                         "udon_format": "udon-embedding/1"}}


def save_pt2_model(model: EmbeddingModel, path: str | Path) -> Path:
    """The MLflow model ``register_embedding_model`` logs, saved to a local folder instead (tests, offline copies)."""
    from mlflow.models import Model

    VerifiedPt2Flavor.save_model(path=str(path), mlflow_model=Model(), **pt2_model_arguments(model))
    return Path(path)


def version_description(model: EmbeddingModel, tags: dict[str, str], verdict: str = PENDING) -> str:
    """The registered version's description: what it is, how to feed it, how to use it, the gate's verdict."""
    pre = preprocessing(model)
    steps = "\n".join(f"{i}. {s}" for i, s in enumerate(pre["steps"], 1))
    return (
        f"UDON universal image embedding: {model.config.backbone.name} backbone + {model.config.student_dim}-d "
        f"student head; output: one L2-normalised {model.config.student_dim}-d float32 vector per image.\n\n"
        f"Input: float32 tensor [B, 3, {pre['image_size']}, {pre['image_size']}], preprocessed as\n{steps}\n"
        f"(mean {pre['mean']}, std {pre['std']}).\n\n"
        "Use: `udon embed IMAGE_DIR --model models:/NAME/VERSION --out e.parquet` (does the preprocessing), "
        "`mlflow.pyfunc.load_model(uri)` (checks model.pt2 against its SHA-256 first; `.get_raw_model()(batch)` "
        "is the torch module), or `mlflow models serve` with preprocessed tensors (README, 'Serving').\n\n"
        f"Data: DVC {tags.get('data.dvc_md5', '?')}; code: {tags.get('code.git_commit', '?')}; mean mMP@5 "
        f"{tags.get('metric.mean_mmp_at_5', '?')}, R@1 {tags.get('metric.mean_r_at_1', '?')}.\n\n"
        f"Gate verdict: {verdict}"
    )


def _metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    tags = {f"metric.mean_{k}": f"{metrics[k]:.4f}" for k in ("mmp_at_5", "r_at_1") if k in metrics}
    for key in ("mean_mmp_at_5", "mean_r_at_1"):
        if key in metrics:
            tags[f"metric.{key}"] = f"{metrics[key]:.4f}"
    return tags


def register_embedding_model(
    model: EmbeddingModel, name: str, metrics: dict[str, Any], dataset_tags: dict[str, str],
    training_model: UdonModel | None = None,
) -> dict[str, str]:
    """Log ``model`` to the active MLflow run (torch.export format + our own save folder) and register it.

    Returns the registered name, version, run id and URIs. Needs the MLflow run ZenML opens for a step
    with an MLflow experiment tracker, and the registered model ``name`` (``ModelRegistry.bind_benchmark``
    creates it).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    run = mlflow.active_run()
    if run is None:
        raise StackError("no active MLflow run: the register step needs an MLflow experiment tracker in the stack")
    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        mlflow.log_artifacts(tmp, artifact_path="udon_model")
    if training_model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            training_model.save(tmp)
            mlflow.log_artifacts(tmp, artifact_path="udon_training_model")
    # As mlflow.pytorch.log_model, with the digest of model.pt2 and the pyfunc loader that checks it.
    arguments = pt2_model_arguments(model)
    info = mlflow.models.Model.log(None, VerifiedPt2Flavor, name="model", metadata=arguments.pop("metadata"),
                                   **arguments)
    # why: the gate reads the champion's per-domain metrics from its own run; the evaluate step may have
    # been cached and have logged them to an earlier run.
    mlflow.log_dict(metrics, METRICS_ARTIFACT)
    tags = {**dataset_tags, **code_version(), **_metric_tags(metrics)}
    mlflow.set_tags(tags)
    # Created as 'pending' in the same call: until the gate records its verdict the version is no candidate,
    # and a run killed in between leaves it visibly unjudged (pipelines/run_records.py marks it incomplete).
    # why the client, not mlflow.register_model: bind_benchmark created the registered model, and register_model
    # would try again and print "already exists" on every first run.
    client = mlflow.MlflowClient()
    try:
        # As mlflow.register_model does for a logged model: its models:/m-... URI is the source, with its id.
        version = client.create_model_version(name, info.model_uri, run_id=run.info.run_id,
                                              tags={**tags, "gate.verdict": PENDING},
                                              description=version_description(model, tags), model_id=info.model_id)
    except MlflowException as err:
        # Nothing was registered: the version is created in one call, with its tags, or not at all.
        raise unavailable(mlflow.get_registry_uri(), err) from err
    _link_logged_model(client, info.model_id, name, str(version.version))
    return {
        "name": name, "version": str(version.version), "run_id": run.info.run_id,
        "model_uri": f"models:/{name}/{version.version}",
        "udon_model_uri": f"runs:/{run.info.run_id}/udon_model", "tracking_uri": mlflow.get_tracking_uri(),
    }


def _link_logged_model(client: Any, model_id: str, name: str, version: str) -> None:
    """Name the registered version on the logged model (tag ``mlflow.modelVersions``), as
    ``mlflow.register_model`` does: the MLflow UI links a logged model to its registered versions by it."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    known = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(known + [{"name": name,
                                                                                        "version": version}])})


def load_registered_model(uri: str, tracking_uri: str | None = None) -> EmbeddingModel:
    """A registered or exported model: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or a local folder."""
    if not is_model_uri(uri):
        return load_embedding_model(Path(uri))
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    version = parse_model_uri(uri).resolve(registry_client(mlflow.get_tracking_uri()))
    with tempfile.TemporaryDirectory() as tmp:  # why: without dst_path MLflow leaves a temp dir behind
        local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="udon_model", dst_path=tmp)
        try:
            return EmbeddingModel.load(Path(local))
        except UnsealedModelError as err:
            raise UnsealedModelError(
                f"{uri}: registered before model.sha256 covered model.json, so its description cannot be verified; "
                f"if you trust it, `mlflow artifacts download -r {version.run_id} -a udon_model -d DIR`, "
                "`udon seal DIR/udon_model` and use that folder, else register the model again") from err
        except CheckpointError as err:  # name what the user gave, not the temporary copy
            where = f"{uri} (artifact udon_model of run {version.run_id})"
            raise CheckpointError(str(err).replace(str(local), where)) from err
