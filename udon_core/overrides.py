"""Dotted ``KEY=VALUE`` overrides of nested configuration mappings, shared by every ``--set``."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from udon_core.errors import InvalidValueError


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``override`` merged into a copy of ``base``, nested mappings merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_merge(out[key], value) if nested else value
    return out


def parse_override(text: str) -> dict:
    """``"train.steps=10"`` -> ``{"train": {"steps": 10}}`` (the value parsed as YAML).

    Raises ValueError when ``text`` is not ``key.path=value``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidValueError(f"override '{text}' is not of the form key.path=value")
    tree: Any = yaml.safe_load(value) if value else None
    for part in reversed(key.strip().split(".")):
        tree = {part: tree}
    return tree


def load_run_config(path: Path | None, overrides: Iterable[str] = (),
                    error: type[Exception] = InvalidValueError) -> dict:
    """The run configuration at ``path`` (a YAML mapping: ``parameters:``, ``steps:``...; {} for None) with each
    ``KEY=VALUE`` override merged into its ``parameters``; what is wrong with the file or an override is one
    sentence, raised as ``error`` (a user error type)."""
    doc: Any = {}
    if path is not None:
        if not path.is_file():
            raise error(f"{path}: run configuration not found")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise error(f"{path}: not valid YAML: {err}") from err
        if not isinstance(doc, dict):
            raise error(f"{path}: expected a mapping (parameters:, steps:, ...), found {type(doc).__name__}")
        if not isinstance(doc.get("parameters") or {}, dict):
            raise error(f"{path}: parameters: expected a mapping of sections, found {type(doc['parameters']).__name__}")
    for text in overrides:
        try:
            doc = deep_merge(doc, {"parameters": parse_override(text)})
        except ValueError as err:
            raise error(str(err)) from err
    return doc


def first_field_error(err: Any, *prefix: str) -> tuple[str, str]:
    """(dotted field name under ``prefix``, message) of a pydantic ``ValidationError``'s first error, for a
    one-sentence user error."""
    first = err.errors()[0]
    return ".".join([*prefix, *(str(x) for x in first["loc"])]), first["msg"].removeprefix("Value error, ")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``): the inverse of an override's key path."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
