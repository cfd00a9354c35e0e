"""Benchmarks as data: the UnED table, the demo, and loading descriptions from disk."""

from __future__ import annotations

import pytest

from udon_core.data import DEMO, UNED, BenchmarkSpec, DomainSpec, EvalSet, resolve_benchmark_spec, save_benchmark_spec


def test_uned_has_the_eight_domains_in_the_official_head_order():
    assert UNED.domain_names == ("food2k", "cars", "sop", "inshop", "inat", "met", "gldv2", "rp2k")
    assert sum(d.num_train_classes for d in UNED.domains) == 316_446


@pytest.mark.parametrize(
    "domain, query, index, self_query",
    [("inshop", "test", "index", False), ("gldv2", "test", "index", False), ("met", "test", "train", False),
     ("cars", "test", "test", True), ("food2k", "test", "test", True)],
)
def test_uned_test_protocols(domain, query, index, self_query):
    ev = UNED.domain(domain).evals["test"]
    assert (ev.query, ev.index, ev.self_query) == (query, index, self_query)


def test_met_validates_against_its_small_index_and_overlaps_train_by_design():
    met = UNED.domain("met")
    assert met.evals["val"] == EvalSet(query="val", index="small_index")
    assert met.info_files == ("train", "val", "small_index", "test")
    assert not met.classes_disjoint and UNED.domain("sop").classes_disjoint


def test_unknown_domain_and_duplicates_are_clear_errors():
    with pytest.raises(KeyError, match="no domain 'cats'.*food2k"):
        UNED.domain("cats")
    d = DomainSpec(name="a", evals={})
    with pytest.raises(ValueError, match=r"lists domain\(s\) \['a'\] more than once"):
        BenchmarkSpec(name="x", domains=(d, d))


def test_restrict_keeps_the_requested_order():
    assert UNED.restrict(["met", "cars"]).domain_names == ("met", "cars")


def test_resolve_builtin_auto_and_file(tmp_path):
    assert resolve_benchmark_spec("uned") is UNED
    assert resolve_benchmark_spec("auto", tmp_path) is UNED  # no benchmark.json: a downloaded UnED folder
    save_benchmark_spec(DEMO, tmp_path)
    assert resolve_benchmark_spec("auto", tmp_path) == DEMO
    assert resolve_benchmark_spec(str(tmp_path / "benchmark.json")) == DEMO
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        resolve_benchmark_spec("nope")
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="bad.json: not a valid benchmark description"):
        resolve_benchmark_spec(str(tmp_path / "bad.json"))
