"""Validate step: Great Expectations suites over the manifest and the image files; critical failures stop the
run here, warnings are recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import log_metadata, save_artifact, step
from zenml.types import HTMLString

from integrations.expectations import (
    ValidationConfig,
    ValidationReport,
    image_suite,
    info_file_report,
    manifest_suite,
    report_html,
    run_suite,
)
from steps.data_ingester import DatasetVersion
from udon_core.data import IMAGES_DIR, InfoFileProblem, annotate_manifest, inspect_images
from udon_core.errors import UdonUserError


class DataValidationError(UdonUserError, RuntimeError):
    """Critical data expectations failed; the message lists each failure and the rows behind it."""


@step
def data_validator(
    manifest: pd.DataFrame, dataset: DatasetVersion, config: ValidationConfig
) -> tuple[Annotated[ValidationReport, "validation_report"], Annotated[HTMLString, "validation_page"]]:
    """Run the manifest and image suites; keep the report as artifacts; raise before training on a critical
    failure (the message names every failing row and file)."""
    root = dataset.local_root()
    links = [Path(dataset.dvc_cache)] if dataset.dvc_cache else []  # DVC's symlink/hardlink cache types
    frame = annotate_manifest(manifest, dataset.benchmark, root if config.check_files else None, dataset.classes,
                              link_roots=links)
    suites = [run_suite(frame, manifest_suite(dataset.benchmark, dataset.classes, config.check_files, config,
                                              dataset.classes_source))]
    if config.severity_of("info_file_format") != "off":
        problems = [InfoFileProblem(**p) for p in dataset.info_file_problems]
        suites.append(info_file_report(problems, config.severity_of("info_file_format")))
    if config.check_images:
        images = inspect_images(manifest, root / IMAGES_DIR, config.image_sample, config.image_seed)
        suites.append(run_suite(images, image_suite(dataset.benchmark, config)))
    report = ValidationReport.combine(*suites)
    page = HTMLString(report_html(report))
    log_metadata(metadata={"validation_success": report.success, "expectations_evaluated": report.evaluated,
                           "critical_failures": len(report.critical_failures)})
    if not report.success:
        # why: a raising step stores no outputs, so the evidence is saved explicitly before stopping the run.
        save_artifact(report, name="failed_validation_report")
        save_artifact(page, name="failed_validation_page")
        raise DataValidationError(report.summary())
    return report, page
