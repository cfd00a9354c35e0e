"""Packed benchmarks: the shard format, `udon data pack`, and reading packed data exactly as loose data."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tarfile
import zlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms import v2 as T

from tests.byob import write_benchmark
from tests.unit.tiny_benchmark import SPEC, TINY_MODEL, Crash, crash_at, write_tiny_benchmark
from udon_core.data import (
    ImageListDataset,
    ImageRecord,
    PackConfig,
    PackedIndexError,
    Preprocess,
    eval_transform,
    image_source,
    is_packed,
    normalize,
    num_train_classes,
    open_rgb,
    pack_benchmark,
    read_manifest,
    read_pack_meta,
    records_of,
    resolve_benchmark_spec,
    train_transform,
    tree_digest,
)
from udon_core.data.containment import DataRoot
from udon_core.data.image_source import LooseImages, PackedImages
from udon_core.data.uned_like import UnedLikeConfig, write_uned_like_benchmark
from udon_core.errors import ImageFileError, InvalidValueError
from udon_core.evaluation import embed_benchmark
from udon_core.model import UdonModel
from udon_core.training import SamplerConfig, TrainConfig, TrainingJobConfig, build_model, run_training, train

ONE = PackConfig(workers=1)


@pytest.fixture(scope="module")
def byob(tmp_path_factory):
    """The bring-your-own benchmark (PNG, JPEG, grayscale, 16-bit, CMYK, a duplicate) and its packed copy."""
    base = tmp_path_factory.mktemp("byob")
    src = write_benchmark(base / "src")
    pack_benchmark(src, base / "packed", ONE, progress=False)
    return src, base / "packed"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A small UnED-shaped benchmark of JPEG photos (sides 60-120 px) and its copy packed at a 48 px short side."""
    base = tmp_path_factory.mktemp("photos")
    src = write_uned_like_benchmark(base / "src", UnedLikeConfig(images=80, min_side=60, max_side=120, workers=1),
                                    progress=False)
    pack_benchmark(src, base / "small", PackConfig(short_side=48, workers=1), progress=False)
    return src, base / "small"


def test_the_same_input_packs_to_the_same_bytes_whatever_the_workers(byob, tmp_path):
    src, packed = byob
    again = pack_benchmark(src, tmp_path / "again", PackConfig(workers=2), progress=False)
    assert tree_digest(tmp_path / "again") == tree_digest(packed)
    assert again.records == 65 and again.images == 65 and not again.problems
    # a smaller shard size changes the layout, so the bytes, never the records
    split = pack_benchmark(src, tmp_path / "small", PackConfig(workers=1, shard_bytes=2**16), progress=False)
    assert split.shards > again.shards and split.records == again.records


def test_shards_are_plain_tar_in_the_webdataset_convention_and_the_index_points_at_the_bytes(byob):
    src, packed = byob
    index = pq.read_table(packed / "packed" / "index.parquet").to_pylist()
    assert [(r["domain"], r["split"], r["row"]) for r in index][:3] == [("shop", "train", 0), ("shop", "train", 1),
                                                                       ("shop", "train", 2)]
    by_shard = {}
    for r in index:
        by_shard.setdefault(r["shard"], []).append(r)
    for shard, rows in by_shard.items():
        with tarfile.open(packed / shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert all((m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
                       for m in members.values())
            for r in rows:
                key = f"{r['row']:09d}"
                image = next(m for n, m in members.items() if n.startswith(key + ".") and not n.endswith(".json"))
                assert (image.offset_data, image.size) == (r["offset"], r["length"])
                data = (src / "images" / r["path"]).read_bytes()
                assert tar.extractfile(image).read() == data and zlib.crc32(data) == r["crc32"]
                meta = json.loads(tar.extractfile(members[key + ".json"]).read())
                assert (meta["path"], meta["split"], meta["row"]) == (r["path"], r["split"], r["row"])
    assert (packed / "info_files" / "art" / "test.json").read_bytes() == (src / "info_files/art/test.json").read_bytes()
    assert (packed / "benchmark.json").read_bytes() == (src / "benchmark.json").read_bytes()
    assert not (packed / "images").exists() and is_packed(packed) and not is_packed(src)
    meta = read_pack_meta(packed)
    assert meta["stored"] == "original bytes" and meta["records"] == 65


def test_kept_bytes_decode_exactly_as_the_loose_files(byob):
    src, packed = byob
    spec = resolve_benchmark_spec("auto", src)
    manifest = read_manifest(packed, spec)
    paths = list(manifest["path"])
    loose, stored = image_source(src).reader(paths), image_source(packed).reader(paths)
    assert isinstance(image_source(packed), PackedImages) and isinstance(image_source(src), LooseImages)
    for i in range(len(paths)):
        a, b = loose.open(i), stored.open(i)
        assert a[1] == b[1] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))  # the file's mode too (I;16, CMYK)


