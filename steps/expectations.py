"""Great Expectations 1.x suites for the benchmark manifest, run directly (ZenML's GE integration is for GX < 1.0).

Each expectation carries ``meta.severity``: a failed ``critical`` expectation stops the pipeline before
training; ``warning`` ones are recorded. The report names every failing row by domain, split, row and path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from udon_core.benchmark import BenchmarkSpec

Severity = Literal["critical", "warning"]
MAX_ROWS_PER_FAILURE = 50


class FailedRow(BaseModel):
    domain: str
    split: str
    row: int
    path: str
    value: Any = None


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    condition: str | None
    severity: Severity
    success: bool
    unexpected_count: int = 0
    rows: list[FailedRow] = []


class ValidationReport(BaseModel):
    """What the validator found; ``success`` is False when any critical expectation failed."""

    suite: str
    success: bool
    evaluated: int
    outcomes: list[ExpectationOutcome]

    @classmethod
    def combine(cls, *reports: "ValidationReport") -> "ValidationReport":
        """Several suites' results as one report (the run stops if any critical expectation failed)."""
        return cls(suite=" + ".join(r.suite for r in reports), success=all(r.success for r in reports),
                   evaluated=sum(r.evaluated for r in reports), outcomes=[o for r in reports for o in r.outcomes])

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    def summary(self) -> str:
        """One line per failed expectation and up to 10 rows each, for an error message or a log."""
        lines = [f"suite '{self.suite}': {sum(o.success for o in self.outcomes)}/{self.evaluated} expectations passed"]
        for o in self.outcomes:
            if o.success:
                continue
            where = f" where {o.condition}" if o.condition else ""
            lines.append(f"[{o.severity}] {o.expectation}({o.column}){where}: {o.unexpected_count} row(s)")
            lines += [f"    {r.domain}/{r.split}.json row {r.row}: {r.path} (value {r.value!r})" for r in o.rows[:10]]
        return "\n".join(lines)


@lru_cache(maxsize=1)
def _context():
    """One in-memory GX context per process: it writes nothing to disk and suites need one to exist."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _critical(**meta: Any) -> dict:
    return {"severity": "critical", **meta}


class ValidationConfig(BaseModel):
    """What the data validator checks and how hard each finding is. Defaults check every image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check_files: bool = Field(default=True, description="every manifest path must exist (a stat per file)")
    check_images: bool = Field(default=True, description="decode images and check their mode and size")
    image_sample: int | None = Field(
        default=None, ge=1, description="decode this many images (seeded sample); None = all of them"
    )
    image_seed: int = 0
    min_image_size: int = Field(default=16, ge=1, description="smallest accepted width and height, in pixels")
    accepted_modes: tuple[str, ...] = Field(
        default=("RGB", "RGBA", "L", "LA", "P"), description="PIL modes the loader converts to RGB without surprises"
    )
    # why: NormFace CE learns a class from one image, but a train class with a single image is usually a
    # labelling slip; UnED's long tails make this a warning, not a stop.
    min_images_per_class: int = Field(default=2, ge=1, description="train images per class")
    class_size_severity: Severity = "warning"
    image_shape_severity: Severity = Field(default="warning", description="for the mode and minimum-size checks")


def manifest_suite(spec: BenchmarkSpec, classes: dict[str, int], check_files: bool = True,
                   config: ValidationConfig | None = None):
    """The expectation suite for an annotated manifest (see udon_core.manifest_checks.annotate_manifest)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _context()
    splits = sorted({s for d in spec.domains for s in d.info_files})
    exps = [gxe.ExpectColumnValuesToNotBeNull(column=c, meta=_critical()) for c in ("domain", "split", "path", "labels")]
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(spec.domain_names), meta=_critical()),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=splits, meta=_critical()),
        # why: one image in two info files is train/test leakage or a duplicated record; both corrupt metrics.
        gxe.ExpectColumnValuesToBeUnique(column="image_key", meta=_critical()),
        gxe.ExpectColumnValuesToBeBetween(column="label_min", min_value=0, meta=_critical()),
        # NaN for non-query rows, which column-map expectations ignore.
        gxe.ExpectColumnValuesToBeBetween(column="n_positives", min_value=1, meta=_critical()),
        gxe.ExpectColumnValuesToBeInSet(column="label_leaked", value_set=[False], meta=_critical()),
    ]
    for name, n in classes.items():
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="label_max", max_value=n - 1, meta=_critical(),
                row_condition=f'domain=="{name}" & is_train==True', condition_parser="pandas",
            )
        )
    config = config or ValidationConfig()
    exps.append(gxe.ExpectColumnValuesToBeBetween(
        column="class_size", min_value=config.min_images_per_class, meta={"severity": config.class_size_severity},
        row_condition="is_train==True", condition_parser="pandas"))
    if check_files:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True], meta=_critical()))
    exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta={"severity": "warning"}))
    suite = gx.ExpectationSuite(name=f"{spec.name}-manifest")
    for e in exps:
        suite.add_expectation(e)
    return suite


def image_suite(spec: BenchmarkSpec, config: ValidationConfig):
    """Expectations over ``udon_core.image_checks.inspect_images`` rows: decodes, mode, minimum size."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _context()
    present = {"row_condition": "exists==True", "condition_parser": "pandas"}
    decoded = {"row_condition": "decodes==True", "condition_parser": "pandas"}
    shape = {"severity": config.image_shape_severity}
    exps = [
        # the error column names what PIL said (truncated, not an image...); missing files are the manifest's
        gxe.ExpectColumnValuesToBeNull(column="error", meta=_critical(), **present),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(config.accepted_modes), meta=shape, **decoded),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=config.min_image_size, meta=shape, **decoded),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=config.min_image_size, meta=shape, **decoded),
    ]
    suite = gx.ExpectationSuite(name=f"{spec.name}-images")
    for e in exps:
        suite.add_expectation(e)
    return suite


