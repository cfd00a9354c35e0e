"""``models:/`` URIs of the MLflow registry, parsed in one place: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def resolve(self, client: Any) -> Any:
        """The ``ModelVersion`` this URI names, looked up with an ``MlflowClient``."""
        if self.alias is not None:
            return client.get_model_version_by_alias(self.name, self.alias)
        return client.get_model_version(self.name, self.version)


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
