"""Promote step: the gate judges the new version against the champion and sets its standing in MLflow and
ZenML; the promotion review (Markdown + HTML) is kept as artifacts and attached to the MLflow version."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString, MarkdownString

from integrations.model_registry import ModelRegistry, VersionInfo
from steps.model_registrar import RegistryConfig
from udon_core.registry import Candidate, judge, promotion_review

GATE_ACTOR = "udon-gate"


# Never cached: the champion it compares against changes between runs. A run configuration's top-level
# `enable_cache: true` overrides this for every step, so pipelines/run.py pins it off per step.
@step(enable_cache=False)
def model_promoter(
    registration: dict[str, Any], metrics: dict[str, Any], config: RegistryConfig
) -> tuple[
    Annotated[dict[str, Any], "gate_verdict"],
    Annotated[MarkdownString, "promotion_review"],
    Annotated[HTMLString, "promotion_review_html"],
]:
    """Judge the registered version, promote it or hold it for review, and write the review."""
    registry = ModelRegistry(registration["name"], registration["tracking_uri"])
    with registry.locked():  # the champion it is judged against cannot change before the verdict is applied
        document, markdown, html = _judge_and_apply(registry, registration, metrics, config)
    return document, markdown, html  # why a tuple literal: ZenML reads it from the source to name the outputs


def candidate(registry: ModelRegistry, info: VersionInfo, metrics: dict[str, Any] | None = None) -> Candidate:
    """A version as the review sees it: metrics, provenance tags and the training configuration it recorded."""
    return Candidate(info.version, metrics if metrics is not None else registry.metrics(info), info.tags,
                     registry.training_config(info))


def _judge_and_apply(registry: ModelRegistry, registration: dict[str, Any], metrics: dict[str, Any],
                     config: RegistryConfig) -> tuple[dict[str, Any], MarkdownString, HTMLString]:
    infos = registry.versions()  # the caller holds the lock: one listing serves the whole judgement
    version = registry.version(registration["version"], infos)
    champion = registry.champion(infos)
    if champion is not None and champion.version == version.version:
        champion = None if (previous := _previous_champion(registry)) is None else registry.version(previous, infos)
    rival = candidate(registry, champion) if champion else None
    verdict = judge(metrics, rival.metrics if rival else None, config.gate, rival.version if rival else None)
    review = promotion_review(candidate(registry, version, metrics), rival, verdict)
    registry.attach_review(version, review.markdown, review.html)
    failed = sum(not c.passed for c in verdict.checks)
    registry.decide(version.version, verdict.decision, verdict.reasons, failed, actor=GATE_ACTOR)
    log_metadata(metadata={"gate": {"decision": verdict.decision, "reasons": verdict.reasons,
                                    "compared_with": verdict.compared_with or ""}}, infer_model=True)
    document = {**verdict.model_dump(mode="json"), "reasons": verdict.reasons, "version": version.version}
    return document, MarkdownString(review.markdown), HTMLString(review.html)


def _previous_champion(registry: ModelRegistry) -> str | None:
    """The champion before the current one (a re-run judges the champion against its predecessor)."""
    chain = registry.champion_chain()
    return chain[-2] if len(chain) > 1 else None
