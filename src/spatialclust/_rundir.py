"""Run directories: every CLI run writes into one folder, atomically, with its config and log.

A run is built in a hidden temporary folder ``.<name>.*.tmp`` next to the destination and renamed
into place only when it finished, so an interrupted or failed run never leaves a directory that
looks complete. The guarantees (see ``docs/reliability.md``):

- **Never deletes foreign data.** Every run directory carries the marker file ``run.json``
  (written at the start, completed at the end, listing the entries the run wrote). ``overwrite``
  replaces only a directory with that marker and nothing but those entries, and never one that
  holds an input of the run.
- **One winner.** A run holds the lock ``.<name>.lock`` (``flock``, released by the kernel when a
  process dies) from its start to its final rename, and the final rename refuses an existing
  target: of two runs into the same directory exactly one succeeds, the other fails clearly.
- **No litter.** Temporary folders of killed runs (marked, and whose process is gone) are removed
  by the next run into the same directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from ._atomic import rename_new, replace
from ._config import dump_config
from ._logging import logger

# The run-directory vocabulary: every file and folder name a pipeline writes, defined once here.
# Every run directory
CONFIG_FILE = "config.yaml"
LOG_FILE = "run.log"
MANIFEST_FILE = "run.json"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
CHECKPOINTS_DIR = "checkpoints"
RESULTS_FILE = "results.h5ad"
#: The preprocessed X of a chunked run (a Zarr array; results.h5ad then holds no matrix).
MATRIX_STORE = "preprocessed.zarr"
METRICS_FILE = "metrics.json"
COMPARISON_FILE = "comparison.csv"
# clustering (`spatialclust run`, `demo`)
CLUSTERS_FILE = "clusters.csv"
EMBEDDINGS_FILE = "embeddings.csv"
#: Figure ``<name>`` of clustering ``<key>`` in ``figures/``.
CLUSTERING_FIGURE = "{key}_{name}.png"
#: Key of the run-level embedding figures, and their file names in ``figures/``.
EMBEDDINGS = "embeddings"
EMBEDDINGS_FIGURE = "embeddings_{name}.png"
# cells (`spatialclust cells run`)
CELLS_FILE = "cells.csv"
#: Figures of one representation in ``figures/`` (its 2-D map, example cells per cluster).
CELL_MAP_FIGURE = "{name}_map.png"
CELL_EXAMPLES_FIGURE = "{name}_examples.png"
# translation (`spatialclust translate train | evaluate | predict`)
MODEL_DIR = "model"
TARGETS_FILE = "targets.csv"
PAIRING_FILE = "pairing.json"
COMBINATIONS_FILE = "combinations.csv"
TOP_GENES_FILE = "top_genes.csv"
SIGNATURES_FILE = "signatures.csv"
MAPS_FIGURE = "maps.png"
FOLDS_FILE = "folds.csv"
PRESENCE_SUMMARY_FILE = "presence_summary.csv"
INTENSITY_SUMMARY_FILE = "intensity_summary.csv"
BEST_PARAMS_FILE = "best_params.json"
PREDICTED_FILE = "predicted.h5ad"
PREDICTED_IMAGES_FIGURE = "images.png"
PREDICTED_IMZML_FILE = "predicted.imzML"
#: Per stage and model: grid-search results; per model row: cross-validated scores per metabolite.
SEARCH_TABLE = "search_{stage}_{model}.csv"
STAGE_TABLE = "{stage}_{model}.csv"
#: Gene importance per source (attention, ridge), table and heat map.
IMPORTANCE_TABLE = "importance_{source}.csv"
IMPORTANCE_FIGURE = "importance_{source}.png"
# benchmark (`spatialclust benchmark`)
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_HTML = "leaderboard.html"
SUMMARY_CSV = "summary.csv"
#: ``run.json["marker"]`` of every run directory this package writes.
RUN_MARKER = "spatialclust run directory"
#: A temporary folder of a run on another host counts as abandoned after this many seconds.
STALE_AFTER_S = 24 * 3600


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of a run directory written by this package, or None for any other folder."""
    file = Path(path) / MANIFEST_FILE
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("marker") == RUN_MARKER else None


