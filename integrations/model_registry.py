"""The model registry as our users see it: MLflow versions with aliases, mirrored as ZenML model stages.

One function sets a version's standing in both places, so they always agree:

=============  ==================  =================================================
standing       MLflow alias        ZenML model version stage
=============  ==================  =================================================
champion       ``champion``        ``production``
challenger     ``challenger``      ``staging``
archived       (none)              ``archived`` (a former champion, or rolled back)
rejected       (none)              (none; tag ``gate.verdict=reject``)
=============  ==================  =================================================

Every promotion and rollback is appended to the registered model's ``udon.promotions`` tag (JSON), which
is what ``rollback`` reads to find the previous champion.

Changes of standing are read-modify-write sequences over several MLflow and ZenML calls (MLflow has no
transactions), so they run under one exclusive lock per registered model: two ``udon promote`` /
``udon rollback`` / gate decisions at the same moment take turns instead of leaving two champions or a
history with a lost event. The lock is a file lock beside a local (sqlite or file) store, or in the
temporary folder for a remote tracking server: it serialises the processes of one machine, not of several.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from udon_core.errors import UdonUserError

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "udon.promotions"
ZENML_VERSION_TAG = "zenml.model_version_id"
METRICS_ARTIFACT = "evaluation/trained.json"
Standing = Literal["champion", "challenger", "archived", "rejected"]
_STAGE = {"champion": "production", "challenger": "staging", "archived": "archived"}


class RegistryError(UdonUserError, ValueError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to...)."""


