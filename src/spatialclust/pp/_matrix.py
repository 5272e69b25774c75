"""Shared machinery of the ``pp`` steps: one code path for numpy, scipy sparse and dask matrices.

Per-feature statistics are computed chunk by chunk of features (see
:func:`~spatialclust.pp._images.feature_chunks`); element-wise per-feature and per-pixel transforms
are applied in place for numpy and scipy sparse matrices and lazily for dask arrays.

A dask matrix (e.g. ``dask.array.from_zarr`` of a chunked store) is never loaded as a whole: a
per-feature statistic rechunks it into column blocks of at most ``CHUNK_ENTRIES`` entries (every
pixel of a few images) and computes the statistic of every block as one dask graph, so peak
memory is bounded by the chunk sizes, and the same code runs on the threads of this process or on
a ``dask.distributed`` cluster (:func:`spatialclust._compute.compute_context`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._logging import logger
from ._images import CHUNK_ENTRIES, dense_columns, feature_chunks, intensity_matrix


def start(adata: AnnData, copy: bool) -> AnnData:
    """The AnnData a ``pp`` step modifies: a copy, or ``adata`` itself turned from a view into an actual object.

    As scanpy's ``view_to_actual``: modifying a view in place would otherwise copy it implicitly (with a
    warning) or not reach the caller's object.
    """
    if copy:
        return adata.copy()
    if adata.is_view:
        adata._init_as_actual(adata.copy())
    return adata


#: Largest dense matrix (entries) built from a chunked (dask) matrix: beyond it a flattened regular
#: embedding needs ``n_components`` (randomized SVD) and metrics reduce the images first.
DENSE_MAX_ENTRIES = 2**28


def is_dask(matrix: Any) -> bool:
    """True for a dask array."""
    return hasattr(matrix, "compute") and hasattr(matrix, "chunks")


def float_matrix(adata: AnnData, layer: str | None):
    """The matrix of ``adata`` (X or ``layer``), converted to a float dtype once if it is an integer one."""
    matrix = intensity_matrix(adata, layer)
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float32)
        set_matrix(adata, layer, matrix)
    return matrix


def set_matrix(adata: AnnData, layer: str | None, matrix) -> None:
    """Store ``matrix`` as X or ``layers[layer]``."""
    if layer is None:
        adata.X = matrix
    else:
        adata.layers[layer] = matrix


def record_step(adata: AnnData, step: str, params: dict[str, Any]) -> None:
    """Record ``{"step": step, "params": params}`` as the next entry of ``uns["preprocessing"]``.

    The steps are stored as a mapping ``{"00": first, "01": second, ...}`` (not a list of dicts,
    which h5ad cannot store); :func:`preprocessing_steps` returns them in order. None-valued params
    are omitted (h5ad cannot store None).
    """
    params = {key: value for key, value in params.items() if value is not None}
    steps = preprocessing_steps(adata)
    steps.append({"step": step, "params": params})
    adata.uns[K.PREPROCESSING] = {f"{i:02d}": entry for i, entry in enumerate(steps)}


def preprocessing_steps(adata: AnnData) -> list[dict[str, Any]]:
    """The preprocessing steps applied to ``adata``, in order (from ``uns["preprocessing"]``)."""
    steps = adata.uns.get(K.PREPROCESSING, {})
    if isinstance(steps, Mapping):
        return [dict(steps[key]) for key in sorted(steps, key=int)]
    return [dict(entry) for entry in steps]


def check_finite(adata: AnnData, layer: str | None = None, *, finite: np.ndarray | None = None) -> None:
    """Raise a ValueError naming the features holding NaN or infinite intensities.

    Bad values are never passed on silently: they would turn every statistic of an image into NaN.
    ``finite``: the all-finite flag of every feature, computed already with a statistic
    (:func:`column_statistic` with ``finite=True``), so that the matrix is read again only to
    describe bad values.
    """
    matrix = intensity_matrix(adata, layer)
    if not np.issubdtype(matrix.dtype, np.floating) or (finite is not None and np.all(finite)):
        return
    if sp.issparse(matrix):
        coo = matrix.tocoo()
        bad_entries = ~np.isfinite(coo.data)
        n_bad = int(bad_entries.sum())
        bad_features = np.unique(coo.col[bad_entries])
    elif is_dask(matrix):  # one pass over the data; the count only when something is wrong
        finite = np.isfinite(matrix)
        bad_features = np.flatnonzero(~np.asarray(finite.all(axis=0).compute()))
        n_bad = int((~finite[:, bad_features]).sum().compute()) if bad_features.size else 0
    else:
        finite = np.isfinite(matrix)
        n_bad = int(finite.size - np.count_nonzero(finite))
        bad_features = np.flatnonzero(~finite.all(axis=0))
    if n_bad:
        where = "X" if layer is None else f"layers[{layer!r}]"
        names = list(adata.var_names[bad_features[:10]])
        more = f" and {bad_features.size - 10} more" if bad_features.size > 10 else ""
        raise ValueError(
            f"`adata.{where}` holds {n_bad} non-finite (NaN or infinite) intensities in "
            f"{bad_features.size} feature(s): {names}{more}. Remove or fix them first "
            "(e.g. drop these features or replace NaN by 0)."
        )


def tissue_rows(adata: AnnData) -> np.ndarray:
    """Boolean row mask of on-tissue pixels: ``obs["tissue"]`` if present, else every pixel."""
    if K.TISSUE in adata.obs:
        rows = np.asarray(adata.obs[K.TISSUE], dtype=bool)
        if not rows.any():
            raise ValueError(f"`obs[{K.TISSUE!r}]` marks no pixel as tissue; fix the mask (see `sc.pp.tissue_mask`).")
        return rows
    return np.ones(adata.n_obs, dtype=bool)


def column_statistic(
    matrix, rows: np.ndarray | None, statistic: Callable[[np.ndarray], np.ndarray], *, finite: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``statistic(block)`` (reducing axis 0) of every column over ``rows``, chunk by chunk of features.

    ``statistic`` takes a dense float32 ``(n_rows, n_columns)`` block and returns ``(n_columns,)``
    values, or ``(n_values, n_columns)`` for several statistics at once; the result is float64 of
    that shape for all columns. A dask matrix is rechunked into column blocks holding every pixel
    (at most ``CHUNK_ENTRIES`` entries each) and the blocks are reduced in one dask compute.
    With ``finite``, also the all-finite flag of every column over every row (for
    :func:`check_finite`), from the same blocks (one read of the matrix): ``(values, flags)``.
    """
    n_obs, n_vars = matrix.shape
    if is_dask(matrix):
        import dask

        width = max(1, min(CHUNK_ENTRIES // max(n_obs, 1), n_vars))
        shared_rows = dask.delayed(rows, pure=True) if rows is not None else None
        parts = []
        # a few column chunks per compute: with all of them in one graph dask may read many chunks
        # before it reduces them (measured: 6 GB for 500,000 pixels x 8,000 m/z)
        for span in chunk_spans(matrix.chunks[1], GROUP_CHUNK_ENTRIES // max(n_obs, 1)):
            part = matrix[:, span]
            blocks = part.astype(np.float32).rechunk({0: -1, 1: column_bands(part.chunks[1], width)}).to_delayed().ravel()
            parts += dask.compute(*(dask.delayed(_band_statistic)(block, statistic, shared_rows, finite)
                                    for block in blocks))
    else:
        parts = [_band_statistic(dense_columns(matrix, slice(chunk[0], chunk[-1] + 1)), statistic, rows, finite)
                 for chunk in feature_chunks(n_obs, np.arange(n_vars))]
    values = np.concatenate([p[0] for p in parts], axis=-1) if parts else np.zeros(0)
    if not finite:
        return values
    return values, np.concatenate([p[1] for p in parts]) if parts else np.ones(0, dtype=bool)


def column_bands(chunks: tuple[int, ...], width: int) -> tuple[int, ...]:
    """Column blocks of at most ``width`` columns (or one column chunk, if wider) that never straddle two
    of the matrix's column ``chunks``: a chunk wider than ``width`` is split into equal parts, narrower
    neighbours are joined. Every chunk then feeds only the blocks made of it, one after the other,
    so that dask does not keep parts of many chunks waiting for the block that shares them."""
    bands: list[int] = []
    joined = 0
    for size in chunks:
        if joined and joined + size > width:
            bands.append(joined)
            joined = 0
        if size > width:
            parts = -(-size // width)
            bands += [size // parts + (i < size % parts) for i in range(parts)]
        else:
            joined += size
    return tuple(bands + ([joined] if joined else []))


#: Entries of the matrix one dask compute of a chunked step reads at most (a few column or row chunks),
#: so that the memory of a pass does not depend on how dask orders a graph over the whole matrix.
GROUP_CHUNK_ENTRIES = 4 * CHUNK_ENTRIES


def chunk_spans(chunks: tuple[int, ...], size: int) -> list[slice]:
    """Consecutive slices of whole ``chunks`` along one axis, each of at most ``size`` (at least one chunk)."""
    spans, start, stop = [], 0, 0
    for chunk in chunks:
        if stop > start and stop + chunk - start > size:
            spans.append(slice(start, stop))
            start = stop
        stop += chunk
    return spans + ([slice(start, stop)] if stop > start else [])


def _band_statistic(
    block: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], rows: np.ndarray | None, finite: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``statistic`` of a block of whole columns over ``rows``, and its columns' all-finite flags (``finite``)."""
    block = np.asarray(block)
    flags = None
    if finite:
        flags = np.isfinite(block).all(axis=0) if np.issubdtype(block.dtype, np.floating) else np.ones(block.shape[1], bool)
    selected = block if rows is None else block[rows]
    # non-finite values are refused by the caller (check_finite) from the flags computed alongside
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(statistic(selected), dtype=np.float64), flags


def transform_columns(matrix, func: Callable[..., np.ndarray], *params: np.ndarray):
    """Apply ``func(values, *params_of_their_columns)`` element-wise; returns the (possibly new) matrix.

    numpy: in place, chunk by chunk of features. scipy sparse: on the stored entries only, which
    requires ``func(0) == 0`` for every column (otherwise the matrix is densified, and that is
    logged). dask: lazily.
    """
    n_obs, n_vars = matrix.shape
    if is_dask(matrix):
        return func(matrix, *(p[None, :] for p in params))
    if sp.issparse(matrix):
        zeros = func(np.zeros((1, n_vars), dtype=matrix.dtype), *(p[None, :] for p in params))
        if np.all(zeros == 0):
            csr = matrix.tocsr() if matrix.format != "csr" else matrix
            csr.data = func(csr.data, *(p[csr.indices] for p in params)).astype(csr.dtype, copy=False)
            csr.eliminate_zeros()
            return csr if matrix.format == "csr" else csr.asformat(matrix.format)
        logger.info("The transform does not map 0 to 0: densifying the sparse matrix (%d x %d).", n_obs, n_vars)
        matrix = matrix.toarray()
    for chunk in feature_chunks(n_obs, np.arange(n_vars)):
        cols = slice(chunk[0], chunk[-1] + 1)
        matrix[:, cols] = func(matrix[:, cols], *(p[None, cols] for p in params))
    return matrix


def row_sums(matrix, *, squared: bool = False) -> np.ndarray:
    """Sum (or sum of squares) of every row, float64."""
    if sp.issparse(matrix):
        m = matrix.multiply(matrix) if squared else matrix
        return np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    if is_dask(matrix):
        m = matrix.astype(np.float64)
        return np.asarray(((m * m) if squared else m).sum(axis=1).compute()).ravel()
    n_obs, n_vars = matrix.shape
    total = np.zeros(n_obs, dtype=np.float64)
    for chunk in feature_chunks(n_obs, np.arange(n_vars)):
        block = matrix[:, chunk[0] : chunk[-1] + 1].astype(np.float64)
        total += np.einsum("ij,ij->i", block, block) if squared else block.sum(axis=1)
    return total


def scale_rows(matrix, factors: np.ndarray):
    """Multiply every row by its factor: in place for numpy / scipy sparse, lazily for dask."""
    factors = np.asarray(factors)
    if is_dask(matrix):
        return matrix * factors.astype(matrix.dtype)[:, None]
    if sp.issparse(matrix):
        csr = matrix.tocsr() if matrix.format != "csr" else matrix
        csr.data *= np.repeat(factors, np.diff(csr.indptr)).astype(csr.dtype)
        csr.eliminate_zeros()
        return csr if matrix.format == "csr" else csr.asformat(matrix.format)
    matrix *= factors.astype(matrix.dtype)[:, None]
    return matrix
