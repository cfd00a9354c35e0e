"""Exact kNN retrieval and the UnED metrics (research/udon.md section 5.3), as pure functions over arrays.

- Search: exact inner product (cosine on unit vectors), faiss ``IndexFlatIP`` or torch matmul + top-k.
- A neighbour is relevant iff it has the query's domain and shares at least one label with it.
- R@1: the nearest neighbour (the query itself excluded) is relevant.
- mMP@5: (relevant hits in the top min(n_q, 5)) / min(n_q, 5), n_q the number of relevant index images
  with the query itself excluded. Queries with n_q = 0 are left out of the means and counted.
- Protocols: ``merged`` (the UnED standard: every domain's queries against the union of all domains' index
  sets) and ``separate`` (each domain against its own index).
- Per-domain values and their unweighted mean over domains; the benchmark rounds per-domain values to
  3 decimals before averaging (``RetrievalReport.rounded``).

Self-query sets (the query file is the index file) exclude each query *by identity*. The official code
(``throw_first=True`` here) instead searches k+1, drops the first neighbour whatever it is and takes one
off n_q: with exact duplicates of a query in its set, that may drop the duplicate and keep the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.data.uned import records_of
from udon_core.errors import InvalidValueError, UnknownNameError

Backend = Literal["auto", "faiss", "torch"]
Protocol = Literal["merged", "separate"]
PROTOCOLS = ("merged", "separate")
# Score-matrix budget of one torch query batch (batch x index x 4 bytes); faiss blocks its own work.
TORCH_BATCH_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


# ---------------------------------------------------------------------------------------------- search


def resolve_backend(backend: Backend = "auto") -> str:
    """'auto' -> 'faiss' with GPU faiss; else 'torch' when CUDA is visible; else faiss CPU (torch if no faiss)."""
    if backend in ("faiss", "torch"):
        return backend
    if backend != "auto":
        raise InvalidValueError(f"unknown kNN backend '{backend}' (auto, faiss, torch)")
    try:
        import faiss
    except ImportError:
        return "torch"
    import torch

    return "torch" if faiss.get_num_gpus() == 0 and torch.cuda.is_available() else "faiss"


def _search_faiss(
    queries: np.ndarray, index: np.ndarray, k: int, query_batch: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Index built once (on every GPU when faiss has any), queries searched in batches."""
    import faiss

    flat = faiss.IndexFlatIP(index.shape[1])
    if faiss.get_num_gpus() > 0:
        flat = faiss.index_cpu_to_all_gpus(flat)
    flat.add(index)
    step = query_batch or 16_384
    parts = [flat.search(queries[i:i + step], k) for i in range(0, len(queries), step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64)


def _search_torch(
    queries: np.ndarray, index: np.ndarray, k: int, query_batch: int | None, device: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """``q @ index.T`` + top-k in fp32 (TF32 off) on ``device`` (CUDA when visible), one query batch at a time."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    step = query_batch or max(1, min(8192, TORCH_BATCH_BYTES[dev.type] // (4 * len(index))))
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # why: exact search; a trainer may have enabled TF32
    try:
        xb = torch.from_numpy(index).to(dev)
        scores, ids = [], []
        for i in range(0, len(queries), step):
            s, j = torch.topk(torch.from_numpy(queries[i:i + step]).to(dev) @ xb.T, k, dim=1)
            scores.append(s.cpu().numpy())
            ids.append(j.cpu().numpy())
    finally:
        torch.set_float32_matmul_precision(precision)
    return np.concatenate(scores), np.concatenate(ids).astype(np.int64)


def _drop_self(scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove ``exclude[q]`` from row q wherever it ranks (a stable sort moves it last), keep k columns."""
    is_self = (ids == exclude[:, None]) & (exclude[:, None] >= 0)
    order = np.argsort(is_self, axis=1, kind="stable")
    scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    moved = np.take_along_axis(is_self, order, 1)  # a self entry still among the k kept (index too small)
    scores[moved], ids[moved] = -np.inf, -1
    return scores[:, :k], ids[:, :k]


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to k columns with id -1 and score -inf (an index with fewer than k images)."""
    missing = k - scores.shape[1]
    if missing <= 0:
        return scores, ids
    return (np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf),
            np.pad(ids, ((0, 0), (0, missing)), constant_values=-1))


def knn_search(
    queries: np.ndarray, index: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
    backend: Backend = "auto", query_batch: int | None = None, device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: ``queries [nq, d], index [ni, d] -> (scores [nq, k] f32, ids [nq, k] i64)``.

    Rows are best first. ``exclude [nq]`` is the index position of each query itself (-1: none); it is
    removed by identity: k+1 are searched, that id is dropped wherever it ranks, k are kept. Positions
    the index cannot fill get id -1 and score -inf. ``query_batch`` bounds memory (torch default: a
    256 MiB score matrix on CPU, 2 GiB on CUDA); ``device`` is for the torch backend (default CUDA if any).

    Ties: exactly equal scores come back in a backend-defined order (faiss and torch may differ, and which
    of several tied images fills the last kept place is backend-defined too); the scores are the same.
    """
    if k < 1:
        raise InvalidValueError(f"k must be >= 1, got {k}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index = np.ascontiguousarray(index, dtype=np.float32)
    if queries.ndim != 2 or index.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise InvalidValueError(f"queries {queries.shape} and index {index.shape} must be [n, d] with the same d")
    if exclude is not None and len(exclude) != len(queries):
        raise InvalidValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
    kk = min(k + (exclude is not None), len(index))
    if len(queries) == 0 or kk == 0:
        scores, ids = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    elif resolve_backend(backend) == "faiss":
        scores, ids = _search_faiss(queries, index, kk, query_batch)
    else:
        scores, ids = _search_torch(queries, index, kk, query_batch, device)
    if exclude is not None:
        scores, ids = _drop_self(scores, ids, np.asarray(exclude, dtype=np.int64), k)
    return _pad(scores[:, :k], ids[:, :k], k)


# ---------------------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelSets:
    """The label sets of n images, flat: image i has ``values[starts[i]:starts[i + 1]]`` (sorted, unique)."""

    values: np.ndarray  # [m] int64
    starts: np.ndarray  # [n + 1] int64

    @classmethod
    def from_lists(cls, labels: Sequence[Sequence[int]]) -> "LabelSets":
        lengths = np.fromiter(map(len, labels), dtype=np.int64, count=len(labels))
        if (lengths == 0).any():
            raise InvalidValueError(f"image {int(np.argmax(lengths == 0))} has no label")
        if (lengths == 1).all():  # the common case, without a Python set per image
            values = np.fromiter((x[0] for x in labels), dtype=np.int64, count=len(labels))
        else:
            sets = [sorted(set(x)) for x in labels]
            lengths = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
            values = np.fromiter((v for s in sets for v in s), dtype=np.int64, count=int(lengths.sum()))
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The labels of ``rows [p]``, flat: (position in ``rows`` of each label [t], label [t])."""
        lengths = self.lengths[rows]
        owner = np.repeat(np.arange(len(rows)), lengths)
        first = np.repeat(self.starts[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return owner, self.values[first + np.arange(len(owner))]


def relevance(ids: np.ndarray, queries: LabelSets, index: LabelSets) -> np.ndarray:
    """``ids [nq, k]`` neighbours in ``index`` (-1 or out of range: another domain / none) -> ``[nq, k]`` bool.

    Relevant iff the neighbour shares at least one label with the query (the caller maps neighbours of
    other domains to -1, which makes "same domain" part of the rule).
    """
    valid = (ids >= 0) & (ids < len(index))
    q_of_pair, rows = np.nonzero(valid)[0], ids[valid]
    pair, labels = index.gather(rows)
    q_owner, q_labels = queries.gather(np.arange(len(queries)))
    # why: keys (query, label) as one int64 each; query keys come out sorted, so a searchsorted finds them.
    lo = int(min(q_labels.min(initial=0), labels.min(initial=0)))
    scale = int(max(q_labels.max(initial=0), labels.max(initial=0))) - lo + 1
    q_keys = q_owner * scale + (q_labels - lo)
    keys = q_of_pair[pair] * scale + (labels - lo)
    found = np.searchsorted(q_keys, keys)
    hit = (found < len(q_keys)) & (q_keys[np.minimum(found, len(q_keys) - 1)] == keys)
    rel = np.zeros(ids.shape, dtype=bool)
    rel[valid] = np.bincount(pair, weights=hit, minlength=len(rows)) > 0
    return rel


def count_relevant(queries: LabelSets, index: LabelSets) -> np.ndarray:
    """``[nq]`` number of index images sharing at least one label with each query."""
    codes, inverse = np.unique(np.concatenate([queries.values, index.values]), return_inverse=True)
    q_codes, i_codes = inverse[:len(queries.values)], inverse[len(queries.values):]
    per_label = np.bincount(i_codes, minlength=len(codes))
    q_owner = np.repeat(np.arange(len(queries)), queries.lengths)
    if (index.lengths == 1).all():  # one label per index image: the per-label counts add up
        return np.bincount(q_owner, weights=per_label[q_codes], minlength=len(queries)).astype(np.int64)
    # Multi-label index images: count each (query, image) pair once through the label -> images lists.
    i_owner = np.repeat(np.arange(len(index)), index.lengths)
    by_label = i_owner[np.argsort(i_codes, kind="stable")]
    first = np.concatenate([[0], np.cumsum(per_label)])[q_codes]
    n = per_label[q_codes]
    pair_q = np.repeat(q_owner, n)
    pair_i = by_label[np.repeat(first - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())]
    unique = np.unique(pair_q * len(index) + pair_i)
    return np.bincount(unique // len(index), minlength=len(queries)).astype(np.int64)


# ---------------------------------------------------------------------------------------------- metrics


def per_query_scores(rel: np.ndarray, n_relevant: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(R@1 [nq], mMP@k [nq]) from ``rel [nq, >=k]`` bool and ``n_relevant [nq]`` (n = 0 gives 0, 0)."""
    r1 = rel[:, 0].astype(np.float64)
    m = np.minimum(n_relevant, k)
    top = rel[:, :k] & (np.arange(k)[None, :] < m[:, None])
    mp = np.where(m > 0, top.sum(axis=1) / np.maximum(m, 1), 0.0)
    return np.where(m > 0, r1, 0.0), mp


@dataclass
class DomainMetrics:
    """One domain's means over its queries that have at least one relevant index image."""

    r_at_1: float
    mmp_at_5: float
    n_queries: int  # all queries of the domain
    n_without_positive: int = 0  # queries with n_q = 0: counted here, left out of both means

    @property
    def n_scored(self) -> int:
        return self.n_queries - self.n_without_positive


def domain_metrics(rel: np.ndarray, n_relevant: np.ndarray, k: int = 5) -> DomainMetrics:
    """Means of R@1 and mMP@k over the queries with ``n_relevant > 0`` (0.0 when there are none)."""
    r1, mp = per_query_scores(rel, n_relevant, k)
    scored = n_relevant > 0
    mean = (lambda x: float(x[scored].mean())) if scored.any() else (lambda x: 0.0)
    return DomainMetrics(mean(r1), mean(mp), len(n_relevant), int((~scored).sum()))


def _round3(x: float) -> float:
    return float(np.round(x, 3))  # why: np.round, as UnED's average_datasets (not Python's round)


@dataclass
class RetrievalReport:
    """Per-domain R@1 / mMP@5 of one split and protocol, and their unweighted means over domains."""

    split: str
    protocol: str
    per_domain: dict[str, DomainMetrics]
    k: int = 5
    throw_first: bool = False

    @property
    def mean_r_at_1(self) -> float:
        return float(np.mean([m.r_at_1 for m in self.per_domain.values()]))

    @property
    def mean_mmp_at_5(self) -> float:
        return float(np.mean([m.mmp_at_5 for m in self.per_domain.values()]))

    def rounded(self) -> dict[str, Any]:
        """The benchmark's figures: per-domain values rounded to 3 decimals, then their mean rounded (UnED)."""
        per = {d: {"r_at_1": _round3(m.r_at_1), "mmp_at_5": _round3(m.mmp_at_5)} for d, m in self.per_domain.items()}
        mean = {key: _round3(np.mean([v[key] for v in per.values()])) for key in ("r_at_1", "mmp_at_5")}
        return {"per_domain": per, "mean": mean}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document: settings, per-domain metrics, exact means and the benchmark's rounding."""
        return {
            "split": self.split, "protocol": self.protocol, "k": self.k, "throw_first": self.throw_first,
            "per_domain": {d: asdict(m) for d, m in self.per_domain.items()},
            "mean_r_at_1": self.mean_r_at_1, "mean_mmp_at_5": self.mean_mmp_at_5,
            "rounded": self.rounded(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RetrievalReport":
        """The inverse of ``to_dict`` (derived fields are recomputed, not read)."""
        per = {d: DomainMetrics(**m) for d, m in doc["per_domain"].items()}
        return cls(doc["split"], doc["protocol"], per, int(doc.get("k", 5)), bool(doc.get("throw_first", False)))


# ---------------------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class _Set:
    """The embeddings [n, d] and label sets of one info file."""

    x: np.ndarray
    labels: LabelSets


def _load_set(embeddings: dict[str, np.ndarray], manifest: pd.DataFrame, domain: str, stem: str) -> _Set:
    key = f"{domain}/{stem}"
    if key not in embeddings:
        raise UnknownNameError(f"no embeddings for '{key}' (have {sorted(embeddings)})")
    labels = [r.labels for r in records_of(manifest, domain, stem)]
    if len(labels) != len(embeddings[key]):
        raise InvalidValueError(f"'{key}': {len(embeddings[key])} embeddings for {len(labels)} manifest records")
    return _Set(np.asarray(embeddings[key], dtype=np.float32), LabelSets.from_lists(labels))


def _score_domain(ids: np.ndarray, offset: int, query: _Set, index: _Set, self_query: bool, k: int,
                  throw_first: bool) -> DomainMetrics:
    """Metrics of one domain from its queries' raw k+1 neighbours ``ids`` in the (merged) index.

    ``offset`` is where the domain's index starts in the searched index; with ``self_query`` query i is
    index image i of the domain, excluded by identity (or, ``throw_first``, the first neighbour dropped).
    """
    if self_query and throw_first:
        ids = ids[:, 1:k + 1]
    elif self_query:
        _, ids = _drop_self(np.zeros(ids.shape, np.float32), ids, offset + np.arange(len(ids)), k)
    else:
        ids = ids[:, :k]
    local = np.where((ids >= offset) & (ids < offset + len(index.x)), ids - offset, -1)
    n_rel = count_relevant(query.labels, index.labels) - int(self_query)
    return domain_metrics(relevance(local, query.labels, index.labels), n_rel, k)


def evaluate_embeddings(
    embeddings: dict[str, np.ndarray], manifest: pd.DataFrame, spec: BenchmarkSpec, split: str = "test",
    protocol: Protocol = "merged", k: int = 5, throw_first: bool = False, backend: Backend = "auto",
) -> RetrievalReport:
    """R@1 and mMP@k per domain of ``split`` under ``protocol`` (UnED: merged test).

    ``embeddings["<domain>/<stem>"]`` is ``[n, d]`` in the info file's order (``embed_benchmark``).
    ``merged`` searches all queries at once against the concatenation of every domain's index set (built
    once); ``separate`` searches each domain against its own index. ``throw_first`` reproduces the
    official code for self-query sets (drop the first neighbour whatever it is, n_q - 1).
    """
    if protocol not in PROTOCOLS:
        raise InvalidValueError(f"unknown protocol '{protocol}' ({', '.join(PROTOCOLS)})")
    for d in spec.domains:
        if split not in d.evals:
            raise UnknownNameError(f"domain '{d.name}' has no '{split}' evaluation split (has {sorted(d.evals)})")
    stems = {s for d in spec.domains for s in (d.evals[split].query, d.evals[split].index)}
    manifest = manifest[manifest["split"].isin(stems)]  # why: records_of scans the manifest once per file
    groups = [list(spec.domain_names)] if protocol == "merged" else [[n] for n in spec.domain_names]
    per: dict[str, DomainMetrics] = {}
    for names in groups:
        evals = {n: spec.domain(n).evals[split] for n in names}
        index = {n: _load_set(embeddings, manifest, n, evals[n].index) for n in names}
        query = {n: index[n] if evals[n].self_query else _load_set(embeddings, manifest, n, evals[n].query)
                 for n in names}
        offsets = np.concatenate([[0], np.cumsum([len(index[n].x) for n in names])])
        _, ids = knn_search(np.concatenate([query[n].x for n in names]), np.concatenate([index[n].x for n in names]),
                            k + 1, backend=backend)
        starts = np.concatenate([[0], np.cumsum([len(query[n].x) for n in names])])
        for j, n in enumerate(names):
            per[n] = _score_domain(ids[starts[j]:starts[j + 1]], int(offsets[j]), query[n], index[n],
                                   evals[n].self_query, k, throw_first)
    return RetrievalReport(split, protocol, {n: per[n] for n in spec.domain_names}, k, throw_first)
