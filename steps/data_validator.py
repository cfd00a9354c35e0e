"""Validate step: the Great Expectations suite over the manifest; critical failures stop the run here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import log_metadata, save_artifact, step
from zenml.types import HTMLString

from steps.data_ingester import DatasetVersion
from steps.expectations import ValidationReport, manifest_suite, report_html, run_suite
from udon_core.manifest_checks import annotate_manifest


class DataValidationError(RuntimeError):
    """Critical data expectations failed; the message lists each failure and the rows behind it."""


@step
def data_validator(
    manifest: pd.DataFrame, dataset: DatasetVersion, check_files: bool = True
) -> tuple[Annotated[ValidationReport, "validation_report"], Annotated[HTMLString, "validation_page"]]:
    """Run the manifest suite; keep the report as artifacts; raise before training on a critical failure."""
    root = Path(dataset.root) if check_files else None
    frame = annotate_manifest(manifest, dataset.benchmark, root, dataset.classes)
    report = run_suite(frame, manifest_suite(dataset.benchmark, dataset.classes, check_files=check_files))
    page = HTMLString(report_html(report))
    log_metadata(metadata={"validation_success": report.success, "expectations_evaluated": report.evaluated,
                           "critical_failures": len(report.critical_failures)})
    if not report.success:
        # why: a raising step stores no outputs, so the evidence is saved explicitly before stopping the run.
        save_artifact(report, name="failed_validation_report")
        save_artifact(page, name="failed_validation_page")
        raise DataValidationError(report.summary())
    return report, page