def unavailable(uri: str, err: Exception) -> RegistryError:
    """The one sentence for a registry that cannot be reached or answers with an error."""
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return RegistryError(f"the MLflow registry at {uri} cannot be used ({detail[:300]}); check that the tracking "
                         "server is up and the stack's MLflow tracker points at it")


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelRegistry:
    """The registered model ``name`` in the MLflow registry, and its ZenML model versions' stages."""

    def __init__(self, name: str, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.name = name
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._lock_path = _lock_path(self.client.tracking_uri, name)
        self._lock_depth = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this model's registry lock (re-entrant within this object) for a read-modify-write."""
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
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ---------------------------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        """Every version, newest first (an unknown model name is an error)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"no registered model '{self.name}' (run the pipeline first)") from err
            raise unavailable(self.client.tracking_uri, err) from err
        found = self.client.search_model_versions(f"name = '{self.name}'")
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        infos = [self._info(v, tuple(sorted(aliases.get(str(v.version), [])))) for v in found]
        return sorted(infos, key=lambda i: int(i.version), reverse=True)

    def version(self, version: str) -> VersionInfo:
        """One version; a RegistryError names the versions that exist."""
        for info in self.versions():
            if info.version == str(version):
                return info
        known = ", ".join(i.version for i in self.versions()) or "none"
        raise RegistryError(f"model '{self.name}' has no version {version} (versions: {known})")

    def champion(self) -> VersionInfo | None:
        """The version holding the ``champion`` alias, if any."""
        return next((i for i in self.versions() if CHAMPION in i.aliases), None)

    def metrics(self, version: str) -> dict[str, Any]:
        """The evaluation document (``RetrievalReport.to_dict()``) logged with the version's run."""
        return json.loads(self.run_text(version, METRICS_ARTIFACT))

    def run_text(self, version: str, artifact: str) -> str:
        """A text artifact of the version's run (read through this registry's tracking URI)."""
        info = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(info.run_id, artifact, tmp)
            except Exception as err:  # MLflow raises several types for a missing artifact
                raise RegistryError(f"version {version} has no {artifact} in run {info.run_id}") from err
            return Path(local).read_text()

    def history(self) -> list[dict[str, str]]:
        """Promotions and rollbacks, oldest first."""
        tags = self.client.get_registered_model(self.name).tags or {}
        return json.loads(tags.get(HISTORY_TAG, "[]"))

    def _info(self, mv: Any, aliases: tuple[str, ...]) -> VersionInfo:
        tags = dict(mv.tags or {})
        return VersionInfo(str(mv.version), aliases, tags.get("udon.stage", "none"), tags, mv.run_id,
                           datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc))

    # -- writing ---------------------------------------------------------------------------------------------

    def set_standing(self, version: str, standing: Standing) -> None:
        """Set the MLflow alias and the ZenML stage of ``version`` together (see the module table).

        A version that held the alias before is archived in both places, so neither registry keeps a stale
        champion or challenger.
        """
        with self.locked():
            info = self.version(version)
            if standing in (CHAMPION, CHALLENGER):
                holder = next((i for i in self.versions() if standing in i.aliases and i.version != info.version),
                              None)
                if holder is not None:
                    self.client.delete_registered_model_alias(self.name, standing)
                    self._mark(holder, "archived")
            for alias in set(info.aliases) & {CHAMPION, CHALLENGER} - {standing}:
                self.client.delete_registered_model_alias(self.name, alias)
            if standing in (CHAMPION, CHALLENGER):
                self.client.set_registered_model_alias(self.name, standing, info.version)
            self._mark(info, _STAGE.get(standing, "none"))

    def _mark(self, info: VersionInfo, stage: str) -> None:
        self.client.set_model_version_tag(self.name, info.version, "udon.stage", stage)
        _set_zenml_stage(info.tags.get(ZENML_VERSION_TAG), stage)

    def record_verdict(self, version: str, decision: str, reasons: list[str]) -> None:
        """Tag the version with the gate's decision and reasons, and say it in its description."""
        self.client.set_model_version_tag(self.name, version, "gate.verdict", decision)
        self.client.set_model_version_tag(self.name, version, "gate.reasons", "; ".join(reasons)[:4900])
        description = self.client.get_model_version(self.name, version).description or ""
        head, _, _ = description.rpartition("Gate verdict:")
        verdict = f"Gate verdict: {decision}\n" + "\n".join(f"- {r}" for r in reasons)
        self.client.update_model_version(self.name, version, description=(head if head else description + "\n\n")
                                         + verdict[:4000])

    def promote(self, version: str, reason: str, actor: str | None = None, action: str = "promote") -> str | None:
        """Make ``version`` the champion; the former champion is archived. Returns the former champion."""
        with self.locked():
            info = self.version(version)
            if CHAMPION in info.aliases:
                raise RegistryError(f"version {version} already is the champion")
            former = self.champion()
            self.set_standing(info.version, "champion")  # archives the former champion in both registries
            self._append(action, info.version, reason, actor, former.version if former else None)
            for key, value in {"promoted_by": actor or _actor(), "promoted_at": _now(),
                               "promotion_reason": reason}.items():
                self.client.set_model_version_tag(self.name, info.version, f"udon.{key}", value[:4900])
            return former.version if former else None

    def rollback(self, reason: str, actor: str | None = None) -> tuple[str, str]:
        """Archive the champion and restore the champion before it. Returns (removed, restored)."""
        with self.locked():
            current = self.champion()
            if current is None:
                raise RegistryError(f"model '{self.name}' has no champion to roll back")
            chain = self.champion_chain()
            if len(chain) < 2:
                raise RegistryError(f"version {current.version} is the first champion: there is nothing to roll "
                                    "back to")
            restored = chain[-2]
            self.set_standing(current.version, "archived")
            self.client.set_model_version_tag(self.name, current.version, "udon.rolled_back", _now())
            self.set_standing(restored, "champion")
            self._append("rollback", restored, reason, actor, current.version)
            return current.version, restored

    def champion_chain(self) -> list[str]:
        """Champions in order, with rolled-back ones removed: the last is the current champion."""
        chain: list[str] = []
        for event in self.history():
            if event["action"] == "rollback":
                chain.pop()
            else:
                chain.append(event["version"])
        return chain

    def _append(self, action: str, version: str, reason: str, actor: str | None, previous: str | None) -> None:
        event = {"action": action, "version": version, "previous": previous or "", "reason": reason,
                 "by": actor or _actor(), "at": _now()}
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(self.history() + [event]))
        _log_zenml_metadata(self.version(version).tags.get(ZENML_VERSION_TAG), {f"udon.{action}": event})

    def attach_review(self, version: str, markdown: str, html: str) -> None:
        """The promotion review, as files of the version's MLflow run (``review/``)."""
        info = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("promotion_review.md", markdown), ("promotion_review.html", html)):
                (Path(tmp) / name).write_text(text)
                self.client.log_artifact(info.run_id, str(Path(tmp) / name), artifact_path="review")


def _lock_path(tracking_uri: str, name: str) -> Path:
    """Beside a local store (every process using it sees the same file), else in the temporary folder."""
    key = hashlib.sha256(f"{tracking_uri}\0{name}".encode()).hexdigest()[:16]
    for prefix in ("sqlite:///", "file://"):  # sqlite:////abs/mlflow.db, file:///abs/mlruns
        if tracking_uri.startswith(prefix):
            return Path(tracking_uri[len(prefix):]).parent / f".udon-registry-{key}.lock"
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

    if stage == "none":
        return  # ZenML cannot clear a stage; 'rejected' versions never got one
    client = Client()
    model_version = client.get_model_version(model_version_name_or_number_or_id=UUID(model_version_id))
    # force: ZenML archives whichever version held the stage; set_standing archived it in MLflow too.
    client.update_model_version(model_version.model.id, model_version.id, stage=stage, force=True)
