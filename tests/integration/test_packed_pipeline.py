"""The pipeline on packed benchmarks: a UnED-shaped one end to end, and the corrupted twin's every defect named."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from tests.byob import DEFECTS, write_corrupted_benchmark
from tests.integration.conftest import tiny_run_config
from tests.repos import init_repo, track_data

pytestmark = pytest.mark.slow


def _packed_repo(base, write, **pack) -> tuple:
    """A git + DVC repository whose data/ is ``write``'s benchmark packed (``pack``: PackConfig fields)."""
    from udon_core.data import PackConfig, pack_benchmark

    repo = init_repo(base / "repo", remote=base / "remote")
    result = pack_benchmark(write(base / "loose"), repo / "data", PackConfig(workers=1, **pack), progress=False)
    track_data(repo, "packed benchmark", push=True)
    return repo, result


def test_a_packed_uned_shaped_benchmark_runs_ingest_to_register(tmp_path):
    from integrations import dvc_store
    from pipelines.run import run_pipeline
    from udon_core.data.uned_like import UnedLikeConfig, write_uned_like_benchmark

    config = UnedLikeConfig(images=120, min_side=40, max_side=72, workers=1)
    repo, packed = _packed_repo(tmp_path, lambda root: write_uned_like_benchmark(root, config, progress=False),
                                short_side=40)
    assert packed.resized > 0 and not (repo / "data" / "images").exists()
    path = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-packed"})
    run = yaml.safe_load(path.read_text())
    train = run["parameters"]["training"]
    train["train"].update(steps=3, batch_size=4, frozen_steps=1)
    # UnED's 316k train classes: small heads keep the classifiers to a few MB
    train["model"].update(student_dim=8, teacher_dim=16)
    run["parameters"]["data"]["packing"] = "short-side 40"
    path.write_text(yaml.safe_dump(run))
    outcome = run_pipeline(path)
    assert outcome.status.endswith("completed") and outcome.validation.success
    assert outcome.dataset_md5 == dvc_store.read_pin(repo).md5
    assert set(outcome.metrics["per_domain"]) == {"food2k", "cars", "sop", "inshop", "inat", "met", "gldv2", "rp2k"}
    assert outcome.registration["version"] == "1"


def test_every_defect_is_named_on_a_packed_benchmark_and_a_damaged_shard_by_shard_and_record(tmp_path):
    from pipelines.cli import cli

    repo, packed = _packed_repo(tmp_path, lambda root: write_corrupted_benchmark(root, tmp_path / "outside"))
    assert {p.path for p in packed.problems} >= {"shop/train/gone.png", "shop/train/truncated.png",
                                                 "art/train/link.png"}
    # one flipped byte in a stored record of a shard: the image check names the record and the shard
    index = pq.read_table(repo / "data" / "packed" / "index.parquet").to_pylist()
    hit = next(r for r in index if r["path"] == "art/val/0_1.jpg")
    shard = repo / "data" / hit["shard"]
    data = bytearray(shard.read_bytes())
    data[hit["offset"] + 50] ^= 0x01
    shard.write_bytes(bytes(data))
    track_data(repo, "a damaged shard", push=True)
    config = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-packed-broken"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    text = result.output
    assert result.exit_code == 2 and "step 'data_validator' failed" in text and "Traceback" not in text, text
    missing = {name: (check, fragment) for name, (check, fragment) in DEFECTS.items()
               if check not in text or fragment not in text}
    assert not missing, text
    assert (f"art/val.json row 1: art/val/0_1.jpg (value \"damaged shard {shard}: the record's {hit['length']} "
            f"bytes at offset {hit['offset']} do not match the index checksum\")") in text
    assert "art/train.json row 12: art/train/link.png" in text  # a link out of images/: never read, never packed


def test_a_damaged_index_stops_the_run_in_one_sentence_naming_it(tmp_path):
    from pipelines.cli import cli
    from tests.byob import write_benchmark

    repo, _ = _packed_repo(tmp_path, write_benchmark)
    index = repo / "data" / "packed" / "index.parquet"
    index.write_bytes(index.read_bytes()[:-100])
    track_data(repo, "a damaged index", push=True)
    config = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-packed-index"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{index}: damaged or unreadable packed index" in result.output
