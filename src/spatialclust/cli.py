"""The ``spatialclust`` command line: a thin layer over :mod:`spatialclust.pipeline`.

Every command that computes something writes one run directory (``--output``) with the resolved
``config.yaml``, a ``run.log`` and its results; see ``docs/cli.md``.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Annotated, NoReturn, Optional

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
_SET_HELP = "Override one config key (value read as YAML), repeatable, e.g. --set {example}"
# one example per configuration, a key of that command's config (checked in tests/test_config.py)
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help=_SET_HELP.format(example="preprocess.winsorize=99"))
]
CellsSetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help=_SET_HELP.format(example="cluster.resolution=scan"))
]
TranslateSetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help=_SET_HELP.format(example="model.intensity=ridge"))
]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug (and the traceback of an error).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only, no progress bars.")]

#: Verbosity of the running command (set by :func:`setup_logging`): ``-vv`` prints tracebacks.
_console = {"verbose": 0}


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Console logging for the CLI (the run directory's log file is always at DEBUG level)."""
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    _console["verbose"] = verbose
    settings["show_progress_bar"] = not quiet
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    for handler in logger.handlers:
        if isinstance(handler, RichHandler):
            handler.setLevel(level)
    logger.setLevel(min(level, logging.INFO) if verbose else level)


def files_only_mode() -> None:
    """For commands that write figures to files only: the Agg backend (no display needed), and no
    notice from umap-learn that a seeded run cannot be parallelised (nothing a user can act on)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)


#: What the library raises on purpose for bad input (ConfigError, CheckpointError and ImzMLError are
#: ValueErrors, WeightsError a RuntimeError) and what the libraries it drives raise for bad files,
#: missing packages, exhausted memory or absurd sizes.
LIBRARY_ERRORS = (ValueError, LookupError, TypeError, OSError, ImportError, RuntimeError, ArithmeticError, MemoryError)


def fail(err: Exception) -> NoReturn:
    """Print one line a scientist can act on and exit (with ``-vv`` the traceback first).

    Exit status 1 for the classes of :data:`LIBRARY_ERRORS`; any other exception is a bug of
    spatialclust: status 2 and a line asking to report it.
    """
    if _console["verbose"] >= 2 and err.__traceback__ is not None:
        typer.echo("".join(traceback.format_exception(err)).rstrip(), err=True)
    if isinstance(err, LIBRARY_ERRORS):
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err) or type(err).__name__
        typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.secho(f"Internal error ({type(err).__name__}: {err}); please report it with the output of -vv.",
                fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"spatialclust {__version__}")
        raise typer.Exit()


#: The `--set` overrides of `spatialclust run` most often needed, shown by `--help` (tested to resolve).
COMMON_SET = (
    "input.read.bin_width=5", "input.read.bin_unit=ppm", "input.read.mz_range=[400,1000]", "input.dataset=mouse_bladder",
    "preprocess.winsorize=99", "preprocess.tissue_mask=none", "'embedding=[{method: neural}]'",
    "'cluster=[{method: kmeans, params: {n_clusters: 8}}]'", "report.histology=he.tif",
)


@app.callback(epilog=(
    "Output: every command writes one run directory (--output; defaults: spatialclust_demo, spatialclust_run, "
    "spatialclust_simclr, spatialclust_cells, spatialclust_translate) with config.yaml, run.log and report.html.\n\n"
    f"Most used --set keys of `run` (see `spatialclust config show run`): {', '.join(COMMON_SET)}."
))
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Deep learning on spatial molecular images (MSI, spatial transcriptomics, cell images)."""


@app.command()
def version() -> None:
    """Print the spatialclust version."""
    typer.echo(f"spatialclust {__version__}")


config_app = typer.Typer(help="The commented default configurations of the commands.", no_args_is_help=True)
app.add_typer(config_app, name="config")

#: command -> packaged default configuration
CONFIG_RESOURCES = {"run": "pipeline/config.yaml", "cells": "pipeline/cells.yaml", "translate": "translate/config.yaml"}


