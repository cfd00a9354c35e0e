"""Hostile and damaged files at every door that loads weights: nothing runs, nothing is silently accepted."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import udon_core.training.checkpoint as checkpoint_module
from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, write_tiny_benchmark
from udon_core.data import num_train_classes, read_manifest, save_benchmark_spec
from udon_core.digests import file_sha256, write_digest_file
from udon_core.errors import CheckpointError, UdonUserError
from udon_core.model import (
    BackboneConfig,
    EmbeddingModel,
    TeacherConfig,
    UdonModel,
    create_backbone,
    create_teacher,
    load_embedding_model,
)
from udon_core.training import (
    SamplerConfig,
    TrainConfig,
    checkpoint_files,
    load_checkpoint,
    load_latest,
    read_tensors_file,
    save_checkpoint,
    train,
)

CLASSES = {"shapes": 3, "colors": 3}
CFG = TrainConfig(steps=6, batch_size=4, frozen_steps=2, log_every=1, checkpoint_every=1, deterministic=True,
                  device="cpu", sampler=SamplerConfig(update_every=4))


class _Payload:
    """Unpickling this creates a marker file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    """A real torch zip archive whose pickle runs code, with a correct digest (an attacker can write both)."""
    torch.save({"format": "udon-train-checkpoint/3", "step": 1, "payload": _Payload(marker)}, path)
    path.with_name(path.name + ".sha256").write_text(f"{file_sha256(path)}  {path.name}\n")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = write_tiny_benchmark(tmp_path_factory.mktemp("tiny"))
    manifest = read_manifest(root, SPEC)
    return root, manifest, num_train_classes(manifest, SPEC)


def _model(classes) -> UdonModel:
    torch.manual_seed(0)
    return UdonModel(TINY_MODEL, classes)


def _flip_byte(path: Path, offset_from_end: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


# -- training checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_are_written_with_digests_and_only_the_last_two_kept(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((2,), float(step))})
    assert [p.name for p in checkpoint_files(tmp_path)] == ["checkpoint-000000003.pt", "checkpoint-000000002.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000000002.pt", "checkpoint-000000002.pt.sha256",
        "checkpoint-000000003.pt", "checkpoint-000000003.pt.sha256"]
    path, state = load_latest(tmp_path)
    assert path.name == "checkpoint-000000003.pt" and state["step"] == 3


def test_a_checkpoint_that_runs_code_is_refused_and_nothing_runs(tmp_path, bench):
    root, manifest, classes = bench
    marker = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    _malicious_checkpoint(tmp_path / "ckpt" / "checkpoint-000000001.pt", marker)
    with pytest.raises(CheckpointError, match="no usable checkpoint.*refused, it holds Python objects"):
        train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert not marker.exists()


def test_a_flipped_byte_falls_back_to_the_previous_checkpoint_and_resumes_exactly(tmp_path, bench, caplog):
    root, manifest, classes = bench
    straight = train(_model(classes), root, manifest, SPEC, CFG, progress=False)

    def crash(metrics, step):
        if step == 5:
            raise KeyboardInterrupt  # a kill after step 5's metrics, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, callback=crash, progress=False)
    newest, previous = checkpoint_files(tmp_path)
    _flip_byte(newest)
    with caplog.at_level(logging.WARNING):
        resumed = train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)
    assert "does not match its SHA-256" in caplog.text and previous.name in caplog.text
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_when_every_checkpoint_is_damaged_the_run_stops_naming_each(tmp_path, bench):
    root, manifest, classes = bench
    train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 2}), checkpoint_dir=tmp_path,
          progress=False)
    for path in checkpoint_files(tmp_path):
        _flip_byte(path)
    with pytest.raises(CheckpointError) as err:
        train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)
    assert all(p.name in str(err.value) for p in checkpoint_files(tmp_path))
    assert isinstance(err.value, UdonUserError)


@pytest.mark.parametrize("killed_at, resumes", [
    (1, "starting from step 0"), (4, "from the previous checkpoint checkpoint-000000003.pt")])
