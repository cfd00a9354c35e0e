"""Artifact storage for the deployable model: the same weights + JSON sidecar layout as EmbeddingModel.save."""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from udon_core.model import EmbeddingModel


class EmbeddingModelMaterializer(BaseMaterializer):
    """Stores an EmbeddingModel as its own save() folder, so an artifact can be loaded without pickle."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (EmbeddingModel,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def load(self, data_type: type[Any]) -> EmbeddingModel:
        with tempfile.TemporaryDirectory() as tmp:
            for name in fileio.listdir(self.uri):
                fileio.copy(os.path.join(self.uri, str(name)), os.path.join(tmp, str(name)))
            return EmbeddingModel.load(tmp)

    def save(self, data: EmbeddingModel) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            for name in sorted(os.listdir(tmp)):
                fileio.copy(os.path.join(tmp, name), os.path.join(self.uri, name), overwrite=True)

    def extract_metadata(self, data: EmbeddingModel) -> dict[str, Any]:
        return {
            "backbone": data.config.backbone.name,
            "embedding_dim": data.config.student_dim,
            "image_size": data.config.preprocess.image_size,
            "parameters": sum(p.numel() for p in data.parameters()),
        }
