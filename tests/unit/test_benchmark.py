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
    d = DomainSpec(name="a", evals={"test": EvalSet(query="test", index="test")})
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


# ---- strict types, names that cannot leave the folder, sane bounds (issue #25) ---------------------------

def _description(tmp_path, change) -> str:
    """The error sentence for the two-domain description of tests/byob.py with ``change`` applied."""
    import copy
    import json

    from tests.byob import DESCRIPTION
    from udon_core.errors import UdonUserError

    doc = copy.deepcopy(DESCRIPTION)
    change(doc)
    (tmp_path / "benchmark.json").write_text(json.dumps(doc))
    with pytest.raises(UdonUserError) as err:
        resolve_benchmark_spec("auto", tmp_path)
    return str(err.value)


def _art(key, value):
    return lambda doc: doc["domains"][1].update({key: value})


@pytest.mark.parametrize("value, shown", [
    ("3", '"3" (a string)'), (3.0, "3.0 (a number with a fraction or exponent)"), (True, "true (a boolean)"),
    (10**12, "1,000,000,000,000"), (0, "got 0"), (-3, "got -3"), (None, None),
])
def test_class_counts_are_whole_numbers_within_bounds(tmp_path, value, shown):
    if value is None:  # absent or null: inferred from the data
        assert _art_spec(tmp_path, None).domain("art").num_train_classes is None
        return
    message = _description(tmp_path, _art("num_train_classes", value))
    assert "domains[1].num_train_classes: must be a whole number from 1 to 1,000,000" in message and shown in message


def _art_spec(tmp_path, value):
    import json

    from tests.byob import DESCRIPTION

    doc = json.loads(json.dumps(DESCRIPTION))
    doc["domains"][1]["num_train_classes"] = value
    (tmp_path / "benchmark.json").write_text(json.dumps(doc))
    return resolve_benchmark_spec("auto", tmp_path)


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_classes_disjoint_is_a_json_boolean(tmp_path, value):
    # "no" read as false would silently switch the leak check off
    message = _description(tmp_path, lambda doc: doc["domains"][0].update(classes_disjoint=value))
    assert "domains[0].classes_disjoint: must be true or false" in message


@pytest.mark.parametrize("name", ["", 'a"rt', "my art", "../../outside", "/abs/art", "a\u0000rt", "ärt", "1art",
                                  "a" * 65])
def test_domain_names_are_identifiers(tmp_path, name):
    message = _description(tmp_path, _art("name", name))
    assert "domains[1].name: must be an identifier" in message


@pytest.mark.parametrize("stem", ["../../../outside/train", "/abs/train", "a/b", ".hidden", "tr\u0000ain", "", "x" * 65])
def test_split_stems_are_plain_names(tmp_path, stem):
    assert "domains[0].train: must be a plain name" in _description(tmp_path, lambda d: d["domains"][0].update(train=stem))
    message = _description(tmp_path, lambda d: d["domains"][0]["evals"]["test"].update(index=stem))
    assert "domains[0].evals.test.index: must be a plain name" in message
    message = _description(tmp_path, lambda d: d["domains"][0]["evals"].update({stem: {"query": "val", "index": "val"}}))
    assert "domains[0].evals: split name must be a plain name" in message


def test_queries_cannot_be_the_training_file_and_every_domain_is_evaluated(tmp_path):
    message = _description(tmp_path, _art("evals", {"test": {"query": "train", "index": "train"}}))
    assert "domains[1].evals: test.query is the training file 'train'" in message
    assert "domains[1].evals: names no evaluation split" in _description(tmp_path, _art("evals", {}))
    # an index that *is* the train file is UnED's Met protocol: fine
    assert UNED.domain("met").evals["test"].index == "train"


def test_every_wrong_field_is_named_in_one_sentence(tmp_path):
    def change(doc):
        doc["domains"][1].update(num_train_classes="3", classes_disjoint="no")
        doc["domains"][0]["name"] = "my shop"
    message = _description(tmp_path, change)
    assert message.count("\n") == 0 and message.startswith(f"{tmp_path / 'benchmark.json'}: not a valid benchmark")
    for field in ("domains[0].name", "domains[1].num_train_classes", "domains[1].classes_disjoint"):
        assert field in message


def test_a_description_linked_out_of_the_folder_is_not_opened(tmp_path):
    from tests.hostile import OpenedOutside
    from udon_core.errors import UdonUserError

    (tmp_path / "outside").mkdir()
    save_benchmark_spec(DEMO, tmp_path / "outside")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "benchmark.json").symlink_to(tmp_path / "outside" / "benchmark.json")
    with OpenedOutside(tmp_path / "data", tmp_path) as opened, pytest.raises(UdonUserError, match="leaves the data root"):
        resolve_benchmark_spec("auto", tmp_path / "data")
    assert opened.files == []
    # a link into a link root (DVC's cache.type symlink) is the folder's own file
    assert resolve_benchmark_spec("auto", tmp_path / "data", link_roots=[tmp_path / "outside"]) == DEMO


def test_messages_quote_values_and_shorten_long_ones():
    from udon_core.errors import shown

    assert [shown(v, json_spelling=True) for v in ("3", True, None, [1, "a"], {1})] == [
        '"3"', "true", "null", '[1, "a"]', "{1}"]
    assert shown("é", json_spelling=True) == '"\\u00e9"'  # escaped: any terminal prints it
    assert [shown(v) for v in ("3", True)] == ["'3'", "True"]  # repr: reports quote these messages again
    assert shown("a" * 100) == "'" + "a" * 39 + "..." + "a" * 11 + "' (100 characters)"
