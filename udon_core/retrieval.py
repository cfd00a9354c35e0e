"""Exact kNN retrieval and the UnED metrics (research/udon.md section 5.3), as pure functions over arrays.

- A neighbour is relevant iff it has the query's domain and shares at least one label with it.
- R@1: the nearest (non-excluded) neighbour is relevant.
- mMP@5: (relevant hits in the top min(n_q, 5)) / min(n_q, 5), with n_q the number of relevant index
  images (the query itself excluded). Queries with n_q = 0 are excluded from the means and counted.
- Per-domain values and their unweighted mean; the benchmark rounds per-domain values to 3 decimals
  before averaging (``rounded()``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from udon_core.benchmark import BenchmarkSpec
from udon_core.uned import records_of

Backend = Literal["auto", "faiss", "torch"]
Labels = tuple[int, ...]


def _search_faiss(queries: np.ndarray, index: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    flat = faiss.IndexFlatIP(index.shape[1])
    if faiss.get_num_gpus() > 0:
        flat = faiss.index_cpu_to_all_gpus(flat)
    flat.add(np.ascontiguousarray(index, dtype=np.float32))
    parts = [flat.search(np.ascontiguousarray(queries[i:i + query_batch], dtype=np.float32), k)
             for i in range(0, len(queries), query_batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64)


def _search_torch(queries: np.ndarray, index: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    xb = torch.from_numpy(np.ascontiguousarray(index, dtype=np.float32)).to(device)
    scores, ids = [], []
    for i in range(0, len(queries), query_batch):
        q = torch.from_numpy(np.ascontiguousarray(queries[i:i + query_batch], dtype=np.float32)).to(device)
        s, j = torch.topk(q @ xb.T, k, dim=1)
        scores.append(s.cpu().numpy())
        ids.append(j.cpu().numpy())
    return np.concatenate(scores), np.concatenate(ids).astype(np.int64)


def knn_search(
    queries: np.ndarray, index: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
    backend: Backend = "auto", query_batch: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: ``[nq, d] x [ni, d] -> (scores [nq, k], ids [nq, k])``, best first.

    ``exclude[q]`` is the index position of query q itself (-1 for none); it is removed by identity, so a
    duplicate image or a tied neighbour ranked before the query itself is kept. Exact ties may be
    ordered differently by faiss and torch; scores are always identical.
    """
    if len(queries) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    extra = 1 if exclude is not None else 0
    kk = min(k + extra, len(index))
    if backend == "auto":
        backend = "faiss"
    search = _search_faiss if backend == "faiss" else _search_torch
    scores, ids = search(queries, index, kk, query_batch)
    if exclude is not None:
        # Stable sort on "is it the query itself" moves that entry to the end and keeps the order otherwise.
        order = np.argsort(ids == np.asarray(exclude)[:, None], axis=1, kind="stable")
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    return scores[:, :k], ids[:, :k]


def relevance(
    ids: np.ndarray, q_domain: np.ndarray, q_labels: list[Labels], i_domain: np.ndarray, i_labels: list[Labels]
) -> np.ndarray:
    """``[nq, k]`` bool: same domain and any shared label."""
    rel = np.zeros(ids.shape, dtype=bool)
    for q in range(ids.shape[0]):
        qs = set(q_labels[q])
        for j, i in enumerate(ids[q]):
            rel[q, j] = i >= 0 and i_domain[i] == q_domain[q] and not qs.isdisjoint(i_labels[i])
    return rel


def count_relevant(q_domain: np.ndarray, q_labels: list[Labels], i_domain: np.ndarray, i_labels: list[Labels],
                   self_in_index: np.ndarray) -> np.ndarray:
    """``[nq]`` number of relevant index images per query, minus one where the query is in the index."""
    positions: dict[tuple[Any, int], set[int]] = defaultdict(set)
    for i, (dom, labels) in enumerate(zip(i_domain, i_labels)):
        for label in labels:
            positions[(dom, label)].add(i)
    counts = np.array([len(set().union(*(positions.get((dom, lab), set()) for lab in labels)))
                       for dom, labels in zip(q_domain, q_labels)], dtype=np.int64)
    return counts - self_in_index.astype(np.int64)


