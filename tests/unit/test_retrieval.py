"""Retrieval search and UnED metrics against a plain NumPy brute-force reference and hand-worked examples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from udon_core.data import BenchmarkSpec, DomainSpec, EvalSet
from udon_core.evaluation import (
    DomainMetrics,
    LabelSets,
    RetrievalReport,
    count_relevant,
    evaluate_embeddings,
    knn_search,
    per_query_scores,
    relevance,
)

BACKENDS = ["faiss", "torch"]


# ----------------------------------------------------------------------------------- brute-force reference


def ref_query(q, q_lab, q_dom, x, x_lab, x_dom, self_pos=None, k=5, throw_first=False, tie="id"):
    """(R@1, mMP@k) of one query, or None when it has no relevant index image, by brute force.

    Exact float64 scores; ties broken by index id ("id"), relevant first ("best") or relevant last ("worst").
    """
    rel = [x_dom[j] == q_dom and bool(set(x_lab[j]) & set(q_lab)) for j in range(len(x))]
    s = (x.astype(np.float64) * q.astype(np.float64)).sum(axis=1)
    pref = {"id": lambda j: 0, "best": lambda j: -rel[j], "worst": lambda j: rel[j]}[tie]
    order = sorted(range(len(x)), key=lambda j: (-s[j], pref(j), j))
    n = sum(rel)
    if self_pos is not None:
        order = order[1:] if throw_first else [j for j in order if j != self_pos]
        n -= 1
    if n == 0:
        return None
    top = [rel[j] for j in order[:k]]
    return float(top[0]), sum(top[:min(n, k)]) / min(n, k)


def ref_domain(q, q_lab, dom, x, x_lab, x_dom, self_offset=None, **kw):
    """(mean R@1, mean mMP@k, n without positive) of one domain's queries."""
    out = [ref_query(q[i], q_lab[i], dom, x, x_lab, x_dom, None if self_offset is None else self_offset + i, **kw)
           for i in range(len(q))]
    scored = [o for o in out if o is not None]
    return np.mean([o[0] for o in scored]), np.mean([o[1] for o in scored]), len(out) - len(scored)


def ref_benchmark(spec, manifest, emb, protocol, **kw):
    """{domain: (R@1, mMP@k, n0)} following the UnED protocol with the reference above."""
    def labels(d, stem):
        part = manifest[(manifest.domain == d) & (manifest.split == stem)].sort_values("row")
        return [tuple(x) for x in part["labels"]]

    groups = [list(spec.domain_names)] if protocol == "merged" else [[d] for d in spec.domain_names]
    out = {}
    for names in groups:
        idx = {d: spec.domain(d).evals["test"].index for d in names}
        x = np.concatenate([emb[f"{d}/{idx[d]}"] for d in names])
        x_lab = sum((labels(d, idx[d]) for d in names), [])
        x_dom = sum(([d] * len(labels(d, idx[d])) for d in names), [])
        for d in names:
            ev = spec.domain(d).evals["test"]
            offset = x_dom.index(d) if ev.self_query else None
            out[d] = ref_domain(emb[f"{d}/{ev.query}"], labels(d, ev.query), d, x, x_lab, x_dom, offset, **kw)
    return out


# ----------------------------------------------------------------------------------- data


def _frame(domains):
    rows = []
    for dom, files in domains.items():
        for stem, labels in files.items():
            rows += [(dom, stem, i, f"{dom}/{stem}/{i}.png", list(lab)) for i, lab in enumerate(labels)]
    return pd.DataFrame(rows, columns=["domain", "split", "row", "path", "labels"])


def _spec(**evals):
    return BenchmarkSpec(name="t", domains=tuple(
        DomainSpec(name=d, evals={"test": EvalSet(query=q, index=i)}) for d, (q, i) in evals.items()))


SPEC = _spec(a=("test", "test"), b=("test", "index"), c=("test", "test"))


