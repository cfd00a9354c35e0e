"""The promotion review a person reads before a model goes to production: champion and challenger side by
side per domain with deltas (of the unrounded values, as the gate computed them), a chart, what changed
between them (data version, code, training configuration keys), where each came from, and the gate's verdict
with its reasons.

Inputs are plain documents (metrics as ``RetrievalReport.to_dict()``, provenance as string maps), so the
review renders the same from a pipeline step, a CLI command or a notebook.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from udon_core.evaluation.report import comparison_rows, format_markdown, plot_report
from udon_core.evaluation.retrieval import RetrievalReport
from udon_core.registry.comparability import differences
from udon_core.registry.gate import GateVerdict

PROVENANCE_KEYS = ("data.benchmark", "data.dvc_md5", "data.dvc_file_git_rev", "code.git_commit", "code.git_dirty",
                   "zenml.pipeline_run")


@dataclass(frozen=True)
class Candidate:
    """A model in the review: its registry version, metrics document, provenance tags and training config."""

    version: str
    metrics: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class PromotionReview:
    """The review in both formats."""

    markdown: str
    html: str


def _reports(challenger: Candidate, champion: Candidate | None) -> dict[str, RetrievalReport]:
    reports = {f"champion {champion.label}": RetrievalReport.from_dict(champion.metrics)} if champion else {}
    reports[f"challenger {challenger.label}"] = RetrievalReport.from_dict(challenger.metrics)
    return reports


def _provenance_rows(challenger: Candidate, champion: Candidate | None) -> list[list[str]]:
    return [[key, champion.tags.get(key, "-") if champion else "-", challenger.tags.get(key, "-")]
            for key in PROVENANCE_KEYS]


def changes(challenger: Candidate, champion: Candidate | None) -> list[list[str]]:
    """Rows ``[what, champion's, challenger's]`` of everything recorded that differs between the two."""
    if champion is None:
        return []
    return [list(row) for row in differences(champion.tags, champion.config, challenger.tags, challenger.config)]


def _changes_markdown(challenger: Candidate, champion: Candidate | None) -> list[str]:
    if champion is None:
        return []
    rows = changes(challenger, champion)
    lines = ["", f"## What changed since champion {champion.label}", ""]
    if not rows:
        return lines + ["Nothing recorded differs: same benchmark, data version, code and training configuration."]
    lines += [f"| | champion {champion.label} | challenger {challenger.label} |", "|:---|:---|:---|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _markdown(challenger: Candidate, champion: Candidate | None, verdict: GateVerdict) -> str:
    title = f"# Promotion review: {challenger.label}" + (f" against champion {champion.label}" if champion else "")
    lines = [title, "", f"**Gate verdict: {verdict.decision.upper()}**", ""]
    lines += [f"- {reason}" for reason in verdict.reasons]
    lines += _changes_markdown(challenger, champion)
    lines += ["", "## Retrieval", "", format_markdown(_reports(challenger, champion), exact_deltas=True), "",
              "## Provenance", "",
              "| | champion | challenger |", "|:---|:---|:---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _provenance_rows(challenger, champion)]
    lines += ["", "## Every check", "", "| rule | subject | value | threshold | result |", "|:---|:---|---:|---:|:---|"]
    for c in verdict.checks:
        value = "-" if c.value is None else f"{c.value:.3f}"
        threshold = "-" if c.threshold is None else f"{c.threshold:.3f}"
        lines.append(f"| {c.rule} | {c.subject} | {value} | {threshold} | {'pass' if c.passed else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart_data_uri(reports: dict[str, RetrievalReport]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_report(reports, Path(tmp) / "review.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _changes_html(challenger: Candidate, champion: Candidate | None) -> list[str]:
    if champion is None:
        return []
    rows = changes(challenger, champion)
    title = f"<h2>What changed since champion {html.escape(champion.label)}</h2>"
    if not rows:
        return [title, "<p>Nothing recorded differs: same benchmark, data version, code and training "
                "configuration.</p>"]
    return [title, _html_table(["", f"champion {champion.label}", f"challenger {challenger.label}"], rows)]


def _html(challenger: Candidate, champion: Candidate | None, verdict: GateVerdict) -> str:
    reports = _reports(challenger, champion)
    colour = {"promote": "#1a7f37", "hold": "#9a6700", "reject": "#cf222e"}[verdict.decision]
    checks = [[c.rule, c.subject, "-" if c.value is None else f"{c.value:.3f}",
               "-" if c.threshold is None else f"{c.threshold:.3f}", "pass" if c.passed else "FAIL"]
              for c in verdict.checks]
    title = f"Promotion review: {challenger.label}" + (f" against champion {champion.label}" if champion else "")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p style='font-size:1.3em;color:{colour}'><b>Gate verdict: {verdict.decision.upper()}</b></p>",
        "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in verdict.reasons) + "</ul>",
        *_changes_html(challenger, champion),
        "<h2>Retrieval</h2>", _html_table(*comparison_rows(reports, exact_deltas=True)),
        f"<img alt='per-domain R@1 and mMP@5' src='{_chart_data_uri(reports)}'>",
        "<h2>Provenance</h2>", _html_table(["", "champion", "challenger"], _provenance_rows(challenger, champion)),
        "<h2>Every check</h2>", _html_table(["rule", "subject", "value", "threshold", "result"], checks),
        "</body></html>",
    ]
    return "\n".join(parts)


def promotion_review(challenger: Candidate, champion: Candidate | None, verdict: GateVerdict) -> PromotionReview:
    """The review of ``challenger`` (against ``champion``, None for a first model) in Markdown and HTML."""
    return PromotionReview(_markdown(challenger, champion, verdict), _html(challenger, champion, verdict))
