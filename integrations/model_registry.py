"""The model registry as our users see it: MLflow versions with aliases, mirrored as ZenML model stages.

One function sets a version's standing in both places, so they always agree:

=============  ==================  =================================================
standing       MLflow alias        ZenML model version stage
=============  ==================  =================================================
champion       ``champion``        ``production``
challenger     ``challenger``      ``staging``
archived       (none)              ``archived`` (a former champion, or rolled back)
rejected       (none)              (none; tag ``gate.verdict=reject``)
incomplete     (none)              (none, or ``archived`` if an undone decision had staged it)
=============  ==================  =================================================

Every promotion and rollback is appended to the registered model's ``udon.promotions`` tag (JSON), which
is what ``rollback`` reads to find the previous champion.

Changes of standing are read-modify-write sequences over several MLflow and ZenML calls (MLflow has no
transactions), so they run under one exclusive lock per registered model: two ``udon promote`` /
``udon rollback`` / gate decisions at the same moment take turns instead of leaving two champions or a
history with a lost event. The lock is a file lock beside a local (sqlite or file) store, or in the
temporary folder for a remote tracking server: it serialises the processes of one machine, not of several.

A process can die in the middle of such a sequence (kill -9, the OOM killer). Each change is therefore
journaled: before touching anything it writes an intent (``udon.intent`` on the registered model: the
standing of every version it touches, before and after, and the history event it will record), and deletes
it when done. The history event is the commit point. Whoever next takes the lock and finds an intent knows
its writer died (the lock was free) and repairs exactly: an intent whose event is in the history is rolled
forward, any other is rolled back, so MLflow and ZenML show the last recorded champion again; a gate
decision that was rolled back leaves its version ``incomplete`` (never judged, not a candidate).
"""

from __future__ import annotations

