"""The registry on a real MLflow sqlite store (ZenML's stages mirrored into a fake): one sentence for every
name, version and alias that does not exist, models tied to one benchmark, promotion over the gate's objection
only with --force, stores that are gone or unreachable, and promotions repaired after a kill at every write."""

from __future__ import annotations

import json
import time
from itertools import count
from pathlib import Path

import pytest
from mlflow import MlflowClient

import integrations.model_registry as mr
from integrations.model_registry import ModelRegistry, RegistryError, RegistryUnavailableError, UnknownModelError
from integrations.model_uri import parse_model_uri
from pipelines.zen_server import free_port

NAME = "udon-universal-embedding"
_names = count()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(tracking URI, client, run id) of one sqlite store shared by this module's tests."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("e"))
    return uri, client, run.info.run_id


class FakeZenML:
    """ZenML's model version stages: one version per stage (setting one archives its holder, as force=True)."""

    def __init__(self) -> None:
        self.stage: dict[str, str] = {}

    def set(self, model_version_id: str | None, stage: str) -> None:
        if not model_version_id:
            return
        if stage == "none":
            if self.stage.get(model_version_id) not in ("staging", "production"):
                return
            stage = "archived"
        for other, held in self.stage.items():
            if held == stage and other != model_version_id and stage != "archived":
                self.stage[other] = "archived"
        self.stage[model_version_id] = stage


@pytest.fixture(autouse=True)
def zen(monkeypatch) -> FakeZenML:
    fake = FakeZenML()
    monkeypatch.setattr(mr, "_set_zenml_stage", fake.set)
    monkeypatch.setattr(mr, "_log_zenml_metadata", lambda *a: None)
    return fake


def make_model(store, versions: int, name: str | None = None) -> ModelRegistry:
    """A registered model with ``versions`` pending versions, each linked to a (fake) ZenML model version."""
    uri, client, run_id = store
    name = name or f"m{next(_names)}"
    client.create_registered_model(name)
    for _ in range(versions):
        mv = client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags={"gate.verdict": "pending"})
        client.set_model_version_tag(name, mv.version, mr.ZENML_VERSION_TAG, f"{name}-zen-{mv.version}")
    return ModelRegistry(name, uri)


def standing(reg: ModelRegistry, zen: FakeZenML) -> dict[str, tuple]:
    """version -> (MLflow aliases, udon.stage tag, ZenML stage, gate verdict)."""
    return {v.version: (v.aliases, v.stage, zen.stage.get(v.tags[mr.ZENML_VERSION_TAG], "none"), v.verdict)
            for v in reg.versions()}


# -- one sentence for what does not exist ------------------------------------------------------------------------


def test_a_typo_in_the_name_the_version_or_the_alias_is_one_sentence_naming_what_exists(store):
    reg = make_model(store, 2, name=NAME)
    reg.decide("1", "promote", ["first model: judged on the floors alone"], 0, actor="udon-gate")
    reg.decide("2", "hold", ["regression: a mMP@5 change -0.050 >= -0.020 (FAIL)"], 1, actor="udon-gate")
    client = store[1]
    with pytest.raises(UnknownModelError) as name:
        parse_model_uri("models:/udon-universal-embeding/1").resolve(client)
    assert str(name.value).startswith(f"no registered model 'udon-universal-embeding' in the MLflow registry at "
                                      f"{store[0]}; did you mean '{NAME}'? (registered models: ")
    with pytest.raises(RegistryError) as version:
        parse_model_uri(f"models:/{NAME}/7").resolve(client)
    assert str(version.value) == (f"model '{NAME}' has no version 7 (versions: 1 (promote), 2 (hold); "
                                  "aliases: challenger -> 2, champion -> 1)")
    with pytest.raises(RegistryError) as alias:
        parse_model_uri(f"models:/{NAME}@champoin").resolve(client)
    assert str(alias.value).startswith(f"model '{NAME}' has no alias 'champoin'; did you mean 'champion'? (versions:")
    assert "\n" not in str(name.value) + str(version.value) + str(alias.value)
    found = parse_model_uri(f"models:/{NAME}@champion").resolve(client)
    assert (found.version, found.run_id) == ("1", store[2])


