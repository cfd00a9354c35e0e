"""`python -m pipelines.cli`: the `udon` command."""

from pipelines.cli import main

main()