def test_pre_resizing_shrinks_to_the_short_side_and_never_upscales(photos):
    src, small = photos
    manifest = read_manifest(small, resolve_benchmark_spec("auto", small))
    paths = list(manifest["path"])
    reader = image_source(small).reader(paths)
    index = {r["path"]: r for r in pq.read_table(small / "packed" / "index.parquet").to_pylist()}
    for i, path in enumerate(paths):
        with Image.open(src / "images" / path) as im:
            original = im.size
        image, mode = reader.open(i)
        assert min(image.size) == 48 and mode == "RGB"
        assert abs(image.width / image.height - original[0] / original[1]) < 0.05
        assert reader.original(i) == (*original, "RGB") and index[path]["stored"] == "resized"
    tiny = read_pack_meta(small)
    assert tiny["resized"] == tiny["images"] and tiny["stored"] == "shorter side 48 px"
    assert sum(r["length"] for r in index.values()) < tiny["source_bytes"]


def test_images_at_or_below_the_short_side_keep_their_bytes(byob, tmp_path):
    src, _ = byob
    pack_benchmark(src, tmp_path / "p", PackConfig(workers=1, short_side=40), progress=False)  # all are 40x40
    assert tree_digest(tmp_path / "p" / "info_files") == tree_digest(src / "info_files")
    rows = pq.read_table(tmp_path / "p" / "packed" / "index.parquet").to_pylist()
    assert {r["stored"] for r in rows} == {"original"}


def test_draft_decoding_never_goes_below_what_the_transform_needs(photos, tmp_path):
    src, _ = photos
    path = next((src / "images").rglob("*.jpg"))
    big = tmp_path / "big.jpg"
    with Image.open(path) as im:
        im.resize((1000, 700)).save(big, quality=90)
    full, mode = open_rgb(big)
    for need in (64, 150, 256, 349, 700, 900):
        drafted, same = open_rgb(big, draft=need)
        assert same == mode and min(drafted.size) >= min(need, 700)
        assert min(drafted.size) < 2 * need or drafted.size == full.size  # reduced as far as allowed
    png = tmp_path / "big.png"
    full.save(png)
    assert open_rgb(png, draft=64)[0].size == full.size  # only JPEGs have DCT scaling


def test_uint8_batches_normalised_on_the_device_equal_the_old_float_transform(photos, monkeypatch):
    src, _ = photos
    p = Preprocess(image_size=32)
    old = T.Compose([train_transform(p), T.ToDtype(torch.float32, scale=True), T.Normalize(p.mean, p.std)])
    images = [open_rgb(path)[0] for path in sorted((src / "images").rglob("*.jpg"))[:6]]
    torch.manual_seed(0)
    expected = torch.stack([old(im) for im in images])
    torch.manual_seed(0)
    batch = torch.stack([train_transform(p)(im) for im in images])
    assert batch.dtype == torch.uint8 and batch.shape == (6, 3, 32, 32)
    assert torch.equal(normalize(batch, p), expected)
    assert eval_transform(p)(images[0]).dtype == torch.uint8
    made, tensor = [], torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **kw: made.append(a) or tensor(*a, **kw))
    # the mean and std are made once per device, not per batch (on CUDA each is a synchronous copy)
    assert torch.equal(normalize(batch, p), expected) and not made


def _bench(root):
    manifest = read_manifest(root, SPEC)
    return manifest, num_train_classes(manifest, SPEC)