def test_teachers_named_by_a_mistyped_uri_get_the_same_sentence(store, tmp_path):
    from integrations.teacher_sources import _resolve

    reg = make_model(store, 1)
    with pytest.raises(RegistryError, match=f"model '{reg.name}' has no alias 'champion' \\(versions: 1 "
                                            r"\(pending\); aliases: none\)"):
        _resolve(f"models:/{reg.name}@champion", tmp_path / "teacher", store[0])


# -- a registered model holds one benchmark ------------------------------------------------------------------------


def test_a_registered_model_is_tied_to_one_benchmark(store):
    uri, client, _ = store
    reg = ModelRegistry(f"m{next(_names)}", uri)
    reg.bind_benchmark("demo", "a" * 64)
    reg.bind_benchmark("demo", "a" * 64)  # the same benchmark again: fine
    with pytest.raises(RegistryError) as err:
        reg.bind_benchmark("My Benchmark", "b" * 64)
    assert str(err.value) == (
        f"registered model '{reg.name}' holds models of benchmark 'demo' (description sha256 aaaaaaaaaaaa); this "
        "run's benchmark 'My Benchmark' (bbbbbbbbbbbb) is another, and the gate would compare unlike numbers: "
        "register it under a name of its own, e.g. --set registry.model_name=my-benchmark-embedding (training is "
        "cached, only registration runs again)")
    legacy = make_model(store, 1)  # registered before models were tied to a benchmark: adopted
    legacy.bind_benchmark("demo", "c" * 64)
    assert client.get_registered_model(legacy.name).tags[mr.BENCHMARK_DIGEST_TAG] == "c" * 64


# -- promoting over the gate ---------------------------------------------------------------------------------------


def test_promoting_a_version_the_gate_objected_to_needs_force_and_is_recorded(store, zen):
    reg = make_model(store, 5)
    reg.decide("1", "promote", ["first model: judged on the floors alone"], 0, actor="udon-gate")
    six = [f"regression: d{i} mMP@5 change -0.050 >= -0.020 (FAIL)" for i in range(6)]
    reg.decide("2", "hold", six, 6, actor="udon-gate")
    reg.decide("3", "hold", ["every check passed; auto_promote is off: review required"], 0, actor="udon-gate")
    reg.decide("4", "reject", ["floor: a R@1 0.100 >= 0.500 (FAIL)"], 1, actor="udon-gate")
    for version, verdict in (("2", "hold (6 failed checks: regression: d0"), ("4", "reject (1 failed check: floor"),
                             ("5", "pending (never judged by the gate)")):
        with pytest.raises(RegistryError) as err:
            reg.promote(version, "looks fine to me")
        assert str(err.value).startswith(f"the gate's verdict on version {version} is {verdict}")
        assert str(err.value).endswith("add --force to do so (recorded with your name and reason)")
    assert reg.champion().version == "1"
    reg.promote("3", "reviewed")  # held only because review is required: no override
    assert "udon.gate_override" not in reg.version("3").tags
    assert reg.promote("2", "the regressions are noise", actor="alice", force=True) == "3"
    tags = reg.version("2").tags
    assert tags["udon.promoted_by"] == "alice" and tags["udon.promotion_reason"] == "the regressions are noise"
    assert tags["udon.gate_override"].startswith("alice at ") and "over the verdict hold (6 failed checks" in tags[
        "udon.gate_override"]
    assert reg.history()[-1]["override"].startswith("hold (6 failed checks")
    assert standing(reg, zen)["2"][:3] == (("champion",), "production", "production")


# -- stores that are gone or cannot be reached ----------------------------------------------------------------------


