"""Where the chunked (dask) steps run: dask's threads in this process, a LocalCluster, or a cluster.

Every step of the pipeline that meets a dask matrix (e.g. ``X`` read from a chunked Zarr store)
builds dask graphs and calls ``dask.compute``; :func:`compute_context` decides which scheduler
computes them. Inside it a ``dask.distributed.Client`` is the default scheduler, so the same code
computes locally or on a cluster (started as in docs/scale.md: ``dask scheduler`` / ``dask worker``
or dask-jobqueue's ``SLURMCluster``).

>>> from spatialclust._compute import compute_context
>>> with compute_context({"scheduler": None}):  # doctest: +SKIP
...     sc.pp.preprocess_ion_images(adata)
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from . import _keys as K
from ._config import ConfigError
from ._logging import logger

#: Keys of the ``compute`` section of a run configuration and their defaults.
COMPUTE_DEFAULTS: dict[str, Any] = {"scheduler": None, "n_workers": None, "threads_per_worker": None,
                                    "chunk_pixels": None}
#: ``scheduler`` value that starts a ``dask.distributed.LocalCluster`` on this machine.
LOCAL = "local"


def check_compute(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``compute`` section validated (unknown keys, types), with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the key, what was expected and what was found.
    """
    unknown = sorted(set(section) - set(COMPUTE_DEFAULTS))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in `compute`; valid keys are: {sorted(COMPUTE_DEFAULTS)}.")
    out = {**COMPUTE_DEFAULTS, **section}
    scheduler = out["scheduler"]
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip()):
        raise ConfigError(f"`compute.scheduler` must be null, {LOCAL!r} or a scheduler address such as "
                          f"'tcp://host:8786'; got {scheduler!r}.")
    for key in ("n_workers", "threads_per_worker", "chunk_pixels"):
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"`compute.{key}` must be a positive integer or null; got {value!r}.")
    if scheduler not in (None, LOCAL) and (out["n_workers"] or out["threads_per_worker"]):
        raise ConfigError("`compute.n_workers` and `compute.threads_per_worker` size a LocalCluster "
                          f"(`compute.scheduler: {LOCAL}`); the cluster at {scheduler!r} is sized where it is started.")
    return out


@contextmanager
def compute_context(section: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Run the dask computations inside on the scheduler of a ``compute`` section.

    Parameters
    ----------
    section
        ``scheduler``: None (dask's threads in this process; no cluster), ``"local"`` (a
        ``LocalCluster`` of ``n_workers`` processes with ``threads_per_worker`` threads each, closed
        on exit) or the address of a running scheduler (``"tcp://host:8786"``). ``chunk_pixels`` is
        used by :func:`chunked`.

    Yields
    ------
    The ``dask.distributed.Client`` (None with the threads of this process).
    """
    section = check_compute(section or {})
    return_freed_memory()
    scheduler = section["scheduler"]
    if scheduler is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ImportError("A dask cluster needs dask.distributed: `pip install 'dask[distributed]'`.") from err
    if scheduler == LOCAL:
        with LocalCluster(n_workers=section["n_workers"], threads_per_worker=section["threads_per_worker"],
                          processes=True, dashboard_address=None,  # no dashboard; its HTTP server on a free port
                          scheduler_kwargs={"dashboard_address": ":0"}) as cluster, Client(cluster) as client:
            logger.info("Computing on a LocalCluster of %d worker(s).", len(cluster.workers))
            yield client
        return
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as err:
        raise ConnectionError(f"`compute.scheduler`: no dask scheduler answers at {scheduler!r} ({err}). Start one "
                              "(`dask scheduler`, then `dask worker ADDRESS`; see docs/scale.md).") from err
    with client:
        logger.info("Computing on the dask cluster at %s (%d worker(s)).", scheduler,
                    len(client.scheduler_info()["workers"]))
        yield client


def current_client() -> Any:
    """The active ``dask.distributed.Client`` (the one :func:`compute_context` opened), or None."""
    if "distributed" not in sys.modules:  # never started one: no import of distributed
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def scratch_dir() -> str | None:
    """Folder for the temporary files of the chunked steps: dask's ``temporary-directory`` setting
    (``DASK_TEMPORARY_DIRECTORY``, the folder dask itself spills to), else None (``TMPDIR``)."""
    import dask

    return dask.config.get("temporary-directory", None)


#: Allocations of at least this many bytes get their own memory map (glibc), returned to the system when freed.
MMAP_THRESHOLD = 1 << 20


@functools.cache
def return_freed_memory() -> None:
    """Have glibc's allocator give the blocks of freed chunks back to the system (no-op elsewhere);
    set once per process.

    The chunked steps allocate and free many blocks of a few MB from several threads; glibc's
    default keeps freed blocks below a growing threshold (up to 32 MB) in per-thread arenas, so the
    resident memory of the process kept growing with the number of chunks computed although the
    data held at any time did not (measured: peak RSS of the preprocessing of 200,000 pixels x
    1,000 m/z 1.08 GiB with the default, 0.69 GiB with this; docs/benchmarks.md, "Scale"). dask's
    distributed workers set the same (``MALLOC_TRIM_THRESHOLD_``) for the same reason. Values
    computed are unchanged.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl): nothing to set
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, MMAP_THRESHOLD)
    mallopt(m_trim_threshold, MMAP_THRESHOLD)


