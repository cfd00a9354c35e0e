"""Every file that defines a model is covered by a digest checked before it is read: bit-flip sweeps over a
saved folder (model.json, model.sha256, the weights) and the registered MLflow model (model.pt2 and its
digest); folders saved before model.sha256; pretrained and teacher weight files that cannot be used."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner

from tests.unit.tiny_benchmark import TINY_MODEL
from udon_core.digests import file_sha256
from udon_core.errors import CheckpointError, UdonUserError
from udon_core.model import (
    BackboneConfig,
    EmbeddingModel,
    TeacherConfig,
    UdonModel,
    UnsealedModelError,
    create_backbone,
    create_teacher,
    load_embedding_model,
    seal_legacy_folder,
)

CLASSES = {"shapes": 3, "colors": 3}


def _sentence_naming(err: BaseException, *names: str) -> bool:
    text = str(err)
    return "\n" not in text and "Traceback" not in text and any(n in text for n in names)


def _flip_sweep(path: Path, load: Callable[[], object], positions: range | list[int],
                bits: tuple[int, ...] = tuple(range(8))) -> tuple[int, list[str]]:
    """Flip each bit of each position of ``path`` in turn; ``(attempts, what got through)``: every attempt must
    end in one CheckpointError sentence naming a file of the model."""
    original = path.read_bytes()
    attempts, through = 0, []
    fd = os.open(path, os.O_RDWR)  # why: one descriptor, one byte written per flip (reopening costs ~5 ms here)
    try:
        for i in positions:
            for bit in bits:
                os.pwrite(fd, bytes([original[i] ^ (1 << bit)]), i)
                attempts += 1
                try:
                    load()
                    through.append(f"byte {i} bit {bit}: loaded")
                except CheckpointError as err:
                    if not _sentence_naming(err, path.name):
                        through.append(f"byte {i} bit {bit}: {err}")
                except Exception as err:  # noqa: BLE001 - anything else is a traceback for the user
                    through.append(f"byte {i} bit {bit}: {type(err).__name__}: {err}")
            os.pwrite(fd, original[i:i + 1], i)
    finally:
        os.close(fd)
        path.write_bytes(original)
    return attempts, through


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return EmbeddingModel(TINY_MODEL).save(tmp_path_factory.mktemp("exported") / "m")


# -- saved folders: model.json + model.safetensors, both in model.sha256 --------------------------------------


@pytest.mark.parametrize("name", ["model.json", "model.sha256"])
def test_every_bit_flip_in_the_description_or_the_digest_is_refused(exported, name):
    path = exported / name
    attempts, through = _flip_sweep(path, lambda: load_embedding_model(exported), range(path.stat().st_size))
    assert attempts == 8 * path.stat().st_size and through == [], through[:5]
    load_embedding_model(exported)  # the sweep restored every byte


def test_bit_flips_across_the_weights_are_refused(exported):
    path = exported / "model.safetensors"
    size = path.stat().st_size
    positions = sorted({*range(0, 64), *range(64, size, size // 61)})  # the JSON header and the tensors
    attempts, through = _flip_sweep(path, lambda: EmbeddingModel.load(exported), positions, bits=(0, 7))
    assert attempts >= 240 and through == [], through[:5]


def test_a_missing_digest_is_an_error_even_with_a_weights_digest_in_the_description(exported, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(exported, folder)
    (folder / "model.sha256").unlink()
    with pytest.raises(CheckpointError, match="no model.sha256 beside model.json: the save was interrupted"):
        load_embedding_model(folder)
    # the old design's hole: the digest lived in model.json, where a flipped key name made it absent and only
    # logged a warning; now a description that names a digest does not make a folder trusted either
    sidecar = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**sidecar, "weights_sha256": file_sha256(
        folder / "model.safetensors")}, indent=1, sort_keys=True) + "\n")
    with pytest.raises(UnsealedModelError, match="saved before model.sha256 covered model.json"):
        load_embedding_model(folder)


def _legacy_folder(model: torch.nn.Module, folder: Path) -> Path:
    """A folder as udon-pipeline wrote it before model.sha256: the weights' digest inside model.json."""
    model.save(folder)
    (folder / "model.sha256").unlink()
    sidecar = json.loads((folder / "model.json").read_text())
    sidecar["weights_sha256"] = file_sha256(folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    return folder


def test_a_folder_saved_before_the_digest_is_refused_until_sealed_on_purpose(tmp_path):
    torch.manual_seed(0)
    model = UdonModel(TINY_MODEL, CLASSES)
    folder = _legacy_folder(model, tmp_path / "old")
    with pytest.raises(UnsealedModelError, match=re.escape(f"`udon seal {folder}` checks its weights")):
        UdonModel.load(folder)
    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["seal", str(folder)])
    assert result.exit_code == 0 and "model.sha256 covers model.json and model.safetensors" in result.output
    again = UdonModel.load(folder)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    result = CliRunner().invoke(cli, ["seal", str(folder)])
    assert result.exit_code == 2 and "sealed already" in result.output