def per_query_scores(rel: np.ndarray, n_relevant: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(R@1 [nq], mMP@k [nq]) from ``rel [nq, >=k]`` and ``n_relevant [nq]`` (n=0 gives mMP 0)."""
    r1 = rel[:, 0].astype(np.float64)
    m = np.minimum(n_relevant, k)
    cols = np.arange(rel.shape[1])[None, :] < m[:, None]
    hits = (rel[:, :k] & cols[:, :k]).sum(axis=1)
    mp = np.where(m > 0, hits / np.maximum(m, 1), 0.0)
    return r1, mp


@dataclass
class DomainMetrics:
    r_at_1: float
    mmp_at_5: float
    n_queries: int
    n_without_positive: int = 0


@dataclass
class RetrievalReport:
    """Per-domain R@1 / mMP@5 of one split and protocol, and their unweighted means over domains."""

    split: str
    protocol: str
    per_domain: dict[str, DomainMetrics]

    @property
    def mean_r_at_1(self) -> float:
        return float(np.mean([m.r_at_1 for m in self.per_domain.values()]))

    @property
    def mean_mmp_at_5(self) -> float:
        return float(np.mean([m.mmp_at_5 for m in self.per_domain.values()]))

    def rounded(self) -> dict[str, Any]:
        """The benchmark's figures: per-domain values rounded to 3 decimals, then their rounded mean."""
        per = {d: {"r_at_1": round(m.r_at_1, 3), "mmp_at_5": round(m.mmp_at_5, 3)} for d, m in self.per_domain.items()}
        mean = {k: round(float(np.mean([v[k] for v in per.values()])), 3) for k in ("r_at_1", "mmp_at_5")}
        return {"per_domain": per, "mean": mean}

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "protocol": self.protocol,
                "per_domain": {d: asdict(m) for d, m in self.per_domain.items()},
                "mean_r_at_1": self.mean_r_at_1, "mean_mmp_at_5": self.mean_mmp_at_5, "rounded": self.rounded()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RetrievalReport":
        return cls(doc["split"], doc["protocol"], {d: DomainMetrics(**m) for d, m in doc["per_domain"].items()})


def _domain_metrics(rel: np.ndarray, n_rel: np.ndarray) -> DomainMetrics:
    valid = n_rel > 0
    r1, mp = per_query_scores(rel, n_rel)
    mean = (lambda x: float(x[valid].mean())) if valid.any() else (lambda x: 0.0)
    return DomainMetrics(mean(r1), mean(mp), int(valid.sum()), int((~valid).sum()))


def _set(embeddings: dict[str, np.ndarray], manifest: pd.DataFrame, domain: str, stem: str):
    key = f"{domain}/{stem}"
    if key not in embeddings:
        raise KeyError(f"no embeddings for {key} (have {sorted(embeddings)})")
    labels = [r.labels for r in records_of(manifest, domain, stem)]
    if len(labels) != len(embeddings[key]):
        raise ValueError(f"{key}: {len(embeddings[key])} embeddings for {len(labels)} records")
    return embeddings[key], labels


def _index_for(spec: BenchmarkSpec, split: str, domains: list[str], embeddings, manifest):
    """The concatenated index of ``domains`` and each domain's offset in it."""
    vecs, doms, labels, offsets, pos = [], [], [], {}, 0
    for d in domains:
        x, lab = _set(embeddings, manifest, d, spec.domain(d).evals[split].index)
        offsets[d] = pos
        vecs.append(x)
        doms += [d] * len(lab)
        labels += lab
        pos += len(lab)
    return np.concatenate(vecs), np.asarray(doms, dtype=object), labels, offsets


def evaluate_embeddings(
    embeddings: dict[str, np.ndarray], manifest: pd.DataFrame, spec: BenchmarkSpec, split: str = "test",
    protocol: Literal["merged", "separate"] = "merged", k: int = 5, throw_first: bool = False,
    backend: Backend = "auto",
) -> RetrievalReport:
    """Score every domain's queries of ``split`` against the merged (or its own) index.

    ``throw_first`` reproduces the official code for self-query sets: drop the first neighbour whatever
    it is (instead of the query itself by identity) and subtract one from n_q.
    """
    merged = _index_for(spec, split, list(spec.domain_names), embeddings, manifest) if protocol == "merged" else None
    per = {}
    for d in spec.domains:
        ev = d.evals[split]
        index, i_dom, i_lab, offsets = merged or _index_for(spec, split, [d.name], embeddings, manifest)
        q, q_lab = _set(embeddings, manifest, d.name, ev.query)
        q_dom = np.asarray([d.name] * len(q_lab), dtype=object)
        self_q = np.full(len(q_lab), ev.self_query)
        if ev.self_query and throw_first:
            _, ids = knn_search(q, index, k + 1, backend=backend)
            ids = ids[:, 1:]
        else:
            exclude = offsets[d.name] + np.arange(len(q_lab)) if ev.self_query else None
            _, ids = knn_search(q, index, k, exclude=exclude, backend=backend)
        rel = relevance(ids, q_dom, q_lab, i_dom, i_lab)
        per[d.name] = _domain_metrics(rel, count_relevant(q_dom, q_lab, i_dom, i_lab, self_q))
    return RetrievalReport(split, protocol, per)
