"""Presenting retrieval reports: aligned text, Markdown, side-by-side comparisons and a bar chart."""

from __future__ import annotations

from pathlib import Path

from udon_core.retrieval import RetrievalReport


def _rows(reports: dict[str, RetrievalReport]) -> tuple[list[str], list[list[str]]]:
    names = list(reports)
    domains = list(next(iter(reports.values())).per_domain)
    header = ["domain"] + [f"{n} {m}" for n in names for m in ("R@1", "mMP@5")]
    if len(names) == 2:
        header += ["delta R@1", "delta mMP@5"]
    rows = []
    for d in domains + ["mean"]:
        vals = []
        for r in reports.values():
            if d == "mean":
                vals.append((r.mean_r_at_1, r.mean_mmp_at_5))
            else:
                vals.append((r.per_domain[d].r_at_1, r.per_domain[d].mmp_at_5))
        row = [d] + [f"{v:.3f}" for pair in vals for v in pair]
        if len(names) == 2:
            row += [f"{vals[1][0] - vals[0][0]:+.3f}", f"{vals[1][1] - vals[0][1]:+.3f}"]
        rows.append(row)
    return header, rows


def format_comparison(reports: dict[str, RetrievalReport]) -> str:
    """An aligned text table of several reports side by side (with deltas when there are two)."""
    header, rows = _rows(reports)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    first = next(iter(reports.values()))
    title = f"Retrieval on the {first.split} split, {first.protocol} index (UnED protocol)"
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_table(report: RetrievalReport) -> str:
    """One report as an aligned text table."""
    return format_comparison({"": report})


def format_markdown(reports: dict[str, RetrievalReport]) -> str:
    """The comparison as a Markdown table (for ZenML and MLflow)."""
    header, rows = _rows(reports)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def plot_report(reports: dict[str, RetrievalReport], path: str | Path) -> Path:
    """A grouped bar chart of per-domain and mean mMP@5 and R@1, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    domains = list(next(iter(reports.values())).per_domain) + ["mean"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    width = 0.8 / len(reports)
    for ax, metric, label in zip(axes, ("mmp_at_5", "r_at_1"), ("mMP@5", "R@1")):
        for j, (name, r) in enumerate(reports.items()):
            vals = [getattr(r.per_domain[d], metric) for d in domains[:-1]] + [getattr(r, f"mean_{metric}")]
            ax.bar(np.arange(len(domains)) + j * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(domains)) + width * (len(reports) - 1) / 2, domains)
        ax.set_title(label)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
