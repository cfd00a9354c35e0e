"""Validate step: Great Expectations suites over the manifest and the image files; critical failures stop the
run here, warnings are recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import log_metadata, save_artifact, step
from zenml.types import HTMLString

from integrations.expectations import ValidationConfig, ValidationReport, validate_benchmark
from integrations.validation_page import report_html
from steps.data_ingester import DatasetVersion
from udon_core.data import BenchmarkData, InfoFileProblem
from udon_core.errors import UdonUserError


class DataValidationError(UdonUserError, RuntimeError):
    """Critical data expectations failed; the message lists each failure and the rows behind it."""


@step
def data_validator(
    manifest: pd.DataFrame, dataset: DatasetVersion, config: ValidationConfig
) -> tuple[Annotated[ValidationReport, "validation_report"], Annotated[HTMLString, "validation_page"]]:
    """Run the manifest and image suites; keep the report as artifacts; raise before training on a critical
    failure (the message names every failing row and file)."""
    links = (Path(dataset.dvc_cache),) if dataset.dvc_cache else ()  # DVC's symlink/hardlink cache types
    data = BenchmarkData(root=dataset.local_root(), spec=dataset.benchmark, manifest=manifest,
                         problems=[InfoFileProblem(**p) for p in dataset.info_file_problems],
                         classes=dataset.classes, classes_source=dataset.classes_source)
    report = validate_benchmark(data, config, links)
    page = HTMLString(report_html(report))
    log_metadata(metadata={"validation_success": report.success, "expectations_evaluated": report.evaluated,
                           "critical_failures": len(report.critical_failures)})
    if not report.success:
        # why: a raising step stores no outputs, so the evidence is saved explicitly before stopping the run.
        save_artifact(report, name="failed_validation_report")
        save_artifact(page, name="failed_validation_page")
        raise DataValidationError(report.summary())
    return report, page