def run_name(run_dir: str | Path) -> str:
    """Name of the run directory ``run_dir`` will have: the final name while the run is still
    being written in its temporary folder, else its own name."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.get("status") == "running":
        return Path(manifest["output"]).name
    return run_dir.resolve().name


def output_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute (symbolic links in its folder resolved); ValueError for a path that
    cannot be a new run directory: the current directory, a folder holding it, the root."""
    raw = Path(path)
    if raw.name in ("", ".."):
        raise ValueError(
            f"Output directory {str(path)!r} does not name a new folder (it is the current, the parent or the root "
            "directory); give the run directory its own name, e.g. `-o spatialclust_run`."
        )
    if not raw.name.strip():
        raise ValueError(f"Output directory {str(path)!r} is named by blanks only; give the run directory a visible name.")
    # the hidden folders named after it must fit too: the run's .<name>.<id>.tmp, an overwritten run's .<name>.<id>.old.tmp
    longest = _name_max(raw.parent) - len("..01234567.old.tmp")
    if len(os.fsencode(raw.name)) > longest:
        raise ValueError(
            f"Output directory name {raw.name[:40]!r}... is {len(os.fsencode(raw.name))} bytes long; at most {longest} fit "
            f"(the run is built in the hidden folder .<name>.<id>.tmp next to it). Choose a shorter name."
        )
    absolute = raw.parent.resolve() / raw.name
    cwd = Path.cwd().resolve()
    if absolute == cwd or absolute in cwd.parents:
        raise ValueError(
            f"Output directory {str(path)!r} is the current working directory or holds it; a run directory is "
            "replaced as a whole, so give it its own name, e.g. `-o spatialclust_run`."
        )
    return absolute


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) of the file system holding ``folder`` (or its nearest existing parent)."""
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not reported (or not POSIX): the common limit
        return 255


def check_output_dir(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Check an output directory before any work; return it as an absolute path.

    A missing or empty directory is accepted. A non-empty one is refused, unless ``overwrite`` and
    it is a run directory of this package (marker ``run.json``) holding only what that run wrote and
    none of ``inputs`` (the files the new run reads).

    Raises
    ------
    FileExistsError
        ``path`` is a file or a symbolic link, holds something and ``overwrite`` is False, or is not
        a run directory that ``overwrite`` may replace (the message names what it holds).
    ValueError
        ``path`` is the current, parent or root directory, or ``overwrite`` would delete an input.
    """
    path = output_path(path)
    if path.is_symlink():
        raise FileExistsError(f"Output path {str(path)!r} is a symbolic link; give the directory itself.")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"Output path {str(path)!r} exists and is not a directory; choose another output directory.")
    entries = sorted(os.listdir(path)) if path.is_dir() else []
    if not entries:
        return path
    manifest = read_manifest(path)
    if not overwrite and manifest is not None:
        raise FileExistsError(
            f"Output directory {str(path)!r} already holds a different run; choose another directory "
            "or pass --overwrite (overwrite=True) to replace it."
        )
    if manifest is None:
        raise FileExistsError(
            f"Output directory {str(path)!r} already holds other files ({_listing(entries)}) and is not a spatialclust "
            f"run directory (no {MANIFEST_FILE} written by spatialclust), so --overwrite will not replace it either; "
            "choose a new output directory."
        )
    foreign = [e for e in entries if e not in set(manifest.get("files", [])) | {MANIFEST_FILE}]
    if foreign:
        raise FileExistsError(
            f"Output directory {str(path)!r} is a spatialclust run but also holds {_listing(foreign)}, which the run "
            "did not write; --overwrite will not delete them. Move them out or choose a new output directory."
        )
    for item in inputs:
        if item is not None and Path(item).resolve().is_relative_to(path.resolve()):
            raise ValueError(
                f"--overwrite would delete the input {str(item)!r}, which lies inside the output directory "
                f"{str(path)!r}; move it out or choose a new output directory."
            )
    return path