def test_training_on_packed_data_matches_loose_and_resumes_bit_identically(tmp_path):
    loose = write_tiny_benchmark(tmp_path / "loose")
    packed = tmp_path / "packed"
    pack_benchmark(loose, packed, ONE, progress=False)
    manifest, classes = _bench(packed)
    cfg = TrainConfig(steps=8, batch_size=4, frozen_steps=3, log_every=1, checkpoint_every=2, deterministic=True,
                      device="cpu", sampler=SamplerConfig(update_every=4))

    def model():
        torch.manual_seed(0)
        return UdonModel(TINY_MODEL, classes)

    straight = train(model(), packed, manifest, SPEC, cfg, progress=False)
    from_loose = train(model(), loose, _bench(loose)[0], SPEC, cfg, progress=False)
    with pytest.raises(Crash):  # dies after step 5: resumes from the step-4 checkpoint, streams at their batches
        train(model(), packed, manifest, SPEC, cfg, checkpoint_dir=tmp_path / "ckpt", callback=crash_at(5),
              progress=False)
    resumed = train(model(), packed, manifest, SPEC, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    a, b, c = straight.model.state_dict(), resumed.model.state_dict(), from_loose.model.state_dict()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert resumed.last_metrics == straight.last_metrics == from_loose.last_metrics


@pytest.fixture()
def index_reads(monkeypatch):
    """The roots of every packed index read (a Parquet read of the whole index: 4.1M rows at UnED size)."""
    module = importlib.import_module("udon_core.data.image_source")  # the package exports a function of that name
    reads = []

    class Counted(module.PackedIndex):
        def __init__(self, root):
            reads.append(root)
            super().__init__(root)

    monkeypatch.setattr(module, "PackedIndex", Counted)
    return reads


def test_training_validation_and_evaluation_read_the_packed_index_once(tmp_path, index_reads):
    pack_benchmark(write_tiny_benchmark(tmp_path / "loose"), tmp_path / "packed", ONE, progress=False)
    manifest, _ = _bench(tmp_path / "packed")
    config = TrainingJobConfig(model=TINY_MODEL, train=TrainConfig(steps=4, batch_size=4, frozen_steps=1,
                                                                   device="cpu"), validate_every=2)
    result = run_training(build_model(config, manifest, SPEC), config, tmp_path / "packed", manifest, SPEC,
                          checkpoint_dir=None, progress=False)
    assert result.best_step is not None  # it validated (at steps 2 and 4), each time over both domains' val files
    assert len(index_reads) == 1  # the streams and every validation share one source
    index_reads.clear()
    embed_benchmark(result.model.embedding_model(), tmp_path / "packed", manifest, SPEC, splits=("val",),
                    progress=False)
    assert len(index_reads) == 1  # one read for the two info files, not one per file


def test_validation_reads_the_packed_index_once(byob, index_reads):
    from integrations.expectations import ValidationConfig, validate_folder

    report = validate_folder(byob[1], config=ValidationConfig(image_sample=8))
    assert report.rows == 65 and len(index_reads) == 1  # the containment columns and the image check share it


def test_a_packed_dataset_reads_in_worker_processes(tmp_path):
    loose = write_tiny_benchmark(tmp_path / "loose")
    pack_benchmark(loose, tmp_path / "packed", ONE, progress=False)
    manifest, _ = _bench(tmp_path / "packed")
    records = records_of(manifest, "shapes", "train")
    p = Preprocess(image_size=16)
    ds = ImageListDataset(tmp_path / "packed", records, eval_transform(p))
    direct = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    assert torch.equal(torch.cat([images for images, _, _ in loader]), direct)
    assert torch.equal(direct, torch.stack([ImageListDataset(loose, records, eval_transform(p))[i][0]
                                            for i in range(len(ds))]))


def _damaged(tmp_path, src):
    out = tmp_path / "packed"
    pack_benchmark(src, out, ONE, progress=False)
    rows = pq.read_table(out / "packed" / "index.parquet").to_pylist()
    return out, rows


def test_a_damaged_shard_is_named_with_the_record(byob, tmp_path):
    out, rows = _damaged(tmp_path, byob[0])
    first, last = rows[0], next(r for r in reversed(rows) if r["shard"] == rows[0]["shard"])
    shard = out / first["shard"]
    data = bytearray(shard.read_bytes())
    data[first["offset"] + 100] ^= 0xFF  # one flipped bit inside the first record
    shard.write_bytes(bytes(data[: last["offset"] + 10]))  # and the shard cut inside the last one
    reader = image_source(out).reader([first["path"], last["path"], rows[-1]["path"]])
    with pytest.raises(ImageFileError, match=re.escape(f"{first['path']}: damaged shard {out / first['shard']}: "
                                                       f"the record's {first['length']} bytes at offset "
                                                       f"{first['offset']} do not match the index checksum")):
        reader.open(0)
    with pytest.raises(ImageFileError, match=re.escape(f"{last['path']}: damaged shard {shard}: ") + ".* run past "
                       "the end of the file"):
        reader.open(1)
    reader.open(2)  # another shard is untouched
    (out / rows[-1]["shard"]).unlink()
    with pytest.raises(ImageFileError, match=re.escape(f"{rows[-1]['path']}: its shard {out / rows[-1]['shard']} "
                                                       "is missing")):
        image_source(out).reader([rows[-1]["path"]]).open(0)


def test_a_damaged_index_is_one_sentence_naming_it(byob, tmp_path):
    out, _ = _damaged(tmp_path, byob[0])
    index = out / "packed" / "index.parquet"
    index.write_bytes(index.read_bytes()[:200])
    with pytest.raises(PackedIndexError, match=rf"{index}: damaged or unreadable packed index"):
        image_source(out)
    reader = image_source(_damaged(tmp_path / "b", byob[0])[0]).reader(["shop/train/nowhere.png"])
    assert not reader.exists(0)
    with pytest.raises(ImageFileError, match="shop/train/nowhere.png: not in the packed index"):
        reader.open(0)


def test_bad_images_are_stored_as_they_are_and_reported_by_file_and_row(tmp_path):
    from tests.byob import write_corrupted_benchmark

    src = write_corrupted_benchmark(tmp_path / "src", tmp_path / "outside")
    result = pack_benchmark(src, tmp_path / "packed", PackConfig(workers=1, short_side=20), progress=False)
    found = {p.path: (p.info_file, p.row, p.problem) for p in result.problems}
    assert found["shop/train/gone.png"] == ("shop/train.json", 16, "file not found: not packed")
    assert found["shop/train/empty.png"][2] == "empty file (0 bytes) (stored as it is)"
    assert found["shop/train/truncated.png"][2].startswith("cannot be decoded")
    assert found["shop/train/notes.png"][2].startswith("not an image file PIL can read")
    assert "decompression bomb" in found["shop/train/bomb.png"][2]
    assert found["art/train/link.png"][:2] == ("art/train.json", 12)
    assert found["art/train/link.png"][2].startswith("not read, not packed: leaves the data root: it resolves to")
    reader = image_source(tmp_path / "packed").reader(["shop/train/truncated.png", "art/train/link.png"])
    with pytest.raises(ImageFileError, match="cannot be decoded"):
        reader.open(0)  # the same finding as the loose file
    assert read_pack_meta(tmp_path / "packed")["problems"][0].startswith("shop/train.json row 16")
    # where each image is, by the containment rule: the index answers as the loose folder does
    manifest = read_manifest(src, resolve_benchmark_spec("auto", src), problems=[])
    manifest = pd.concat([manifest, pd.DataFrame({"domain": ["shop"], "split": ["train"], "row": [99],
                                                  "path": ["shop/train/never packed.png"], "labels": [[0]]})],
                         ignore_index=True)
    loose, packed = (image_source(root).locate(manifest["path"]).drop(columns="reason")
                     for root in (src, tmp_path / "packed"))
    pd.testing.assert_frame_equal(loose, packed, check_dtype=False)
    assert not loose.set_index(manifest["path"]).loc["art/train/link.png", "inside_root"]


def test_packing_refuses_an_info_file_or_description_linked_out_of_the_folder(tmp_path, monkeypatch):
    """As reading the benchmark does: a file from outside would be sealed into the packed copy's data version."""
    src, outside = write_benchmark(tmp_path / "src"), tmp_path / "elsewhere"
    outside.mkdir()
    for name in ("benchmark.json", "info_files/art/val.json"):  # each alone: the other is back in place
        linked = src / name
        shutil.move(linked, outside / linked.name)
        linked.symlink_to(outside / linked.name)
        with pytest.raises(InvalidValueError, match=rf"^{re.escape(str(linked))}: not packed: it leaves the data "
                                                    rf"root: it resolves to {re.escape(str(outside))}"):
            pack_benchmark(src, tmp_path / "out", ONE, progress=False)
        assert not (tmp_path / "out").exists()
        if name == "benchmark.json":
            linked.unlink()
            shutil.move(outside / linked.name, linked)
    # into a link root (the DVC cache of a symlinked workspace) it is the benchmark's own file
    module, roots = importlib.import_module("udon_core.data.pack"), []
    monkeypatch.setattr(module, "DataRoot", lambda *a: roots.append(a) or DataRoot(*a))
    result = pack_benchmark(src, tmp_path / "out", ONE, link_roots=[outside], progress=False)
    assert len(roots) == 1  # the folder and its link roots are resolved once, not once per image
    assert result.records == 65 and (tmp_path / "out/info_files/art/val.json").read_bytes() == (
        outside / "val.json").read_bytes() and not (tmp_path / "out/info_files/art/val.json").is_symlink()


def test_udon_data_pack_prints_progress_and_problems_and_refuses_to_overwrite(byob, tmp_path):
    from pipelines.cli import cli

    src, packed = byob
    result = CliRunner().invoke(cli, ["data", "pack", str(src), str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "pack: 65/65 (100%)" in result.output and "packed 65 records (65 images, 0 re-encoded)" in result.output
    assert tree_digest(tmp_path / "out") == tree_digest(packed)
    again = CliRunner().invoke(cli, ["data", "pack", str(src), str(tmp_path / "out")])
    assert again.exit_code == 2 and "exists and is not empty" in again.output
    both = CliRunner().invoke(cli, ["data", "pack", str(src), str(tmp_path / "x"), "--keep-bytes", "--short-side", "9"])
    assert both.exit_code == 2 and "either --short-side or --keep-bytes" in both.output
    twice = CliRunner().invoke(cli, ["data", "pack", str(packed), str(tmp_path / "y")])
    assert twice.exit_code == 2 and "is packed already" in twice.output


def test_embed_folder_gives_a_packed_benchmark_the_paths_of_the_loose_one(byob):
    from udon_core.evaluation import embed_folder
    from udon_core.model import EmbeddingModel

    src, packed = byob
    model = EmbeddingModel(TINY_MODEL)
    names, loose = embed_folder(model, src, progress=False)
    packed_names, vectors = embed_folder(model, packed, progress=False)
    assert names == packed_names and names[0] == "art/test/Gemälde 0 – 0.png" and np.array_equal(loose, vectors)
    with pytest.raises(ImageFileError):
        ImageListDataset(packed, [ImageRecord("nowhere.png", (0,))], lambda x: x)[0]


def test_the_ingest_step_checks_the_form_the_run_expects(byob, tmp_path):
    from steps.data_ingester import DataConfig, _check_packing
    from udon_core.data import packing_of

    src, packed = byob
    assert (packing_of(src), packing_of(packed)) == ("loose", "keep-bytes")
    assert _check_packing(packed, "any") == _check_packing(packed, "keep-bytes") == "keep-bytes"
    with pytest.raises(ValueError, match=re.escape(
            f"data.packing: this run expects the data as 'short-side 288', but {src} is 'loose': pack it "
            "(udon data pack <loose folder> <packed folder> --short-side 288) and dvc add the packed folder; "
            "or give --set data.packing=loose")):
        _check_packing(src, "short-side 288")
    with pytest.raises(ValueError, match="packing"):
        DataConfig(packing="short-side")
    shutil.copytree(packed, tmp_path / "p")
    (tmp_path / "p" / "packed" / "index.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(PackedIndexError, match="damaged or unreadable packed index"):
        _check_packing(tmp_path / "p", "any")
