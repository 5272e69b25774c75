"""The feature-image view of a spatial AnnData: ``(n_features, height, width)`` arrays.

Pixel ``(x, y)`` (``obsm["spatial"]``) of feature ``j`` is ``images[j, y, x]``; the grid shape is
``uns["grid"]["shape"] = [height, width]``. Images are built chunk by chunk of features so that a
large (sparse or dask-backed) matrix is never densified as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._logging import logger

#: Upper bound on the number of matrix entries densified at once by :func:`feature_images`.
CHUNK_ENTRIES = 2**24


def grid_shape(adata: AnnData) -> tuple[int, int]:
    """``(height, width)`` of the pixel grid of ``adata``.

    Read from ``uns["grid"]["shape"]``; when that is absent the smallest grid holding every
    coordinate of ``obsm["spatial"]`` is used (and logged).
    """
    grid = adata.uns.get(K.GRID)
    if grid is not None and grid.get("shape") is not None:
        shape = tuple(int(s) for s in grid["shape"])
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(
                f"`uns[{K.GRID!r}]['shape']` must be [height, width] with positive entries, got {grid['shape']!r}."
            )
        return shape  # type: ignore[return-value]
    x, y = pixel_coordinates(adata, check_grid=False)
    shape = (int(y.max()) + 1, int(x.max()) + 1) if x.size else (1, 1)
    logger.info("`uns[%r]['shape']` is missing; using the grid %s spanned by `obsm[%r]`.", K.GRID, shape, K.SPATIAL)
    return shape


def pixel_coordinates(adata: AnnData, *, check_grid: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Integer column (x) and row (y) index of every pixel, validated against the grid.

    Raises
    ------
    KeyError
        If ``obsm["spatial"]`` is missing.
    ValueError
        If the coordinates are not integer ``(n_obs, 2)``, negative, outside the grid, or duplicated.
    """
    if K.SPATIAL not in adata.obsm:
        raise KeyError(
            f"`obsm[{K.SPATIAL!r}]` with the (x, y) grid coordinates of every pixel is required; "
            f"available obsm keys: {list(adata.obsm.keys())}."
        )
    coords = np.asarray(adata.obsm[K.SPATIAL])
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"`obsm[{K.SPATIAL!r}]` must have shape (n_obs, 2), got {coords.shape}.")
    if coords.size and not np.array_equal(coords, np.round(coords)):
        raise ValueError(f"`obsm[{K.SPATIAL!r}]` must hold integer grid coordinates; found non-integer values.")
    coords = coords.astype(np.int64)
    if coords.size and coords.min() < 0:
        raise ValueError(f"`obsm[{K.SPATIAL!r}]` must hold non-negative grid coordinates; found {coords.min()}.")
    x, y = coords[:, 0], coords[:, 1]
    if check_grid and coords.size:
        height, width = grid_shape(adata)
        if x.max() >= width or y.max() >= height:
            raise ValueError(
                f"`obsm[{K.SPATIAL!r}]` reaches (x={x.max()}, y={y.max()}), outside the grid "
                f"`uns[{K.GRID!r}]['shape']` = [{height}, {width}]."
            )
        flat = y * width + x
        if np.unique(flat).size != flat.size:
            raise ValueError(f"`obsm[{K.SPATIAL!r}]` has {flat.size - np.unique(flat).size} duplicated pixel coordinates.")
    return x, y


def resolve_features(adata: AnnData, features: Sequence | np.ndarray | None) -> np.ndarray:
    """Integer indices of ``features`` (names, integer indices or a boolean mask; None = all)."""
    n_vars = adata.n_vars
    if features is None:
        return np.arange(n_vars)
    if isinstance(features, str):
        features = [features]
    arr = np.asarray(features)
    if arr.dtype == bool:
        if arr.shape != (n_vars,):
            raise ValueError(f"A boolean `features` mask must have shape ({n_vars},), got {arr.shape}.")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < -n_vars or arr.max() >= n_vars:
            raise IndexError(f"`features` indices must lie in [0, {n_vars}); got {arr.min()}..{arr.max()}.")
        return arr.astype(np.int64) % n_vars
    names = arr.astype(str)
    index = adata.var_names.get_indexer(names)
    if (index < 0).any():
        missing = names[index < 0]
        raise KeyError(f"`features` not found in var_names: {list(missing[:10])}" + (" ..." if missing.size > 10 else ""))
    return index.astype(np.int64)