def _listing(entries: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(e) for e in entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


@contextlib.contextmanager
def run_directory(
    path: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    command: str,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[Path]:
    """Create a run directory atomically; yield the (temporary) folder to write results into.

    Writes ``run.json`` (the marker: command, version, destination, process; at the end also the
    timings, ``status: complete`` and the entries written), ``config.yaml`` (the resolved
    configuration) and ``run.log`` (DEBUG log of the run).

    Parameters
    ----------
    path
        The run directory; checked with :func:`check_output_dir` before and again under the lock.
    config
        The resolved configuration written to ``config.yaml``.
    command
        Name of the command recorded in ``run.json``.
    overwrite
        Replace an existing run directory of this package (only once the new run has completed).
    inputs
        Files the run reads; ``overwrite`` refuses to replace a directory holding one of them.
    """
    inputs = list(inputs)
    path = check_output_dir(path, overwrite=overwrite, inputs=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        remove_stale(path)
        check_output_dir(path, overwrite=overwrite, inputs=inputs)  # the folder may have changed meanwhile
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir()  # not mkdtemp: the run directory gets the usual permissions, not 0700
        try:
            start = time.time()
            manifest = {
                "marker": RUN_MARKER, "status": "running", "command": command, "version": __version__,
                "output": str(path), "host": socket.gethostname(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            dump_config(config, tmp / CONFIG_FILE)
            with _log_to(tmp / LOG_FILE):
                logger.info("spatialclust %s: %s -> %s", __version__, command, path)
                yield tmp
            manifest.update(status="complete", seconds=round(time.time() - start, 2), files=sorted(os.listdir(tmp)))
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            _commit(tmp, path, overwrite=overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # ours (made above); gone after a successful commit


@contextlib.contextmanager
def _log_to(file: Path) -> Iterator[None]:
    """Copy every log record of the package (DEBUG and up) to ``file`` while the block runs."""
    handler = logging.FileHandler(file)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous_level)


def _commit(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Rename the finished run into place: onto a missing or empty ``path``, refusing one that
    appeared meanwhile; with ``overwrite``, onto a run directory checked once more just before."""
    if overwrite and path.is_dir() and any(path.iterdir()):
        check_output_dir(path, overwrite=True)
        replace(tmp, path)
    else:
        rename_new(tmp, path)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold the lock file ``.<name>.lock`` next to ``path`` (exclusive ``flock``, not waiting).

    The kernel releases the lock when its process ends, however it ends, so a killed run never
    blocks the next one. The file is removed on release; a process that locked a file meanwhile
    unlinked notices it (the path names another file) and tries again.
    """
    import fcntl  # POSIX only: run directories are locked with flock(2)

    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise FileExistsError(
                f"Another spatialclust run ({holder}) is writing {str(path)!r}; wait for it to finish or choose "
                "another output directory."
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def remove_stale(path: Path) -> list[Path]:
    """Remove what killed runs into ``path`` left behind; return the folders removed.

    Only hidden ``.<name>.*.tmp`` folders next to ``path`` are considered, and of those only empty
    ones and ones carrying this package's run marker for ``path`` whose process is gone (same host)
    or that are older than :data:`STALE_AFTER_S` (another host). Call it holding the lock of ``path``.
    """
    removed = []
    for entry in sorted(path.parent.iterdir()):
        name = entry.name
        if not (name.startswith(f".{path.name}.") and name.endswith(".tmp")) or entry.is_symlink() or not entry.is_dir():
            continue
        if not any(entry.iterdir()):
            entry.rmdir()
            removed.append(entry)
            continue
        manifest = read_manifest(entry)
        if manifest is None or Path(str(manifest.get("output", ""))).name != path.name or _alive(manifest, entry):
            continue
        logger.info("Removing %s, left by an interrupted run (pid %s).", entry, manifest.get("pid"))
        shutil.rmtree(entry)
        removed.append(entry)
    return removed


def _alive(manifest: Mapping[str, Any], folder: Path) -> bool:
    """Whether the run that wrote ``manifest`` may still be working in ``folder``."""
    if manifest.get("status") != "running":
        return False  # a finished run moved aside by an interrupted overwrite
    if manifest.get("host") != socket.gethostname():
        return time.time() - folder.stat().st_mtime < STALE_AFTER_S
    try:
        os.kill(int(manifest["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True  # a process of another user, or a marker we cannot read: leave it
    return True