import difflib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from udon_core.errors import UdonUserError

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "udon.promotions"
INTENT_TAG = "udon.intent"
BENCHMARK_TAG, BENCHMARK_DIGEST_TAG = "udon.benchmark", "udon.benchmark_sha256"
ZENML_VERSION_TAG = "zenml.model_version_id"
METRICS_ARTIFACT = "evaluation/trained.json"
PENDING, INCOMPLETE = "pending", "incomplete"  # gate verdicts: registered and not judged yet / never judged
# why: an intent written on another machine is outside our file lock; its writer may still be working.
STALE_INTENT_S = 600
Standing = Literal["champion", "challenger", "archived", "rejected"]
_STATE: dict[str, dict[str, str | None]] = {
    "champion": {"alias": CHAMPION, "stage": "production"}, "challenger": {"alias": CHALLENGER, "stage": "staging"},
    "archived": {"alias": None, "stage": "archived"}, "rejected": {"alias": None, "stage": "none"},
}
# MLflow's HTTP client retries a refused connection 7 times with exponential backoff (about 4 minutes): right
# for a long training run riding out a server restart, wrong for a command a person waits on.
INTERACTIVE_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class RegistryError(UdonUserError, ValueError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to...)."""


class UnknownModelError(RegistryError):
    """The registry answered: no registered model of that name (so, for `retrain`, no champion yet).

    The sentence (which names the models that exist: one more registry request) is made when it is shown, not
    when the error is raised: several callers catch it and go on."""

    def __init__(self, sentence: str | Callable[[], str]) -> None:
        super().__init__(sentence if isinstance(sentence, str) else "no such registered model")
        self._sentence = sentence

    def __str__(self) -> str:
        if callable(self._sentence):
            self._sentence = self._sentence()
            self.args = (self._sentence,)
        return self._sentence


class RegistryUnavailableError(RegistryError):
    """The registry cannot be asked: unreachable, answering with errors, or its store is gone."""


def unavailable(uri: str, err: Exception) -> RegistryUnavailableError:
    """The one sentence for a registry that cannot be reached or answers with an error."""
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return RegistryUnavailableError(f"the MLflow registry at {uri} cannot be used ({detail[:300]}); check that the "
                                    "tracking server is up and the stack's MLflow tracker points at it")


@contextmanager
def interactive_http() -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded to seconds while the block runs (values the user set in the
    environment win): an unreachable registry is one sentence after ~3 s, not after minutes."""
    saved = {key: os.environ.get(key) for key in INTERACTIVE_HTTP}
    for key, value in INTERACTIVE_HTTP.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as `udon models` lists it."""

    version: str
    aliases: tuple[str, ...]
    stage: str
    tags: dict[str, str]
    run_id: str
    created: datetime

    @property
    def mean_mmp_at_5(self) -> float | None:
        value = self.tags.get("metric.mean_mmp_at_5")
        return float(value) if value else None

    @property
    def mean_r_at_1(self) -> float | None:
        value = self.tags.get("metric.mean_r_at_1")
        return float(value) if value else None

    @property
    def verdict(self) -> str:
        return self.tags.get("gate.verdict", PENDING)

    def gate_objection(self) -> str | None:
        """Why promoting this version by hand overrides the gate (None when the gate has no objection: it
        promoted the version, or held it with every check passed only because review is required)."""
        reasons = self.tags.get("gate.reasons", "")
        failed = int(self.tags.get("gate.failed_checks", reasons.count("(FAIL)")))
        if self.verdict == "promote" or (self.verdict == "hold" and failed == 0):
            return None
        if self.verdict in ("hold", "reject"):
            return f"{self.verdict} ({failed} failed check{'s' * (failed != 1)}: {reasons[:300]})"
        return f"{self.verdict} (never judged by the gate)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _state(info: VersionInfo) -> dict[str, str | None]:
    return {"alias": next((a for a in (CHAMPION, CHALLENGER) if a in info.aliases), None), "stage": info.stage}


class ModelRegistry:
    """The registered model ``name`` in the MLflow registry, and its ZenML model versions' stages."""

    def __init__(self, name: str, tracking_uri: str | None = None, client: Any = None) -> None:
        """``tracking_uri`` None: MLflow's current one; ``client``: an ``MlflowClient`` to use instead."""
        import mlflow

        self.name = name
        self.client = client if client is not None else registry_client(tracking_uri or mlflow.get_tracking_uri())
        self._lock_path = _lock_path(self.client.tracking_uri, name)
        self._lock_depth = 0
        self.repaired: list[str] = []  # what this object repaired after a killed process (see the module doc)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this model's registry lock (re-entrant within this object) for a read-modify-write; the first
        acquisition repairs what a killed process left half done."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed, also if the process dies
            self._lock_depth = 1
            try:
                self._recover()
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ---------------------------------------------------------------------------------------------

    def _registered_model(self) -> Any:
        """MLflow's registered model; an unknown name says which names exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise UnknownModelError(self._unknown_model) from err
            raise unavailable(self.client.tracking_uri, err) from err

    def _unknown_model(self) -> str:
        from mlflow.exceptions import MlflowException

        sentence = f"no registered model '{self.name}' in the MLflow registry at {self.client.tracking_uri}"
        try:
            names = sorted(m.name for m in self.client.search_registered_models(max_results=1000))
        except MlflowException:  # made when shown (UnknownModelError): the registry may have stopped answering
            return sentence
        close = difflib.get_close_matches(self.name, names, n=3, cutoff=0.6)
        if close:
            sentence += "; did you mean " + " or ".join(f"'{n}'" for n in close) + "?"
        if not names:
            return sentence + " (no model is registered there yet: run the pipeline first)"
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        return sentence + f" (registered models: {shown})"

    def versions(self) -> list[VersionInfo]:
        """Every version, newest first (an unknown model name is an error)."""
        from mlflow.exceptions import MlflowException

        model = self._registered_model()
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as err:
            raise unavailable(self.client.tracking_uri, err) from err
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        infos = [self._info(v, tuple(sorted(aliases.get(str(v.version), [])))) for v in found]
        return sorted(infos, key=lambda i: int(i.version), reverse=True)

    def _what_exists(self, infos: list[VersionInfo]) -> str:
        versions = ", ".join(f"{i.version} ({i.verdict})" for i in sorted(infos, key=lambda i: int(i.version)))
        aliases = ", ".join(f"{a} -> {i.version}" for i in infos for a in i.aliases)
        return f"versions: {versions or 'none'}; aliases: {aliases or 'none'}"

    def version(self, version: str, infos: list[VersionInfo] | None = None) -> VersionInfo:
        """One version (of ``infos``, a listing this operation already made, else of a new one); a RegistryError
        names the versions and aliases that exist."""
        infos = self.versions() if infos is None else infos
        for info in infos:
            if info.version == str(version).strip():
                return info
        raise RegistryError(f"model '{self.name}' has no version {version} ({self._what_exists(infos)})")

    def by_alias(self, alias: str) -> VersionInfo:
        """The version holding ``alias``; a RegistryError names the aliases that exist and the closest one."""
        infos = self.versions()
        for info in infos:
            if alias in info.aliases:
                return info
        known = sorted({a for i in infos for a in i.aliases})
        close = difflib.get_close_matches(alias, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RegistryError(f"model '{self.name}' has no alias '{alias}'{hint} ({self._what_exists(infos)})")

    def champion(self, infos: list[VersionInfo] | None = None) -> VersionInfo | None:
        """The version holding the ``champion`` alias, if any (of ``infos`` when given, as ``version``)."""
        return next((i for i in (self.versions() if infos is None else infos) if CHAMPION in i.aliases), None)

    def metrics(self, version: str | VersionInfo) -> dict[str, Any]:
        """The evaluation document (``RetrievalReport.to_dict()``) logged with the version's run."""
        return json.loads(self.run_text(version, METRICS_ARTIFACT))

    def run_text(self, version: str | VersionInfo, artifact: str) -> str:
        """A text artifact of the version's run (read through this registry's tracking URI); a VersionInfo
        already names its run, a version number is looked up."""
        info = version if isinstance(version, VersionInfo) else self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(info.run_id, artifact, tmp)
            except Exception as err:  # MLflow raises several types for a missing artifact
                raise RegistryError(f"version {info.version} has no {artifact} in run {info.run_id}") from err
            return Path(local).read_text()

    def training_config(self, version: str | VersionInfo) -> dict[str, Any]:
        """The training configuration recorded with the version (its lineage document); {} when it has none."""
        from integrations.mlflow_tracking import LINEAGE_ARTIFACT

        try:
            return json.loads(self.run_text(version, LINEAGE_ARTIFACT)).get("training_config") or {}
        except RegistryError:
            return {}

    def history(self) -> list[dict[str, str]]:
        """Promotions and rollbacks, oldest first."""
        return json.loads((self._registered_model().tags or {}).get(HISTORY_TAG, "[]"))

    def _info(self, mv: Any, aliases: tuple[str, ...]) -> VersionInfo:
        tags = dict(mv.tags or {})
        return VersionInfo(str(mv.version), aliases, tags.get("udon.stage", "none"), tags, mv.run_id,
                           datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc))

    def champion_chain(self) -> list[str]:
        """Champions in order, with rolled-back ones removed: the last is the current champion."""
        return _chain(self.history())

    # -- writing ---------------------------------------------------------------------------------------------

    def bind_benchmark(self, benchmark: str, digest: str) -> None:
        """Tie the registered model to one benchmark (created here when new): versions of another benchmark are
        refused, since the gate would compare numbers that mean different things."""
        from mlflow.exceptions import MlflowException

        tags = {BENCHMARK_TAG: benchmark, BENCHMARK_DIGEST_TAG: digest}
        try:
            self.client.create_registered_model(self.name, tags=tags)
            return
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise unavailable(self.client.tracking_uri, err) from err
        bound = self._registered_model().tags or {}
        if BENCHMARK_DIGEST_TAG not in bound:  # registered before models were tied to a benchmark
            for key, value in tags.items():
                self.client.set_registered_model_tag(self.name, key, value)
        elif bound[BENCHMARK_DIGEST_TAG] != digest:
            raise RegistryError(
                f"registered model '{self.name}' holds models of benchmark '{bound.get(BENCHMARK_TAG)}' (description "
                f"sha256 {bound[BENCHMARK_DIGEST_TAG][:12]}); this run's benchmark '{benchmark}' ({digest[:12]}) is "
                "another, and the gate would compare unlike numbers: register it under a name of its own, e.g. "
                f"--set registry.model_name={_slug(benchmark)}-embedding (training is cached, only registration "
                "runs again)")

    def set_standing(self, version: str, standing: Standing) -> None:
        """Set the MLflow alias and the ZenML stage of ``version`` together (see the module table).

        A version that held the alias before is archived in both places, so neither registry keeps a stale
        champion or challenger.
        """
        with self.locked():
            infos = self.versions()
            self._transition(self._standing_change(self.version(version, infos), standing, infos), infos=infos)

    def _standing_change(self, info: VersionInfo, standing: Standing,
                         infos: list[VersionInfo]) -> dict[str, dict[str, str | None]]:
        after = {info.version: _STATE[standing]}
        holder = next((i for i in infos if standing in i.aliases and i.version != info.version), None)
        if holder is not None:
            after[holder.version] = _STATE["archived"]
        return after

    def record_verdict(self, version: str, decision: str, reasons: list[str], failed: int | None = None) -> None:
        """Tag the version with the gate's decision, reasons and number of failed checks, and say it in its
        description."""
        if failed is not None:
            self.client.set_model_version_tag(self.name, version, "gate.failed_checks", str(failed))
        self.client.set_model_version_tag(self.name, version, "gate.reasons", "; ".join(reasons)[:4900])
        self.client.set_model_version_tag(self.name, version, "gate.verdict", decision)
        description = self.client.get_model_version(self.name, version).description or ""
        head, _, _ = description.rpartition("Gate verdict:")
        verdict = f"Gate verdict: {decision}\n" + "\n".join(f"- {r}" for r in reasons)
        self.client.update_model_version(self.name, version, description=(head if head else description + "\n\n")
                                         + verdict[:4000])

    def decide(self, version: str, decision: str, reasons: list[str], failed: int, actor: str) -> None:
        """Apply the gate's decision: promote makes the version champion (the event in the history), hold makes
        it the challenger, reject gives it no standing; its verdict is recorded as part of the same journaled
        change. A verdict on the current champion (a re-run) is recorded without moving anything."""
        with self.locked():
            infos = self.versions()  # one listing for the whole decision: nothing else changes it under the lock
            info = self.version(version, infos)
            verdict = {"decision": decision, "reasons": reasons, "failed": failed}
            if CHAMPION in info.aliases:
                self.record_verdict(info.version, decision, reasons, failed)
            elif decision == "promote":
                former = self.champion(infos)
                self._transition(self._standing_change(info, "champion", infos), verdict=verdict, infos=infos,
                                 event=self._event("promote", info.version, "; ".join(reasons), actor,
                                                   former.version if former else None))
            else:
                standing: Standing = "challenger" if decision == "hold" else "rejected"
                self._transition(self._standing_change(info, standing, infos), verdict=verdict, infos=infos)

    def promote(self, version: str, reason: str, actor: str | None = None, action: str = "promote",
                force: bool = False) -> str | None:
        """Make ``version`` the champion; the former champion is archived. Returns the former champion.

        A version the gate objected to (held with failed checks, rejected, never judged) needs ``force``; the
        override is recorded with the promotion (who, when, over which verdict)."""
        event = self.promote_recorded(version, reason, actor, action, force)
        return event["previous"] or None

    def promote_recorded(self, version: str, reason: str, actor: str | None = None, action: str = "promote",
                         force: bool = False) -> dict[str, str]:
        """``promote``, returning the history event it recorded (``previous``: the former champion or "";
        ``override``: the gate's verdict it overrode, when it did)."""
        with self.locked():
            infos = self.versions()
            info = self.version(version, infos)
            if CHAMPION in info.aliases:
                raise RegistryError(f"version {version} already is the champion")
            objection = info.gate_objection()
            if objection and not force:
                raise RegistryError(f"the gate's verdict on version {info.version} is {objection}; promoting it "
                                    "overrides the gate: add --force to do so (recorded with your name and reason)")
            former = self.champion(infos)
            event = self._event(action, info.version, reason, actor, former.version if former else None,
                                override=objection)
            self._transition(self._standing_change(info, "champion", infos), event=event, infos=infos)
            return event

    def rollback(self, reason: str, actor: str | None = None) -> tuple[str, str]:
        """Archive the champion and restore the champion before it. Returns (removed, restored)."""
        with self.locked():
            infos = self.versions()
            current = self.champion(infos)
            if current is None:
                raise RegistryError(f"model '{self.name}' has no champion to roll back")
            chain = self.champion_chain()
            if len(chain) < 2:
                raise RegistryError(f"version {current.version} is the first champion: there is nothing to roll "
                                    "back to")
            restored = chain[-2]
            after = {current.version: _STATE["archived"], restored: _STATE["champion"]}
            self._transition(after, event=self._event("rollback", restored, reason, actor, current.version),
                             infos=infos)
            return current.version, restored

    def attach_review(self, version: str | VersionInfo, markdown: str, html: str) -> None:
        """The promotion review, as files of the version's MLflow run (``review/``)."""
        info = version if isinstance(version, VersionInfo) else self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("promotion_review.md", markdown), ("promotion_review.html", html)):
                (Path(tmp) / name).write_text(text)
                self.client.log_artifact(info.run_id, str(Path(tmp) / name), artifact_path="review")

    # -- the journal -----------------------------------------------------------------------------------------

    def _event(self, action: str, version: str, reason: str, actor: str | None, previous: str | None,
               override: str | None = None) -> dict[str, str]:
        event = {"id": uuid.uuid4().hex, "action": action, "version": version, "previous": previous or "",
                 "reason": reason, "by": actor or _actor(), "at": _now()}
        return {**event, "override": override} if override else event

    def _transition(self, after: dict[str, dict[str, str | None]], event: dict[str, str] | None = None,
                    verdict: dict[str, Any] | None = None, infos: list[VersionInfo] | None = None) -> None:
        """Move the versions in ``after`` to their standings, record ``event`` and the gate's ``verdict`` (on
        the version the event or the change is about) as one journaled change; the caller holds the lock, and
        passes ``infos`` when it listed the versions under it already (nothing has changed them since)."""
        infos = {i.version: i for i in (self.versions() if infos is None else infos)}
        judged = (event or {}).get("version") or next(iter(after))
        intent = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time(),
                  "before": {v: _state(infos[v]) for v in after}, "after": after, "event": event,
                  "judged": judged if verdict else None, "decision": verdict["decision"] if verdict else None}
        self.client.set_registered_model_tag(self.name, INTENT_TAG, json.dumps(intent))
        self._apply(after, infos)
        if event is not None:
            history = self.history()
            self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history + [event]))  # commit
            self._event_tags(event, infos)
        if verdict is not None:
            self.record_verdict(judged, verdict["decision"], verdict["reasons"], verdict["failed"])
        self.client.delete_registered_model_tag(self.name, INTENT_TAG)

    def _apply(self, states: dict[str, dict[str, str | None]], infos: dict[str, VersionInfo]) -> None:
        """Aliases first (MLflow moves an alias in one call, so the champion never goes missing), then the
        ``udon.stage`` tags and the ZenML stages."""
        held = {alias: v for v, info in infos.items() for alias in info.aliases}
        for alias in (CHAMPION, CHALLENGER):
            target = next((v for v, s in states.items() if s["alias"] == alias), None)
            if target is not None and held.get(alias) != target:
                self.client.set_registered_model_alias(self.name, alias, target)
            elif target is None and held.get(alias) in states:
                self.client.delete_registered_model_alias(self.name, alias)
        for version, state in states.items():
            stage = str(state["stage"])
            self.client.set_model_version_tag(self.name, version, "udon.stage", stage)
            _set_zenml_stage(infos[version].tags.get(ZENML_VERSION_TAG), stage)

    def _event_tags(self, event: dict[str, str], infos: dict[str, VersionInfo]) -> None:
        """What a committed event leaves on the versions: who promoted or rolled back, when and why."""
        if event["action"] == "rollback":
            self.client.set_model_version_tag(self.name, event["previous"], "udon.rolled_back", event["at"])
        else:
            tags = {"promoted_by": event["by"], "promoted_at": event["at"], "promotion_reason": event["reason"]}
            if event.get("override"):
                tags["gate_override"] = f"{event['by']} at {event['at']} over the verdict {event['override']}"
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, event["version"], f"udon.{key}", value[:4900])
        zenml_id = infos[event["version"]].tags.get(ZENML_VERSION_TAG)
        _log_zenml_metadata(zenml_id, {f"udon.{event['action']}": {k: v for k, v in event.items() if k != "id"}})

    def _pending(self) -> tuple[dict[str, Any] | None, list[str]]:
        """(the intent a dead process left or None, the recorded champion when no version holds the alias
        although the history names one) in one read."""
        try:
            model = self._registered_model()
        except UnknownModelError:
            return None, []
        tags = model.tags or {}
        intent = json.loads(tags[INTENT_TAG]) if INTENT_TAG in tags else None
        chain = _chain(json.loads(tags.get(HISTORY_TAG, "[]")))
        return intent, chain[-1:] if chain and CHAMPION not in (model.aliases or {}) else []

    def repair(self) -> list[str]:
        """Repair what a killed process left half done (a no-op, without taking the lock, when nothing is);
        returns what was repaired, one line each."""
        intent, lost = self._pending()
        if intent is not None or lost:
            with self.locked():
                pass  # taking the lock repairs
        return self.repaired

    def _recover(self) -> None:
        """Under the lock: finish or undo the journaled change a dead process left (see the module doc)."""
        intent, lost = self._pending()
        if intent is None:
            if lost:  # left so by a killed promotion of an older udon, which had no journal
                infos = self.versions()
                self._transition(self._standing_change(self.version(lost[0], infos), "champion", infos), infos=infos)
                self._note(f"no version held the champion alias: version {lost[0]}, the last recorded champion, "
                           "has it again")
            return
        if intent["host"] != socket.gethostname() and time.time() - intent["at"] < STALE_INTENT_S:
            raise RegistryError(f"model '{self.name}' is being changed by process {intent['pid']} on host "
                                f"{intent['host']}; retry in a minute")
        event = intent.get("event")
        committed = bool(event) and any(e.get("id") == event["id"] for e in self.history())
        infos = {i.version: i for i in self.versions()}
        self._apply(intent["after"] if committed else intent["before"], infos)
        if committed:
            self._event_tags(event, infos)
            if intent.get("judged"):
                self.record_verdict(intent["judged"], "promote", [event["reason"]])
        elif intent.get("judged"):
            self.record_verdict(intent["judged"], INCOMPLETE, [
                f"the gate's decision ({intent['decision']}) was interrupted before it took effect (process "
                f"{intent['pid']} died); not a candidate unless promoted by hand"])
        self.client.delete_registered_model_tag(self.name, INTENT_TAG)
        what = f"{event['action']} of version {event['version']}" if event else "change of standing"
        if intent.get("decision"):
            what = f"gate decision '{intent['decision']}' on version {intent['judged']}"
        self._note(f"the {what} by process {intent['pid']} was interrupted; "
                   + ("finished it (it was recorded)" if committed else "undone (it was not recorded)"))

    def _note(self, line: str) -> None:
        self.repaired.append(line)
        log.warning("model %s: %s", self.name, line)