def test_a_sqlite_store_whose_folder_is_gone_is_an_error_and_nothing_is_created(tmp_path):
    gone = tmp_path / "moved-away" / "mlflow.db"
    with pytest.raises(RegistryUnavailableError, match=f"the MLflow registry at sqlite:///{gone} is gone: the "
                                                       f"folder {gone.parent} does not exist"):
        ModelRegistry(NAME, f"sqlite:///{gone}")
    assert not gone.parent.exists()  # no empty registry was created there
    with pytest.raises(UnknownModelError, match="no model is registered there yet: run the pipeline first"):
        ModelRegistry(NAME, f"sqlite:///{tmp_path / 'mlflow.db'}").versions()  # a folder without a store yet


def _refused_port() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a loopback port nobody listens on


def test_an_unreachable_registry_is_one_sentence_within_seconds(monkeypatch):
    for key in mr.INTERACTIVE_HTTP:
        monkeypatch.delenv(key, raising=False)
    dead = _refused_port()
    started = time.monotonic()
    with mr.interactive_http(), pytest.raises(RegistryUnavailableError, match=f"the MLflow registry at {dead} cannot"):
        ModelRegistry(NAME, dead).versions()
    assert time.monotonic() - started < 15  # MLflow's own defaults retry for about 4 minutes
    assert not any(key in __import__("os").environ for key in mr.INTERACTIVE_HTTP)  # restored afterwards


# -- kills in the middle of a change of standing ---------------------------------------------------------------------


class Killed(BaseException):
    """The process dies here (kill -9): nothing after this write happens, no handler runs."""


class Faults:
    """Counts every write to MLflow or ZenML and dies at the ``kill_at``-th."""

    WRITES = {"set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag",
              "set_registered_model_tag", "delete_registered_model_tag", "update_model_version"}

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at, self.writes = kill_at, 0

    def tick(self) -> None:
        self.writes += 1
        if self.writes == self.kill_at:
            raise Killed

    def client(self, client: MlflowClient):
        faults = self

        class Client:
            def __getattr__(self, name):
                attr = getattr(client, name)
                if name not in Faults.WRITES:
                    return attr

                def write(*args, **kwargs):
                    faults.tick()
                    return attr(*args, **kwargs)
                return write
        return Client()


def _state(store, zen: FakeZenML, standings: dict[str, tuple[str | None, str, str]], history: list[str]):
    """A registered model written directly (a handful of calls): version -> (alias, stage, verdict), and the
    versions the gate or a person promoted, in order."""
    uri, client, run_id = store
    name = f"m{next(_names)}"
    events = [{"id": f"e{i}", "action": "promote", "version": v, "previous": "", "reason": "r", "by": "b", "at": "t"}
              for i, v in enumerate(history)]
    client.create_registered_model(name, tags={mr.HISTORY_TAG: json.dumps(events)})
    for version, (alias, stage, verdict) in standings.items():
        client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags={
            "gate.verdict": verdict, "udon.stage": stage, mr.ZENML_VERSION_TAG: f"{name}-zen-{version}"})
        if alias:
            client.set_registered_model_alias(name, alias, version)
        if stage != "none":
            zen.stage[f"{name}-zen-{version}"] = stage
    return ModelRegistry(name, uri)


def _judged(store, zen) -> ModelRegistry:
    """v1 champion, v2 the challenger (held, every check passed), v3 pending: registered, not yet judged."""
    return _state(store, zen, {"1": ("champion", "production", "promote"), "2": ("challenger", "staging", "hold"),
                               "3": (None, "none", "pending")}, ["1"])


def _promoted(store, zen) -> ModelRegistry:
    """v2 promoted by hand over v1: v1 archived, the history names 1 then 2."""
    return _state(store, zen, {"1": (None, "archived", "promote"), "2": ("champion", "production", "hold"),
                               "3": (None, "none", "pending")}, ["1", "2"])


OPERATIONS = {  # name: (state before, the operation)
    "udon promote 2": (_judged, lambda reg: reg.promote("2", "reviewed")),
    "gate promotes 3": (_judged, lambda reg: reg.decide("3", "promote", ["every check passed"], 0, actor="udon-gate")),
    "gate holds 3": (_judged, lambda reg: reg.decide("3", "hold", ["regression: a R@1 change -0.1 >= -0.02 (FAIL)"],
                                                     1, actor="udon-gate")),
    "udon rollback": (_promoted, lambda reg: reg.rollback("latency")),
}


