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


_YAML_SUFFIXES = (".yaml", ".yml")


def _run_and_report(resolve_config, output: Path, *, overwrite: bool, command: str) -> None:
    """Resolve the configuration, run the clustering pipeline into ``output`` and say where the
    report is; every error becomes one line on stderr and exit status 1."""
    from ._rundir import check_output_dir
    from .pipeline import run_pipeline

    report = (output / "report.html").resolve()
    try:
        config = resolve_config()
        check_output_dir(output, overwrite=overwrite)
        typer.echo(f"spatialclust {command}: the report will be written to {report}")
        run_pipeline(config, output, overwrite=overwrite, command=command)
    except (ValueError, KeyError, TypeError, OSError, ImportError, RuntimeError) as err:
        logger.debug("%s failed", command, exc_info=True)
        fail(ValueError(err.args[0]) if isinstance(err, KeyError) and err.args else err)
    typer.echo(f"Done. Open {report}")


@app.command()
def demo(
    output: OutputOpt = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Simulate an MSI dataset and run the default pipeline on it (regular and neural ion images x
    UMAP-DBSCAN and k-means, as in Zhang et al. 2024); writes a run directory with report.html."""
    from .pipeline import load_config

    setup_logging(verbose, quiet)
    _run_and_report(lambda: load_config(seed=seed), output or Path("spatialclust_demo"),
                    overwrite=overwrite, command="demo")


@app.command()
def run(
    input_or_config: Annotated[
        Path, typer.Argument(help="Dataset (.imzML, .h5ad, .npz, .npy, .tif) or a YAML configuration.")
    ],
    config: ConfigOpt = None,
    output: OutputOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Cluster the ion images of a dataset: every embedding x every clusterer of the configuration
    (defaults: spatialclust/pipeline/config.yaml), evaluated, plotted and reported in one run directory."""
    from .pipeline import load_config

    setup_logging(verbose, quiet)
    is_config = input_or_config.suffix.lower() in _YAML_SUFFIXES
    if is_config and config is not None:
        fail(ValueError(f"Give the configuration either as the argument ({input_or_config}) or with --config ({config}), not both."))
    _run_and_report(
        lambda: load_config(
            input_or_config if is_config else config,
            input_path=None if is_config else input_or_config,
            seed=seed,
            overrides=set_ or (),
        ),
        output or Path("spatialclust_run"),
        overwrite=overwrite,
        command="run",
    )


cells_app = typer.Typer(
    help="Phenotype cells from multichannel single-cell images (image-enabled cell sorting, imaging flow cytometry).",
    no_args_is_help=True,
)
app.add_typer(cells_app, name="cells")


@cells_app.command("run")
def cells_run(
    input_or_config: Annotated[
        Optional[Path],
        typer.Argument(help="TIFF per cell, a folder of TIFFs, an .h5ad, a .csv feature table, or a YAML "
                       "configuration; omitted: simulated cells."),
    ] = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Classical features, metric learning, image embeddings, Leiden and purity for every representation
    (defaults: spatialclust/pipeline/cells.yaml), in one run directory with report.html."""
    from ._rundir import check_output_dir
    from .pipeline import load_cells_config, run_cells

    setup_logging(verbose, quiet)
    is_config = input_or_config is not None and input_or_config.suffix.lower() in _YAML_SUFFIXES
    if is_config and config is not None:
        fail(ValueError(f"Give the configuration either as the argument ({input_or_config}) or with --config ({config}), not both."))
    output = output or Path("spatialclust_cells")
    report = (output / "report.html").resolve()
    try:
        resolved = load_cells_config(
            input_or_config if is_config else config,
            input_path=None if is_config else input_or_config,
            seed=seed,
            overrides=set_ or (),
        )
        check_output_dir(output, overwrite=overwrite)
        typer.echo(f"spatialclust cells run: the report will be written to {report}")
        run_cells(resolved, output, overwrite=overwrite, command="cells run")
    except (ValueError, KeyError, TypeError, OSError, ImportError, RuntimeError) as err:
        logger.debug("cells run failed", exc_info=True)
        fail(ValueError(err.args[0]) if isinstance(err, KeyError) and err.args else err)
    typer.echo(f"Done. Open {report}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
