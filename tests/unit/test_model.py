"""The UDON model: shapes, norms, which heads run, gradient flow, and the exported model."""

from __future__ import annotations

import pytest
import torch

from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.losses import LossConfig
from udon_core.model import EmbeddingModel, UdonModel
from udon_core.task import UdonTask

CLASSES = {"shapes": 3, "colors": 5}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UdonModel(TINY_MODEL, CLASSES)


def test_shapes_norms_and_cosine_logits(model):
    out = UdonTask(model, LossConfig())(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), "colors")
    assert set(out) >= {"loss", "loss/teacher_ce", "loss/student_ce", "loss/kl", "loss/relational"}
    feats = model.features(torch.randn(4, 3, 16, 16))
    assert torch.allclose(feats.norm(dim=1), torch.ones(4), atol=1e-5)
    e = model.student(feats)
    assert e.shape == (4, 8) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    cos = model.student_classifiers["colors"](e)
    assert cos.shape == (4, 5) and cos.abs().max() <= 1 + 1e-5


def test_only_the_batch_domain_heads_get_gradients(model):
    task = UdonTask(model, LossConfig())
    task(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), "shapes")["loss"].backward()
    assert all(p.grad is None for p in model.domain_head_parameters("colors"))
    assert all(p.grad is not None for p in model.domain_head_parameters("shapes"))


def _distill_only_grads(model, detach: bool):
    cfg = LossConfig(teacher_ce_weight=0, student_ce_weight=0, distill_detach_backbone=detach)
    UdonTask(model, cfg)(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), "shapes")["loss"].backward()
    teacher = list(model.teachers["shapes"].parameters()) + list(model.teacher_classifiers["shapes"].parameters())
    backbone = [p.grad for p in model.backbone.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    student = model.student.linear.weight.grad
    return teacher, backbone, student


def test_distillation_never_trains_the_teacher_and_reaches_the_backbone_as_the_official_code(model):
    teacher, backbone, student = _distill_only_grads(model, detach=False)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher)
    assert backbone and student is not None and student.abs().sum() > 0


def test_paper_figure_flag_stops_distillation_at_the_student_head(model):
    teacher, backbone, student = _distill_only_grads(model, detach=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher)
    assert backbone == [] and student.abs().sum() > 0


def test_exported_model_round_trip_has_no_training_heads(model, tmp_path):
    emb = model.embedding_model()
    keys = set(emb.state_dict())
    assert not any(k.startswith(("teachers", "student_classifiers", "teacher_classifiers")) for k in keys)
    x = torch.randn(3, 3, 16, 16)
    loaded = EmbeddingModel.load(emb.save(tmp_path / "m"))
    assert torch.allclose(loaded(x), emb(x), atol=1e-6)
    assert loaded.config == TINY_MODEL


def test_load_rejects_a_folder_without_sidecar(tmp_path):
    with pytest.raises(ValueError, match="not an exported udon model"):
        EmbeddingModel.load(tmp_path)


def test_efficientnet_lite0_package_weights_load_into_timm():
    from udon_core.backbone import BackboneConfig, create_backbone

    net, dim = create_backbone(BackboneConfig(name="tf_efficientnet_lite0", pretrained="efficientnet-lite0-package"))
    assert dim == 1280
    # A known ImageNet weight (BatchNorm running mean of the stem) is not the init value 0.
    assert net.bn1.running_mean.abs().sum() > 0
    with pytest.raises(ValueError, match="holds tf_efficientnet_lite0 weights"):
        create_backbone(BackboneConfig(name="resnet18", pretrained="efficientnet-lite0-package"))


def test_embed_folder_keeps_sorted_paths_and_unit_norm(model, tmp_path):
    import numpy as np
    from PIL import Image

    from udon_core.embedding import embed_folder

    for name in ("b/2.png", "a.png", "b/1.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 24), (10, 200, 30)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    paths, vectors = embed_folder(model.embedding_model(), tmp_path, progress=False)
    assert paths == ["a.png", "b/1.jpg", "b/2.png"]
    assert vectors.shape == (3, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        embed_folder(model.embedding_model(), tmp_path / "empty", progress=False)