def intensity_matrix(adata: AnnData, layer: str | None = None):
    """``adata.X`` or ``adata.layers[layer]`` (whatever its type: numpy, scipy sparse, dask)."""
    if layer is None:
        if adata.X is None:
            raise ValueError("`adata.X` is None; pass `layer` to use a layer instead.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"`layer`={layer!r} not found; available layers: {list(adata.layers.keys())}.")
    return adata.layers[layer]


def dense_columns(matrix, columns: np.ndarray | slice) -> np.ndarray:
    """Columns of a numpy / scipy sparse / dask / backed (h5py) matrix as a dense float32 (n_obs, n_columns) array."""
    if not isinstance(columns, slice):
        columns = np.asarray(columns)
        unique, inverse = np.unique(columns, return_inverse=True)
        if unique.size != columns.size or (columns.size > 1 and (np.diff(columns) < 0).any()):
            # backed h5py datasets only accept increasing, unique indices: read those, then reorder
            return dense_columns(matrix, unique)[:, inverse]
        if columns.size and columns[-1] - columns[0] + 1 == columns.size:
            columns = slice(int(columns[0]), int(columns[-1]) + 1)  # contiguous: a cheap slice
    block = matrix[:, columns]
    if hasattr(block, "compute"):  # dask array
        block = block.compute()
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float32)


def feature_chunks(n_obs: int, indices: np.ndarray) -> list[np.ndarray]:
    """Split feature ``indices`` into chunks of at most ``CHUNK_ENTRIES`` dense entries."""
    size = max(1, CHUNK_ENTRIES // max(n_obs, 1))
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def feature_images(
    adata: AnnData,
    *,
    layer: str | None = None,
    features: Sequence | np.ndarray | None = None,
    fill: float = 0.0,
) -> np.ndarray:
    """Feature images ``(n_features, height, width)`` of a spatial AnnData.

    Pixel ``(x, y)`` of ``obsm["spatial"]`` goes to ``images[j, y, x]``; grid cells without a
    pixel get ``fill``. Works for dense, scipy sparse, dask and backed (``read_h5ad(backed="r")``)
    matrices; the matrix is densified one chunk of features at a time, so memory stays bounded by
    the output.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features) with ``obsm["spatial"]`` and
        ``uns["grid"]["shape"]``.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    features
        Subset of features: var names, integer indices or a boolean mask (default: all, in order).
    fill
        Value of grid cells without a pixel.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(n_features, height, width)``.

    Examples
    --------
    >>> import spatialclust as sc
    >>> adata = sc.datasets.simulate_msi(seed=0)
    >>> sc.pp.feature_images(adata).shape[1:] == tuple(adata.uns["grid"]["shape"])
    True
    """
    matrix = intensity_matrix(adata, layer)
    height, width = grid_shape(adata)
    x, y = pixel_coordinates(adata)
    indices = resolve_features(adata, features)
    images = np.full((len(indices), height, width), fill, dtype=np.float32)
    start = 0
    for chunk in feature_chunks(adata.n_obs, indices):
        block = dense_columns(matrix, chunk)  # (n_obs, n_chunk)
        images[start : start + len(chunk), y, x] = block.T
        start += len(chunk)
    return images


def tissue_mask_image(adata: AnnData) -> np.ndarray:
    """Boolean tissue mask ``(height, width)`` of the grid.

    True where a pixel has ``obs["tissue"]`` True; without that column, every grid cell holding a
    pixel of ``adata`` is tissue.
    """
    height, width = grid_shape(adata)
    x, y = pixel_coordinates(adata)
    mask = np.zeros((height, width), dtype=bool)
    if K.TISSUE in adata.obs:
        on = np.asarray(adata.obs[K.TISSUE], dtype=bool)
        mask[y[on], x[on]] = True
    else:
        mask[y, x] = True
    return mask


def tissue_pixels(adata: AnnData, matrix=None):
    """The on-tissue rows of ``matrix`` (default ``adata.X``) in the order of the pixels of
    :func:`tissue_mask_image` (row-major on the grid): ``images[:, mask].T`` without building the images.

    Works for every matrix type; a dask matrix stays lazy (a slice or a row selection of its chunks).
    """
    matrix = intensity_matrix(adata) if matrix is None else matrix
    height, width = grid_shape(adata)
    x, y = pixel_coordinates(adata)
    rows = np.asarray(adata.obs[K.TISSUE], dtype=bool) if K.TISSUE in adata.obs else np.ones(adata.n_obs, dtype=bool)
    selected = np.flatnonzero(rows)
    order = selected[np.argsort(y[selected] * width + x[selected], kind="stable")]
    if np.array_equal(order, selected):  # pixels already in grid order (the usual case): no reordering
        return matrix if selected.size == adata.n_obs else matrix[rows]
    return matrix[order]
