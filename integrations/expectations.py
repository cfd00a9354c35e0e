"""Great Expectations 1.x suites for the benchmark manifest, run directly (ZenML's GE integration is for GX < 1.0).

Each expectation is one named check (``CHECKS``) and carries ``meta.severity``: a failed ``critical`` check
stops the pipeline before training, ``warning`` ones are recorded and printed, ``off`` ones are not run.
Every check's severity can be changed in the run configuration (``validation.severity: {check: level}``),
except the containment rule's (``LOCKED``). The report names every failing row by domain, split, row and
path. ``validate_benchmark`` is the one way both the pipeline's validate step and ``udon data validate``
run the suites.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from udon_core.data import BenchmarkData, BenchmarkSpec, annotate_manifest, image_source, inspect_images, read_benchmark

Severity = Literal["critical", "warning", "off"]
MAX_ROWS_PER_FAILURE = 50

# Every check the validator runs: its default severity and what it asserts (the report prints the name).
CHECKS: dict[str, tuple[Severity, str]] = {
    "info_file_format": ("critical", "every info file exists and is a JSON list of {path, class_id} records"),
    "required_fields": ("critical", "domain, split, path and labels are present on every row"),
    "known_domain": ("critical", "every row belongs to a domain of the benchmark description"),
    "known_split": ("critical", "every row belongs to an info file the description names"),
    "unique_image": ("critical", "no image file is listed twice in a domain however its path is spelled (./, //, "
                                 "links inside images/): leakage or a duplicated record"),
    "unique_content": ("critical", "no file of a domain has the same bytes as a file of another of its info files "
                                   "(a copy under another name is the same image); needs check_images"),
    "label_non_negative": ("critical", "class ids are >= 0"),
    "query_has_positive": ("critical", "every query has at least one relevant index image"),
    "query_not_a_train_class": ("critical", "queries of class-disjoint domains use no class seen in training"),
    "train_label_in_range": ("critical", "train class ids are below the domain's number of train classes"),
    "train_labels_dense": ("critical", "inferred class counts: train class ids are 0..K-1 for K classes"),
    "class_size": ("warning", "every train class has at least min_images_per_class images"),
    "file_exists": ("critical", "every listed image file exists"),
    "path_inside_root": ("critical", "every path, symlinks resolved, stays inside the images/ folder (or the DVC "
                                     "cache); such a file is never opened"),
    "has_rows": ("warning", "the manifest is not empty"),
    "image_decodes": ("critical", "every image decodes completely with the training loader"),
    "image_mode": ("warning", "image modes are ones the loader converts without loss (accepted_modes)"),
    "image_size": ("warning", "images are at least min_image_size pixels wide and high"),
}
CheckName = Literal[tuple(CHECKS)]  # type: ignore[valid-type]
# why: a file from outside the folder is not covered by the DVC version the run records; training would read
# what validation refused to open. The containment rule is not a matter of taste.
LOCKED: tuple[str, ...] = ("path_inside_root",)


class FailedRow(BaseModel):
    """One offending row: its info file (``domain``/``split``), its ``row`` there (-1: the whole file), the
    image ``path`` (for an info-file problem: the info file, and the ``field`` at fault) and the value."""

    domain: str
    split: str
    row: int
    path: str
    value: Any = None
    field: str | None = None


class ExpectationOutcome(BaseModel):
    check: str = ""
    expectation: str
    column: str | None
    condition: str | None
    severity: Severity
    success: bool
    unexpected_count: int = 0
    rows: list[FailedRow] = []
    note: str | None = None
    expected: dict[str, Any] = {}  # the expectation's own arguments (value_set, min_value...)
    element_count: int | None = None  # rows the expectation looked at (after its row condition)
    observed: Any = None  # GE's observed value (table-level expectations) or the unexpected percentage


class ValidationReport(BaseModel):
    """What the validator found; ``success`` is False when any critical expectation failed."""

    suite: str
    success: bool
    evaluated: int
    outcomes: list[ExpectationOutcome]
    data_root: str = ""  # the folder validated
    benchmark: str = ""
    rows: int | None = None  # manifest rows (records of every info file read)

    @classmethod
    def combine(cls, *reports: "ValidationReport") -> "ValidationReport":
        """Several suites' results as one report (the run stops if any critical expectation failed)."""
        return cls(suite=" + ".join(r.suite for r in reports), success=all(r.success for r in reports),
                   evaluated=sum(r.evaluated for r in reports), outcomes=[o for r in reports for o in r.outcomes])

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    def summary(self, rows_per_failure: int = 10) -> str:
        """One line per failed check and up to ``rows_per_failure`` rows each, for an error message or a log."""
        lines = [f"suite '{self.suite}': {sum(o.success for o in self.outcomes)}/{self.evaluated} expectations passed"]
        for o in self.outcomes:
            if o.success:
                continue
            where = f" where {o.condition}" if o.condition else ""
            note = f" ({o.note})" if o.note else ""
            lines.append(f"[{o.severity}] {o.check or o.expectation}: {o.expectation}({o.column}){where}: "
                         f"{o.unexpected_count} row(s){note}")
            lines += [f"    {_where(r)} (value {r.value!r})" for r in o.rows[:rows_per_failure]]
            if o.unexpected_count > min(len(o.rows), rows_per_failure):
                lines.append(f"    ... {o.unexpected_count - min(len(o.rows), rows_per_failure)} more in the report")
        return "\n".join(lines)