def test_a_kill_between_a_checkpoint_and_its_digest_never_blocks_a_restart(tmp_path, bench, caplog, killed_at, resumes):
    """kill -9 after checkpoint-<step>.pt is renamed into place, before its .sha256 is written: that checkpoint
    is incomplete and ignored; the restarted run continues from the one before, or from step 0, and says so."""
    root, manifest, classes = bench
    straight = train(_model(classes), root, manifest, SPEC, CFG, progress=False)
    real = checkpoint_module.write_digest_file

    def killed(digest_file: Path, files) -> None:
        if digest_file.name == f"checkpoint-{killed_at:09d}.pt.sha256":
            raise KeyboardInterrupt  # the process dies here: the .pt is complete on disk, its digest is not
        real(digest_file, files)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "write_digest_file", killed)
        with pytest.raises(KeyboardInterrupt):
            train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)
    newest = checkpoint_files(tmp_path)[0]
    assert newest.name == f"checkpoint-{killed_at:09d}.pt" and not Path(f"{newest}.sha256").exists()
    with caplog.at_level(logging.WARNING):
        resumed = train(_model(classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)
    assert f"ignoring {newest}: it has no {newest.name}.sha256" in caplog.text and resumes in caplog.text
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert resumed.steps == CFG.steps and all(torch.equal(a[k], b[k]) for k in a)
    assert all(Path(f"{p}.sha256").is_file() for p in checkpoint_files(tmp_path))  # the incomplete one is gone


def test_a_checkpoint_of_another_architecture_or_benchmark_is_one_sentence(tmp_path, bench):
    root, manifest, classes = bench
    short = CFG.model_copy(update={"steps": 2})
    train(_model(classes), root, manifest, SPEC, short, checkpoint_dir=tmp_path, progress=False)
    newest = checkpoint_files(tmp_path)[0]
    wider = TINY_MODEL.model_copy(update={"student_dim": 16})
    with pytest.raises(CheckpointError, match=re.escape(f"{newest} belongs to another run (student_dim: 8 there, "
                                                        "16 here)")):
        train(UdonModel(wider, classes), root, manifest, SPEC, short,
              checkpoint_dir=tmp_path, progress=False)
    one = SPEC.model_copy(update={"domains": SPEC.domains[:1]})
    with pytest.raises(CheckpointError, match=re.escape("classes: {'shapes': 3, 'colors': 3} there, {'shapes': 3} "
                                                        "here): give this run its own checkpoint folder")):
        train(_model({"shapes": 3}), root, manifest, one, short, checkpoint_dir=tmp_path, progress=False)
    # a checkpoint from before checkpoints named their model: the state dict itself does not fit
    state = load_checkpoint(newest)
    del state["model"]
    save_checkpoint(tmp_path, 3, state)
    with pytest.raises(CheckpointError, match=r"checkpoint-000000003.pt does not fit this run's model or method "
                                              r"\(Error\(s\) in loading state_dict"):
        train(UdonModel(wider, classes), root, manifest, SPEC, CFG, checkpoint_dir=tmp_path, progress=False)


def test_a_checkpoint_past_the_configured_steps_is_refused_not_trained_on(tmp_path, bench):
    root, manifest, classes = bench
    train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 4}), checkpoint_dir=tmp_path,
          progress=False)
    with pytest.raises(CheckpointError, match=r"checkpoint-000000004.pt is at step 4, past train.steps=2: raise "
                                              "train.steps to continue that run"):
        train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 2}), checkpoint_dir=tmp_path,
              progress=False)
    # the same steps again (a pod restarted after its last checkpoint) is no error: nothing is left to train
    again = train(_model(classes), root, manifest, SPEC, CFG.model_copy(update={"steps": 4}), checkpoint_dir=tmp_path,
                  progress=False)
    assert again.steps == 4


