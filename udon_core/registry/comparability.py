"""When two registered versions can be compared, and what differs between them.

A registered model is tied to one benchmark: its name and a digest of how it is evaluated (the domains, the
query and index files of each evaluation split, whether classes are disjoint). The training data may change
(that is what retraining is for; its DVC version is recorded per version); the evaluation protocol may not,
or a gate's "regression" compares numbers that mean different things.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.overrides import flatten

# Provenance tags compared between champion and challenger, with the label the review gives them.
VERSION_KEYS = {"data.benchmark": "benchmark", "data.dvc_md5": "data version (DVC md5)",
                "data.dvc_file_git_rev": "git revision of data.dvc", "code.git_commit": "code (git commit)",
                "code.git_dirty": "uncommitted code changes"}


def benchmark_protocol(spec: BenchmarkSpec) -> dict[str, Any]:
    """What makes two benchmarks' retrieval numbers comparable, as plain data (domains sorted by name)."""
    return {"name": spec.name, "domains": [
        {"name": d.name, "classes_disjoint": d.classes_disjoint,
         "evals": {split: {"query": e.query, "index": e.index} for split, e in sorted(d.evals.items())}}
        for d in sorted(spec.domains, key=lambda d: d.name)]}


def benchmark_digest(spec: BenchmarkSpec) -> str:
    """SHA-256 of ``benchmark_protocol(spec)`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(benchmark_protocol(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _shown(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def differences(champion_tags: dict[str, str], champion_config: dict[str, Any], challenger_tags: dict[str, str],
                challenger_config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(what, champion's, challenger's)`` for every provenance tag (``VERSION_KEYS``) and every training
    configuration key (dotted, ``config train.steps``) whose values differ; keys only one side has count."""
    rows = [(label, champion_tags.get(key, "-") or "-", challenger_tags.get(key, "-") or "-")
            for key, label in VERSION_KEYS.items()]
    rows = [row for row in rows if row[1] != row[2]]
    if not champion_config or not challenger_config:  # a version registered before configs were recorded
        shown = tuple("recorded" if c else "not recorded" for c in (champion_config, challenger_config))
        return rows + ([("training config", *shown)] if shown[0] != shown[1] else [])
    old, new = flatten(champion_config), flatten(challenger_config)
    for key in sorted(set(old) | set(new)):
        if old.get(key, ...) != new.get(key, ...):
            rows.append((f"config {key}", _shown(old.get(key)), _shown(new.get(key))))
    return rows
