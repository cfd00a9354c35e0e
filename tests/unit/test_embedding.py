"""Embedding extraction: record order, unit norm, one pass per info file, per-domain models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from udon_core.data import (
    BenchmarkSpec,
    DomainSpec,
    EvalSet,
    ImageRecord,
    Preprocess,
    info_file_path,
    read_manifest,
    write_info_file,
)
from udon_core.evaluation import EmbeddingSet, embed_benchmark, embed_records, eval_files

PREP = Preprocess(image_size=8)
SPEC = BenchmarkSpec(name="e", domains=(
    DomainSpec(name="a", evals={"test": EvalSet(query="test", index="test")}),   # self-query: one file
    DomainSpec(name="b", evals={"test": EvalSet(query="test", index="index")}),  # two files
))


class FakeModel(nn.Module):
    """Flatten + a fixed linear map to 5-d (not normalised, so the caller's normalisation is tested)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 5)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(5, 3 * 8 * 8, generator=torch.Generator().manual_seed(seed)))
            self.proj.bias.fill_(3.0)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.proj(x.flatten(1))


def _write(root, domain, stem, n, seed):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        path = f"{domain}/{stem}/{i}.png"
        (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        size = (8 + 2 * i, 10)  # different sizes and aspect ratios
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / "images" / path)
        records.append(ImageRecord(path, (i % 2,)))
    write_info_file(info_file_path(root, domain, stem), records)
    return records


@pytest.fixture()
def tiny(tmp_path):
    _write(tmp_path, "a", "train", 1, 0)
    _write(tmp_path, "a", "test", 4, 1)
    _write(tmp_path, "b", "train", 1, 2)
    _write(tmp_path, "b", "test", 3, 3)
    _write(tmp_path, "b", "index", 5, 4)
    return tmp_path


def test_record_order_and_unit_norm(tiny):
    records = [ImageRecord(f"b/index/{i}.png", (0,)) for i in range(5)]
    model = FakeModel().train()
    out = embed_records(model, tiny, records, PREP, batch_size=2, progress=False)
    assert out.shape == (5, 5) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    backwards = embed_records(model, tiny, records[::-1], PREP, batch_size=3, progress=False)
    assert np.allclose(backwards, out[::-1], atol=1e-6)  # order follows the records, batching does not matter
    one = embed_records(model, tiny, records[2:3], PREP, progress=False)
    assert np.allclose(one[0], out[2], atol=1e-6)
    assert model.training  # the caller's mode is restored


def test_embed_benchmark_keys_and_one_pass_per_file(tiny):
    manifest = read_manifest(tiny, SPEC)
    assert eval_files(SPEC, "test") == [("a", "test"), ("b", "test"), ("b", "index")]
    model = FakeModel()
    emb = embed_benchmark(model, tiny, manifest, SPEC, preprocess=PREP, progress=False, batch_size=4)
    assert {k: v.shape for k, v in emb.items()} == {"a/test": (4, 5), "b/test": (3, 5), "b/index": (5, 5)}
    assert model.seen == 4 + 3 + 5  # a's test file is query and index, embedded once


def test_embed_benchmark_with_one_model_per_domain(tiny):
    """The oracle-teacher protocol: each domain's files go through that domain's own model."""
    manifest = read_manifest(tiny, SPEC)
    models = {"a": FakeModel(1), "b": FakeModel(2)}
    emb = embed_benchmark(models.__getitem__, tiny, manifest, SPEC, preprocess=PREP, progress=False)
    assert (models["a"].seen, models["b"].seen) == (4, 8)
    records = [ImageRecord(f"b/test/{i}.png", (0,)) for i in range(3)]
    assert np.allclose(emb["b/test"], embed_records(models["b"], tiny, records, PREP, progress=False), atol=1e-6)
    with pytest.raises(TypeError, match="preprocess"):
        embed_benchmark(FakeModel(), tiny, manifest, SPEC, progress=False)


@pytest.mark.gpu
def test_cuda_bf16_embeddings_match_cpu(tiny):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    records = [ImageRecord(f"b/index/{i}.png", (0,)) for i in range(5)]
    cpu = embed_records(FakeModel(), tiny, records, PREP, progress=False)
    gpu = embed_records(FakeModel(), tiny, records, PREP, device="cuda", progress=False)
    assert gpu.dtype == np.float32 and np.allclose(np.linalg.norm(gpu, axis=1), 1, atol=1e-5)
    assert np.abs(gpu - cpu).max() < 0.05  # bf16 autocast on CUDA


def test_embedding_sets_round_trip_and_bad_files_are_named(tiny, tmp_path):
    manifest = read_manifest(tiny, SPEC)
    emb = embed_benchmark(FakeModel(), tiny, manifest, SPEC, preprocess=PREP, progress=False)
    saved = EmbeddingSet("test", emb, source="fake").save(tmp_path / "out" / "e.npz")
    assert saved == tmp_path / "out" / "e.npz"
    again = EmbeddingSet.load(saved)
    assert (again.split, again.source, set(again.vectors)) == ("test", "fake", set(emb))
    assert all(np.array_equal(again.vectors[k], v) for k, v in emb.items())
    (tmp_path / "plain.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="plain.npz: cannot read embeddings"):
        EmbeddingSet.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a udon embeddings file"):
        EmbeddingSet.load(tmp_path / "other.npz")


def test_oracle_teachers_score_each_domain_with_its_own_teacher_head(tiny):
    from tests.unit.tiny_benchmark import TINY_MODEL
    from udon_core.evaluation import evaluate_embeddings, evaluate_oracle_teachers
    from udon_core.model import UdonModel

    manifest = read_manifest(tiny, SPEC)
    torch.manual_seed(0)
    model = UdonModel(TINY_MODEL, {"a": 2, "b": 2})
    report = evaluate_oracle_teachers(model, tiny, manifest, SPEC, progress=False, device="cpu")
    by_hand = {}
    for d in ("a", "b"):  # each domain alone, embedded by backbone + its 12-d teacher head
        teacher = model.teacher_embedding_model(d)
        one = SPEC.restrict([d])
        vectors = embed_benchmark(teacher, tiny, manifest, one, progress=False)
        assert all(v.shape[1] == 12 for v in vectors.values())
        by_hand[d] = evaluate_embeddings(vectors, manifest, one, protocol="separate").per_domain[d]
    assert report.protocol == "oracle-teacher" and report.per_domain == by_hand
    with pytest.raises(ValueError, match=r"no teacher head for domain\(s\) \['b'\]"):
        evaluate_oracle_teachers(UdonModel(TINY_MODEL, {"a": 2}), tiny, manifest, SPEC, progress=False)