def _where(r: FailedRow) -> str:
    if r.row < 0:  # a problem of a whole file
        return r.path
    if r.field is not None:  # a problem of one record of an info file
        return f"{r.path} row {r.row} [{r.field}]"
    return f"{r.domain}/{r.split}.json row {r.row}: {r.path}"


@lru_cache(maxsize=1)
def _context():
    """One in-memory GX context per process: it writes nothing to disk and suites need one to exist."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # why: that module pins its own logger to INFO and announces a temporary docs folder for every context.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _add(exps: list, config: "ValidationConfig", check: str, expectation: Any, note: str | None = None) -> None:
    """Append ``expectation`` as ``check`` at its configured severity (not at all when it is 'off')."""
    severity = config.severity_of(check)
    if severity != "off":
        expectation.meta = {"severity": severity, "check": check, **({"note": note} if note else {})}
        exps.append(expectation)


class ValidationConfig(BaseModel):
    """What the data validator checks and how hard each finding is. Defaults check every image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check_files: bool = Field(default=True, description="every manifest path must exist (the containment rule "
                              "runs either way)")
    check_images: bool = Field(default=True, description="decode images and check their mode and size")
    image_sample: int | None = Field(
        default=None, ge=1, description="decode this many images (seeded sample); None = all of them"
    )
    image_seed: int = 0
    min_image_size: int = Field(default=16, ge=1, description="smallest accepted width and height, in pixels")
    accepted_modes: tuple[str, ...] = Field(
        default=("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I;16B", "I;16L", "I"),
        description="PIL modes the loader converts to RGB without surprises (16-bit grayscale is scaled to 8 bits; "
        "CMYK is converted without a colour profile, hence a warning)"
    )
    # why: NormFace CE learns a class from one image, but a train class with a single image is usually a
    # labelling slip; UnED's long tails make this a warning, not a stop.
    min_images_per_class: int = Field(default=2, ge=1, description="train images per class")
    severity: dict[CheckName, Severity] = Field(
        default_factory=dict, description="per check: critical (stops the run), warning (reported) or off; "
        "the defaults are in integrations/expectations.py CHECKS; path_inside_root stays critical")

    @field_validator("severity", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # why: YAML 1.1 (PyYAML, so zenml.yaml and --set) reads a bare `off` as false
        if isinstance(value, dict):
            return {k: "off" if v is False else v for k, v in value.items()}
        return value

    @field_validator("severity")
    @classmethod
    def _containment_stays_critical(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        relaxed = sorted(c for c in LOCKED if value.get(c, "critical") != "critical")
        if relaxed:
            raise ValueError(f"{', '.join(relaxed)} cannot be relaxed: a file outside the data folder is not in the "
                             "data version the run records (link such files into the folder, or copy them)")
        return value

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, CHECKS[check][0])  # type: ignore[call-overload]


def manifest_suite(spec: BenchmarkSpec, classes: dict[str, int], check_files: bool = True,
                   config: ValidationConfig | None = None, sources: dict[str, str] | None = None):
    """The expectation suite for an annotated manifest (see udon_core.data.manifest_checks.annotate_manifest).

    ``sources`` says per domain where its number of classes comes from; the report repeats it.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _context()
    config = config or ValidationConfig()
    sources = sources or {}
    splits = sorted({s for d in spec.domains for s in d.info_files})
    exps: list = []
    for c in ("domain", "split", "path", "labels"):
        _add(exps, config, "required_fields", gxe.ExpectColumnValuesToNotBeNull(column=c))
    _add(exps, config, "known_domain", gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(spec.domain_names)))
    _add(exps, config, "known_split", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=splits))
    # why: one image in two info files is train/test leakage or a duplicated record; both corrupt metrics.
    _add(exps, config, "unique_image", gxe.ExpectColumnValuesToBeUnique(column="image_key"))
    _add(exps, config, "label_non_negative", gxe.ExpectColumnValuesToBeBetween(column="label_min", min_value=0))
    # NaN for non-query rows, which column-map expectations ignore.
    _add(exps, config, "query_has_positive", gxe.ExpectColumnValuesToBeBetween(column="n_positives", min_value=1))
    _add(exps, config, "query_not_a_train_class",
         gxe.ExpectColumnValuesToBeInSet(column="label_leaked", value_set=[False]))
    for name, n in classes.items():
        _add(exps, config, "train_label_in_range", gxe.ExpectColumnValuesToBeBetween(
            column="label_max", max_value=n - 1, row_condition=f'domain=="{name}" & is_train==True',
            condition_parser="pandas"), note=f"{name}: {n} classes, {sources.get(name, 'given')}")
    if any(d.num_train_classes is None for d in spec.domains):
        _add(exps, config, "train_labels_dense",
             gxe.ExpectColumnValuesToBeInSet(column="label_undense", value_set=[False]),
             note="class counts inferred from the data (no num_train_classes): ids must be 0..K-1; state "
                  "num_train_classes in the benchmark description if gaps are intended")
    _add(exps, config, "class_size", gxe.ExpectColumnValuesToBeBetween(
        column="class_size", min_value=config.min_images_per_class, row_condition="is_train==True",
        condition_parser="pandas"))
    if check_files:
        _add(exps, config, "file_exists", gxe.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True]))
    # the containment rule holds whether files are checked or not: it is what keeps training inside the folder
    _add(exps, config, "path_inside_root", gxe.ExpectColumnValuesToBeInSet(column="inside_root", value_set=[True]))
    _add(exps, config, "has_rows", gxe.ExpectTableRowCountToBeBetween(min_value=1))
    suite = gx.ExpectationSuite(name=f"{spec.name}-manifest")
    for e in exps:
        suite.add_expectation(e)
    return suite


def image_suite(spec: BenchmarkSpec, config: ValidationConfig):
    """Expectations over ``udon_core.data.image_checks.inspect_images`` rows: decodes, mode, minimum size."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _context()
    present = {"row_condition": "exists==True", "condition_parser": "pandas"}
    decoded = {"row_condition": "decodes==True", "condition_parser": "pandas"}
    exps: list = []
    # the error column says what the loader found (empty, truncated, not an image...); missing files are
    # the manifest suite's
    _add(exps, config, "image_decodes", gxe.ExpectColumnValuesToBeNull(column="error", **present))
    _add(exps, config, "image_mode",
         gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(config.accepted_modes), **decoded))
    for side in ("width", "height"):
        _add(exps, config, "image_size",
             gxe.ExpectColumnValuesToBeBetween(column=side, min_value=config.min_image_size, **decoded))
    # the value of a failing row is the path of the file it copies
    _add(exps, config, "unique_content", gxe.ExpectColumnValuesToBeNull(column="content_twin"),
         note="byte-identical (SHA-256) to the file named as the row's value" +
              (f"; only the {config.image_sample} sampled images are hashed" if config.image_sample else ""))
    suite = gx.ExpectationSuite(name=f"{spec.name}-images")
    for e in exps:
        suite.add_expectation(e)
    return suite


