"""Frozen teachers named by reference: a ZenML artifact, a registered MLflow model, or a local folder.

``train.specialists`` (udon-offline) and ``train.unic.teachers[].udon_model`` may be

- ``zenml:<artifact version id>``: e.g. the ``training_model`` output of a ``specialist`` pipeline run;
- ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``: a registered version (its training model, with the
  classifiers udon-offline needs, when it was logged; else its deployable model);
- a local folder written by ``UdonModel.save`` / ``EmbeddingModel.save``.

The train step resolves them to local folders before training and records where each came from, which is
the student's lineage back to its teachers (`udon lineage` prints it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from integrations.model_uri import is_model_uri, parse_model_uri
from udon_core.errors import InvalidValueError
from udon_core.training import TrainingJobConfig

ZENML_PREFIX = "zenml:"
TRAINING_MODEL_ARTIFACT, DEPLOYABLE_ARTIFACT = "udon_training_model", "udon_model"


def _from_zenml(ref: str, dest: Path) -> dict[str, str]:
    from zenml.client import Client

    version = Client().get_artifact_version(ref[len(ZENML_PREFIX):])
    version.load().save(dest)  # UdonModel or EmbeddingModel: both save their own folder
    producer = Client().get_run_step(version.producer_step_run_id) if version.producer_step_run_id else None
    return {"artifact": f"{version.artifact.name}:{version.version} ({version.id})",
            "produced_by": f"{producer.name} of pipeline run {producer.pipeline_run_id}" if producer else "-"}


def _from_mlflow(ref: str, dest: Path, tracking_uri: str | None) -> dict[str, str]:
    import mlflow

    from integrations.model_registry import registry_client

    client = registry_client(tracking_uri or mlflow.get_tracking_uri())
    uri = parse_model_uri(ref)
    mv = uri.resolve(client)
    present = {f.path for f in client.list_artifacts(mv.run_id)}
    artifact = TRAINING_MODEL_ARTIFACT if TRAINING_MODEL_ARTIFACT in present else DEPLOYABLE_ARTIFACT
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(mv.run_id, artifact, tmp))
        dest.mkdir(parents=True, exist_ok=True)
        for file in local.iterdir():
            (dest / file.name).write_bytes(file.read_bytes())
    return {"registered_model": f"{uri.name} version {mv.version}", "mlflow_run": mv.run_id, "artifact": artifact}


def _resolve(ref: str, dest: Path, tracking_uri: str | None) -> tuple[str, dict[str, str]]:
    if ref.startswith(ZENML_PREFIX):
        return str(dest), {"ref": ref, **_from_zenml(ref, dest)}
    if is_model_uri(ref):
        return str(dest), {"ref": ref, **_from_mlflow(ref, dest, tracking_uri)}
    if not Path(ref).is_dir():
        raise InvalidValueError(f"teacher source {ref!r} is neither zenml:<artifact id>, models:/... nor a folder")
    return ref, {"ref": ref}


def resolve_teacher_sources(config: TrainingJobConfig, workdir: Path,
                            tracking_uri: str | None = None) -> tuple[TrainingJobConfig, dict[str, dict[str, str]]]:
    """``config`` with every teacher reference replaced by a local folder, and where each came from."""
    train, provenance = config.train, {}
    specialists: dict[str, str] = {}
    for domain, ref in train.specialists.items():
        specialists[domain], provenance[f"specialist/{domain}"] = _resolve(ref, workdir / f"specialist-{domain}",
                                                                           tracking_uri)
    teachers: list[Any] = []
    for t in train.unic.teachers:
        if t.udon_model is None:
            teachers.append(t)
            provenance[f"teacher/{t.name}"] = {"ref": f"timm:{t.timm_model}", "weights": str(t.weights)}
            continue
        folder, provenance[f"teacher/{t.name}"] = _resolve(str(t.udon_model), workdir / f"teacher-{t.name}",
                                                           tracking_uri)
        teachers.append(t.model_copy(update={"udon_model": Path(folder)}))
    unic = train.unic.model_copy(update={"teachers": tuple(teachers)})
    resolved = train.model_copy(update={"specialists": specialists, "unic": unic})
    return config.model_copy(update={"train": resolved}), provenance
