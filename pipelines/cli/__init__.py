"""The `udon` command line. User mistakes end in one clear sentence and exit code 2, not a traceback.

One module per command group: pipeline.py (run, evaluate, embed), model_files.py (seal), data.py, dashboard.py,
registry.py (models, promote, rollback, lineage, retrain) and k8s.py; common.py holds what they share.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from pipelines.cli.common import USER_ERRORS, debugging, fail, project_home_env
from pipelines.cli.dashboard import dashboard_cmd
from pipelines.cli.data import data
from pipelines.cli.k8s import k8s
from pipelines.cli.model_files import seal_cmd
from pipelines.cli.pipeline import embed_cmd, evaluate_cmd, run_cmd
from pipelines.cli.registry import REGISTRY_COMMANDS

# why: google-api-core (pulled in by kfp) warns about the Python version on import, inside our one-line errors.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")


@click.group()
@click.option("--debug", is_flag=True, help="show tracebacks of user errors and the tools' own logs")
def cli(debug: bool) -> None:
    """UDON universal image embeddings: data, training pipeline, evaluation and registry."""
    if debug:
        os.environ["UDON_DEBUG"] = "1"
    if not debugging():
        # why: ZenML logs a failed step's traceback and each skipped step before our one-sentence error; the
        # error names the step and the cause. `udon --debug` keeps ZenML's own logs.
        logging.getLogger("zenml").setLevel(logging.CRITICAL)


for command in (run_cmd, evaluate_cmd, embed_cmd, seal_cmd, data, dashboard_cmd, k8s, *REGISTRY_COMMANDS):
    cli.add_command(command)


def main() -> None:
    """The `udon` console script."""
    try:
        project_home_env()
    except USER_ERRORS as err:
        if len(sys.argv) > 1 and "--help" not in sys.argv[1:]:  # help needs no state; every command does
            fail(err)
    cli()

