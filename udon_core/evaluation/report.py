"""Presenting retrieval reports: aligned text, Markdown, side-by-side comparisons and a bar chart.

Tables show the benchmark's figures (``RetrievalReport.rounded``): per-domain values rounded to 3 decimals
and the mean of those, so every row agrees with what UnED would print; deltas are between shown values
(``exact_deltas``: between unrounded values, as the promotion review shows them beside the gate's checks).
"""

from __future__ import annotations

from pathlib import Path

from udon_core.errors import InvalidValueError
from udon_core.evaluation.retrieval import RetrievalReport

METRICS = (("r_at_1", "R@1"), ("mmp_at_5", "mMP@{k}"))


def _label(metric: str, report: RetrievalReport) -> str:
    return dict(METRICS)[metric].format(k=report.k)


def _domains(reports: dict[str, RetrievalReport]) -> list[str]:
    """Domains in the first report's order, then any only the others have."""
    return list(dict.fromkeys(d for r in reports.values() for d in r.per_domain))


def _cell(report: RetrievalReport, domain: str, metric: str) -> float | None:
    fig = report.rounded()
    return fig["mean"][metric] if domain == "mean" else fig["per_domain"].get(domain, {}).get(metric)


def _exact(report: RetrievalReport, domain: str, metric: str) -> float | None:
    if domain == "mean":
        return float(getattr(report, f"mean_{metric}"))
    m = report.per_domain.get(domain)
    return None if m is None else float(getattr(m, metric))


def comparison_rows(reports: dict[str, RetrievalReport],
                    exact_deltas: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per report R@1 and mMP@5; with several reports, each later one's deltas to the first
    (between the shown values; ``exact_deltas``: between the unrounded ones, as a promotion gate compares)."""
    names = list(reports)
    header = ["domain"] + [f"{n} {_label(m, r)}".strip() for n, r in reports.items() for m, _ in METRICS]
    header += [f"delta {n} {_label(m, reports[n])}" if len(names) > 2 else f"delta {_label(m, reports[n])}"
               for n in names[1:] for m, _ in METRICS]
    rows = []
    for d in _domains(reports) + ["mean"]:
        vals = {n: [_cell(r, d, m) for m, _ in METRICS] for n, r in reports.items()}
        row = [d] + ["-" if v is None else f"{v:.3f}" for n in names for v in vals[n]]
        if exact_deltas:
            vals = {n: [_exact(r, d, m) for m, _ in METRICS] for n, r in reports.items()}
        for n in names[1:]:
            row += ["-" if a is None or b is None else f"{b - a:+.3f}" for a, b in zip(vals[names[0]], vals[n])]
        rows.append(row)
    return header, rows


def _title(report: RetrievalReport) -> str:
    how = ", throw_first" if report.throw_first else ""
    index = "each domain's teacher head on its own index" if report.protocol == "oracle-teacher" else (
        f"{report.protocol} index")
    return f"Retrieval on the {report.split} split, {index} (UnED protocol{how})"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _titles(reports: dict[str, RetrievalReport]) -> str:
    """One title when the reports share split and protocol, else each report's."""
    titles = {n: _title(r) for n, r in reports.items()}
    if len(set(titles.values())) == 1:
        return next(iter(titles.values()))
    return "; ".join(f"{n}: {t[len('Retrieval on the '):]}" for n, t in titles.items())


def format_comparison(reports: dict[str, RetrievalReport]) -> str:
    """Several reports side by side as aligned text, e.g. ``{"untrained (step 0)": r0, "trained": r1}``."""
    if not reports:
        raise InvalidValueError("no reports to compare")
    return "\n".join([_titles(reports), *_aligned(*comparison_rows(reports))])


def format_by_metric(reports: dict[str, RetrievalReport]) -> str:
    """Several reports as one narrow table per metric (fits 100 columns for 3 reports): a column per report,
    later reports with their change from the first in parentheses; the titles of the reports underneath."""
    if not reports:
        raise InvalidValueError("no reports to compare")
    names, first = list(reports), next(iter(reports.values()))
    blocks = []
    for metric, _ in METRICS:
        rows = []
        for d in _domains(reports) + ["mean"]:
            base = _cell(first, d, metric)
            row = [d]
            for i, n in enumerate(names):
                v = _cell(reports[n], d, metric)
                cell = "-" if v is None else f"{v:.3f}"
                if i and v is not None and base is not None:
                    cell += f" ({v - base:+.3f})"
                row.append(cell)
            rows.append(row)
        blocks.append("\n".join(_aligned([_label(metric, first), *names], rows)))
    by_title: dict[str, list[str]] = {}
    for n, r in reports.items():
        by_title.setdefault(_title(r)[len("Retrieval on the "):], []).append(n)
    notes = [f"{', '.join(ns)}: {title}" for title, ns in by_title.items()]
    return "\n\n".join(blocks) + "\n" + "\n".join(notes)


def format_table(report: RetrievalReport) -> str:
    """One report as aligned text: per-domain R@1, mMP@5, queries scored and queries without a positive."""
    header, rows = comparison_rows({"": report})
    header += ["queries", "no positive"]
    for row in rows:
        m = report.per_domain.get(row[0])
        row += [str(m.n_scored), str(m.n_without_positive)] if m else [
            str(sum(x.n_scored for x in report.per_domain.values())),
            str(sum(x.n_without_positive for x in report.per_domain.values()))]
    return "\n".join([_title(report), *_aligned(header, rows)])


def format_markdown(reports: RetrievalReport | dict[str, RetrievalReport], exact_deltas: bool = False) -> str:
    """One report, or several side by side with deltas, as a Markdown table (for ZenML and MLflow)."""
    if isinstance(reports, RetrievalReport):
        reports = {"": reports}
    header, rows = comparison_rows(reports, exact_deltas)
    out = [f"**{_titles(reports)}**", "",
           "| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def plot_report(reports: dict[str, RetrievalReport], path: str | Path) -> Path:
    """A grouped bar chart (one panel per metric, one bar per report) of per-domain and mean values, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not reports:
        raise InvalidValueError("no reports to plot")
    domains = _domains(reports) + ["mean"]
    first = next(iter(reports.values()))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(max(6.0, 1.1 * len(domains) * len(METRICS)), 3.6), sharey=True)
    width = 0.8 / len(reports)
    x = np.arange(len(domains))
    for ax, (metric, _) in zip(axes, METRICS):
        for j, (name, r) in enumerate(reports.items()):
            vals = [_cell(r, d, metric) for d in domains]
            ax.bar(x + j * width, [np.nan if v is None else v for v in vals], width, label=name or None)
        ax.set_xticks(x + width * (len(reports) - 1) / 2, domains, rotation=30, ha="right")
        ax.set_title(_label(metric, first))
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    if any(reports):
        axes[0].legend(fontsize=8)
    fig.suptitle(_titles(reports), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