@config_app.command("show")
def config_show(
    command: Annotated[str, typer.Argument(help="run (also demo and train), cells or translate.")] = "run",
) -> None:
    """Print the commented default configuration of a command: save it, edit it, pass it with --config
    (like casanovo's `configure`). Example: spatialclust config show run > my.yaml"""
    from ._config import packaged_text

    if command not in CONFIG_RESOURCES:
        fail(ValueError(f"Invalid option {command!r} for `command`. Valid options are: {', '.join(CONFIG_RESOURCES)}."))
    typer.echo(packaged_text(CONFIG_RESOURCES[command]), nl=False)


datasets_app = typer.Typer(help="Real public datasets: download once (checksum-verified), convert, cache.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list() -> None:
    """List the public datasets with their source, license and converted files."""
    from .datasets import data_home, public_datasets

    typer.echo(f"Cache: {data_home()} (set SPATIALCLUST_DATA to change it)")
    for name, dataset in public_datasets().items():
        typer.echo(f"\n{name}: {dataset.title}\n  source: {dataset.source}\n  license: {dataset.license}\n"
                   f"  files: {', '.join(dataset.files)}")


@datasets_app.command("path")
def datasets_path(
    name: Annotated[str, typer.Argument(help="Dataset name (see `spatialclust datasets list`).")],
    file: Annotated[Optional[str], typer.Argument(help="One converted file; omitted: the dataset's folder.")] = None,
) -> None:
    """Download and convert a public dataset if needed, then print the path of its folder or of one file.
    Example: spatialclust datasets path lung_godfrey st.h5ad"""
    from .datasets import fetch

    try:
        folder = fetch(name, file)
    except Exception as err:  # noqa: BLE001 -- every error becomes one line (see fail)
        fail(err)
    typer.echo(str(folder / file if file else folder))


_YAML_SUFFIXES = (".yaml", ".yml")


def _run_and_report(resolve_config, output: Path, *, overwrite: bool, command: str) -> None:
    """Resolve the configuration, run the clustering pipeline into ``output`` and say where the
    report is; every error becomes one line on stderr and exit status 1."""
    from ._rundir import check_output_dir
    from .pipeline import run_pipeline

    files_only_mode()
    report = (output / "report.html").resolve()
    try:
        config = resolve_config()
        check_output_dir(output, overwrite=overwrite)
        typer.echo(f"spatialclust {command}: the report will be written to {report}")
        run_pipeline(config, output, overwrite=overwrite, command=command)
    except Exception as err:  # noqa: BLE001 -- every error becomes one line (see fail)
        fail(err)
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
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Run the chunked steps on this dask scheduler (tcp://host:8786, or 'local' for a "
        "LocalCluster); sets compute.scheduler.")] = None,
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
            overrides=[*(set_ or ()), *([f"compute.scheduler={scheduler}"] if scheduler else [])],
        ),
        output or Path("spatialclust_run"),
        overwrite=overwrite,
        command="run",
    )


