"""The ``spatialclust`` command line: a thin layer over :mod:`spatialclust.pipeline`.

Every command that computes something writes one run directory (``--output``) with the resolved
``config.yaml``, a ``run.log`` and its results; see ``docs/cli.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from ._logging import logger, settings

app = typer.Typer(
    name="spatialclust",
    help="Deep learning on spatial molecular images (MSI, spatial transcriptomics, cell images).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options (casanovo style): the same spelling in every subcommand.
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML configuration file.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory to create.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed for every random step.")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override one config key: --set cluster.n_clusters=8.")
]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only, no progress bars.")]


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Console logging for the CLI (the run directory's log file is always at DEBUG level)."""
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    settings["show_progress_bar"] = not quiet
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    for handler in logger.handlers:
        if isinstance(handler, RichHandler):
            handler.setLevel(level)
    logger.setLevel(min(level, logging.INFO) if verbose else level)


def fail(err: Exception) -> None:
    """Print an error a scientist can act on and exit with status 1 (no traceback)."""
    typer.secho(f"Error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.callback()
def _root() -> None:
    """Deep learning on spatial molecular images (MSI, spatial transcriptomics, cell images)."""


@app.command()
def version() -> None:
    """Print the spatialclust version."""
    typer.echo(f"spatialclust {__version__}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
