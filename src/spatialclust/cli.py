"""The ``spatialclust`` command line: a thin layer over :mod:`spatialclust.pipeline`.

Every computing command is a few lines inside one shared wrapper (:func:`command`: the shared
options, logging, one-line errors): load its configuration (:func:`load`), then call its
``pipeline.run_*`` function, which writes one run directory (``--output``) with the resolved
``config.yaml``, a ``run.log`` and its results; see ``docs/cli.md``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import dataclasses
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from . import __version__, pipeline
from ._logging import logger, settings

app = typer.Typer(
    name="spatialclust",
    help="Deep learning on spatial molecular images (MSI, spatial transcriptomics, cell images).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options (casanovo style): the same spelling in every subcommand (added by :func:`command`).
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML configuration file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed for every random step.")]
#: the --set help of a command, with one example key of that command's config
_SET_HELP = "Override one config key (value read as YAML), repeatable, e.g. --set {example}"
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


def interrupted() -> int:
    """Ctrl-C (SIGINT): print one line; return the shell's status for it, 130. The run directory was
    not renamed into place; its temporary folder and lock were removed on the way out (or, after a
    second Ctrl-C, are removed by the next run)."""
    typer.secho("Interrupted (Ctrl-C). Run the command again: a run directory is only written complete "
                "(`train` resumes from its last saved epoch).", fg=typer.colors.RED, err=True)
    return 130


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
    "Output: every computing command writes one run directory (--output; defaults: spatialclust_demo, "
    "spatialclust_run, spatialclust_benchmark, spatialclust_cells, spatialclust_translate, "
    "spatialclust_translate_eval, spatialclust_translate_predict) with config.yaml and run.log; "
    "train writes a checkpoint directory (spatialclust_simclr). See docs/cli.md.\n\n"
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

#: command -> packaged default configuration (``run`` also serves ``demo`` and ``train``)
CONFIG_RESOURCES = {command: pipeline.PIPELINE_CONFIGS[name][0] for command, name in
                    (("run", "cluster"), ("cells", "cells"), ("translate", "translate"))}


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


@dataclass(frozen=True)
class Shared:
    """The shared options of a computing command, as given (see :func:`command`)."""

    output: Optional[Path] = None  # None: a command that writes no run directory (``output=None``)
    config: Optional[Path] = None
    overrides: tuple[str, ...] = ()
    overwrite: bool = False
    seed: Optional[int] = None


def command(
    group: typer.Typer,
    name: Optional[str] = None,
    *,
    output: Optional[str],
    shared: Sequence[str] = ("config", "set", "overwrite", "seed"),
    set_example: Optional[str] = None,
    output_help: str = "Run directory to create.",
):
    """Register a computing command: its own parameters, the shared options ``shared`` (besides
    ``--output``, ``-v`` and ``-q``, which every computing command takes; ``output=None``: a command
    that writes no run directory, without ``--output``) and one shared body.

    The decorated function gets the shared options as a :class:`Shared` (first argument; ``output``
    defaults to ``output``) and its own parameters by keyword, runs its pipeline and returns the
    closing line. Around it: console logging (``-v``/``-q``), figures to files only, and every error
    as one line (see :func:`fail`).
    """
    options = {
        "output": (Annotated[Optional[Path], typer.Option("--output", "-o", help=output_help)], None),
        "config": (ConfigOpt, None),
        "set": (Annotated[Optional[list[str]], typer.Option("--set", help=_SET_HELP.format(example=set_example))], None),
        "overwrite": (OverwriteOpt, False),
        "seed": (SeedOpt, None),
        "verbose": (VerboseOpt, 0),
        "quiet": (QuietOpt, False),
    }
    names = [*(["output"] if output else []), *shared, "verbose", "quiet"]

    def register(func: Callable[..., str]) -> Callable[..., None]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(func, eval_str=True).parameters.values())[1:]]
        arguments = [p for p in own
                     if any(isinstance(m, typer.models.ArgumentInfo) for m in getattr(p.annotation, "__metadata__", ()))]
        added = {n: inspect.Parameter(f"opt_{n}", inspect.Parameter.KEYWORD_ONLY, annotation=options[n][0], default=options[n][1])
                 for n in names}
        # --help order: the arguments, the shared options, the command's own options, -v, -q
        params = [*arguments, *(added[n] for n in names[:-2]), *(p for p in own if p not in arguments),
                  added["verbose"], added["quiet"]]

        @functools.wraps(func)
        def run_command(**kwargs: Any) -> None:
            given = {n: kwargs.pop(f"opt_{n}") for n in names}
            setup_logging(given.pop("verbose"), given.pop("quiet"))
            files_only_mode()
            opts = Shared(output=given.pop("output", None) or (Path(output) if output else None),
                          overrides=tuple(given.pop("set", None) or ()), **given)
            try:
                done = func(opts, **kwargs)
            except KeyboardInterrupt:
                raise typer.Exit(code=interrupted()) from None
            except Exception as err:  # noqa: BLE001 -- every error becomes one line (see fail)
                fail(err)
            typer.echo(done)

        run_command.__signature__ = inspect.Signature(params)  # what typer reads
        run_command.__annotations__ = {p.name: p.annotation for p in params}
        group.command(name)(run_command)
        return run_command

    return register


def load(pipeline_name: str, opts: Shared, input_or_config: Optional[Path] = None) -> dict[str, Any]:
    """The command's configuration (:func:`spatialclust.pipeline.load_config`): the YAML file given as
    the argument or with ``--config``, the data file given as the argument, ``--seed`` and ``--set``."""
    is_config = input_or_config is not None and input_or_config.suffix.lower() in _YAML_SUFFIXES
    if is_config and opts.config is not None:
        raise ValueError(f"Give the configuration either as the argument ({input_or_config}) or with --config ({opts.config}), not both.")
    return pipeline.load_config(input_or_config if is_config else opts.config, pipeline=pipeline_name, seed=opts.seed,
                                input_path=None if is_config else input_or_config, overrides=opts.overrides)


def announce(command_name: str, opts: Shared) -> Path:
    """Check the run directory before any work and say where the report will be; return that path."""
    from ._rundir import REPORT_FILE, check_output_dir

    report = (opts.output / REPORT_FILE).resolve()
    check_output_dir(opts.output, overwrite=opts.overwrite)
    typer.echo(f"spatialclust {command_name}: the report will be written to {report}")
    return report


def report_line(opts: Shared) -> str:
    """The closing line of a command that writes a report."""
    from ._rundir import REPORT_FILE

    return f"Done. Open {(opts.output / REPORT_FILE).resolve()}"


InputOrConfig = Annotated[Path, typer.Argument(help="Dataset (.imzML, .h5ad, .npz, .npy, .tif) or a YAML configuration.")]
CLUSTER_SET = "preprocess.winsorize=99"  # one example per configuration, a key of it (checked in tests/test_config.py)


@command(app, output="spatialclust_demo", shared=("overwrite", "seed"))
def demo(opts: Shared) -> str:
    """Simulate an MSI dataset and run the default pipeline on it (conditioned regular and neural ion
    images x Leiden and UMAP-DBSCAN, the best measured); writes a run directory with report.html."""
    config = load("cluster", opts)
    report = announce("demo", opts)
    pipeline.run_pipeline(config, opts.output, overwrite=opts.overwrite, command="demo")
    return f"Done. Open {report}"


SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Run the chunked steps on this dask scheduler (tcp://host:8786, or 'local' for a "
    "LocalCluster); sets compute.scheduler.")]


@command(app, output="spatialclust_run", set_example=CLUSTER_SET)
def run(opts: Shared, input_or_config: InputOrConfig, scheduler: SchedulerOpt = None) -> str:
    """Cluster the ion images of a dataset: every embedding x every clusterer of the configuration
    (defaults: spatialclust/pipeline/config.yaml), evaluated, plotted and reported in one run directory."""
    if scheduler:
        opts = dataclasses.replace(opts, overrides=(*opts.overrides, f"compute.scheduler={scheduler}"))
    config = load("cluster", opts, input_or_config)
    report = announce("run", opts)
    pipeline.run_pipeline(config, opts.output, overwrite=opts.overwrite, command="run")
    return f"Done. Open {report}"


@command(app, output="spatialclust_simclr", shared=("config", "set", "seed"), set_example=CLUSTER_SET,
         output_help="Checkpoint directory to write (or resume).")
def train(
    opts: Shared,
    input_or_config: Annotated[
        Optional[Path],
        typer.Argument(help="Dataset (.imzML, .h5ad, .npz, .npy, .tif) or a YAML configuration; omitted: simulated data."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Resume an unfinished training found in --output.")
    ] = True,
) -> str:
    """Train the SimCLR encoder of Hu et al. (2022) on the ion images of a dataset and write a checkpoint
    directory (model.safetensors + config.json). The input and preprocessing come from the run
    configuration; the training parameters from its `embedding` item with `method: simclr` (or --set
    'embedding=[{method: simclr, params: {epochs: 50}}]'). An interrupted training resumes from the
    last epoch saved in --output; a finished one is not retrained."""
    embedder = pipeline.run_train(load("cluster", opts, input_or_config), opts.output, resume=resume)
    losses = [h["loss"] for h in embedder.history_]
    return f"Done: {embedder.epochs_} epochs, final loss {losses[-1]:.4f}. Checkpoint: {opts.output.resolve()}"


@command(app, output="spatialclust_benchmark", shared=("overwrite", "seed"))
def benchmark(
    opts: Shared,
    datasets: Annotated[Optional[list[str]], typer.Argument(
        help="`simulated:SEED`, a public MSI dataset (mouse_bladder) or data files (.imzML, .h5ad, .npz, ...); default simulated:0..4.")] = None,
    embedders: Annotated[Optional[str], typer.Option(help="Comma-separated embedders (default all; regular always).")] = None,
    clusterers: Annotated[Optional[str], typer.Option(help="Comma-separated clusterers (default all).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A method parameter: --set simclr.epochs=20.")] = None,
    n_clusters: Annotated[Optional[int], typer.Option(help="Clusters (default: the true classes, else 20).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small data and short trainings (smoke test).")] = False,
    budget: Annotated[Optional[float], typer.Option(help="Seconds; then the remaining embedders are skipped.")] = None,
    simulate: Annotated[Optional[list[str]], typer.Option(
        help="A parameter of the simulator for `simulated` datasets: --simulate n_ions=100.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="DATASETS are finished benchmark runs (e.g. one seed each): "
                                        "write their combined leaderboard, computing nothing.")] = False,
) -> str:
    """Benchmark every embedder x clusterer on a suite of datasets; writes leaderboard.csv/.html (see docs/cli.md)."""
    from ._config import ConfigError, parse_override
    from ._rundir import LEADERBOARD_HTML

    if merge:
        given = [f"--{name.replace('_', '-')}" for name, value in (
            ("embedders", embedders), ("clusterers", clusterers), ("set", set_), ("n_clusters", n_clusters),
            ("quick", quick or None), ("budget", budget), ("simulate", simulate), ("seed", opts.seed)) if value is not None]
        if given:
            raise ConfigError(f"`--merge` combines finished runs as they were run; it takes no {', '.join(given)}.")
        pipeline.merge_benchmarks(datasets or [], opts.output, overwrite=opts.overwrite)
        return f"Done. Open {(opts.output / LEADERBOARD_HTML).resolve()}"
    split = lambda text: None if text is None else [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    pipeline.run_benchmark(datasets, opts.output, embedders=split(embedders), clusterers=split(clusterers),
                           params=pipeline.parse_method_params(set_ or ()), n_clusters=n_clusters, quick=quick,
                           budget=budget, seed=0 if opts.seed is None else opts.seed, overwrite=opts.overwrite,
                           simulate={k: v for item in simulate or () for k, v in parse_override(item).items()})
    return f"Done. Open {(opts.output / LEADERBOARD_HTML).resolve()}"


cells_app = typer.Typer(
    help="Phenotype cells from multichannel single-cell images (image-enabled cell sorting, imaging flow cytometry).",
    no_args_is_help=True,
)
app.add_typer(cells_app, name="cells")


@command(cells_app, "run", output="spatialclust_cells", set_example="cluster.resolution=scan")
def cells_run(
    opts: Shared,
    input_or_config: Annotated[
        Optional[Path],
        typer.Argument(help="TIFF per cell, a folder of TIFFs, an .h5ad, a .csv feature table, or a YAML "
                       "configuration; omitted: simulated cells."),
    ] = None,
) -> str:
    """Classical features, metric learning, image embeddings, Leiden and purity for every representation
    (defaults: spatialclust/pipeline/cells.yaml), in one run directory with report.html."""
    config = load("cells", opts, input_or_config)
    report = announce("cells run", opts)
    pipeline.run_cells(config, opts.output, overwrite=opts.overwrite, command="cells run")
    return f"Done. Open {report}"


translate_app = typer.Typer(
    help="Translate spatial transcriptomics into synthetic spatial metabolomics (paired ST + MSI, two-stage model).",
    no_args_is_help=True,
)
app.add_typer(translate_app, name="translate")
TRANSLATE_SET = "model.intensity=ridge"


@command(translate_app, "train", output="spatialclust_translate", set_example=TRANSLATE_SET)
def translate_train(opts: Shared) -> str:
    """Pair ST and MSI, fit the two-stage model (presence, then masked intensity) on all spots and save
    it (run directory: model/, top_genes.csv, maps, report.html). Defaults: spatialclust/pipeline/translate.yaml;
    no data in the config: the paired simulator."""
    pipeline.run_translate_train(load("translate", opts), opts.output, overwrite=opts.overwrite)
    return report_line(opts)


@command(translate_app, "evaluate", output="spatialclust_translate_eval", set_example=TRANSLATE_SET)
def translate_evaluate(opts: Shared) -> str:
    """Cross-validate every stage-1 and stage-2 model and the mean/ridge baselines on spatially blocked
    folds or leave-one-section-out (cv.folds); tables and report.html in the run directory."""
    pipeline.run_translate_evaluate(load("translate", opts), opts.output, overwrite=opts.overwrite)
    return report_line(opts)


@command(translate_app, "predict", output="spatialclust_translate_predict", shared=("config", "set", "overwrite"),
         set_example=TRANSLATE_SET)
def translate_predict(
    opts: Shared,
    model: Annotated[Path, typer.Argument(help="Model directory written by `translate train` (<run>/model).")],
    st: Annotated[Path, typer.Argument(help="Spatial transcriptomics .h5ad to translate.")],
) -> str:
    """Predict synthetic MSI (spots x metabolites) for a new ST dataset: predicted.h5ad, images.png and
    predicted.imzML (predict.missing_genes sets what to do with genes the model needs but the data lacks)."""
    pipeline.run_translate_predict(model, st, opts.output, config=load("translate", opts), overwrite=opts.overwrite)
    return f"Done. Open {opts.output.resolve()}"


@command(app, output=None, shared=())
def convert(
    opts: Shared,
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
) -> str:
    """Stream an imzML file once into a chunked Zarr store (`run`, `sc.io.read` open it lazily); a store
    already built from the same file with the same binning is reused."""
    import numpy as np

    from .io import read_imzml

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
    return f"Done: {adata.n_obs} spectra x {adata.n_vars} m/z in {store.resolve()}"


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # while the CLI starts (inside a command, `command` answers it)
        raise SystemExit(interrupted()) from None


if __name__ == "__main__":
    main()