def _benchmark(seed, integer=False, d=8):
    """Three domains: a self-query with multi-label images, b disjoint with multi-label queries and a query
    without positives, c self-query with n_q < 5 and n_q = 0. Labels overlap across domains on purpose.

    ``integer``: small-integer vectors, so scores are exact in float32 and ties/duplicates are everywhere.
    """
    rng = np.random.default_rng(seed)

    def vecs(n):
        if integer:
            return rng.integers(-1, 2, (n, 4)).astype(np.float32)
        v = rng.standard_normal((n, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    a = [(int(c),) for c in rng.integers(0, 6, 40)] + [(1, 2), (3, 5), (0, 4)]
    b_q = [(int(c),) for c in rng.integers(0, 8, 22)] + [(1, 6), (2, 3, 7), (99,)]
    b_i = [(int(c),) for c in rng.integers(0, 8, 30)]
    c = [(0,), (0,), (1,), (1,), (2,), (3,)]
    emb = {"a/test": vecs(len(a)), "b/test": vecs(len(b_q)), "b/index": vecs(len(b_i)), "c/test": vecs(len(c))}
    if integer:  # exact duplicates of queries, in the same and in other domains
        emb["a/test"][5] = emb["a/test"][4]
        emb["b/index"][3] = emb["b/test"][0]
        emb["c/test"][1] = emb["a/test"][0]
    return _frame({"a": {"test": a}, "b": {"test": b_q, "index": b_i}, "c": {"test": c}}), emb


def unit(rng, n, d=8):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------- metrics by hand


def test_per_query_scores_hand_worked():
    # n_q = 3: only the top min(3, 5) = 3 ranks count, [1, 0, 1] -> 2/3 (the hit at rank 5 does not count).
    r1, mp = per_query_scores(np.array([[True, False, True, False, True]]), np.array([3]))
    assert (r1[0], mp[0]) == (1.0, pytest.approx(2 / 3))
    # n_q = 8 >= 5: 3 hits in the top 5 -> 3/5, R@1 0.
    r1, mp = per_query_scores(np.array([[False, True, True, False, True]]), np.array([8]))
    assert (r1[0], mp[0]) == (0.0, pytest.approx(0.6))


def _angles(*degrees):
    return np.array([[np.cos(np.radians(t)), np.sin(np.radians(t))] for t in degrees], dtype=np.float32)


def _hand_worked():
    """Domain a: queries `test` vs index `index` at 10, 20, ..., 70 degrees; domain b: self-query, 2 images.

    a index, best first for a query at 0 degrees, labels: 2, 1, 1, 3, 1, 1, 4.
    b's image at 0 degrees has label 1 too: in the merged index it ranks first for a's 0-degree queries but
    is never relevant to them (other domain).
    """
    spec = _spec(a=("test", "index"), b=("test", "test"))
    a_q = [(1,), (3,), (1, 4), (9,)]
    manifest = _frame({"a": {"test": a_q, "index": [(2,), (1,), (1,), (3,), (1,), (1,), (4,)]},
                       "b": {"test": [(1,), (1,)]}})
    emb = {"a/test": _angles(0, 40, 0, 0), "a/index": _angles(10, 20, 30, 40, 50, 60, 70),
           "b/test": np.array([[1, 0], [0, -1]], dtype=np.float32)}
    return spec, manifest, emb


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_example_separate_and_merged(backend):
    spec, manifest, emb = _hand_worked()
    # separate, domain a:
    #   q0 label 1, n_q = 4: top 4 = [2, 1, 1, 3] -> rel [0, 1, 1, 0] -> mMP 2/4, R@1 0
    #   q1 label 3 at 40 degrees, n_q = 1: top 1 = the 40-degree image, label 3 -> mMP 1, R@1 1
    #   q2 labels {1, 4}, n_q = 5: top 5 = [2, 1, 1, 3, 1] -> [0, 1, 1, 0, 1] -> mMP 3/5, R@1 0
    #   q3 label 9: n_q = 0 -> left out of the means, counted
    # domain b (self-query, query excluded by identity): each image's only neighbour is the other, label 1.
    sep = evaluate_embeddings(emb, manifest, spec, protocol="separate", backend=backend)
    assert sep.per_domain["a"] == DomainMetrics(pytest.approx(1 / 3), pytest.approx((0.5 + 1 + 0.6) / 3), 4, 1)
    assert sep.per_domain["b"] == DomainMetrics(1.0, 1.0, 2, 0)
    # merged: b's [1, 0] image (score 1) now ranks first for a's 0-degree queries, and is irrelevant:
    #   q0: [b, 2, 1, 1] -> [0, 0, 1, 1] -> 2/4; q1 unchanged -> 1; q2: [b, 2, 1, 1, 3] -> 2/5
    # b: query [1, 0] ranks the 7 a images (cos > 0) before the other b image -> R@1 0, mMP 0;
    #    query [0, -1] has score 0 with b's [1, 0] and < 0 with all a images -> R@1 1, mMP 1.
    mer = evaluate_embeddings(emb, manifest, spec, protocol="merged", backend=backend)
    assert mer.per_domain["a"] == DomainMetrics(pytest.approx(1 / 3), pytest.approx((0.5 + 1 + 0.4) / 3), 4, 1)
    assert mer.per_domain["b"] == DomainMetrics(0.5, 0.5, 2, 0)
    assert mer.mean_r_at_1 == pytest.approx((1 / 3 + 0.5) / 2)
    assert mer.mean_mmp_at_5 == pytest.approx((1.9 / 3 + 0.5) / 2)
    assert mer.rounded()["per_domain"]["a"] == {"r_at_1": 0.333, "mmp_at_5": 0.633}


# ----------------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", ["merged", "separate"])
@pytest.mark.parametrize("throw_first", [False, True])
def test_matches_reference_without_ties(backend, protocol, throw_first):
    manifest, emb = _benchmark(seed=1)
    got = evaluate_embeddings(emb, manifest, SPEC, protocol=protocol, throw_first=throw_first, backend=backend)
    want = ref_benchmark(SPEC, manifest, emb, protocol, throw_first=throw_first)
    for d, (r1, mp, n0) in want.items():
        m = got.per_domain[d]
        assert (m.r_at_1, m.mmp_at_5, m.n_without_positive) == (pytest.approx(r1), pytest.approx(mp), n0), d
    assert got.per_domain["b"].n_queries == 25 and got.per_domain["b"].n_without_positive == 1
    assert got.per_domain["c"].n_without_positive == 2  # labels 2 and 3 have one image: n_q = 0 once excluded


def test_merged_and_separate_differ_when_other_domains_intrude():
    manifest, emb = _benchmark(seed=1)
    merged = evaluate_embeddings(emb, manifest, SPEC, protocol="merged")
    separate = evaluate_embeddings(emb, manifest, SPEC, protocol="separate")
    assert merged.mean_mmp_at_5 < separate.mean_mmp_at_5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", ["merged", "separate"])
def test_ties_and_duplicates_stay_within_tie_order_bounds(backend, protocol):
    """With exact ties the order is backend-defined; every value must lie between the best and worst order."""
    manifest, emb = _benchmark(seed=2, integer=True)
    got = evaluate_embeddings(emb, manifest, SPEC, protocol=protocol, backend=backend)
    best = ref_benchmark(SPEC, manifest, emb, protocol, tie="best")
    worst = ref_benchmark(SPEC, manifest, emb, protocol, tie="worst")
    for d, m in got.per_domain.items():
        assert worst[d][0] - 1e-12 <= m.r_at_1 <= best[d][0] + 1e-12, d
        assert worst[d][1] - 1e-12 <= m.mmp_at_5 <= best[d][1] + 1e-12, d
        assert m.n_without_positive == best[d][2]
    assert any(best[d][1] > worst[d][1] for d in best)  # the data really has ties that matter


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_search_returns_a_valid_top_k_with_ties(backend):
    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, (60, 4)).astype(np.float32)
    x[7] = x[3]
    exclude = np.arange(60)
    scores, ids = knn_search(x, x, 5, exclude=exclude, backend=backend)
    exact = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(exact, -np.inf)
    want = -np.sort(-exact, axis=1)[:, :5]
    assert (scores == want).all()  # integer vectors: exact in float32 whatever the summation order
    assert (ids != exclude[:, None]).all()
    assert (np.take_along_axis(exact, ids, 1) == scores).all()
    assert all(len(set(row)) == 5 for row in ids)


def test_faiss_and_torch_agree_without_ties():
    rng = np.random.default_rng(3)
    q, x = unit(rng, 50, 16), unit(rng, 300, 16)
    sf, idf = knn_search(q, x, 7, backend="faiss")
    st, idt = knn_search(q, x, 7, backend="torch", query_batch=16)
    assert (idf == idt).all() and np.allclose(sf, st, atol=1e-5)
    manifest, emb = _benchmark(seed=5)
    a = evaluate_embeddings(emb, manifest, SPEC, backend="faiss").to_dict()
    b = evaluate_embeddings(emb, manifest, SPEC, backend="torch").to_dict()
    assert a == b


# ----------------------------------------------------------------------------------- self-exclusion


def test_self_exclusion_is_by_identity():
    # Query 0 and image 1 are the same vector: whichever the backend ranks first, 0 is removed, 1 is kept.
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    for backend in BACKENDS:
        scores, ids = knn_search(x[:1], x, 2, exclude=np.array([0]), backend=backend)
        assert ids.tolist() == [[1, 2]] and scores.tolist() == [[1.0, 0.0]]


def test_throw_first_drops_the_first_neighbour_whatever_it_is():
    # Image 1 scores higher with query 0 than query 0 itself (not unit norm, to make the order certain):
    # identity exclusion keeps image 1 (another label: R@1 0); throw_first drops it and keeps query 0
    # itself, which is trivially relevant (R@1 1), as the official code does on duplicates ranked first.
    spec = _spec(a=("test", "test"))
    manifest = _frame({"a": {"test": [(0,), (1,), (0,)]}})
    emb = {"a/test": np.array([[1, 0], [2, 0], [0.6, 0.8]], dtype=np.float32)}
    identity = evaluate_embeddings(emb, manifest, spec).per_domain["a"]
    thrown = evaluate_embeddings(emb, manifest, spec, throw_first=True).per_domain["a"]
    # query 0 (scores 1: 2.0, self: 1.0, 2: 0.6): identity [1, 2] -> R@1 0, n_q 1, mMP 0;
    #   throw_first drops 1 -> [0 (itself), 2] -> R@1 1, mMP 1
    # query 1: no other image with label 1 -> n_q 0, counted, left out (both)
    # query 2 (scores 1: 1.2, self: 1.0, 0: 0.6): identity [1, 0] -> 0, 0; throw_first [2 (itself), 0] -> 1, 1
    assert (identity.r_at_1, identity.mmp_at_5, identity.n_without_positive) == (0.0, 0.0, 1)
    assert (thrown.r_at_1, thrown.mmp_at_5, thrown.n_without_positive) == (1.0, 1.0, 1)


def test_throw_first_on_exact_duplicates_can_only_flatter():
    # Unit-norm duplicates with another label tie with the query itself: throw_first drops one of the two
    # (backend-defined), identity exclusion always keeps the duplicate.
    spec = _spec(a=("test", "test"))
    manifest = _frame({"a": {"test": [(0,), (1,), (0,), (1,)]}})
    emb = {"a/test": np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)}
    for backend in BACKENDS:
        identity = evaluate_embeddings(emb, manifest, spec, backend=backend).per_domain["a"]
        thrown = evaluate_embeddings(emb, manifest, spec, throw_first=True, backend=backend).per_domain["a"]
        assert identity.r_at_1 == 0.0  # every image's nearest other image has the other label
        assert thrown.r_at_1 >= identity.r_at_1 and thrown.n_queries == identity.n_queries == 4