#: Pixels per chunk of a dask ``X`` re-opened from its Zarr store (see :func:`chunked`).
STORE_CHUNK_PIXELS = 65536


def chunked(adata: AnnData, chunk_pixels: int | None) -> None:
    """Hold ``X`` (and every layer) as a dask array of ``chunk_pixels`` pixels per chunk.

    A dask ``X`` read from a Zarr store (``uns["source"]["store"]``) is re-opened from the store in
    chunks of ``chunk_pixels`` (default :data:`STORE_CHUNK_PIXELS`) pixels x the store's m/z chunk:
    blocks of both few pixels and few m/z, so that per-image statistics (which need every pixel of
    an image) read a band of m/z chunks and per-pixel products sum small partial results, both
    without ever holding the matrix (rechunking a lazy array of whole spectra into whole images
    would). Another dask matrix is rechunked along the pixels; a numpy matrix is wrapped (its memory
    is not freed: this is for running the chunked steps on data that fits, e.g. on a cluster); a
    sparse matrix is densified first. ``chunk_pixels=None`` leaves an in-memory matrix as it is.
    """
    import dask.array as da

    from .pp import is_dask

    store = adata.uns.get(K.SOURCE, {}).get("store") if isinstance(adata.uns.get(K.SOURCE), Mapping) else None
    if store is not None and is_dask(adata.X) and adata.X.name.startswith("from-zarr"):
        import zarr

        array = zarr.open_array(f"{store}/X", mode="r")
        if array.shape == adata.shape:
            rows = chunk_pixels or STORE_CHUNK_PIXELS
            adata.X = da.from_zarr(array, chunks=(-(-rows // array.chunks[0]) * array.chunks[0], array.chunks[1]))
            logger.info("X read from %s in chunks of %s (pixels, m/z).", store, adata.X.chunksize)
            return
    if chunk_pixels is None:
        return

    def to_dask(matrix: Any) -> Any:
        if is_dask(matrix):
            return matrix.rechunk({0: chunk_pixels})
        dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return da.from_array(dense, chunks=(chunk_pixels, -1))

    adata.X = to_dask(adata.X)
    for name in list(adata.layers):
        adata.layers[name] = to_dask(adata.layers[name])
    logger.info("X held as a dask array in chunks of %d pixels (%d chunks).", chunk_pixels, adata.X.numblocks[0])


#: ``(pixels, m/z)`` per chunk of the preprocessed matrix a run writes (:func:`store_matrix`): 1 MiB of
#: float32, so that blocks of whole pixel rows (the randomized SVD) and of whole images (thumbnails) both
#: read only what they need.
MATRIX_CHUNKS = (4096, 64)


def store_array(matrix: Any, path: str | Path) -> Any:
    """Compute a lazy dask matrix once into a new chunked Zarr array at ``path`` (float32, chunks of
    :data:`MATRIX_CHUNKS`, zarr's default compression) and return a dask array over it.

    Written a few column chunks at a time (``pp.GROUP_CHUNK_ENTRIES`` entries), so that dask never
    reads far ahead of what it has written (in one graph over a 500,000 x 8,000 matrix it held 6 GB).
    On a dask cluster ``path`` must be on a file system every worker sees.
    """
    import dask.array as da
    import zarr

    from .pp import GROUP_CHUNK_ENTRIES, chunk_spans

    n_obs, n_vars = matrix.shape
    rows, columns = (max(1, min(n, c)) for n, c in zip(matrix.shape, MATRIX_CHUNKS))
    matrix = matrix.astype(np.float32)
    out = zarr.create_array(store=str(path), shape=matrix.shape, chunks=(rows, columns), dtype=np.float32)
    zarr_columns = (columns,) * (n_vars // columns) + ((n_vars % columns,) if n_vars % columns else ())
    for span in chunk_spans(zarr_columns, GROUP_CHUNK_ENTRIES // max(n_obs, 1)):  # whole Zarr chunks
        da.store(matrix[:, span].rechunk((rows, columns)), out, regions=(slice(None), span), lock=False)
    return da.from_zarr(out)


def store_matrix(adata: AnnData, path: str | Path) -> None:
    """Compute the lazy dask ``X`` once into a chunked Zarr array at ``path`` (:func:`store_array`)
    and hold ``X`` as a dask array over it.

    A chunked run's ``X`` is a lazy chain (raw store -> normalisation -> winsorising -> scaling)
    that every later pass (embedding, cluster means, correlations, figures, thumbnails) would
    otherwise recompute from the raw store; written once it is read back instead. ``path`` must be
    new (the run directory is shared with the workers of a cluster).
    """
    started = time.perf_counter()
    adata.X = store_array(adata.X, path)
    logger.info("Preprocessed X (%d x %d) written once to %s in %.0f s; later passes read it.",
                *adata.shape, path, time.perf_counter() - started)