@app.command()
def train(
    input_or_config: Annotated[
        Optional[Path],
        typer.Argument(help="Dataset (.imzML, .h5ad, .npz, .npy, .tif) or a YAML configuration; omitted: simulated data."),
    ] = None,
    config: ConfigOpt = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Checkpoint directory to write (or resume).")
    ] = None,
    set_: SetOpt = None,
    seed: SeedOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Resume an unfinished training found in --output.")
    ] = True,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train the SimCLR encoder of Hu et al. (2022) on the ion images of a dataset and write a checkpoint
    directory (model.safetensors + config.json). The input and preprocessing come from the run
    configuration; the training parameters from its `embedding` item with `method: simclr` (or --set
    'embedding=[{method: simclr, params: {epochs: 50}}]'). An interrupted training resumes from the
    last epoch saved in --output; a finished one is not retrained."""
    from . import pp
    from .models._checkpoint import check_checkpoint_path
    from .pipeline import load_config
    from .pipeline._run import load_input, preprocess
    from .tl._simclr import SimCLREmbedder

    setup_logging(verbose, quiet)
    is_config = input_or_config is not None and input_or_config.suffix.lower() in _YAML_SUFFIXES
    if is_config and config is not None:
        fail(ValueError(f"Give the configuration either as the argument ({input_or_config}) or with --config ({config}), not both."))
    output = output or Path("spatialclust_simclr")
    try:
        cfg = load_config(
            input_or_config if is_config else config,
            input_path=None if is_config else input_or_config,
            seed=seed,
            overrides=set_ or (),
        )
        check_checkpoint_path(output)
        params = next((dict(item.get("params") or {}) for item in cfg["embedding"] if item["method"] == "simclr"), {})
        params.setdefault("seed", cfg["seed"])
        adata, name = load_input(cfg["input"], seed=cfg["seed"])
        preprocess(adata, cfg["preprocess"])
        images, mask = pp.feature_images(adata), pp.tissue_mask_image(adata)
        typer.echo(f"spatialclust train: SimCLR on {images.shape[0]} ion images of {name}; checkpoint {output.resolve()}")
        embedder = SimCLREmbedder(**{**params, "checkpoint": output, "resume": resume}).fit(images, mask=mask)
    except Exception as err:  # noqa: BLE001
        fail(err)
    losses = [h["loss"] for h in embedder.history_]
    typer.echo(f"Done: {embedder.epochs_} epochs, final loss {losses[-1]:.4f}. Checkpoint: {output.resolve()}")


@app.command()
def benchmark(
    datasets: Annotated[Optional[list[str]], typer.Argument(
        help="`simulated:SEED`, a public MSI dataset (mouse_bladder) or data files (.imzML, .h5ad, .npz, ...); default simulated:0..4.")] = None,
    output: OutputOpt = None,
    embedders: Annotated[Optional[str], typer.Option(help="Comma-separated embedders (default all; regular always).")] = None,
    clusterers: Annotated[Optional[str], typer.Option(help="Comma-separated clusterers (default all).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A method parameter: --set simclr.epochs=20.")] = None,
    n_clusters: Annotated[Optional[int], typer.Option(help="Clusters (default: the true classes, else 20).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small data and short trainings (smoke test).")] = False,
    budget: Annotated[Optional[float], typer.Option(help="Seconds; then the remaining embedders are skipped.")] = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Benchmark every embedder x clusterer on a suite of datasets; writes leaderboard.csv/.html (see docs/cli.md)."""
    from .pipeline import LEADERBOARD_HTML, parse_method_params, run_benchmark

    setup_logging(verbose, quiet)
    files_only_mode()
    output = output or Path("spatialclust_benchmark")
    split = lambda text: None if text is None else [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    try:
        run_benchmark(datasets, output, embedders=split(embedders), clusterers=split(clusterers), params=parse_method_params(set_ or ()),
                      n_clusters=n_clusters, quick=quick, budget=budget, seed=0 if seed is None else seed, overwrite=overwrite)
    except Exception as err:  # noqa: BLE001 -- every error becomes one line (see fail)
        fail(err)
    typer.echo(f"Done. Open {(output / LEADERBOARD_HTML).resolve()}")


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
    set_: CellsSetOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Classical features, metric learning, image embeddings, Leiden and purity for every representation
    (defaults: spatialclust/pipeline/cells.yaml), in one run directory with report.html."""
    from ._rundir import check_output_dir
    from .pipeline import load_cells_config, run_cells

    files_only_mode()
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
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Done. Open {report}")


translate_app = typer.Typer(
    help="Translate spatial transcriptomics into synthetic spatial metabolomics (paired ST + MSI, two-stage model).",
    no_args_is_help=True,
)
app.add_typer(translate_app, name="translate")


def _translate(command: str, work, output: Path, config: Optional[Path], set_, seed, verbose: int, quiet: bool) -> None:
    """Shared body of the translate commands: config, logging, one-line errors."""
    from .translate._pipeline import load_translate_config

    setup_logging(verbose, quiet)
    try:
        resolved = load_translate_config(config, seed=seed, overrides=set_ or ())
        work(resolved)
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Done. Open {(output / 'report.html').resolve() if command != 'predict' else output.resolve()}")


@translate_app.command("train")
def translate_train(
    config: ConfigOpt = None,
    output: OutputOpt = None,
    set_: TranslateSetOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Pair ST and MSI, fit the two-stage model (presence, then masked intensity) on all spots and save
    it (run directory: model/, top_genes.csv, maps, report.html). Defaults: spatialclust/translate/config.yaml;
    no data in the config: the paired simulator."""
    from .translate._pipeline import run_train

    output = output or Path("spatialclust_translate")
    _translate("train", lambda cfg: run_train(cfg, output, overwrite=overwrite), output, config, set_, seed, verbose, quiet)


@translate_app.command("evaluate")
def translate_evaluate(
    config: ConfigOpt = None,
    output: OutputOpt = None,
    set_: TranslateSetOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Cross-validate every stage-1 and stage-2 model and the mean/ridge baselines on spatially blocked
    folds or leave-one-section-out (cv.folds); tables and report.html in the run directory."""
    from .translate._pipeline import run_evaluate

    output = output or Path("spatialclust_translate_eval")
    _translate("evaluate", lambda cfg: run_evaluate(cfg, output, overwrite=overwrite), output, config, set_, seed, verbose, quiet)


@translate_app.command("predict")
def translate_predict(
    model: Annotated[Path, typer.Argument(help="Model directory written by `translate train` (<run>/model).")],
    st: Annotated[Path, typer.Argument(help="Spatial transcriptomics .h5ad to translate.")],
    config: ConfigOpt = None,
    output: OutputOpt = None,
    set_: TranslateSetOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Predict synthetic MSI (spots x metabolites) for a new ST dataset: predicted.h5ad, images.png and
    predicted.imzML (predict.missing_genes sets what to do with genes the model needs but the data lacks)."""
    from .translate._pipeline import run_predict

    output = output or Path("spatialclust_translate_predict")
    _translate("predict", lambda cfg: run_predict(model, st, output, config=cfg, overwrite=overwrite), output, config, set_, None, verbose, quiet)


@app.command()
def convert(
    imzml: Annotated[Path, typer.Argument(help="The .imzML file (its .ibd next to it).")],
    store: Annotated[Path, typer.Argument(help="The .zarr store to write (chunked, readable by anndata).")],
    bin_width: Annotated[Optional[float], typer.Option(help="Regular m/z axis of this width (in --bin-unit).")] = None,
    bin_unit: Annotated[str, typer.Option(help="ppm or Da.")] = "ppm",
    peaks: Annotated[Optional[Path], typer.Option(help="Text file of m/z values (one per line): bin onto peak windows.")] = None,
    tolerance: Annotated[float, typer.Option(help="Half-width of the peak windows (in --tolerance-unit).")] = 0.005,
    tolerance_unit: Annotated[str, typer.Option(help="Da or ppm.")] = "Da",
    mz_min: Annotated[Optional[float], typer.Option(help="Smallest m/z kept (with --mz-max).")] = None,
    mz_max: Annotated[Optional[float], typer.Option(help="Largest m/z kept (with --mz-min).")] = None,
    chunks: Annotated[str, typer.Option(help="Pixels,m/z per Zarr chunk.")] = "4096,64",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild a store made from another file or binning.")] = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Stream an imzML file once into a chunked Zarr store (`run`, `sc.io.read` open it lazily); a store
    already built from the same file with the same binning is reused."""
    import numpy as np

    from .io import read_imzml

    setup_logging(verbose, quiet)
    try:
        if (mz_min is None) != (mz_max is None):
            raise ValueError("Give both --mz-min and --mz-max, or neither.")
        parts = chunks.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--chunks must be two positive integers 'pixels,mz', got {chunks!r}.")
        peak_list = None
        if peaks is not None:
            if not peaks.is_file():
                raise FileNotFoundError(f"--peaks file {str(peaks)!r} does not exist.")
            peak_list = np.atleast_1d(np.loadtxt(peaks, dtype=np.float64, ndmin=1))
        adata = read_imzml(
            imzml, bin_width=bin_width, bin_unit=bin_unit, peaks=peak_list, tolerance=tolerance,
            tolerance_unit=tolerance_unit, mz_range=None if mz_min is None else (mz_min, mz_max),
            store=store, overwrite_store=overwrite, store_chunks=tuple(int(p) for p in parts),
        )
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Done: {adata.n_obs} spectra x {adata.n_vars} m/z in {store.resolve()}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