def test_small_index_pads_with_minus_one():
    x = np.eye(3, dtype=np.float32)
    scores, ids = knn_search(x, x, 5, exclude=np.arange(3))
    assert ids.shape == (3, 5) and (ids[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
    assert (ids[:, :2] != np.arange(3)[:, None]).all() and (ids[:, :2] >= 0).all()


def test_queries_without_positives_are_counted_and_excluded():
    spec = _spec(a=("test", "index"))
    manifest = _frame({"a": {"test": [(0,), (5,)], "index": [(0,), (1,)]}})
    emb = {"a/test": np.eye(2, dtype=np.float32), "a/index": np.eye(2, dtype=np.float32)}
    m = evaluate_embeddings(emb, manifest, spec).per_domain["a"]
    assert (m.n_queries, m.n_without_positive, m.n_scored, m.r_at_1, m.mmp_at_5) == (2, 1, 1, 1.0, 1.0)


# ----------------------------------------------------------------------------------- labels


def test_relevance_and_counts_with_multi_label_images():
    q = [(1,), (2, 5), (9,)]
    x = [(1, 2), (5,), (3,), (2,), (1, 5)]
    qs, xs = LabelSets.from_lists(q), LabelSets.from_lists(x)
    want = [sum(bool(set(a) & set(b)) for b in x) for a in q]
    assert count_relevant(qs, xs).tolist() == want == [2, 4, 0]
    single = LabelSets.from_lists([(1,), (5,), (3,), (2,), (1,)])
    assert count_relevant(qs, single).tolist() == [2, 2, 0]
    assert LabelSets.from_lists([(3, 1, 3), (2,)]).values.tolist() == [1, 3, 2]  # sorted, unique per image
    with pytest.raises(ValueError, match="image 1 has no label"):
        LabelSets.from_lists([(1,), ()])
    ids = np.array([[0, 2, -1], [4, 2, 1], [0, 1, 7]])  # -1 and 7 (out of range) are other domains / none
    assert relevance(ids, qs, xs).tolist() == [[True, False, False], [True, False, True], [False, False, False]]


# ----------------------------------------------------------------------------------- report


def test_rounding_per_domain_before_the_mean():
    r = RetrievalReport("test", "merged", {d: DomainMetrics(v, v, 10) for d, v in
                                           {"a": 0.0044, "b": 0.0044, "c": 0.005}.items()})
    # rounded per domain: 0.004, 0.004, 0.005 -> mean 0.00433 -> 0.004; the unrounded mean 0.0046 -> 0.005
    assert r.rounded()["mean"] == {"r_at_1": 0.004, "mmp_at_5": 0.004}
    assert round(r.mean_mmp_at_5, 3) == 0.005
    assert r.rounded()["per_domain"]["c"]["r_at_1"] == 0.005


def test_report_json_round_trip():
    manifest, emb = _benchmark(seed=1)
    report = evaluate_embeddings(emb, manifest, SPEC, throw_first=True)
    doc = json.loads(json.dumps(report.to_dict()))
    back = RetrievalReport.from_dict(doc)
    assert back == report and back.to_dict() == doc
    assert doc["throw_first"] is True and doc["k"] == 5 and set(doc["per_domain"]) == {"a", "b", "c"}
    assert doc["mean_mmp_at_5"] == pytest.approx(np.mean([m["mmp_at_5"] for m in doc["per_domain"].values()]))


def test_report_tables_and_chart(tmp_path):
    from udon_core.evaluation import format_comparison, format_markdown, format_table, plot_report

    manifest, emb = _benchmark(seed=1)
    before = evaluate_embeddings(emb, manifest, SPEC, protocol="merged")
    after = evaluate_embeddings(emb, manifest, SPEC, protocol="separate")
    table = format_table(after)
    assert "mMP@5" in table and "R@1" in table and "mean" in table and "no positive" in table
    text = format_comparison({"before": before, "after": after})
    delta = after.rounded()["mean"]["mmp_at_5"] - before.rounded()["mean"]["mmp_at_5"]
    assert "delta mMP@5" in text and f"{delta:+.3f}" in text
    md = format_markdown({"before": before, "after": after})
    assert md.count("\n| ") == len(SPEC.domains) + 2  # header, 3 domains, mean
    assert format_markdown(after).splitlines()[2].startswith("| domain |")
    png = plot_report({"before": before, "after": after}, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_torch_cuda_search_matches_brute_force():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(6)
    q, x = unit(rng, 300, 64), unit(rng, 5000, 64)
    x[:300] = q  # self-query: query i is index image i
    s, ids = knn_search(q, x, 6, exclude=np.arange(300), backend="torch", device="cuda", query_batch=128)
    exact = q.astype(np.float64) @ x.T.astype(np.float64)
    exact[np.arange(300), np.arange(300)] = -np.inf
    want = np.argsort(-exact, axis=1)[:, :6]
    assert (ids == want).all() and np.allclose(s, np.take_along_axis(exact, want, 1), atol=1e-5)


def test_the_run_summary_table_fits_100_columns_with_deltas_to_the_first_report():
    from udon_core.evaluation import format_by_metric

    def report(v):
        return RetrievalReport("test", "merged", {d: DomainMetrics(v, v, 10) for d in ("emoji", "glyphs", "animals")})

    text = format_by_metric({"untrained (step 0)": report(0.5), "trained": report(0.625),
                             "oracle teacher": report(0.75)})
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "0.625 (+0.125)" in text and "0.750 (+0.250)" in text
    assert text.splitlines()[0].split()[:3] == ["R@1", "untrained", "(step"]


def test_progress_in_a_log_file_is_a_line_per_tenth_not_a_redrawn_bar():
    import io

    from udon_core.progress import LineProgress

    out = io.StringIO()
    with LineProgress(total=100, desc="train", stream=out, min_interval=0) as bar:
        for _ in range(100):
            bar.update(1)
            bar.set_postfix(loss="1.000")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("train: 10/100 (10%)") and lines[-1].startswith("train: 100/100")
    assert all("loss=1.000" in line and "\r" not in line for line in lines)
    out = io.StringIO()
    assert list(LineProgress(np.arange(3), desc="embed trained: a/test", stream=out)) == [0, 1, 2]
    assert len(out.getvalue().splitlines()) == 1  # a quick loop: only its last line
    assert out.getvalue().splitlines()[-1].startswith("embed trained: a/test: 3/3 (100%)")
