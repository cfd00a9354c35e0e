"""Dotted ``KEY=VALUE`` overrides of nested configuration mappings, shared by every ``--set``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
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