def test_sealing_refuses_damaged_weights_and_weights_that_do_not_fit_the_description(tmp_path):
    torch.manual_seed(0)
    damaged = _legacy_folder(EmbeddingModel(TINY_MODEL), tmp_path / "damaged")
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-10] ^= 0x01
    (damaged / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="refusing to seal a damaged folder"):
        seal_legacy_folder(damaged)
    wrong = _legacy_folder(EmbeddingModel(TINY_MODEL), tmp_path / "wrong")
    sidecar = json.loads((wrong / "model.json").read_text())
    sidecar["config"]["student_dim"] = 16  # a description that does not describe these weights
    (wrong / "model.json").write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    with pytest.raises(CheckpointError, match="weights do not fit the architecture in model.json"):
        seal_legacy_folder(wrong)
    assert not (damaged / "model.sha256").exists() and not (wrong / "model.sha256").exists()


# -- pretrained-backbone and teacher weight files -----------------------------------------------------------


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0, img_size=16).state_dict()
    torch.save(vit, root / "good.pth")
    save_file({k: v.contiguous() for k, v in vit.items()}, str(root / "good.safetensors"))
    files = {
        "empty.pth": b"", "empty.safetensors": b"", "empty.npz": b"",
        "truncated.pth": (root / "good.pth").read_bytes()[:4000],
        "truncated.safetensors": (root / "good.safetensors").read_bytes()[:4000],
        "text.pth": b"these are not weights\n" * 20, "text.safetensors": b"these are not weights\n" * 20,
        "text.npz": b"these are not weights\n" * 20,
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    torch.save(torch.zeros(3), root / "bare_tensor.pth")
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), root / "resnet.pth")
    save_file(timm.create_model("resnet10t", num_classes=0).state_dict(), str(root / "resnet.safetensors"))
    torch.save(timm.create_model("test_vit", num_classes=0, img_size=16, embed_dim=32).state_dict(),
               root / "narrower_vit.pth")
    return {p.name: p for p in root.iterdir()}


_BAD_FILES = ["empty.pth", "empty.safetensors", "empty.npz", "truncated.pth", "truncated.safetensors", "text.pth",
              "text.safetensors", "text.npz", "bare_tensor.pth"]
_OTHER_ARCHITECTURES = ["resnet.pth", "resnet.safetensors", "narrower_vit.pth"]
_DOORS = {
    "backbone": lambda path: create_backbone(BackboneConfig(name="test_vit", img_size=16, pretrained=str(path))),
    "teacher": lambda path: create_teacher(TeacherConfig(name="t", timm_model="test_vit", img_size=16,
                                                         weights=str(path))),
}


@pytest.mark.parametrize("door", sorted(_DOORS))
@pytest.mark.parametrize("name", _BAD_FILES)
def test_an_unusable_weights_file_is_one_sentence_naming_it(weight_files, door, name):
    with pytest.raises(UdonUserError) as err:
        _DOORS[door](weight_files[name])
    assert _sentence_naming(err.value, name), str(err.value)
    assert "weights_only" not in str(err.value)  # never torch's hint to load with weights_only=False


@pytest.mark.parametrize("door", sorted(_DOORS))
@pytest.mark.parametrize("name", _OTHER_ARCHITECTURES)
def test_weights_of_another_architecture_are_refused_not_loaded_over_a_random_init(weight_files, door, name):
    with pytest.raises(UdonUserError, match=rf"weights '.*{re.escape(name)}' do not fit test_vit: ") as err:
        _DOORS[door](weight_files[name])
    assert "\n" not in str(err.value)


