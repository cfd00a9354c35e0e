"""``models:/`` URIs of the MLflow registry, parsed and resolved in one place: ``models:/NAME/VERSION`` or
``models:/NAME@ALIAS``. Every command that takes one (`udon evaluate`, `udon embed`, teachers and specialists of
a training run) resolves it here, so a typo in the name, the version or the alias is the same one sentence
naming what exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integrations.model_registry import ModelRegistry, VersionInfo
from udon_core.errors import InvalidValueError

SCHEME = "models:/"


@dataclass(frozen=True)
class ModelUri:
    """A registered model version, by number or by alias (exactly one of the two is set)."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias else f"{SCHEME}{self.name}/{self.version}"

    def resolve(self, client: Any) -> VersionInfo:
        """The registered version this URI names (``.version``, ``.run_id``, ``.tags``), looked up through an
        ``MlflowClient``'s registry after repairing a promotion a killed process left half done. An unknown
        name, version or alias is a ``RegistryError`` naming the similar names, the versions and the aliases."""
        registry = ModelRegistry(self.name, client=client)
        registry.repair()
        return registry.by_alias(self.alias) if self.alias is not None else registry.version(str(self.version))


def is_model_uri(text: str) -> bool:
    """Whether ``text`` names a registered model (rather than a folder)."""
    return text.startswith(SCHEME)


def parse_model_uri(text: str) -> ModelUri:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``; anything else is refused with the forms named."""
    if not is_model_uri(text):
        raise InvalidValueError(f"{text!r} is not a models:/ URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    rest = text[len(SCHEME):]
    name, sep, ref = rest.partition("/")
    if "@" in name and not sep:
        name, alias = name.split("@", 1)
        if name and alias:
            return ModelUri(name, alias=alias)
    elif sep and name and ref and "/" not in ref and "@" not in name:
        return ModelUri(name, version=ref)
    raise InvalidValueError(f"{text!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
