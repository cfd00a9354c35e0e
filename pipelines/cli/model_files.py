"""`udon seal`: record the digest of a model folder saved before `model.sha256` covered its description."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import USER_ERRORS, fail


@click.command("seal")
@click.argument("folder", type=click.Path(path_type=Path))
def seal_cmd(folder: Path) -> None:
    """Trust an older model folder: check its weights against the weights_sha256 in its model.json and that
    they fit the architecture it describes, then write model.sha256 over both files.

    Only for folders you trust: nothing covered model.json before, so a damaged description cannot be told
    from a genuine one. Folders saved by this version are sealed when they are written.
    """
    from udon_core.model import seal_legacy_folder

    try:
        digest = seal_legacy_folder(folder)
    except USER_ERRORS as err:
        fail(err)
    click.echo(f"sealed: {digest} covers model.json and model.safetensors")