def _failed_rows(frame: pd.DataFrame, index_list: list, column: str | None) -> list[FailedRow]:
    rows = []
    for idx in index_list[:MAX_ROWS_PER_FAILURE]:
        r = frame.loc[idx]
        value = r[column] if column in frame.columns else None
        value = value.tolist() if hasattr(value, "tolist") else value
        rows.append(FailedRow(domain=str(r["domain"]), split=str(r["split"]), row=int(r["row"]), path=str(r["path"]), value=value))
    return rows


def _outcome(result, frame: pd.DataFrame) -> ExpectationOutcome:
    cfg = result.expectation_config
    column = cfg.kwargs.get("column")
    cond = cfg.kwargs.get("row_condition")
    cond = cond.get("pass_through_filter") if isinstance(cond, dict) else cond
    indexes = result.result.get("unexpected_index_list") or []
    return ExpectationOutcome(
        expectation=cfg.type, column=column, condition=cond, severity=(cfg.meta or {}).get("severity", "critical"),
        success=bool(result.success), unexpected_count=int(result.result.get("unexpected_count") or 0),
        rows=_failed_rows(frame, indexes, column),
    )


def _batch_definition():
    context = _context()
    try:
        source = context.data_sources.get("manifest")
    except (KeyError, ValueError):
        source = None
    if source is None:
        source = context.data_sources.add_pandas(name="manifest")
        return source.add_dataframe_asset(name="manifest").add_batch_definition_whole_dataframe(name="all")
    return source.get_asset("manifest").get_batch_definition("all")


def run_suite(frame: pd.DataFrame, suite) -> ValidationReport:
    """Validate an annotated manifest with GX; the report keeps the offending rows of every failure."""
    batch_def = _batch_definition()
    # why: GX cannot compare list cells; the derived columns carry what the rules need from `labels`.
    checked = frame.assign(labels=frame["labels"].map(lambda ls: ",".join(map(str, ls)) if len(ls) else None))
    result = batch_def.get_batch(batch_parameters={"dataframe": checked}).validate(
        suite, result_format={"result_format": "COMPLETE"}
    )
    outcomes = [_outcome(r, frame) for r in result.results]
    ok = not any(not o.success and o.severity == "critical" for o in outcomes)
    return ValidationReport(suite=suite.name, success=ok, evaluated=len(outcomes), outcomes=outcomes)


def report_html(report: ValidationReport) -> str:
    """A self-contained HTML page of the report, shown as a ZenML visualization."""
    from html import escape

    head = "<tr><th>severity</th><th>expectation</th><th>column</th><th>condition</th><th>result</th><th>rows</th></tr>"
    body = []
    for o in report.outcomes:
        rows = "<br>".join(escape(f"{r.domain}/{r.split}.json row {r.row}: {r.path} ({r.value!r})") for r in o.rows[:20])
        status = "passed" if o.success else f"FAILED ({o.unexpected_count})"
        body.append(
            f"<tr><td>{o.severity}</td><td>{escape(o.expectation)}</td><td>{escape(str(o.column))}</td>"
            f"<td>{escape(str(o.condition or ''))}</td><td>{status}</td><td>{rows}</td></tr>"
        )
    verdict = "passed" if report.success else "FAILED: critical expectations did not hold"
    return (
        f"<h2>Data validation: {escape(report.suite)}</h2><p>{verdict}</p>"
        f"<table border='1' cellpadding='4'>{head}{''.join(body)}</table>"
    )