def test_a_teacher_of_the_same_architecture_loads_every_tensor_through_timms_filter(weight_files):
    reference = torch.load(weight_files["good.pth"], weights_only=True)
    teacher = create_teacher(TeacherConfig(name="t", timm_model="test_vit", img_size=16,
                                           weights=str(weight_files["good.pth"])))
    assert set(teacher.model.state_dict()) == set(reference)
    assert all(torch.equal(teacher.model.state_dict()[k], v) for k, v in reference.items())
    # timm's checkpoint filter still applies: a 16 px checkpoint feeds a 32 px teacher (position embeddings resampled)
    bigger = create_teacher(TeacherConfig(name="t", timm_model="test_vit", img_size=32,
                                          weights=str(weight_files["good.pth"])))
    assert bigger.model.pos_embed.shape[1] > reference["pos_embed"].shape[1]
    assert "state_dict" not in bigger.model.pretrained_cfg  # timm's config does not keep a copy of the weights


# -- the registered MLflow model: model.pt2 + model.pt2.sha256, checked by the pyfunc loader shipped with it ----


@pytest.fixture(scope="module")
def mlflow_model(tmp_path_factory) -> tuple[Path, EmbeddingModel]:
    from integrations.mlflow_models import save_pt2_model

    torch.manual_seed(0)
    model = EmbeddingModel(TINY_MODEL).eval()
    return save_pt2_model(model, tmp_path_factory.mktemp("mlflow") / "model"), model


def _pyfunc_load(folder: Path) -> object:
    import mlflow

    try:
        return mlflow.pyfunc.load_model(str(folder))
    except ValueError as err:  # MLflow imports the loader shipped in the model: its own DamagedModelError class
        assert type(err).__name__ == "DamagedModelError"
        raise CheckpointError(str(err)) from err


def test_the_registered_model_loads_through_its_check_and_answers_as_the_model(mlflow_model):
    folder, model = mlflow_model
    pyfunc = _pyfunc_load(folder)
    assert pyfunc.metadata.flavors["python_function"]["loader_module"] == "udon_pt2_loader"
    assert (folder / "code" / "udon_pt2_loader.py").is_file()
    pt2 = folder / "data" / "model.pt2"
    assert (folder / "data" / "model.pt2.sha256").read_text() == f"{file_sha256(pt2)}  model.pt2\n"  # sha256sum -c
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(torch.from_numpy(pyfunc.predict(images.numpy())), model(images).detach())
    torch.testing.assert_close(pyfunc.get_raw_model()(images), model(images).detach())  # the checked torch module


def test_the_registered_model_loads_on_a_gpu_host_where_its_cpu_program_must_stay(mlflow_model, monkeypatch):
    folder, model = mlflow_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # MLflow's pyfunc would pick CUDA here
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    images = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(torch.from_numpy(_pyfunc_load(folder).predict(images.numpy())), model(images).detach())


def _pt2_positions(pt2: Path) -> tuple[list[int], list[int]]:
    """Byte offsets inside 12 weight records, and 12 more across the rest (graph, metadata, zip structures)."""
    import zipfile

    raw = pt2.read_bytes()
    with zipfile.ZipFile(pt2) as archive:
        records = [i for i in archive.infolist() if "/weights/weight_" in i.filename and i.file_size >= 256]
    step = max(1, len(records) // 12)
    weights = []
    for info in records[::step][:12]:
        header = raw[info.header_offset:info.header_offset + 30]  # local file header: name and extra lengths
        start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30],
                                                                                                   "little")
        weights.append(start + info.file_size // 2)
    others = [0, 40, *range(len(raw) - 2000, len(raw), 200)][:12]
    return weights, others


def test_bit_flips_in_the_pt2_weights_and_archive_are_refused_on_load(mlflow_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(mlflow_model[0], folder)
    pt2 = folder / "data" / "model.pt2"
    weights, others = _pt2_positions(pt2)
    assert len(weights) == 12
    attempts, through = _flip_sweep(pt2, lambda: _pyfunc_load(folder), weights + others, bits=(6,))
    assert attempts == 24 and through == [], through[:5]


def test_every_bit_flip_in_the_pt2_digest_and_a_missing_digest_are_refused(mlflow_model, tmp_path):
    from integrations.udon_pt2_loader import DamagedModelError, verify

    folder = tmp_path / "model"
    shutil.copytree(mlflow_model[0], folder)
    digest = folder / "data" / "model.pt2.sha256"

    def check() -> None:
        try:
            verify(folder / "data")
        except DamagedModelError as err:
            raise CheckpointError(str(err)) from err

    attempts, through = _flip_sweep(digest, check, range(digest.stat().st_size))
    assert attempts == 8 * digest.stat().st_size and through == [], through[:5]
    digest.unlink()
    with pytest.raises(CheckpointError, match="model.pt2.sha256: missing, so model.pt2 cannot be checked"):
        _pyfunc_load(folder)
