"""Retrieval metrics against a plain NumPy brute-force reference and a hand-worked example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udon_core.benchmark import BenchmarkSpec, DomainSpec, EvalSet
from udon_core.retrieval import RetrievalReport, evaluate_embeddings, knn_search, per_query_scores


def reference(q, q_lab, q_dom, x, x_lab, x_dom, self_pos=None, k=5):
    """Brute force, one query at a time: rank by score (ties by index id), drop self by identity."""
    r1, mp, n0 = [], [], 0
    for i in range(len(q)):
        scores = x @ q[i]
        order = sorted(range(len(x)), key=lambda j: (-scores[j], j))
        if self_pos is not None:
            order = [j for j in order if j != self_pos[i]]
        rel = [x_dom[j] == q_dom[i] and bool(set(x_lab[j]) & set(q_lab[i])) for j in order]
        n = sum(rel)
        if n == 0:
            n0 += 1
            continue
        m = min(n, k)
        r1.append(float(rel[0]))
        mp.append(sum(rel[:m]) / m)
    return float(np.mean(r1)), float(np.mean(mp)), n0


def unit(rng, n, d=8):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_hand_worked_mmp_at_5():
    # n_q = 3 relevant images; top-5 relevance [1, 0, 1, 0, 1]: only the top min(3, 5) = 3 count -> 2/3.
    rel = np.array([[True, False, True, False, True]])
    r1, mp = per_query_scores(rel, np.array([3]))
    assert r1[0] == 1.0 and mp[0] == pytest.approx(2 / 3)
    # n_q = 8 >= 5: 3 hits in the top 5 -> 3/5; R@1 0.
    r1, mp = per_query_scores(np.array([[False, True, True, False, True]]), np.array([8]))
    assert (r1[0], mp[0]) == (0.0, pytest.approx(0.6))


def _frame(domains):
    rows = []
    for dom, files in domains.items():
        for stem, labels in files.items():
            rows += [(dom, stem, i, f"{dom}/{stem}/{i}.png", list(lab)) for i, lab in enumerate(labels)]
    return pd.DataFrame(rows, columns=["domain", "split", "row", "path", "labels"])


def _random_benchmark(seed=0):
    rng = np.random.default_rng(seed)
    spec = BenchmarkSpec(name="r", domains=(
        DomainSpec(name="a", evals={"test": EvalSet(query="test", index="test")}),   # self-query
        DomainSpec(name="b", evals={"test": EvalSet(query="test", index="index")}),  # disjoint sets
    ))
    a_lab = [(int(c),) for c in rng.integers(0, 6, 40)] + [(1, 2), (3, 9)]         # multi-label queries
    b_q = [(int(c),) for c in rng.integers(0, 8, 30)]
    b_i = [(int(c),) for c in rng.integers(0, 8, 25)]
    emb = {"a/test": unit(rng, len(a_lab)), "b/test": unit(rng, 30), "b/index": unit(rng, 25)}
    emb["a/test"][5] = emb["a/test"][4]                                            # exact duplicate
    emb["b/index"][3] = emb["b/index"][7]                                          # tie in the index,
    b_i[3] = b_i[7]  # with one label: the tie order is backend-defined, relevance must not depend on it
    manifest = _frame({"a": {"test": a_lab}, "b": {"test": b_q, "index": b_i}})
    return spec, manifest, emb


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_merged_protocol_matches_the_brute_force_reference(backend):
    spec, manifest, emb = _random_benchmark()
    report = evaluate_embeddings(emb, manifest, spec, protocol="merged", backend=backend)
    a_lab = list(manifest.query("domain == 'a'")["labels"].map(tuple))
    b_q = list(manifest.query("domain == 'b' and split == 'test'")["labels"].map(tuple))
    b_i = list(manifest.query("domain == 'b' and split == 'index'")["labels"].map(tuple))
    x = np.concatenate([emb["a/test"], emb["b/index"]])
    x_lab, x_dom = a_lab + b_i, ["a"] * len(a_lab) + ["b"] * len(b_i)
    ra = reference(emb["a/test"], a_lab, ["a"] * len(a_lab), x, x_lab, x_dom, self_pos=list(range(len(a_lab))))
    rb = reference(emb["b/test"], b_q, ["b"] * len(b_q), x, x_lab, x_dom)
    for name, (r1, mp, n0) in {"a": ra, "b": rb}.items():
        got = report.per_domain[name]
        assert (got.r_at_1, got.mmp_at_5, got.n_without_positive) == (pytest.approx(r1), pytest.approx(mp), n0)
    assert report.mean_mmp_at_5 == pytest.approx((ra[1] + rb[1]) / 2)


def test_separate_protocol_ignores_other_domains():
    spec, manifest, emb = _random_benchmark(1)
    b_q = list(manifest.query("domain == 'b' and split == 'test'")["labels"].map(tuple))
    b_i = list(manifest.query("domain == 'b' and split == 'index'")["labels"].map(tuple))
    ref = reference(emb["b/test"], b_q, ["b"] * 30, emb["b/index"], b_i, ["b"] * 25)
    got = evaluate_embeddings(emb, manifest, spec, protocol="separate").per_domain["b"]
    assert (got.r_at_1, got.mmp_at_5) == (pytest.approx(ref[0]), pytest.approx(ref[1]))


def test_self_exclusion_is_by_identity_not_by_dropping_the_first_neighbour():
    # Query 0 and item 1 are the same vector: the duplicate may rank first, and it is relevant.
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    _, ids = knn_search(x[:1], x, 2, exclude=np.array([0]))
    assert 0 not in ids[0] and ids[0][0] == 1
    spec = BenchmarkSpec(name="s", domains=(DomainSpec(name="a", evals={"test": EvalSet(query="test", index="test")}),))
    manifest = _frame({"a": {"test": [(0,), (0,), (1,)]}})
    q = {"a/test": np.array([[1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)}
    by_identity = evaluate_embeddings(q, manifest, spec)
    thrown = evaluate_embeddings(q, manifest, spec, throw_first=True)
    assert by_identity.per_domain["a"].r_at_1 == 1.0
    # throw_first drops whatever ranks first; with exact duplicates that can be the positive itself.
    assert thrown.per_domain["a"].n_queries == by_identity.per_domain["a"].n_queries


def test_queries_without_positives_are_counted_and_excluded():
    spec = BenchmarkSpec(name="s", domains=(DomainSpec(name="a", evals={"test": EvalSet(query="test", index="index")}),))
    manifest = _frame({"a": {"test": [(0,), (5,)], "index": [(0,), (1,)]}})
    emb = {"a/test": np.eye(2, dtype=np.float32), "a/index": np.eye(2, dtype=np.float32)}
    m = evaluate_embeddings(emb, manifest, spec).per_domain["a"]
    assert (m.n_queries, m.n_without_positive, m.r_at_1, m.mmp_at_5) == (1, 1, 1.0, 1.0)


def test_faiss_and_torch_agree_on_neighbours_without_ties():
    rng = np.random.default_rng(3)
    q, x = unit(rng, 50, 16), unit(rng, 300, 16)
    sf, idf = knn_search(q, x, 7, backend="faiss")
    st, idt = knn_search(q, x, 7, backend="torch")
    assert (idf == idt).all() and np.allclose(sf, st, atol=1e-5)


def test_rounding_and_json_round_trip():
    spec, manifest, emb = _random_benchmark()
    report = evaluate_embeddings(emb, manifest, spec)
    doc = report.to_dict()
    assert RetrievalReport.from_dict(doc).to_dict() == doc
    per = [round(m.mmp_at_5, 3) for m in report.per_domain.values()]
    assert doc["rounded"]["mean"]["mmp_at_5"] == round(float(np.mean(per)), 3)


def test_report_table_and_chart(tmp_path):
    from udon_core.report import format_comparison, format_markdown, plot_report

    spec, manifest, emb = _random_benchmark()
    r = evaluate_embeddings(emb, manifest, spec)
    text = format_comparison({"before": r, "after": r})
    assert "delta mMP@5" in text and "+0.000" in text and "mean" in text
    assert format_markdown({"x": r}).startswith("| domain |")
    png = plot_report({"before": r, "after": r}, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
