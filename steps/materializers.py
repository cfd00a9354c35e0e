"""Artifact storage for models and embeddings in their own file formats (no pickle): the same folders as
``EmbeddingModel.save`` / ``UdonModel.save``, and the ``.npz`` of ``EmbeddingSet.save``."""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from udon_core.errors import CheckpointError
from udon_core.evaluation import EmbeddingSet
from udon_core.model import EmbeddingModel, UdonModel

EMBEDDINGS_FILE = "embeddings.npz"


def _copy_folder(src: str, dst: str) -> None:
    for name in sorted(fileio.listdir(src)):
        fileio.copy(os.path.join(src, str(name)), os.path.join(dst, str(name)), overwrite=True)


class ModelFolderMaterializer(BaseMaterializer):
    """Stores a model as its own save() folder (safetensors + JSON sidecar), loadable without this materializer."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (EmbeddingModel, UdonModel)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def load(self, data_type: type[Any]) -> EmbeddingModel | UdonModel:
        with tempfile.TemporaryDirectory() as tmp:
            _copy_folder(self.uri, tmp)
            try:
                return data_type.load(tmp)
            except CheckpointError as err:  # name the artifact, not its temporary copy
                raise type(err)(str(err).replace(tmp, self.uri)) from err

    def save(self, data: EmbeddingModel | UdonModel) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            _copy_folder(tmp, self.uri)

    def extract_metadata(self, data: EmbeddingModel | UdonModel) -> dict[str, Any]:
        meta = {
            "backbone": data.config.backbone.name,
            "embedding_dim": data.config.student_dim,
            "image_size": data.config.preprocess.image_size,
            "parameters": sum(p.numel() for p in data.parameters()),
        }
        if isinstance(data, UdonModel):
            meta["domains"] = ", ".join(data.domains)
        return meta


class EmbeddingSetMaterializer(BaseMaterializer):
    """Stores the embeddings of an evaluation split as one ``.npz`` (re-score without re-embedding)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (EmbeddingSet,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> EmbeddingSet:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, EMBEDDINGS_FILE)
            fileio.copy(os.path.join(self.uri, EMBEDDINGS_FILE), local)
            return EmbeddingSet.load(local)

    def save(self, data: EmbeddingSet) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            fileio.copy(str(data.save(os.path.join(tmp, EMBEDDINGS_FILE))),
                        os.path.join(self.uri, EMBEDDINGS_FILE), overwrite=True)

    def extract_metadata(self, data: EmbeddingSet) -> dict[str, Any]:
        return {"split": data.split, "files": len(data.vectors), "source": data.source,
                "images": sum(len(v) for v in data.vectors.values())}
