"""imzML <-> AnnData, with single-pass vectorised binning.

imzML (Schramm et al. 2012, J. Proteomics 75:5106) stores spectra in a binary ``.ibd`` file
described by an XML ``.imzML`` file; ``pyimzml`` parses the XML and reads single spectra.
``read_imzml`` streams all spectra once, in chunks, and bins every chunk with one
``np.bincount`` instead of building each ion image separately (``getionimage`` per m/z reads the
whole file once per ion). Memory stays bounded by the output matrix plus one chunk.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._compat import require
from .._logging import logger, progress
from ._images import feature_names_from_mz

Unit = Literal["Da", "ppm"]

#: Max number of (spectrum, bin) cells accumulated at once per chunk.
_CHUNK_CELLS = 2**24


class ImzMLError(ValueError):
    """An imzML/ibd file pair is missing, corrupt, inconsistent or holds invalid values."""


@dataclass(frozen=True)
class _Bins:
    """Intervals ``[lower[i], upper[i]]`` (closed) or ``[lower[i], lower[i+1])`` (regular axis)."""

    lower: np.ndarray
    upper: np.ndarray
    centers: np.ndarray
    closed: bool  # True: peak windows (both ends inclusive, like pyimzml's getionimage)

    def index(self, mz: np.ndarray) -> np.ndarray:
        """Bin index of every m/z value, -1 outside all bins."""
        idx = np.searchsorted(self.lower, mz, side="right") - 1
        valid = idx >= 0
        inside = np.zeros_like(valid)
        inside[valid] = mz[valid] <= self.upper[idx[valid]] if self.closed else mz[valid] < self.upper[idx[valid]]
        return np.where(inside, idx, -1)


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


def _read_uuid(imzml: Path) -> str | None:
    """The 'universally unique identifier' (IMS:1000080) from the head of the imzML XML."""
    with open(imzml, "rb") as fh:
        head = fh.read(1 << 16).decode("utf-8", errors="replace")
    m = re.search(r'accession="IMS:1000080"[^>]*value="\{?([0-9A-Fa-f-]{32,36})\}?"', head)
    return m.group(1).replace("-", "").lower() if m else None


def _open_parser(path: Path):
    ImzMLParser = require("pyimzml.ImzMLParser", package="pyimzml", purpose="reading imzML").ImzMLParser
    if not path.is_file():
        raise FileNotFoundError(f"imzML file {str(path)!r} does not exist.")
    ibd = path.with_suffix(".ibd")
    if not ibd.is_file():
        alt = [p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() == ".ibd"]
        if not alt:
            raise FileNotFoundError(
                f"The binary data file of {str(path)!r} is missing: expected {str(ibd)!r} next to it."
            )
        ibd = alt[0]
    handle = open(ibd, "rb")
    try:
        # pyimzml warns about harmless ontology quirks of many converters: keep them in the debug log
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser = ImzMLParser(str(path), ibd_file=handle)  # lxml if installed, else ElementTree
    except (SyntaxError, ValueError, KeyError, AttributeError, TypeError) as err:  # XML errors subclass SyntaxError
        handle.close()
        raise ImzMLError(f"{str(path)!r} is not a valid imzML file: {err}") from err
    except BaseException:
        handle.close()
        raise
    for w in caught:
        logger.debug("pyimzml: %s", w.message)
    return parser, ibd


def _check_binary(parser, path: Path, ibd: Path) -> None:
    """UUID match and file size large enough for every referenced array."""
    expected = _read_uuid(path)
    with open(ibd, "rb") as fh:
        found = fh.read(16).hex()
    if expected is not None and expected != found:
        raise ImzMLError(
            f"UUID mismatch: {str(path)!r} declares {expected} but {str(ibd)!r} starts with {found}; "
            "the .imzML and .ibd files do not belong together."
        )
    if not parser.coordinates:
        raise ImzMLError(f"{str(path)!r} contains no spectra.")
    mz_size = np.dtype(parser.mzPrecision).itemsize
    int_size = np.dtype(parser.intensityPrecision).itemsize
    needed = max(
        max(np.asarray(parser.mzOffsets) + np.asarray(parser.mzLengths) * mz_size),
        max(np.asarray(parser.intensityOffsets) + np.asarray(parser.intensityLengths) * int_size),
    )
    size = ibd.stat().st_size
    if size < needed:
        raise ImzMLError(
            f"{str(ibd)!r} is truncated: the imzML file references {int(needed)} bytes but the file has {size}."
        )
    if np.any(np.asarray(parser.mzLengths) != np.asarray(parser.intensityLengths)):
        i = int(np.argmax(np.asarray(parser.mzLengths) != np.asarray(parser.intensityLengths)))
        raise ImzMLError(f"{str(path)!r}: spectrum {i} has m/z and intensity arrays of different lengths.")


def _grid(parser, path: Path, z: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
    coords = np.asarray(parser.coordinates, dtype=np.int64)
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
    origin = xy.min(axis=0)
    spatial = xy - origin
    flat = spatial[:, 1] * (spatial[:, 0].max() + 1) + spatial[:, 0]
    if len(np.unique(flat)) != len(flat):
        raise ImzMLError(f"{str(path)!r} has several spectra at the same (x, y) position.")
    shape = [int(spatial[:, 1].max() + 1), int(spatial[:, 0].max() + 1)]
    meta = getattr(parser, "imzmldict", {}) or {}
    px, py = meta.get("pixel size x"), meta.get("pixel size y")
    if px is not None and py is not None and not np.isclose(px, py):
        logger.warning("Pixels are not square (%s x %s µm); using the x size.", px, py)
    grid = {"shape": shape, "pixel_size": None if px is None else float(px)}
    return np.nonzero(keep)[0], spatial, {"grid": grid, "origin": origin.tolist()}


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
) -> ad.AnnData:
    """Read an imzML file (continuous or processed) into an AnnData of binned ion images.

    The spectra are read in one streaming pass; each chunk of spectra is binned with a single
    vectorised ``np.bincount``.

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

    Without ``bin_width`` and ``peaks``, a continuous file keeps its own m/z axis.

    Returns
    -------
    AnnData with ``X`` float32 (pixels x m/z), ``var["mz"]`` (bin centres or peaks),
    ``obsm["spatial"]`` (integer x, y from 0), ``obs["tic"]`` (sum of each raw spectrum),
    ``uns["grid"]`` (shape, pixel size in µm from the file) and ``uns["source"]``.
    """
    path = Path(path)
    parser, ibd = _open_parser(path)
    try:
        _check_binary(parser, path, ibd)
        spectra, spatial, geometry = _grid(parser, path, z)
        continuous = len(set(parser.mzOffsets)) == 1
        if mz_range is not None:
            lo, hi = (float(v) for v in mz_range)
            if not hi > lo:
                raise ValueError(f"`mz_range` must be (min, max) with min < max, got {mz_range}.")

        # --- the m/z axis -------------------------------------------------------------
        if peaks is not None:
            bins = peak_bins(np.asarray(peaks), tolerance, tolerance_unit)
            binning = {"peaks": len(bins.centers), "tolerance": tolerance, "tolerance_unit": tolerance_unit}
        elif bin_width is not None:
            data_lo, data_hi = _mz_extent(parser, spectra, continuous, path)
            lo_, hi_ = mz_range if mz_range is not None else (data_lo, data_hi)
            bins = regular_bins(float(lo_), float(hi_), bin_width, bin_unit)
            binning = {"bin_width": bin_width, "bin_unit": bin_unit}
        elif continuous:
            mz_axis = np.asarray(parser.getspectrum(int(spectra[0]))[0], dtype=np.float64)
            _check_mz(mz_axis, path, int(spectra[0]))
            bins = _Bins(mz_axis, mz_axis, mz_axis, closed=True)
            binning = {"native": True}
        else:
            raise ValueError(
                f"{str(path)!r} is a processed imzML file (each spectrum has its own m/z values): "
                "pass `bin_width` (with `bin_unit`) or `peaks` (with `tolerance`) to bin it."
            )
        if mz_range is not None:
            keep = (bins.centers >= lo) & (bins.centers <= hi)
            if not keep.any():
                raise ValueError(
                    f"`mz_range`={tuple(mz_range)} selects no m/z: the axis spans "
                    f"{bins.centers.min():.4f}-{bins.centers.max():.4f}."
                )
            bins = _Bins(bins.lower[keep], bins.upper[keep], bins.centers[keep], bins.closed)
        X, tic, n_empty = _stream(parser, path, spectra, bins, continuous, sparse, chunk_size)
    finally:
        parser.m.close()

    if n_empty == len(spectra):
        raise ImzMLError(f"All {n_empty} spectra of {str(path)!r} are empty.")
    if n_empty:
        logger.warning("%d of %d spectra of %s are empty (all-zero pixels).", n_empty, len(spectra), path.name)
    obs = pd.DataFrame(
        {K.TIC: tic}, index=pd.Index([f"{x}_{y}" for x, y in spatial], name="pixel")
    )
    var = pd.DataFrame({K.MZ: bins.centers}, index=pd.Index(feature_names_from_mz(bins.centers)))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm[K.SPATIAL] = spatial
    adata.uns[K.GRID] = geometry["grid"]
    adata.uns[K.SOURCE] = {
        "file": str(path),
        "reader": "read_imzml",
        "mode": "continuous" if continuous else "processed",
        "origin": geometry["origin"],
        "n_empty_spectra": int(n_empty),
        "mz_range": None if mz_range is None else [float(v) for v in mz_range],
        **binning,
    }
    logger.info(
        "Read %s: %d spectra -> %d m/z bins on a %d x %d grid",
        path.name, adata.n_obs, adata.n_vars, *geometry["grid"]["shape"],
    )
    return adata


def _check_mz(mz: np.ndarray, path: Path, index: int) -> None:
    if not np.isfinite(mz).all():
        raise ImzMLError(f"{str(path)!r}: spectrum {index} has non-finite m/z values.")
    if np.any(np.diff(mz) < 0):
        raise ImzMLError(f"{str(path)!r}: the m/z values of spectrum {index} are not sorted in increasing order.")


def _check_chunk_mz(mz: np.ndarray, row: np.ndarray, idx: np.ndarray, path: Path) -> None:
    """Vectorised :func:`_check_mz` over the concatenated spectra of a chunk."""
    finite = np.isfinite(mz)
    if not finite.all():
        raise ImzMLError(f"{str(path)!r}: spectrum {int(idx[row[~finite][0]])} has non-finite m/z values.")
    decreasing = (np.diff(mz) < 0) & (row[1:] == row[:-1])
    if decreasing.any():
        first = int(idx[row[1:][decreasing][0]])
        raise ImzMLError(f"{str(path)!r}: the m/z values of spectrum {first} are not sorted in increasing order.")


def _mz_extent(parser, spectra: np.ndarray, continuous: bool, path: Path) -> tuple[float, float]:
    """Smallest and largest m/z of the data (reads only the m/z arrays of a processed file)."""
    if continuous:
        mz = np.asarray(parser.getspectrum(int(spectra[0]))[0])
        _check_mz(mz, path, int(spectra[0]))
        return float(mz[0]), float(mz[-1])
    lo, hi = np.inf, -np.inf
    dtype = np.dtype(parser.mzPrecision)
    fh = parser.m
    for i in spectra:
        n = parser.mzLengths[i]
        if n == 0:
            continue
        fh.seek(parser.mzOffsets[i])
        mz = np.fromfile(fh, dtype=dtype, count=n)
        _check_mz(mz, path, int(i))
        lo, hi = min(lo, float(mz[0])), max(hi, float(mz[-1]))
    if not np.isfinite(lo):
        raise ImzMLError(f"All spectra of {str(path)!r} are empty.")
    return lo, hi


def _stream(parser, path: Path, spectra: np.ndarray, bins: _Bins, continuous: bool, sparse: bool, chunk_size: int):
    """One pass over the spectra; each chunk binned with a single bincount."""
    n_bins = len(bins.centers)
    n = len(spectra)
    chunk = max(1, min(chunk_size, _CHUNK_CELLS // max(n_bins, 1)))
    X = None if sparse else np.zeros((n, n_bins), dtype=np.float32)
    blocks: list[sp.csr_matrix] = []
    tic = np.zeros(n, dtype=np.float64)
    n_empty = 0
    shared_idx = None
    if continuous:
        mz0 = np.asarray(parser.getspectrum(int(spectra[0]))[0], dtype=np.float64)
        _check_mz(mz0, path, int(spectra[0]))
        shared_idx = bins.index(mz0)
    starts = range(0, n, chunk)
    for start in progress(starts, desc=f"Reading {path.name}", total=len(starts)):
        idx = spectra[start : start + chunk]
        mzs, ints, rows = [], [], []
        for local, i in enumerate(idx):
            mz, inten = parser.getspectrum(int(i))
            if inten.size == 0:
                n_empty += 1
                continue
            if not continuous:
                mzs.append(mz)
            ints.append(inten)
            rows.append(np.full(inten.size, local, dtype=np.int64))
        if not ints:
            if sparse:
                blocks.append(sp.csr_matrix((len(idx), n_bins), dtype=np.float32))
            continue
        inten = np.concatenate(ints).astype(np.float64, copy=False)
        if not np.isfinite(inten).all():
            bad = np.concatenate(rows)[~np.isfinite(inten)]
            raise ImzMLError(
                f"{str(path)!r}: {int((~np.isfinite(inten)).sum())} non-finite (NaN/inf) intensities, "
                f"first in spectrum {int(idx[bad[0]])}."
            )
        row = np.concatenate(rows)
        tic[start : start + len(idx)] = np.bincount(row, weights=inten, minlength=len(idx))
        if continuous:
            col = np.tile(shared_idx, len(ints))
        else:
            mz = np.concatenate(mzs).astype(np.float64)
            _check_chunk_mz(mz, row, idx, path)
            col = bins.index(mz)
        ok = col >= 0
        flat = row[ok] * n_bins + col[ok]
        binned = np.bincount(flat, weights=inten[ok], minlength=len(idx) * n_bins).reshape(len(idx), n_bins)
        if sparse:
            blocks.append(sp.csr_matrix(binned.astype(np.float32)))
        else:
            X[start : start + len(idx)] = binned
    if sparse:
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n, n_bins), dtype=np.float32)
    return X, tic, n_empty


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
