"""The networks: the backbone, UDON's model (shared backbone, 64-d student head, per-domain teacher heads and
cosine classifiers) and its deployable embedding model, and frozen pretrained teachers.
"""

from __future__ import annotations

from udon_core.model.backbone import LITE0_PACKAGE, BackboneConfig, convert_lite0_state_dict, create_backbone
from udon_core.model.teachers import (
    FrozenTeacher,
    Normalization,
    TeacherConfig,
    create_teacher,
    create_teachers,
    renormalize,
)
from udon_core.model.udon_model import (
    EmbeddingModel,
    ModelConfig,
    UdonModel,
    UnsealedModelError,
    load_embedding_model,
    seal_legacy_folder,
)

__all__ = [
    "BackboneConfig", "convert_lite0_state_dict", "create_backbone", "create_teacher", "create_teachers",
    "EmbeddingModel", "FrozenTeacher", "LITE0_PACKAGE", "load_embedding_model", "ModelConfig", "Normalization",
    "renormalize", "seal_legacy_folder", "TeacherConfig", "UdonModel", "UnsealedModelError",
]
