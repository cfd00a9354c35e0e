"""The promotion gate on hand-made metric documents: every rule, its edges, and the decisions."""

from __future__ import annotations

import pytest

from udon_core.registry import DomainFloor, GatePolicy, judge


def doc(**domains: tuple[float, float]) -> dict:
    """Metrics as RetrievalReport.to_dict() writes them: domain=(mmp_at_5, r_at_1)."""
    per = {d: {"mmp_at_5": m, "r_at_1": r, "n_queries": 10} for d, (m, r) in domains.items()}
    return {"per_domain": per, "mean_mmp_at_5": sum(m for m, _ in domains.values()) / len(domains)}


CHAMP = doc(a=(0.50, 0.60), b=(0.30, 0.40))


def test_first_model_is_judged_on_floors_alone():
    verdict = judge(doc(a=(0.1, 0.1)), None, GatePolicy())
    assert verdict.decision == "promote" and verdict.reasons == ["first model: judged on the floors alone"]
    held = judge(doc(a=(0.1, 0.1)), None, GatePolicy(auto_promote=False))
    assert held.decision == "hold" and "review required" in held.reasons[0]


def test_a_domain_below_its_floor_is_rejected_and_named():
    policy = GatePolicy(min_mmp_at_5=0.2, floors={"b": DomainFloor(r_at_1=0.5)})
    assert policy.floor("a", "mmp_at_5") == 0.2 and policy.floor("b", "r_at_1") == 0.5
    verdict = judge(doc(a=(0.25, 0.9), b=(0.25, 0.45)), CHAMP, policy, champion_version="3")
    assert verdict.decision == "reject"
    assert verdict.reasons == ["floor: b R@1 0.450 >= 0.500 (FAIL)"]
    # exactly at the floor passes, even when the number went through float arithmetic
    assert judge(doc(a=(0.1 + 0.2, 0.5)), None, GatePolicy(min_mmp_at_5=0.3)).decision == "promote"


def test_improvement_margin_on_mean_mmp():
    # champion mean mMP@5 0.40; challenger 0.45: +0.05
    better = doc(a=(0.55, 0.60), b=(0.35, 0.40))
    assert judge(better, CHAMP, GatePolicy(min_improvement=0.05)).decision == "promote"
    short = judge(better, CHAMP, GatePolicy(min_improvement=0.06), champion_version="3")
    assert short.decision == "hold" and short.compared_with == "3"
    assert short.reasons == ["improvement: mean mMP@5 over the champion's domains +0.050 >= +0.060 (FAIL)"]


def test_no_domain_may_regress_beyond_the_tolerance():
    # mean improves (+0.05) but b's R@1 drops by 0.05
    mixed = doc(a=(0.65, 0.70), b=(0.25, 0.35))
    verdict = judge(mixed, CHAMP, GatePolicy(max_domain_regression=0.02))
    assert verdict.decision == "hold"
    assert verdict.reasons == ["regression: b mMP@5 change -0.050 >= -0.020 (FAIL)",
                               "regression: b R@1 change -0.050 >= -0.020 (FAIL)"]
    assert judge(mixed, CHAMP, GatePolicy(max_domain_regression=0.05)).decision == "promote"  # at the edge


def test_champion_domains_must_be_covered_and_new_domains_are_fine():
    verdict = judge(doc(a=(0.9, 0.9), c=(0.5, 0.5)), CHAMP, GatePolicy())
    assert verdict.decision == "hold" and verdict.reasons == ["coverage: b (champion domain) missing (FAIL)"]
    disjoint = judge(doc(c=(0.5, 0.5)), CHAMP, GatePolicy())
    assert disjoint.decision == "hold" and len(disjoint.reasons) == 2


def test_review_required_even_when_every_check_passes():
    verdict = judge(doc(a=(0.6, 0.7), b=(0.4, 0.5)), CHAMP, GatePolicy(auto_promote=False))
    assert verdict.decision == "hold" and "auto_promote is off" in verdict.reasons[0]
    assert all(c.passed for c in verdict.checks)


def test_malformed_metrics_are_named():
    with pytest.raises(ValueError, match="challenger metrics need per_domain"):
        judge({"per_domain": {"a": {"mmp_at_5": 0.1}}}, None, GatePolicy())
    with pytest.raises(ValueError, match="no domains"):
        judge({"per_domain": {}}, None, GatePolicy())