@pytest.mark.parametrize("content, message", [
    (b"", "empty file (0 bytes)"),
    (b"garbage that is not a checkpoint" * 10, "not a PyTorch checkpoint (not a zip archive"),
    (pickle.dumps({"step": 1}), "not a PyTorch checkpoint (not a zip archive"),
])
def test_empty_and_garbage_checkpoints_get_one_sentence(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)) as err:
        read_tensors_file(path)
    assert str(path) in str(err.value)


def test_a_truncated_checkpoint_gets_one_sentence(tmp_path):
    path = tmp_path / "checkpoint-000000001.pt"
    torch.save({"w": torch.arange(10_000)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_tensors_file(path)
    with pytest.raises(CheckpointError, match="no checkpoint-000000001.pt.sha256 beside it"):
        load_checkpoint(path)


# -- exported and training models (safetensors + model.json) --------------------------------------------------


def test_a_flipped_byte_in_an_exported_model_is_refused(tmp_path):
    torch.manual_seed(0)
    EmbeddingModel(TINY_MODEL).save(tmp_path)
    _flip_byte(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: content does not match its SHA-256 in model.sha256"):
        EmbeddingModel.load(tmp_path)


def _reseal(folder: Path) -> None:
    """What an attacker who can write the folder does after replacing a file: a matching model.sha256."""
    write_digest_file(folder / "model.sha256", [folder / "model.json", folder / "model.safetensors"])


def test_a_pickle_disguised_as_safetensors_runs_nothing_and_is_named(tmp_path):
    marker = tmp_path / "pwned"
    UdonModel(TINY_MODEL, CLASSES).save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        UdonModel.load(tmp_path / "m")
    # an attacker who also rewrites the digest meets the safetensors parser, which reads no pickle
    _reseal(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        UdonModel.load(tmp_path / "m")
    assert not marker.exists()


def test_empty_weights_and_broken_sidecars_are_named(tmp_path):
    EmbeddingModel(TINY_MODEL).save(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json: content does not match its SHA-256"):
        load_embedding_model(tmp_path)
    _reseal(tmp_path)
    with pytest.raises(CheckpointError, match="model.json: not valid JSON"):
        load_embedding_model(tmp_path)
    EmbeddingModel(TINY_MODEL).save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    _reseal(tmp_path)
    with pytest.raises(CheckpointError, match="model.safetensors: empty file"):
        EmbeddingModel.load(tmp_path)


# -- every other door: teachers, specialists, pretrained weights, the CLI, ZenML's materializer -----------------


def test_every_door_refuses_a_pickle_that_runs_code(tmp_path, bench):
    marker = tmp_path / "pwned"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(marker)}, evil_pth)
    evil_folder = tmp_path / "evil_model"
    UdonModel(TINY_MODEL, CLASSES).save(evil_folder)
    (evil_folder / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))

    attempts = {
        "teacher weights (timm)": lambda: create_teacher(TeacherConfig(name="t", timm_model="test_vit", img_size=16,
                                                                       weights=str(evil_pth))),
        "teacher (udon model)": lambda: create_teacher(TeacherConfig(name="t", udon_model=str(evil_folder))),
        "specialist / training model": lambda: UdonModel.load(evil_folder),
        "pretrained backbone": lambda: create_backbone(BackboneConfig(name="test_vit", img_size=16,
                                                                      pretrained=str(evil_pth))),
    }
    for door, attempt in attempts.items():
        with pytest.raises(Exception) as err:  # noqa: PT011 - each door has its own error type; none may run code
            attempt()
        assert not marker.exists(), f"{door} ran code"
        assert "Traceback" not in str(err.value), door

    from pipelines.cli import cli

    root = bench[0]
    spec_file = save_benchmark_spec(SPEC, tmp_path)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(evil_folder), "--data", str(root), "--benchmark",
                                      str(spec_file), "--split", "val"])
    assert result.exit_code == 2 and "model.safetensors" in result.output and not marker.exists()

    from steps.materializers import ModelFolderMaterializer

    with pytest.raises(CheckpointError):
        ModelFolderMaterializer(str(evil_folder)).load(UdonModel)
    assert not marker.exists()
