"""The validation report as a page for people: one self-contained HTML file (inline style, no scripts, no
external files), so that it reads the same as a ZenML visualization, an MLflow artifact and the file
``udon data validate`` writes. Checked in headless Chromium (README, "Bring your own benchmark").
"""

from __future__ import annotations

from html import escape
from typing import Any

from integrations.expectations import CHECKS, MAX_ROWS_PER_FAILURE, ExpectationOutcome, ValidationReport

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1280px;margin:0 auto;padding:24px}
header{border-radius:8px;padding:16px 20px;margin-bottom:20px;border:1px solid}
header.passed{background:#dafbe1;border-color:#4ac26b} header.failed{background:#ffebe9;border-color:#ff8182}
h1{margin:0 0 6px;font-size:22px} h2{font-size:17px;margin:28px 0 10px} h3{font-size:15px;margin:22px 0 6px}
.facts{margin:0;color:#424a53} code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;border-radius:6px}
table.rows{table-layout:fixed}
th,td{text-align:left;vertical-align:top;padding:6px 10px;border-bottom:1px solid #eaeef2}
th{background:#f6f8fa;font-weight:600;white-space:nowrap} td.num{text-align:right;white-space:nowrap}
td.path{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all} td.what{min-width:18em}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.critical{background:#cf222e;color:#fff} .warning{background:#bf8700;color:#fff} .off{background:#8c959f;color:#fff}
.held{background:#1a7f37;color:#fff} .failed-badge{background:#cf222e;color:#fff}
.warned{background:#bf8700;color:#fff} tr.fail td{background:#fff8f7} tr.warn td{background:#fff8e5}
.note{color:#57606a;margin:0 0 8px} .more{color:#57606a;font-style:italic;margin:6px 0 0}
"""


def report_html(report: ValidationReport) -> str:
    """The report as one self-contained page (no scripts, no external files): the verdict, every check with
    its severity, what it expects and what it observed, then each failing check's rows by info file, row
    and image path. Shown as the ZenML visualization, logged to the MLflow training run, and written by
    ``udon data validate``."""
    critical, warnings = len(report.critical_failures), len(report.warnings)  # 'off' checks are not run
    order = sorted(report.outcomes, key=lambda o: (o.success, o.severity != "critical"))
    checks = "".join(_check_row(o, i) for i, o in enumerate(order))
    sections = "".join(_rows_section(o, i) for i, o in enumerate(order) if not o.success)
    verdict = "passed" if report.success else "FAILED"
    facts = [f"benchmark <b>{escape(report.benchmark)}</b>" if report.benchmark else "",
             f"<code>{escape(report.data_root)}</code>" if report.data_root else "",
             f"{report.rows:,} rows" if report.rows is not None else "",
             f"{report.evaluated - critical - warnings}/{report.evaluated} checks held, {critical} critical "
             f"failure(s), {warnings} warning(s)"]
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Data validation {verdict}: "
        f"{escape(report.benchmark or report.suite)}</title><style>{_STYLE}</style></head><body><main>"
        f"<header class='{'passed' if report.success else 'failed'}'><h1>Data validation {verdict}</h1>"
        f"<p class='facts'>{' &middot; '.join(f for f in facts if f)}</p></header>"
        f"<h2>Checks</h2><table><thead><tr><th>result</th><th>check</th><th>severity</th><th>what it asserts</th>"
        f"<th>expected</th><th>observed</th></tr></thead><tbody>{checks}</tbody></table>"
        + (f"<h2>Failing rows</h2>{sections}" if sections else "")
        + f"<p class='more'>suites: {escape(report.suite)}</p></main></body></html>"
    )


def _check_row(o: ExpectationOutcome, i: int) -> str:
    if o.success:
        result, cls = "<span class='badge held'>held</span>", ""
    else:
        kind, label, cls = ("failed-badge", "failed", " class='fail'") if o.severity == "critical" else \
            ("warned", "warned", " class='warn'")
        result = f"<a href='#f{i}'><span class='badge {kind}'>{label}: {o.unexpected_count:,}</span></a>"
    what = CHECKS.get(o.check, ("", o.expectation))[1]
    scope = " ".join(x for x in (f"column <code>{escape(str(o.column))}</code>" if o.column else "",
                                 f"where <code>{escape(o.condition)}</code>" if o.condition else "") if x)
    note = f"<br><span class='note'>{escape(o.note)}</span>" if o.note else ""
    expected = escape(", ".join(f"{k} = {v}" for k, v in o.expected.items())) or "&mdash;"
    return (f"<tr{cls}><td>{result}</td><td><b>{escape(o.check or o.expectation)}</b><br>"
            f"<code>{escape(o.expectation)}</code></td><td><span class='badge {o.severity}'>{o.severity}</span></td>"
            f"<td class='what'>{escape(what)}{(' (' + scope + ')') if scope else ''}{note}</td><td>{expected}</td>"
            f"<td>{escape(_observed(o))}</td></tr>")


def _observed(o: ExpectationOutcome) -> str:
    if o.element_count is not None:  # a column-map expectation: the rows it looked at, the rows that failed
        return f"{o.unexpected_count:,} of {o.element_count:,} rows unexpected"
    if o.observed is not None:  # a table-level expectation's own value
        return str(o.observed)
    return "nothing" if o.success else f"{o.unexpected_count:,} finding(s)"


def _rows_section(o: ExpectationOutcome, i: int) -> str:
    reader = o.check == "info_file_format"  # the reader's findings: the file itself, the field at fault
    rows = "".join(
        f"<tr><td class='path'>{escape(r.path if reader else f'info_files/{r.domain}/{r.split}.json')}</td>"
        f"<td class='num'>{'&mdash;' if r.row < 0 else r.row}</td>"
        f"<td class='path'>{escape((r.field or '') if reader else r.path)}</td>"
        f"<td class='path'>{escape(_value(r.value))}</td></tr>"
        for r in o.rows)
    more = o.unexpected_count - len(o.rows)
    third, fourth = ("field", "problem") if reader else ("image path", "value")
    return (f"<h3 id='f{i}'>{escape(o.check or o.expectation)} <span class='badge {o.severity}'>{o.severity}"
            f"</span></h3><p class='note'>{escape(CHECKS.get(o.check, ('', ''))[1])}"
            f"{(' &middot; ' + escape(o.note)) if o.note else ''}</p>"
            f"<table class='rows'><colgroup><col style='width:26%'><col style='width:6%'><col style='width:34%'>"
            f"<col style='width:34%'></colgroup><thead><tr><th>info file</th><th>row</th><th>{third}</th>"
            f"<th>{fourth}</th></tr></thead><tbody>{rows}</tbody></table>"
            + (f"<p class='more'>... and {more:,} more row(s): the report keeps the first {MAX_ROWS_PER_FAILURE} "
               f"of each check</p>" if more > 0 else ""))


def _value(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)