def test_promotion_review_shows_both_models_the_verdict_and_the_provenance():
    from udon_core.registry import Candidate, promotion_review

    def report(**domains):
        per = {d: {"r_at_1": r, "mmp_at_5": m, "n_queries": 10, "n_without_positive": 0}
               for d, (m, r) in domains.items()}
        return {"split": "test", "protocol": "merged", "k": 5, "throw_first": False, "per_domain": per}

    champ = Candidate("1", report(a=(0.5, 0.6), b=(0.3, 0.4)), {"data.dvc_md5": "aaa.dir", "code.git_commit": "c1"})
    chall = Candidate("2", report(a=(0.6, 0.7), b=(0.25, 0.35)), {"data.dvc_md5": "<b>.dir"})
    verdict = judge(chall.metrics, champ.metrics, GatePolicy(), champion_version="1")
    review = promotion_review(chall, champ, verdict)
    md = review.markdown
    assert md.startswith("# Promotion review: v2 against champion v1") and "Gate verdict: HOLD" in md
    assert "| b | 0.400 | 0.300 | 0.350 | 0.250 | -0.050 | -0.050 |" in md  # champion, challenger, deltas
    assert "| data.dvc_md5 | aaa.dir | <b>.dir |" in md and "| code.git_commit | c1 | - |" in md
    assert "regression: b mMP@5 change -0.050 >= -0.020 (FAIL)" in md
    assert "&lt;b&gt;.dir" in review.html and "<b>.dir" not in review.html  # escaped
    assert "data:image/png;base64," in review.html and "Gate verdict: HOLD" in review.html


def _report(**domains):
    per = {d: {"r_at_1": r, "mmp_at_5": m, "n_queries": 10, "n_without_positive": 0} for d, (m, r) in domains.items()}
    return {"split": "test", "protocol": "merged", "k": 5, "throw_first": False, "per_domain": per}


def test_review_deltas_are_computed_from_unrounded_values_like_the_checks():
    from udon_core.registry import Candidate, promotion_review

    # shown rounded: 0.412 -> 0.414 (+0.002); the gate's change is 0.4136 - 0.4124 = +0.0012 -> "+0.001"
    champ = Candidate("1", _report(a=(0.4124, 0.5004)))
    chall = Candidate("2", _report(a=(0.4136, 0.4996)))
    verdict = judge(chall.metrics, champ.metrics, GatePolicy(), champion_version="1")
    md = promotion_review(chall, champ, verdict).markdown
    assert "| a | 0.500 | 0.412 | 0.500 | 0.414 | -0.001 | +0.001 |" in md
    assert "| regression | a mMP@5 change | 0.001 | -0.020 | pass |" in md
    assert "| regression | a R@1 change | -0.001 | -0.020 | pass |" in md


def test_review_and_its_html_show_what_changed_between_champion_and_challenger():
    from udon_core.registry import Candidate, changes, promotion_review

    config = {"train": {"steps": 300, "batch_size": 32, "sampler": {"update_every": 50}}, "seed": 0}
    champ = Candidate("1", _report(a=(0.5, 0.6)), {"data.dvc_md5": "aaa.dir", "code.git_commit": "c1",
                                                  "data.benchmark": "demo"}, config)
    chall = Candidate("2", _report(a=(0.5, 0.6)), {"data.dvc_md5": "bbb.dir", "code.git_commit": "c1",
                                                  "data.benchmark": "demo"},
                      {"train": {"steps": 50, "batch_size": 32, "sampler": {"update_every": 50}, "lr": 0.1}, "seed": 0})
    assert changes(chall, champ) == [["data version (DVC md5)", "aaa.dir", "bbb.dir"], ["config train.lr", "-", "0.1"],
                                     ["config train.steps", "300", "50"]]
    review = promotion_review(chall, champ, judge(chall.metrics, champ.metrics, GatePolicy(), "1"))
    assert "## What changed since champion v1\n\n| | champion v1 | challenger v2 |" in review.markdown
    assert "| config train.steps | 300 | 50 |" in review.markdown and "code (git commit)" not in review.markdown
    assert "<h2>What changed since champion v1</h2>" in review.html and "<td>config train.steps</td>" in review.html
    same = Candidate("3", chall.metrics, chall.tags, chall.config)
    assert "Nothing recorded differs" in promotion_review(same, chall, judge(same.metrics, chall.metrics,
                                                                               GatePolicy(), "2")).markdown
    assert changes(chall, None) == [] and "What changed" not in promotion_review(chall, None, judge(
        chall.metrics, None, GatePolicy())).markdown


def test_a_benchmark_is_identified_by_how_it_is_evaluated_not_by_its_training_data():
    from udon_core.data.benchmark import BenchmarkSpec
    from udon_core.registry import benchmark_digest

    def spec(name="b", disjoint=True, index="index", classes=None, order=("x", "y")):
        return BenchmarkSpec.model_validate({"name": name, "domains": [
            {"name": d, "num_train_classes": classes, "classes_disjoint": disjoint,
             "evals": {"test": {"query": "query", "index": index}, "val": {"query": "val", "index": "val"}}}
            for d in order]})

    base = benchmark_digest(spec())
    assert base == benchmark_digest(spec(classes=40)) == benchmark_digest(spec(order=("y", "x")))  # more data
    assert len({base, benchmark_digest(spec(name="c")), benchmark_digest(spec(disjoint=False)),
                benchmark_digest(spec(index="query")), benchmark_digest(spec(order=("x",)))}) == 5


def test_a_version_without_a_recorded_config_is_named_once_not_key_by_key():
    from udon_core.registry import differences

    assert differences({}, {}, {}, {"train": {"steps": 5}}) == [("training config", "not recorded", "recorded")]
    assert differences({}, {}, {}, {}) == []
