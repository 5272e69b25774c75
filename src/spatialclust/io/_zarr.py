"""A chunked Zarr store of a binned imzML file: the working format for data larger than memory.

``read_imzml(path, store="x.zarr")`` (CLI: ``spatialclust convert FILE.imzML x.zarr``) streams
the spectra once, a block of pixels at a time, into the store; :func:`read_imzml_store` (and
``sc.io.read("x.zarr")``) opens it as an AnnData whose ``X`` is a lazy dask array.

Layout: the store is an AnnData Zarr group (``anndata.io.read_zarr`` reads it): ``X`` is one
float32 array of shape (pixels, m/z) in chunks of ``(4096, 64)`` by default, so one block of
4,096 spectra reads ``n_mz / 64`` chunks and one ion image ``n_pixels / 4,096`` chunks (123 of
1 MiB for 500,000 pixels), both a small part of the array; zero cells (most of a processed,
centroided file) compress to almost nothing. ``obs`` (TIC), ``var`` (m/z), ``obsm["spatial"]``
and ``uns`` (grid, source) are written with anndata's own encoding, and the root attribute
``spatialclust`` records the store format, the source file's fingerprint (size, modification
time and ``.ibd`` UUID of both files, a digest of the XML header, which declares the ``.ibd``
checksum) and the binning parameters, so that a re-run reuses the store only when both match.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from .. import _keys as K
from .._logging import logger

#: ``(pixels, m/z)`` per chunk of ``X``.
DEFAULT_CHUNKS = (4096, 64)
#: The root attribute that marks a spatialclust imzML store, and its layout version.
STORE_ATTR = "spatialclust"
STORE_FORMAT = "imzml-store"
STORE_VERSION = 1
#: Largest dask chunk of the returned ``X`` (a whole number of Zarr chunks).
_DASK_CHUNK_BYTES = 128 * 2**20


def source_fingerprint(imzml: Path, ibd: Path) -> dict[str, Any]:
    """What identifies the content of an imzML/ibd pair without reading it whole."""
    with open(ibd, "rb") as fh:
        uuid = fh.read(16).hex()
    with open(imzml, "rb") as fh:
        head = hashlib.sha1(fh.read(1 << 16)).hexdigest()
    out: dict[str, Any] = {"ibd_uuid": uuid, "imzml_head_sha1": head}
    for name, file in (("imzml", imzml), ("ibd", ibd)):
        stat = file.stat()
        out[f"{name}_size"], out[f"{name}_mtime_ns"] = stat.st_size, stat.st_mtime_ns
    return out


def _plain(value: Any) -> Any:
    """JSON-safe copy: arrays of parameters become a digest and a count, tuples lists, NumPy scalars Python."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.size > 8:
        data = np.ascontiguousarray(value, dtype=np.float64)
        return {"n": int(data.size), "sha1": hashlib.sha1(data.tobytes()).hexdigest()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_python(value: Any) -> Any:
    """What anndata reads back from ``uns``, as the in-memory reader writes it (lists, Python scalars)."""
    if isinstance(value, dict):
        return {k: _as_python(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _store_info(store: Path) -> dict[str, Any] | None:
    """The ``spatialclust`` attribute of a store, or None when ``store`` is not a spatialclust store."""
    import zarr

    try:
        group = zarr.open_group(store, mode="r")
    except (FileNotFoundError, ValueError, TypeError, KeyError, OSError):
        return None
    info = dict(group.attrs).get(STORE_ATTR)
    return info if isinstance(info, dict) and info.get("format") == STORE_FORMAT else None


def is_imzml_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Zarr store written by ``read_imzml(..., store=path)``."""
    path = Path(path)
    return path.is_dir() and _store_info(path) is not None


class StorePlan:
    """Where a store goes, what it must be built from, and whether an existing one can be reused."""

    def __init__(self, store: str | os.PathLike, imzml: Path, ibd: Path, *, params: dict[str, Any],
                 chunks: tuple[int, int], overwrite: bool):
        self.store = Path(store)
        if len(chunks) != 2 or not all(isinstance(c, int | np.integer) and c > 0 for c in chunks):
            raise ValueError(f"`store_chunks` must be two positive integers (pixels, m/z), got {chunks!r}.")
        self.imzml, self.overwrite = imzml, overwrite
        self.attrs = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "source": source_fingerprint(imzml, ibd),
            "params": _plain(params),
        }

    def reusable(self) -> bool:
        """True when the store exists and was built from the same file with the same parameters.

        Raises when it exists but is something else, was built otherwise (unless ``overwrite``)."""
        if not (self.store.exists() or self.store.is_symlink()):
            return False
        info = _store_info(self.store) if self.store.is_dir() else None
        if info is None:
            if self.overwrite and self.store.is_dir() and not any(self.store.iterdir()):
                return False
            raise FileExistsError(
                f"`store` {str(self.store)!r} exists and is not a spatialclust imzML store; choose another path "
                "(nothing was replaced)."
            )
        if info.get("version") != STORE_VERSION:
            what = [f"store layout version {info.get('version')} (this spatialclust writes {STORE_VERSION})"]
        else:
            what = [
                f"{group} `{key}`: store {info.get(group, {}).get(key)!r}, now {value!r}"
                for group in ("source", "params")
                for key, value in self.attrs[group].items()
                if json.dumps(info.get(group, {}).get(key), sort_keys=True) != json.dumps(value, sort_keys=True)
            ]
        if not what:
            return True
        if self.overwrite:
            logger.info("Rebuilding the Zarr store %s: %s.", self.store, "; ".join(what))
            return False
        raise ValueError(
            f"The Zarr store {str(self.store)!r} was built from another file or with other parameters than "
            f"{str(self.imzml)!r} now: {'; '.join(what)}. Pass overwrite_store=True (CLI: --overwrite) to rebuild it, "
            "or choose another store path."
        )


class StoreWriter:
    """Writes binned rows into ``X`` of a new store, then the AnnData around it.

    Rows are collected in a buffer of one row of chunks; a full buffer is compressed and written
    by a background thread while the next one fills (two buffers), so binning and compression
    overlap.
    """

    def __init__(self, path: Path, shape: tuple[int, int], *, chunks: tuple[int, int]):
        import zarr
        from numcodecs import Blosc

        self.path = path
        self.group = zarr.open_group(path, mode="w-", zarr_format=ad.settings.zarr_write_format)
        rows, cols = (int(min(c, max(s, 1))) for c, s in zip(chunks, shape))
        # LZ4 without byte shuffling: on binned centroid data (mostly zeros) it both compresses
        # better and decodes several times faster than the default shuffled LZ4 (docs/benchmarks.md)
        self.X = self.group.create_array("X", shape=shape, chunks=(rows, cols), dtype="float32", fill_value=0.0,
                                         compressors=Blosc("lz4", 5, Blosc.NOSHUFFLE))
        self.buffers = [np.zeros((rows, shape[1]), dtype=np.float32) for _ in range(2)]
        self.current = self.start = self.filled = 0
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: Future | None = None

    def put(self, start: int, n_rows: int, binned) -> None:
        """Rows ``start:start+n_rows``, in order: a dense block, or the pair (flat cells
        ``row * n_cols + col``, sorted; their values)."""
        if start != self.start + self.filled:
            raise RuntimeError(f"Rows must arrive in order: expected row {self.start + self.filled}, got {start}.")
        n_cols = self.X.shape[1]
        dense = isinstance(binned, np.ndarray)
        if not dense:
            cells, sums = binned
            row_of = cells // n_cols
        done = 0
        while done < n_rows:
            take = min(n_rows - done, len(self.buffers[0]) - self.filled)
            buffer = self.buffers[self.current]
            if dense:
                buffer[self.filled : self.filled + take] = binned[done : done + take]
            else:
                lo, hi = np.searchsorted(row_of, [done, done + take])
                buffer.reshape(-1)[cells[lo:hi] + (self.filled - done) * n_cols] = sums[lo:hi]
            self.filled += take
            done += take
            if self.filled == len(self.buffers[0]):
                self._flush()

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises a failed write

    def _flush(self) -> None:
        if not self.filled:
            return
        self._wait()
        first, data = self.start, self.buffers[self.current][: self.filled]
        self.pending = self.pool.submit(self.X.__setitem__, slice(first, first + len(data)), data)
        self.start += self.filled
        self.filled = 0
        self.current ^= 1
        self.buffers[self.current].fill(0)  # its write finished in _wait above

    def result(self) -> None:
        """``X`` stays in the store: write what is buffered and wait until it is written."""
        self._flush()
        self._wait()
        if self.start != self.X.shape[0]:
            raise RuntimeError(f"{self.start} of {self.X.shape[0]} rows were written to {str(self.path)!r}.")

    def close(self) -> None:
        """Stop the writer thread (after its last write)."""
        self.pool.shutdown(wait=True)

    def finish(self, adata: ad.AnnData, plan: StorePlan) -> None:
        """Write ``obs``, ``var``, ``obsm``, ``uns`` of ``adata`` (whose ``X`` is None) around ``X``."""
        from anndata.io import write_elem

        self.X.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        for key in ("obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns"):
            elem = getattr(adata, key)
            write_elem(self.group, key, elem if key in ("obs", "var") else dict(elem))
        self.group.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0", STORE_ATTR: plan.attrs})


def read_imzml_store(store: str | os.PathLike) -> ad.AnnData:
    """Open a store written by ``read_imzml(..., store=...)``: ``X`` is a lazy dask array.

    Nothing of ``X`` is read until it is computed; ``adata.X[:, j].compute()`` reads the chunks of
    one ion image, ``adata.X[i0:i1].compute()`` those of one block of spectra.

    Parameters
    ----------
    store
        The ``.zarr`` directory.

    Returns
    -------
    AnnData as :func:`read_imzml` returns it (``obs["tic"]``, ``var["mz"]``, ``obsm["spatial"]``,
    ``uns["grid"]``, ``uns["source"]``), with ``X`` a float32 dask array backed by the store and
    ``uns["source"]["store"]`` its path.
    """
    import dask.array as da
    import zarr
    from anndata.io import read_elem

    store = Path(store)
    if not store.exists():
        raise FileNotFoundError(f"Zarr store {str(store)!r} does not exist.")
    if _store_info(store) is None:
        raise ValueError(f"{str(store)!r} is not a spatialclust imzML store (written by read_imzml(..., store=...)).")
    group = zarr.open_group(store, mode="r")
    X = group["X"]
    rows, cols = X.chunks
    cols *= int(max(1, min(-(-X.shape[1] // cols), _DASK_CHUNK_BYTES // (4 * rows * cols))))
    adata = ad.AnnData(
        X=da.from_zarr(X, chunks=(rows, min(cols, X.shape[1]))),
        obs=read_elem(group["obs"]), var=read_elem(group["var"]), obsm=read_elem(group["obsm"]),
        uns=_as_python(read_elem(group["uns"])),
    )
    adata.uns.setdefault(K.SOURCE, {})["store"] = str(store)
    return adata