def info_file_report(problems: list, severity: Severity) -> ValidationReport:
    """The reader's findings as a one-check report, to combine with the suites' reports."""
    outcome = info_file_outcome(problems, severity)
    return ValidationReport(suite="info-files", success=outcome.success or severity != "critical", evaluated=1,
                            outcomes=[outcome])


def info_file_outcome(problems: list, severity: Severity) -> ExpectationOutcome:
    """The reader's findings (``udon_core.data.uned.InfoFileProblem``) as one outcome of the report."""
    rows = [FailedRow(domain=Path(p.file).parent.name, split=Path(p.file).stem, row=-1 if p.row is None else p.row,
                      path=p.file, field=None if p.row is None else p.field or "record", value=p.message)
            for p in problems[:MAX_ROWS_PER_FAILURE]]
    return ExpectationOutcome(check="info_file_format", expectation="info_files_follow_the_uned_format",
                              column=None, condition=None, severity=severity, success=not problems,
                              unexpected_count=len(problems), rows=rows)


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
    meta = cfg.meta or {}
    res = result.result or {}
    expected = {k: v for k, v in cfg.kwargs.items() if k not in _NOT_EXPECTATIONS and v is not None}
    observed = res.get("observed_value")
    if observed is None and res.get("unexpected_percent") is not None:
        observed = f"{res['unexpected_percent']:.2f}% unexpected"
    return ExpectationOutcome(
        check=meta.get("check", ""), expectation=cfg.type, column=column, condition=cond,
        severity=meta.get("severity", "critical"), success=bool(result.success),
        unexpected_count=int(res.get("unexpected_count") or 0), rows=_failed_rows(frame, indexes, column),
        note=meta.get("note"), expected=_plain(expected), element_count=res.get("element_count"),
        observed=_plain(observed),
    )