def _faulty(reg: ModelRegistry, faults: Faults, zen: FakeZenML, monkeypatch) -> ModelRegistry:
    monkeypatch.setattr(mr, "_set_zenml_stage", lambda mv, stage: (faults.tick(), zen.set(mv, stage)))
    return ModelRegistry(reg.name, client=faults.client(reg.client))


@pytest.mark.slow
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_kill_at_any_write_is_repaired_to_the_last_recorded_champion(store, zen, monkeypatch, operation):
    """Every write of the operation in turn is the one the process dies at; the next command must find MLflow
    and ZenML exactly as before the operation or exactly as after it (after only when the history records it),
    with one champion, the one the history names."""
    setup, operate = OPERATIONS[operation]
    reference = setup(store, zen)
    before = standing(reference, zen)
    faults = Faults(kill_at=None)
    operate(_faulty(reference, faults, zen, monkeypatch))
    after, writes = standing(reference, zen), faults.writes
    outcomes = []
    for kill_at in range(1, writes + 1):
        monkeypatch.setattr(mr, "_set_zenml_stage", zen.set)
        reg = setup(store, zen)
        recorded = len(reg.history())
        with pytest.raises(Killed):
            operate(_faulty(reg, Faults(kill_at), zen, monkeypatch))
        monkeypatch.setattr(mr, "_set_zenml_stage", zen.set)
        fresh = ModelRegistry(reg.name, store[0])
        repaired = fresh.repair()  # what `udon models` (any next command) does first
        now = standing(fresh, zen)
        committed = len(fresh.history()) > recorded
        expected = after if committed else dict(before)
        if operation.startswith("gate") and not committed and kill_at > 1:
            # an interrupted gate decision leaves its version visibly never judged; ZenML cannot clear a stage,
            # so a version it had already staged is archived there
            assert now["3"][2] in ("none", "archived")
            expected["3"] = ((), "none", now["3"][2], "incomplete")
        assert now == expected, (kill_at, now)
        assert mr.INTENT_TAG not in (fresh.client.get_registered_model(fresh.name).tags or {})
        assert fresh.champion().version == fresh.champion_chain()[-1]
        assert bool(repaired) == (kill_at > 1)  # the first write is the intent itself
        outcomes.append("after" if committed else "before")
    assert "before" in outcomes and ("after" in outcomes) == (operation != "gate holds 3"), outcomes
    print(f"{operation}: {writes} kill points, {len(outcomes)} repaired ({outcomes.count('after')} rolled forward)")


def test_every_client_made_from_a_uri_refuses_a_sqlite_store_whose_folder_is_gone(tmp_path):
    import mlflow

    from integrations.mlflow_models import load_registered_model
    from integrations.teacher_sources import _from_mlflow
    from pipelines.run_records import _fail_mlflow_runs, _mark_unjudged_versions

    gone = tmp_path / "moved-away" / "mlflow.db"
    uri = f"sqlite:///{gone}"
    previous = mlflow.get_tracking_uri()
    calls = {"teacher": lambda: _from_mlflow(f"models:/{NAME}/1", tmp_path / "teacher", uri),
             "embed": lambda: load_registered_model(f"models:/{NAME}/1", uri),
             "abandoned runs": lambda: _fail_mlflow_runs("run", uri),
             "unjudged versions": lambda: _mark_unjudged_versions("run", uri, "killed")}
    try:
        for what, call in calls.items():
            with pytest.raises(RegistryUnavailableError, match=f"the MLflow registry at {uri} is gone"):
                call()
            assert not gone.parent.exists(), what  # no new empty registry was created there
    finally:
        mlflow.set_tracking_uri(previous)


