"""imzML <-> AnnData, with single-pass compiled binning.

imzML (Schramm et al. 2012, J. Proteomics 75:5106) stores spectra in a binary ``.ibd`` file
described by an XML ``.imzML`` file. ``read_imzml`` reads the XML once into an index of array
offsets (:mod:`._imzml_index`, which also checks the index against the ``.ibd``), memory-maps the
``.ibd``, and bins every chunk of spectra in one compiled pass (:mod:`._imzml_kernels`) instead of
building each ion image separately (pyimzml's ``getionimage`` reads the whole file once per ion).
Memory stays bounded by the output matrix plus two chunks; with ``store=...`` the binned chunks go to a chunked
Zarr store instead (:mod:`._zarr`), and memory is a few chunks whatever the file size. pyimzml's
``ImzMLWriter`` writes files.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._atomic import atomic_path
from .._compat import require
from .._logging import logger, progress
from ._images import feature_names_from_mz
from ._imzml_index import ImzMLError, ImzMLIndex, check_binary, file_digest, parse_index
from ._zarr import DEFAULT_CHUNKS, StorePlan, StoreWriter, read_imzml_store

Unit = Literal["Da", "ppm"]

#: Max number of (spectrum, bin) cells binned at once per chunk.
_CHUNK_CELLS = 2**24
#: Chunks with at most this many (spectrum, bin) cells per value are binned into a dense block.
_DENSE_CELLS_PER_VALUE = 4
#: Chunks of spectra binned at once (on threads: the compiled binner releases the GIL).
_BIN_THREADS = 2
#: Spectra whose first and last m/z are gathered at once by ``mz_extent``.
_EXTENT_BLOCK = 1 << 16


#: ``verify_checksum=None`` verifies the .ibd checksum up to this size.
_CHECKSUM_AUTO_BYTES = 2 * 2**30
#: Grids of up to this many cells are never refused by ``max_grid_ratio``.
_FREE_GRID_CELLS = 2**16


class NegativeIntensityWarning(UserWarning):
    """An imzML file holds negative intensities, kept as they are (``read_imzml(negative="warn")``)."""


@dataclass(frozen=True)
class _Bins:
    """Intervals ``[lower[i], upper[i]]`` (closed) or ``[lower[i], lower[i+1])`` (regular axis)."""

    lower: np.ndarray
    upper: np.ndarray
    centers: np.ndarray
    closed: bool  # True: peak windows (both ends inclusive, like pyimzml's getionimage)

    @cached_property
    def edges(self) -> np.ndarray:
        """``lower[0], end[0], lower[1], end[1], ...`` with half-open ends; non-decreasing for these axes."""
        end = np.nextafter(self.upper, np.inf) if self.closed else self.upper
        edges = np.stack([self.lower, end], axis=1).ravel()
        if np.any(np.diff(edges) < 0):
            raise ValueError("m/z bins must be sorted and must not overlap.")
        return edges

    @cached_property
    def table(self) -> tuple[np.ndarray, float, float]:
        """The lookup table of the compiled binner (:func:`._imzml_kernels.edge_table`)."""
        from ._imzml_kernels import edge_table

        return edge_table(self.edges)

    def index(self, mz: np.ndarray, *, outside: int = -1) -> np.ndarray:
        """Bin index of every m/z value, ``outside`` for values outside all bins (one binary search;
        used for the shared m/z axis of a continuous file and as the tests' reference)."""
        j = np.searchsorted(self.edges, mz, side="right")  # odd: inside bin j // 2
        return np.where(j & 1, j >> 1, outside)


def _tolerance(mz: np.ndarray, tol: float, unit: Unit) -> np.ndarray:
    if unit == "Da":
        return np.full_like(mz, float(tol))
    if unit == "ppm":
        return mz * float(tol) * 1e-6
    raise ValueError(f"Invalid option `{unit}` for the tolerance/bin unit. Valid options are: `Da`, `ppm`.")


def regular_bins(mz_min: float, mz_max: float, width: float, unit: Unit = "ppm") -> _Bins:
    """Regular m/z axis from ``mz_min`` to ``mz_max``: constant width in Da, or in ppm (geometric)."""
    if not width > 0:
        raise ValueError(f"`bin_width` must be > 0, got {width}.")
    if not mz_max > mz_min > 0:
        raise ValueError(f"m/z range must satisfy 0 < min < max, got ({mz_min}, {mz_max}).")
    if unit == "Da":
        n = int(np.ceil((mz_max - mz_min) / width))
        edges = mz_min + width * np.arange(n + 1)
    elif unit == "ppm":
        step = np.log1p(width * 1e-6)
        n = int(np.ceil(np.log(mz_max / mz_min) / step))
        edges = mz_min * np.exp(step * np.arange(n + 1))
    else:
        raise ValueError(f"Invalid option `{unit}` for `bin_unit`. Valid options are: `Da`, `ppm`.")
    edges[-1] = max(edges[-1], np.nextafter(mz_max, np.inf))  # mz_max itself falls in the last bin
    return _Bins(edges[:-1], edges[1:], (edges[:-1] + edges[1:]) / 2, closed=False)


def peak_bins(peaks: np.ndarray, tolerance: float, unit: Unit = "Da") -> _Bins:
    """Windows ``peak ± tolerance``; overlapping windows are split half-way between their peaks."""
    peaks = np.asarray(peaks, dtype=np.float64).ravel()
    if peaks.size == 0:
        raise ValueError("`peaks` is empty.")
    if not np.isfinite(peaks).all():
        raise ValueError("`peaks` contains non-finite values.")
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0, got {tolerance}.")
    if np.any(np.diff(peaks) <= 0):
        raise ValueError("`peaks` must be strictly increasing (sorted, without duplicates).")
    tol = _tolerance(peaks, tolerance, unit)
    lower, upper = peaks - tol, peaks + tol
    overlap = upper[:-1] >= lower[1:]
    if overlap.any():
        mid = (peaks[:-1] + peaks[1:]) / 2
        upper[:-1] = np.where(overlap, np.nextafter(mid, -np.inf), upper[:-1])
        lower[1:] = np.where(overlap, mid, lower[1:])
        logger.warning("%d pairs of peak windows overlap; split half-way between the peaks.", int(overlap.sum()))
    return _Bins(lower, upper, peaks, closed=True)


def _find_ibd(path: Path) -> Path:
    if path.is_dir():
        raise IsADirectoryError(f"imzML input {str(path)!r} is a directory; expected an .imzML file.")
    if not path.is_file():
        raise FileNotFoundError(f"imzML file {str(path)!r} does not exist.")
    ibd = path.with_suffix(".ibd")
    if not ibd.is_file():
        alt = [p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() == ".ibd" and p.is_file()]
        if not alt:
            raise FileNotFoundError(
                f"The binary data file of {str(path)!r} is missing: expected {str(ibd)!r} next to it."
            )
        ibd = alt[0]
    return ibd


@contextmanager
def _as_imzml_error(path: Path):
    """Any failure while decoding the file pair becomes an :class:`ImzMLError` naming the file."""
    try:
        yield
    except ImzMLError:
        raise
    except (ValueError, IndexError, OverflowError, KeyError, TypeError, UnicodeError, ET.ParseError) as err:
        raise ImzMLError(f"{str(path)!r} could not be read as imzML: {type(err).__name__}: {err}") from err


def _grid(index: ImzMLIndex, path: Path, z: int | None, max_grid_ratio: float | None):
    coords = index.coords
    zs = np.unique(coords[:, 2])
    if z is None:
        if len(zs) > 1:
            raise ImzMLError(f"{str(path)!r} is a 3-D dataset with z in {zs.tolist()}; choose one plane with `z`.")
        keep = np.ones(len(coords), dtype=bool)
    else:
        keep = coords[:, 2] == z
        if not keep.any():
            raise ValueError(f"`z`={z} selects no spectrum of {str(path)!r}; z values present: {zs.tolist()}.")
    xy = coords[keep, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    width, height = int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1  # Python ints: no overflow
    cells, n = width * height, len(xy)
    if max_grid_ratio is not None and cells > max(max_grid_ratio * n, _FREE_GRID_CELLS):
        raise ImzMLError(
            f"{str(path)!r}: the pixel grid would be {width:,} x {height:,} = {cells:.3g} cells for {n:,} spectra "
            f"({cells / n:.3g} cells per spectrum; limit `max_grid_ratio`={max_grid_ratio:g}). Coordinates span "
            f"x {int(lo[0])}-{int(hi[0])}, y {int(lo[1])}-{int(hi[1])}: a stray or corrupt coordinate? Pass "
            "max_grid_ratio=None (CLI: --set input.read.max_grid_ratio=null) to allow a sparse grid."
        )
    spatial = xy - lo
    # one integer per cell where the grid fits in int64
    key = spatial[:, 1] * width + spatial[:, 0] if cells < 2**62 else None
    if len(np.unique(spatial, axis=0) if key is None else np.unique(key)) != n:
        raise ImzMLError(f"{str(path)!r} has several spectra at the same (x, y) position.")
    px, py = index.pixel_size
    if px is not None and py is not None and not np.isclose(px, py):
        logger.warning("Pixels are not square (%s x %s µm); using the x size.", px, py)
    grid = {"shape": [height, width], "pixel_size": None if px is None else float(px)}
    return np.nonzero(keep)[0], spatial, {"grid": grid, "origin": lo.tolist()}


def read_imzml(
    path: str | os.PathLike,
    *,
    bin_width: float | None = None,
    bin_unit: Unit = "ppm",
    peaks: np.ndarray | list[float] | None = None,
    tolerance: float = 0.005,
    tolerance_unit: Unit = "Da",
    mz_range: tuple[float, float] | None = None,
    z: int | None = None,
    sparse: bool = False,
    chunk_size: int = 1024,
    verify_checksum: bool | None = None,
    negative: Literal["error", "warn", "clip"] = "error",
    max_grid_ratio: float | None = 10.0,
    store: str | os.PathLike | None = None,
    overwrite_store: bool = False,
    store_chunks: tuple[int, int] = DEFAULT_CHUNKS,
) -> ad.AnnData:
    """Read an imzML file (continuous or processed) into an AnnData of binned ion images.

    The XML index is read once (:mod:`._imzml_index`), the ``.ibd`` is memory-mapped, and the
    spectra are binned in chunks, each in one compiled walk over its spectra (two chunks at once). Corrupt or
    inconsistent input raises :class:`ImzMLError`; nothing is returned silently wrong: the ``.ibd``
    must carry the UUID of its XML and match its declared SHA-1/MD5 checksum, every array must lie
    inside the file after the 16-byte header without overlapping another (the one m/z array shared
    by all spectra of a continuous file excepted), m/z values must be finite and sorted, and
    intensities finite and (by default) non-negative.

    Parameters
    ----------
    path
        The ``.imzML`` file; its ``.ibd`` must lie next to it with the same stem.
    bin_width
        Width of a regular m/z axis, in ``bin_unit``. Intensities falling into a bin are summed.
    bin_unit
        ``"ppm"`` (geometric axis, constant relative width) or ``"Da"``.
    peaks
        Bin onto a peak list instead: feature ``i`` sums intensities within ``peaks[i] ± tolerance``
        (both ends included, as pyimzml's ``getionimage``); overlapping windows are split half-way.
    tolerance, tolerance_unit
        Half-width of the peak windows, in Da or ppm.
    mz_range
        ``(min, max)`` m/z kept. Default: the whole range of the data (or of ``peaks``).
    z
        Plane of a 3-D dataset.
    sparse
        Return ``X`` as CSR (for processed, sparse spectra).
    chunk_size
        Spectra per chunk (reduced automatically for very fine axes).
    verify_checksum
        Check the SHA-1 or MD5 digest the XML declares for the ``.ibd`` (in a background thread,
        while the spectra are read). ``None`` (default): check files up to 2 GiB, skip larger
        ones (hashing 2 GiB took 10-20 s on a loaded 2-core machine, overlapping the read; see
        "imzML reading" in docs/benchmarks.md).
    negative
        Negative intensities (no valid spectrum has them; a corrupt value or a baseline-subtracted
        export may): ``"error"`` (default) raises, ``"warn"`` keeps them and issues a
        :class:`NegativeIntensityWarning`, ``"clip"`` sets them to 0 (logged).
    max_grid_ratio
        Refuse a pixel grid (bounding box of the coordinates) with more than this many cells per
        spectrum (grids of up to 65,536 cells are always allowed), which is what one stray or
        corrupt coordinate produces. ``None`` allows any grid.
    store
        A ``.zarr`` directory: stream the binned spectra into this chunked Zarr store instead of
        memory (see :mod:`._zarr`) and return an AnnData whose ``X`` is a lazy dask array backed
        by it. A store already built from the same file (size, modification time, UUID) with the
        same binning is reused without reading the imzML; one built otherwise raises a
        ``ValueError`` saying what differs. The store is written under a temporary name and
        renamed when complete, so an interrupted conversion never leaves a store behind.
    overwrite_store
        Rebuild a ``store`` that was built from another file or with other binning parameters.
    store_chunks
        ``(pixels, m/z)`` of one Zarr chunk of ``X``: one block of spectra and one ion image
        each read a few chunks.

    Without ``bin_width`` and ``peaks``, a continuous file keeps its own m/z axis.

    Returns
    -------
    AnnData with ``X`` float32 (pixels x m/z; a dask array with ``store``), ``var["mz"]`` (bin centres or peaks),
    ``obsm["spatial"]`` (integer x, y from 0), ``obs["tic"]`` (sum of each raw spectrum),
    ``uns["grid"]`` (shape, pixel size in µm from the file) and ``uns["source"]``
    (file, mode, origin, empty spectra, checksum verified, binning).
    """
    path = Path(path)
    if negative not in ("error", "warn", "clip"):
        raise ValueError(f"Invalid option `{negative}` for `negative`. Valid options are: `error`, `warn`, `clip`.")
    if max_grid_ratio is not None and not max_grid_ratio > 0:
        raise ValueError(f"`max_grid_ratio` must be > 0 or None, got {max_grid_ratio}.")
    if mz_range is not None:
        lo, hi = (float(v) for v in mz_range)
        if not hi > lo:
            raise ValueError(f"`mz_range` must be (min, max) with min < max, got {mz_range}.")
    peak_axis = None if peaks is None else peak_bins(np.asarray(peaks), tolerance, tolerance_unit)
    ibd = _find_ibd(path)
    if store is not None:
        if sparse:
            raise ValueError("`sparse=True` cannot be combined with `store`: the store holds a chunked dense array "
                             "(compressed, so zero cells take little space).")
        params = {"bin_width": bin_width, "bin_unit": bin_unit, "peaks": None if peak_axis is None else peak_axis.centers,
                  "tolerance": tolerance, "tolerance_unit": tolerance_unit, "mz_range": mz_range, "z": z,
                  "negative": negative}
        plan = StorePlan(store, path, ibd, params=params, chunks=store_chunks, overwrite=overwrite_store)
        if plan.reusable():
            logger.info("Reusing the Zarr store %s of %s (same file, same binning).", plan.store, path.name)
            return read_imzml_store(plan.store)
    with ExitStack() as stack:
        # the checksum is computed in a thread from the moment the XML header declares it, while the
        # spectrum list is read and the spectra are binned; after an error nothing waits for it
        pool = ThreadPoolExecutor(max_workers=1)
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        digest = None

        def start_digest(checksum: tuple[str, str] | None) -> None:
            nonlocal digest
            if _verify_checksum(checksum, ibd, verify_checksum):
                digest = pool.submit(file_digest, ibd, checksum[0])

        with _as_imzml_error(path):
            index = parse_index(path, on_checksum=start_digest)
            shared = check_binary(index, path, ibd)
        spectra, spatial, geometry = _grid(index, path, z, max_grid_ratio)
        verify = digest is not None
        tmp_store = None if store is None else stack.enter_context(atomic_path(plan.store, overwrite=True))
        try:
            with _as_imzml_error(path):
                spectra_io = _Spectra(index, ibd, path)
                shared_axis = spectra_io.shared_axis(spectra) if shared else None
                extent = None
                if peak_axis is None and bin_width is not None:
                    extent = (shared_axis[0], shared_axis[-1]) if shared else spectra_io.mz_extent(spectra)
            bins, binning, shared_col = _mz_axis(
                path, peak_axis=peak_axis, bin_width=bin_width, bin_unit=bin_unit, extent=extent,
                shared_axis=shared_axis, mz_range=mz_range, tolerance=tolerance, tolerance_unit=tolerance_unit,
            )
            shape = (len(spectra), len(bins.centers))
            sink = (StoreWriter(tmp_store, shape, chunks=store_chunks) if store is not None
                    else _SparseRows(shape) if sparse else _DenseRows(shape))
            stack.callback(getattr(sink, "close", lambda: None))
            with _as_imzml_error(path):
                tic, n_empty, n_negative = spectra_io.bin(
                    spectra, bins, shared_col, chunk_size=chunk_size, negative=negative, put=sink.put,
                    rows=getattr(sink, "rows", None),
                )
        except ImzMLError as err:  # a corrupt value is most clearly reported as a checksum mismatch
            _check_digest(digest, index, path, ibd, cause=err)
            raise
        _check_digest(digest, index, path, ibd)

        if n_empty == len(spectra):
            raise ImzMLError(f"All {n_empty} spectra of {str(path)!r} are empty.")
        if n_empty:
            logger.warning("%d of %d spectra of %s are empty (all-zero pixels).", n_empty, len(spectra), path.name)
        if n_negative and negative == "warn":
            warnings.warn(NegativeIntensityWarning(f"{str(path)!r} has {n_negative} negative intensities (kept)."),
                          stacklevel=2)
        elif n_negative:
            logger.info("Set %d negative intensities of %s to 0.", n_negative, path.name)
        obs = pd.DataFrame(
            {K.TIC: tic}, index=pd.Index([f"{x}_{y}" for x, y in spatial.tolist()], name="pixel")
        )
        var = pd.DataFrame({K.MZ: bins.centers}, index=pd.Index(feature_names_from_mz(bins.centers)))
        adata = ad.AnnData(X=sink.result(), obs=obs, var=var)
        adata.obsm[K.SPATIAL] = spatial
        adata.uns[K.GRID] = geometry["grid"]
        adata.uns[K.SOURCE] = {
            "file": str(path),
            "reader": "read_imzml",
            "mode": "continuous" if shared else "processed",
            "origin": geometry["origin"],
            "n_empty_spectra": int(n_empty),
            "checksum_verified": bool(verify),
            "mz_range": None if mz_range is None else [float(v) for v in mz_range],
            **binning,
        }
        if store is not None:
            sink.finish(adata, plan)
    logger.info(
        "Read %s: %d spectra -> %d m/z bins on a %d x %d grid%s",
        path.name, adata.n_obs, adata.n_vars, *geometry["grid"]["shape"],
        "" if store is None else f", stored in {plan.store}",
    )
    return adata if store is None else read_imzml_store(plan.store)


class _DenseRows:
    """Collects binned chunks of rows into one dense float32 matrix."""

    def __init__(self, shape: tuple[int, int]):
        self.X = np.zeros(shape, dtype=np.float32)

    def put(self, start: int, n_rows: int, binned) -> None:
        rows = self.rows(start, n_rows)
        if isinstance(binned, np.ndarray):
            rows[:] = binned
        else:
            cells, sums = binned
            rows.reshape(-1)[cells] = sums

    def rows(self, start: int, n_rows: int) -> np.ndarray:
        return self.X[start : start + n_rows]

    def result(self) -> np.ndarray:
        return self.X


class _SparseRows:
    """Collects binned chunks of rows into one CSR matrix."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.blocks = shape, []

    def put(self, start: int, n_rows: int, binned) -> None:
        if isinstance(binned, np.ndarray):
            block = sp.csr_matrix(binned.astype(np.float32))
        else:
            cells, sums = binned
            n_bins = self.shape[1]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(cells // n_bins, minlength=n_rows))])
            block = sp.csr_matrix((sums.astype(np.float32), cells % n_bins, indptr), shape=(n_rows, n_bins))
            block.eliminate_zeros()
        self.blocks.append(block)

    def result(self) -> sp.csr_matrix:
        if not self.blocks:
            return sp.csr_matrix(self.shape, dtype=np.float32)
        return sp.vstack(self.blocks, format="csr")


def _mz_axis(path, *, peak_axis, bin_width, bin_unit, extent, shared_axis, mz_range, tolerance, tolerance_unit):
    """The output bins, their description for ``uns``, and the column of each shared-axis value."""
    shared = shared_axis is not None
    if peak_axis is not None:
        bins = peak_axis
        binning = {"peaks": len(bins.centers), "tolerance": tolerance, "tolerance_unit": tolerance_unit}
    elif bin_width is not None:
        lo, hi = mz_range if mz_range is not None else extent
        bins = regular_bins(float(lo), float(hi), bin_width, bin_unit)
        binning = {"bin_width": bin_width, "bin_unit": bin_unit}
    elif shared:
        bins = _Bins(shared_axis, shared_axis, shared_axis, closed=True)
        binning = {"native": True}
    else:
        raise ValueError(
            f"{str(path)!r} is a processed imzML file (each spectrum has its own m/z values): "
            "pass `bin_width` (with `bin_unit`) or `peaks` (with `tolerance`) to bin it; on the "
            "command line: --set input.read.bin_width=10 --set input.read.bin_unit=ppm "
            "(or --set input.read.peaks=[...])."
        )
    keep = np.ones(len(bins.centers), dtype=bool)
    if mz_range is not None:
        keep = (bins.centers >= float(mz_range[0])) & (bins.centers <= float(mz_range[1]))
        if not keep.any():
            raise ValueError(
                f"`mz_range`={tuple(mz_range)} selects no m/z: the axis spans "
                f"{bins.centers.min():.4f}-{bins.centers.max():.4f}."
            )
    shared_col = None
    if binning.get("native"):  # each value of the shared axis is its own column
        shared_col = np.where(keep, np.cumsum(keep) - 1, -1)
    bins = _Bins(bins.lower[keep], bins.upper[keep], bins.centers[keep], bins.closed)
    if shared and shared_col is None:
        shared_col = bins.index(shared_axis)
    return bins, binning, shared_col


def _check_digest(digest, index: ImzMLIndex, path: Path, ibd: Path, cause: Exception | None = None) -> None:
    if digest is None or digest.result() == index.checksum[1]:
        return
    algo = {"sha1": "SHA-1", "md5": "MD5"}[index.checksum[0]]
    raise ImzMLError(
        f"Checksum mismatch: {str(path)!r} declares {algo} {index.checksum[1]} for {str(ibd)!r}, "
        f"but the file's {algo} is {digest.result()}: the .ibd is corrupt or was modified."
    ) from cause


def _verify_checksum(checksum: tuple[str, str] | None, ibd: Path, verify: bool | None) -> bool:
    if verify is False:
        return False
    if checksum is None:
        (logger.warning if verify else logger.debug)("%s declares no .ibd checksum; not verified.", ibd.name)
        return False
    if verify is None and ibd.stat().st_size > _CHECKSUM_AUTO_BYTES:
        logger.info("%s is larger than %.0f GiB: checksum not verified (pass verify_checksum=True to verify).",
                    ibd.name, _CHECKSUM_AUTO_BYTES / 2**30)
        return False
    return True


class _Spectra:
    """The spectra of a checked index, read from the memory-mapped ``.ibd``.

    The pages of each chunk are handed back to the kernel once it is binned (``MADV_DONTNEED``;
    they stay in the page cache), so the resident memory of a pass is one chunk, not the file.
    """

    def __init__(self, index: ImzMLIndex, ibd: Path, path: Path):
        self.index, self.path = index, path
        with open(ibd, "rb") as fh:
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        # arrays may start at any byte: one view of the file per alignment, and where each array lies in it
        self.mz_views, self.mz_view, self.mz_at = self._aligned(index.mz_offset, index.mz_dtype)
        self.int_views, self.int_view, self.int_at = self._aligned(index.int_offset, index.int_dtype)

    def _aligned(self, offsets: np.ndarray, dtype: np.dtype):
        """The views of the mapped file as ``dtype`` starting at bytes ``0 .. itemsize - 1``; the view
        and the element at which each of ``offsets`` lies."""
        size = dtype.itemsize
        views = tuple(np.frombuffer(self.map, dtype, count=(len(self.map) - k) // size, offset=k) for k in range(size))
        view = offsets % size
        return views, view, (offsets - view) // size

    def _release(self, lo: int, hi: int) -> None:
        """Drop the mapped pages of bytes ``[lo, hi)`` from this process (a no-op where unsupported)."""
        if hasattr(self.map, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            lo -= lo % mmap.PAGESIZE
            self.map.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(self.map)) - lo)

    def _release_arrays(self, spectra: np.ndarray) -> None:
        """Drop the mapped pages of the arrays of ``spectra``."""
        ix = self.index
        self._release(int(min(ix.mz_offset[spectra].min(), ix.int_offset[spectra].min())),
                      int(max((ix.mz_offset[spectra] + ix.mz_length[spectra] * ix.mz_dtype.itemsize).max(),
                              (ix.int_offset[spectra] + ix.int_length[spectra] * ix.int_dtype.itemsize).max())))

    def _values(self, spectra: np.ndarray, kind: str) -> np.ndarray:
        """The m/z or intensity arrays of ``spectra``, concatenated (one copy of each array; a
        gather through an index array was slower for spectra of hundreds of values)."""
        ix = self.index
        offset, length, dtype = (
            (ix.mz_offset, ix.mz_length, ix.mz_dtype) if kind == "mz" else (ix.int_offset, ix.int_length, ix.int_dtype)
        )
        buf = self.map
        return np.concatenate([np.frombuffer(buf, dtype, count=int(n), offset=int(o))
                               for o, n in zip(offset[spectra], length[spectra])])

    def shared_axis(self, spectra: np.ndarray) -> np.ndarray:
        """The m/z axis all non-empty spectra share (continuous mode)."""
        used = spectra[self.index.mz_length[spectra] > 0]
        if len(used) == 0:
            raise ImzMLError(f"All {len(spectra)} spectra of {str(self.path)!r} are empty.")
        mz = self._values(used[:1], "mz").astype(np.float64)
        _check_chunk_mz(mz, np.zeros(1, np.int64), used[:1], self.path)
        return mz

    def mz_extent(self, spectra: np.ndarray) -> tuple[float, float]:
        """Smallest and largest m/z of a processed file, from the first and last value of each array
        (gathered for blocks of spectra at once).

        (Finiteness and order of every m/z are checked when the spectra are binned.)"""
        ix = self.index
        used = spectra[ix.mz_length[spectra] > 0]
        if len(used) == 0:
            raise ImzMLError(f"All {len(spectra)} spectra of {str(self.path)!r} are empty.")
        size = ix.mz_dtype.itemsize
        data = np.frombuffer(self.map, np.uint8)
        lo, hi = np.inf, -np.inf
        for start in range(0, len(used), _EXTENT_BLOCK):
            ids = used[start : start + _EXTENT_BLOCK]
            first_at = ix.mz_offset[ids]
            last_at = first_at + (ix.mz_length[ids] - 1) * size
            ends = data[np.concatenate([first_at, last_at])[:, None] + np.arange(size)]
            ends = ends.view(ix.mz_dtype).ravel().astype(np.float64)
            self._release(int(first_at.min()), int(last_at.max()) + size)
            if not np.isfinite(ends).all():
                bad = ids[int(np.argmax(~np.isfinite(ends))) % len(ids)]
                raise ImzMLError(f"{str(self.path)!r}: spectrum {int(bad)} has non-finite m/z values.")
            lo, hi = min(lo, ends[: len(ids)].min()), max(hi, ends[len(ids) :].max())
        return float(lo), float(hi)

    def bin(self, spectra: np.ndarray, bins: _Bins, shared_col: np.ndarray | None, *, chunk_size: int,
            negative: str, put, rows=None) -> tuple[np.ndarray, int, int]:
        """One pass over the spectra, a chunk at a time (see :meth:`_bin_chunk`), ``_BIN_THREADS``
        chunks at once (the compiled binner releases the GIL).

        ``put(first_row, n_rows, binned)`` receives the chunks in row order: ``binned`` is
        either a dense float32 (n_rows, n_bins) block or a pair (cells, sums) of the flat index
        (row * n_bins + column) and the float64 sum of every non-empty cell. With
        ``rows(first_row, n_rows)`` (the dense in-memory matrix: its zeroed rows), dense chunks
        are binned straight into those rows instead (no block to allocate and copy, no ``put``).
        Returns the TIC, the empty and the negative counts.
        """
        n_bins, n = len(bins.centers), len(spectra)
        chunk = max(1, min(chunk_size, _CHUNK_CELLS // max(n_bins, 1)))
        tic = np.zeros(n, dtype=np.float64)
        n_empty = n_negative = 0
        starts = range(0, n, chunk)
        pending: deque = deque()

        def take() -> None:
            nonlocal n_empty, n_negative
            start, future = pending.popleft()
            binned, chunk_tic, empty, negatives = future.result()
            tic[start : start + len(chunk_tic)] = chunk_tic
            n_empty, n_negative = n_empty + empty, n_negative + negatives
            if binned is not None:
                put(start, len(chunk_tic), binned)

        with ThreadPoolExecutor(max_workers=_BIN_THREADS) as pool:
            try:
                for start in progress(starts, desc=f"Reading {self.path.name}", total=len(starts)):
                    ids = spectra[start : start + chunk]
                    out = None if rows is None else lambda n_rows, start=start: rows(start, n_rows)
                    pending.append((start, pool.submit(self._bin_chunk, ids, bins, shared_col, negative, out)))
                    if len(pending) == _BIN_THREADS:
                        take()
                while pending:
                    take()
            finally:
                for _, future in pending:  # after an error: do not start the chunks not yet begun
                    future.cancel()
        return tic, n_empty, n_negative

    def _bin_chunk(self, idx: np.ndarray, bins: _Bins, shared_col: np.ndarray | None, negative: str, out=None):
        """Bin the spectra ``idx`` with the compiled binner (:func:`._imzml_kernels.bin_spectra`: one
        merge-style walk per spectrum over the mapped file, sums in float64 in value order), into a
        dense block when the chunk has few (spectrum, bin) cells per value, otherwise into the
        non-empty cells (fine axes, sparse spectra: a dense block would dwarf the values). Returns
        the block or the pair (cells: row * n_bins + column, in order; float64 sums), the TIC of
        each spectrum, the number of empty spectra and of negative intensities. ``out(n_rows)``, if
        given, returns the zeroed rows to bin a dense chunk into (the block returned is then None)."""
        from . import _imzml_kernels as kernels

        n_bins = len(bins.centers)
        lengths = self.index.int_length[idx]
        n_values = int(lengths.sum())
        dense = len(idx) * (n_bins + 1) <= _DENSE_CELLS_PER_VALUE * n_values
        in_place = dense and out is not None
        block = out(len(idx)) if in_place else np.zeros((len(idx), n_bins) if dense else (0, 0), dtype=np.float32)
        cells = np.empty(0 if dense else n_values, dtype=np.int64)
        sums = np.empty(len(cells), dtype=np.float64)
        tic = np.empty(len(idx), dtype=np.float64)
        status, where, n_cells, n_negative = kernels.bin_spectra(
            self.mz_views, self.mz_view[idx], self.mz_at[idx], self.int_views, self.int_view[idx], self.int_at[idx],
            lengths, bins.edges, *bins.table, np.zeros(0, np.int64) if shared_col is None else shared_col,
            negative == "error", negative == "clip", block, cells, sums, tic,
        )
        used = lengths > 0
        if status != kernels.BIN_OK:
            self._explain(idx[used], lengths[used], shared_col is not None, negative)
            raise ImzMLError(f"{str(self.path)!r}: spectrum {int(idx[where])} has {kernels.BIN_PROBLEMS[status]}.")
        if used.any():
            self._release_arrays(idx[used])
        binned = None if in_place else block if dense else (cells[:n_cells], sums[:n_cells])
        return binned, tic, int((~used).sum()), int(n_negative)

    def _explain(self, ids: np.ndarray, lengths: np.ndarray, shared: bool, negative: str) -> None:
        """Raise the :class:`ImzMLError` that says what is wrong with the values of spectra ``ids``
        (non-finite or negative intensities, non-finite or unsorted m/z), counted over all of them."""
        path = self.path
        seg = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        inten = self._values(ids, "int")
        if self.index.int_dtype.kind == "f" and not np.isfinite(inten).all():
            first = int(np.argmax(~np.isfinite(inten)))
            raise ImzMLError(
                f"{str(path)!r}: {int((~np.isfinite(inten)).sum())} non-finite (NaN/inf) intensities, "
                f"first in spectrum {_spectrum_at(first, seg, ids)}."
            )
        below = inten < 0
        if negative == "error" and below.any():
            first = int(np.argmax(below))
            raise ImzMLError(
                f"{str(path)!r}: {int(below.sum())} negative intensities in this chunk, first in "
                f"spectrum {_spectrum_at(first, seg, ids)} ({inten[first]:.6g}). Pass negative='clip' (set to 0) "
                "or 'warn' (keep) if the file is expected to hold them (CLI: --set input.read.negative=clip)."
            )
        if not shared:
            _check_chunk_mz(self._values(ids, "mz").astype(np.float64, copy=False), seg, ids, path)


def _spectrum_at(position: int, seg: np.ndarray, ids: np.ndarray) -> int:
    """The spectrum of a position in the concatenated values of spectra ``ids`` starting at ``seg``."""
    return int(ids[np.searchsorted(seg, position, side="right") - 1])


def _check_chunk_mz(mz: np.ndarray, seg: np.ndarray, ids: np.ndarray, path: Path) -> None:
    """Finite and sorted m/z within each spectrum of the concatenated spectra ``ids`` (starting at ``seg``)."""
    if not (np.isfinite(mz.min()) and np.isfinite(mz.max())):
        first = int(np.argmax(~np.isfinite(mz)))
        raise ImzMLError(f"{str(path)!r}: spectrum {_spectrum_at(first, seg, ids)} has non-finite m/z values.")
    step = np.diff(mz)
    step[seg[1:] - 1] = 0  # a new spectrum may start lower
    if step.min(initial=0) < 0:
        first = _spectrum_at(int(np.argmax(step < 0)) + 1, seg, ids)
        raise ImzMLError(f"{str(path)!r}: the m/z values of spectrum {first} are not sorted in increasing order.")


def write_imzml(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    mode: Literal["continuous", "processed"] = "continuous",
    layer: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an AnnData with ``var["mz"]`` and ``obsm["spatial"]`` as an imzML + ibd pair.

    Both files are written under temporary names and renamed into place only when complete.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = m/z).
    path
        Destination ``.imzML`` file; the ``.ibd`` is written next to it.
    mode
        ``"continuous"``: one shared m/z axis; ``"processed"``: each spectrum keeps only its non-zero
        peaks (smaller for sparse data).
    layer
        Write this layer instead of ``X``.
    overwrite
        Replace existing files.

    Returns
    -------
    The path of the written ``.imzML``.
    """
    ImzMLWriter = require("pyimzml.ImzMLWriter", package="pyimzml", purpose="writing imzML").ImzMLWriter
    if mode not in ("continuous", "processed"):
        raise ValueError(f"Invalid option `{mode}` for `mode`. Valid options are: `continuous`, `processed`.")
    if K.MZ not in adata.var:
        raise ValueError(f"`adata.var[{K.MZ!r}]` is required to write imzML (the m/z of each feature).")
    if K.SPATIAL not in adata.obsm:
        raise ValueError(f"`adata.obsm[{K.SPATIAL!r}]` (integer x, y grid positions) is required to write imzML.")
    path = Path(path)
    if path.suffix.lower() != ".imzml":
        path = path.with_suffix(".imzML")
    ibd = path.with_suffix(".ibd")
    if not overwrite and (path.exists() or ibd.exists()):
        raise FileExistsError(f"{str(path)!r} or its .ibd already exists; pass overwrite=True to replace them.")
    mz = np.asarray(adata.var[K.MZ], dtype=np.float64)
    order = np.argsort(mz, kind="stable")
    mz = mz[order]
    if not np.isfinite(mz).all():
        raise ValueError("`adata.var['mz']` contains non-finite values.")
    coords = np.asarray(adata.obsm[K.SPATIAL])
    if not np.issubdtype(coords.dtype, np.integer):
        raise ValueError("`adata.obsm['spatial']` must hold integer grid positions to write imzML.")
    X = adata.layers[layer] if layer is not None else adata.X
    pixel_size = (adata.uns.get(K.GRID) or {}).get("pixel_size")

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp_name:
        tmp = Path(tmp_name)
        tmp_imzml = tmp / path.name
        with ImzMLWriter(str(tmp_imzml), mode=mode, mz_dtype=np.float64, intensity_dtype=np.float32) as writer:
            for i in progress(range(adata.n_obs), desc=f"Writing {path.name}", total=adata.n_obs):
                row = X[i]
                row = (row.toarray() if sp.issparse(row) else np.asarray(row)).ravel()[order].astype(np.float32)
                if not np.isfinite(row).all():
                    raise ValueError(f"Pixel {adata.obs_names[i]!r} has non-finite intensities; cannot write imzML.")
                if mode == "processed":
                    nz = row != 0
                    nz[0] |= not nz.any()  # pyimzml cannot write an empty spectrum: keep one explicit zero
                    spec_mz, spec_int = mz[nz], row[nz]
                else:
                    spec_mz, spec_int = mz, row
                x, y = (int(c) + 1 for c in coords[i, :2])
                writer.addSpectrum(spec_mz, spec_int, (x, y, 1))
        if pixel_size is not None:
            _add_pixel_size(tmp_imzml, float(pixel_size))
        # .ibd first: a reader never sees a new .imzML next to an old .ibd
        os.replace(tmp / ibd.name, ibd)
        os.replace(tmp_imzml, path)
    logger.info("Wrote %d spectra (%s mode) to %s", adata.n_obs, mode, path)
    return path


def _add_pixel_size(imzml: Path, pixel_size: float) -> None:
    """Add the pixel size (IMS:1000046/47, µm) to the scan settings written by pyimzml."""
    text = imzml.read_text()
    anchor = re.search(r'(\s*)<cvParam[^>]*accession="IMS:1000043"[^>]*/>', text)
    if anchor is None:  # pragma: no cover - pyimzml always writes it
        return
    indent = anchor.group(1)
    params = "".join(
        f'{indent}<cvParam cvRef="IMS" accession="IMS:{acc}" name="{name}" value="{pixel_size}" '
        'unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>'
        for acc, name in (("1000046", "pixel size (x)"), ("1000047", "pixel size y"))  # names as in the IMS ontology
    )
    imzml.write_text(text[: anchor.end()] + params + text[anchor.end() :])