_NOT_EXPECTATIONS = ("column", "row_condition", "condition_parser", "batch_id", "result_format",
                     "include_config", "catch_exceptions")


def _plain(value: Any) -> Any:
    """JSON-friendly (GE hands back numpy numbers and sets)."""
    import json

    return json.loads(json.dumps(value, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


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


def validate_benchmark(data: BenchmarkData, config: ValidationConfig | None = None,
                       link_roots: tuple[Path, ...] = ()) -> ValidationReport:
    """Every suite over a benchmark as read (``udon_core.data.read_benchmark``): the manifest's rows, the
    reader's findings and the image files; one report. ``link_roots``: where files may link to (the DVC
    cache). The pipeline's validate step and ``udon data validate`` both run exactly this."""
    config = config or ValidationConfig()
    images = image_source(data.root)  # one for both checks: a packed one reads its whole index
    frame = annotate_manifest(data.manifest, data.spec, images, data.classes, link_roots)
    reports = [run_suite(frame, manifest_suite(data.spec, data.classes, config.check_files, config,
                                               data.classes_source))]
    if config.severity_of("info_file_format") != "off":
        reports.append(info_file_report(data.problems, config.severity_of("info_file_format")))
    if config.check_images:
        # the annotated frame carries the containment verdict: a refused file is not opened
        inspected = inspect_images(frame, images, config.image_sample, config.image_seed)
        reports.append(run_suite(inspected, image_suite(data.spec, config)))
    return ValidationReport.combine(*reports).model_copy(
        update={"data_root": str(data.root), "benchmark": data.spec.name, "rows": len(data.manifest)})


def validate_folder(root: Path, benchmark: str = "auto", domains: list[str] | None = None,
                    config: ValidationConfig | None = None, link_roots: tuple[Path, ...] = ()) -> ValidationReport:
    """Read and validate a benchmark folder, no pipeline needed.

    Raises:
        InvalidValueError: the benchmark description is unusable (one sentence naming each wrong field).
    """
    return validate_benchmark(read_benchmark(Path(root), benchmark, domains, link_roots), config, link_roots)