def test_the_lock_lies_beside_a_local_store_and_in_the_temporary_folder_otherwise(tmp_path):
    import tempfile

    assert mr._lock_path(f"sqlite:///{tmp_path}/mlflow.db?timeout=5", NAME).parent == tmp_path
    assert mr._lock_path(f"file://{tmp_path}/mlruns", NAME).parent == tmp_path
    assert mr._lock_path("http://127.0.0.1:5000", NAME).parent == Path(tempfile.gettempdir())


@pytest.mark.slow  # exports a pt2 program (~10 s)
def test_a_version_is_registered_in_one_call_with_its_tags_linked_to_its_logged_model(tmp_path, capfd, monkeypatch):
    import mlflow

    import integrations.mlflow_models as mm
    from integrations.mlflow_models import register_embedding_model
    from tests.unit.tiny_benchmark import TINY_MODEL
    from udon_core.model.udon_model import EmbeddingModel

    # why: the git commit comes from ZenML's source root, and importing ZenML under capfd would leave its
    # stdout hook writing to capfd's closed file in later tests
    monkeypatch.setattr(mm, "code_version", lambda: {"code.git_commit": "abc", "code.git_dirty": "False"})
    uri, previous = f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow.get_tracking_uri()
    ModelRegistry("m", uri).bind_benchmark("demo", "0" * 64)  # as the register step does, before registering
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            registered = register_embedding_model(EmbeddingModel(TINY_MODEL), "m", metrics={"mean_mmp_at_5": 0.5},
                                                  dataset_tags={"data.dvc_md5": "x"})
    finally:
        mlflow.set_tracking_uri(previous)
    assert "already exists" not in capfd.readouterr().err  # the registered model was created on purpose
    mv = client.get_model_version("m", registered["version"])
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))  # as mlflow.register_model: models:/m-...
    assert mv.run_id == logged.source_run_id == run.info.run_id
    assert mv.tags["gate.verdict"] == "pending" and mv.tags["data.dvc_md5"] == "x"
    assert mv.description.startswith("UDON universal image embedding") and "Gate verdict: pending" in mv.description
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "m", "version": registered["version"]}]  # the UI's link to the version


def test_the_names_an_unknown_model_is_compared_with_are_listed_only_when_the_error_is_shown(store, monkeypatch):
    uri, client, _ = store
    reg = ModelRegistry(f"unknown-{next(_names)}", uri)
    listings = []
    search = reg.client.search_registered_models
    monkeypatch.setattr(reg.client, "search_registered_models", lambda *a, **kw: listings.append(1) or search(*a, **kw))
    assert reg.repair() == [] and listings == []  # the repair check finds no model and goes on: nothing listed
    with pytest.raises(UnknownModelError) as caught:
        reg.versions()
    assert listings == []
    assert str(caught.value).startswith(f"no registered model '{reg.name}' in the MLflow registry at {uri}")
    assert str(caught.value) == str(caught.value) and listings == [1]  # made once, when shown


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_change_of_standing_lists_the_versions_once(store, zen, operation, monkeypatch):
    before, change = OPERATIONS[operation]
    reg = before(store, zen)
    listings = []
    search = reg.client.search_model_versions
    monkeypatch.setattr(reg.client, "search_model_versions", lambda *a, **kw: listings.append(1) or search(*a, **kw))
    change(reg)
    assert len(listings) == 1, operation  # under the lock nothing else changes them: one listing serves it all


def test_a_killed_runs_unjudged_version_gets_its_verdict_as_the_registry_records_one(store, zen):
    from pipelines.run_records import _mark_unjudged_versions

    uri, client, run_id = store
    reg = make_model(store, 2)
    client.set_model_version_tag(reg.name, "2", "zenml.pipeline_run", f"{reg.name}-killed")
    lines = _mark_unjudged_versions(f"{reg.name}-killed", uri, "process 1 ended")
    assert lines == [f"model {reg.name} version 2: never judged by the gate -> incomplete"]
    v1, v2 = reg.version("1"), reg.version("2")
    assert (v1.verdict, v2.verdict) == ("pending", "incomplete") and "not a candidate" in v2.tags["gate.reasons"]
    assert "Gate verdict: incomplete" in client.get_model_version(reg.name, "2").description  # as record_verdict