def _chain(history: list[dict[str, str]]) -> list[str]:
    chain: list[str] = []
    for event in history:
        if event["action"] == "rollback":
            chain.pop()
        else:
            chain.append(event["version"])
    return chain


def require_store(tracking_uri: str) -> None:
    """A ``sqlite:///`` store whose folder is gone is an error (MLflow would silently create an empty registry
    there, and every command would then say "no registered model"); other stores are checked when asked."""
    store = _sqlite_file(tracking_uri)
    if store is not None and not store.parent.is_dir():
        raise RegistryUnavailableError(
            f"the MLflow registry at {tracking_uri} is gone: the folder {store.parent} does not exist; restore it, "
            "or point the stack's MLflow tracker at the registry that holds your models")


def registry_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``, after ``require_store``: creating the client creates a missing
    sqlite store's folder and database (mlflow/store/db/utils.py), so the check must come first."""
    from mlflow import MlflowClient

    require_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "my-benchmark"


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])


def _lock_path(tracking_uri: str, name: str) -> Path:
    """Beside a local store (every process using it sees the same file), else in the temporary folder."""
    key = hashlib.sha256(f"{tracking_uri}\0{name}".encode()).hexdigest()[:16]
    store = _sqlite_file(tracking_uri)  # sqlite:////abs/mlflow.db
    if store is None and tracking_uri.startswith("file://"):  # file:///abs/mlruns
        store = Path(tracking_uri[len("file://"):])
    if store is not None:
        return store.parent / f".udon-registry-{key}.lock"
    return Path(tempfile.gettempdir()) / f"udon-registry-{key}.lock"


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def _log_zenml_metadata(model_version_id: str | None, metadata: dict[str, Any]) -> None:
    if not model_version_id:
        return
    from zenml.client import Client
    from zenml.enums import MetadataResourceTypes
    from zenml.models import RunMetadataResource

    Client().create_run_metadata(metadata=metadata, resources=[
        RunMetadataResource(id=UUID(model_version_id), type=MetadataResourceTypes.MODEL_VERSION)])


def _set_zenml_stage(model_version_id: str | None, stage: str) -> None:
    """Mirror the standing as the ZenML model version's stage (no-op for versions registered outside ZenML)."""
    if not model_version_id:
        return
    from zenml.client import Client

    client = Client()
    model_version = client.get_model_version(model_version_name_or_number_or_id=UUID(model_version_id))
    if stage == "none":
        # why: ZenML cannot clear a stage ('none' is a stage only one version may hold); a version that lost
        # its standing (an interrupted gate decision undone) is archived there instead.
        if str(model_version.stage) not in ("staging", "production"):
            return
        stage = "archived"
    # force: ZenML archives whichever version held the stage; the caller archives it in MLflow too.
    client.update_model_version(model_version.model.id, model_version.id, stage=stage, force=True)
