"""Training methods: the one place a method name becomes code.

- ``udon`` (udon.py): UDON, per-domain teacher heads trained online teach the 64-d student head.
- ``uscrr``, ``uscds``, ``ujcrr``, ``ujcds``, ``specialist`` (baselines.py): the UnED baselines, the student
  head alone.
- ``unic``, ``unic-published``, ``udon+unic`` (unic.py): UNIC's ladder of projectors distilling frozen generic
  teachers, alone, as published, or added to UDON.
- ``udon-offline`` (offline.py): UDON's "separate teachers" ablation, frozen per-domain specialists distilled
  with UDON's logit and relational losses.

A new method is one new file with its ``Task`` and ``MethodSpec`` (base.py), plus its entry in ``METHODS``.
"""

from __future__ import annotations

from typing import Literal

from udon_core.errors import UnknownNameError
from udon_core.methods import baselines, offline, udon, unic
from udon_core.methods.base import MethodSpec, Task, TrainSettings
from udon_core.methods.losses import LossConfig
from udon_core.methods.offline import OfflineUdonTask, load_specialists
from udon_core.methods.udon import UdonTask
from udon_core.methods.unic import CombinedTask, UnicConfig, UnicTask
from udon_core.model.udon_model import UdonModel

METHODS: dict[str, MethodSpec] = {m.name: m for m in (*udon.METHODS, *baselines.METHODS, *unic.METHODS,
                                                        *offline.METHODS)}
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]  # the registry's names, for config validation


def method_spec(name: str) -> MethodSpec:
    """The spec registered as ``name``."""
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; one of {', '.join(METHODS)}")
    return METHODS[name]


def build_task(model: UdonModel, cfg: TrainSettings, loss: LossConfig, rank: int = 0) -> Task:
    """The task ``cfg.method`` trains ``model`` with (``loss`` is the per-rank loss configuration, ``rank``
    this process's data-parallel rank)."""
    return method_spec(cfg.method).build(model, cfg, loss, rank)


__all__ = ["METHODS", "CombinedTask", "LossConfig", "MethodName", "MethodSpec", "OfflineUdonTask", "Task",
           "TrainSettings", "UdonTask", "UnicConfig", "UnicTask", "build_task", "load_specialists", "method_spec"]
