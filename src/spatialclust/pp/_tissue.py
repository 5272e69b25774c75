"""Tissue mask: given, or found by Otsu thresholding of the log total ion count."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._logging import logger
from .._registry import invalid_option
from ._images import grid_shape, intensity_matrix, pixel_coordinates
from ._matrix import check_finite, record_step, row_sums, start

_METHODS = ("otsu",)


def otsu_threshold(values: np.ndarray, *, n_bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut maximising the between-class variance.

    Otsu (1979), "A threshold selection method from gray-level histograms". Implemented in numpy
    (as ``skimage.filters.threshold_otsu``, to avoid a scikit-image dependency): on a histogram of
    ``n_bins`` bins, with class weights ``w0, w1`` and means ``m0, m1`` of the bins below/above
    each split, the split maximising ``w0 * w1 * (m0 - m1)^2`` is chosen. Unlike scikit-image,
    which returns the centre of the last lower bin (so values of that bin above its centre land in
    the upper class), the threshold returned is the midpoint between the largest value of the
    lower class and the smallest of the upper class: ``values > threshold`` is exactly the upper class.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("Otsu threshold of an empty (or all non-finite) set of values.")
    if values.min() == values.max():
        return float(values.min())
    counts, edges = np.histogram(values, bins=n_bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)  # values in bins 0..i
    weight1 = np.cumsum(counts[::-1])[::-1]  # values in bins i..end
    mean0 = np.cumsum(counts * centres) / np.maximum(weight0, 1)
    mean1 = (np.cumsum((counts * centres)[::-1]) / np.maximum(weight1[::-1], 1))[::-1]
    # split between bin i and bin i + 1 (first and last bins are never empty)
    between = weight0[:-1] * weight1[1:] * (mean0[:-1] - mean1[1:]) ** 2
    cut = edges[int(np.argmax(between)) + 1]  # np.histogram bins are [a, b): the upper class is values >= cut
    return float((values[values < cut].max() + values[values >= cut].min()) / 2)


def _mask_from_argument(adata: AnnData, mask) -> np.ndarray:
    """Per-pixel boolean tissue mask from a column name, an (n_obs,) or a (height, width) array."""
    if isinstance(mask, str):
        if mask not in adata.obs:
            raise KeyError(f"`mask`={mask!r} is not an obs column; available: {list(adata.obs.columns)}.")
        values = adata.obs[mask]
        if values.dtype != bool:
            raise ValueError(f"`mask`: obs column {mask!r} must be boolean, got dtype {values.dtype}.")
        return np.asarray(values, dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"`mask` must be a boolean array, got dtype {mask.dtype}.")
    if mask.shape == (adata.n_obs,):
        return mask
    height, width = grid_shape(adata)
    if mask.shape == (height, width):
        x, y = pixel_coordinates(adata)
        return mask[y, x]
    raise ValueError(
        f"`mask` must have shape (n_obs,) = ({adata.n_obs},) or the grid shape (height, width) = "
        f"({height}, {width}), got {mask.shape}."
    )


def tissue_mask(
    adata: AnnData,
    *,
    mask: np.ndarray | str | None = None,
    method: str = "otsu",
    layer: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Mark on-tissue pixels in ``obs["tissue"]``.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    mask
        A given mask: boolean ``(height, width)`` image, boolean ``(n_obs,)`` vector, or the name of
        a boolean obs column. When None, the mask is found with ``method``.
    method
        ``"otsu"``: Otsu's threshold (:func:`otsu_threshold`) on ``log1p`` of the total ion count of
        every pixel (``obs["tic"]`` when present, otherwise the row sums of the matrix); pixels
        above it are tissue.
    layer
        With ``method``: compute the TIC from ``layers[layer]`` instead of ``X``.
    copy
        Return a copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Writes ``obs["tissue"]`` (bool) and appends
    ``{"step": "tissue_mask", "params": {...}}`` to ``uns["preprocessing"]``.
    """
    adata = start(adata, copy)
    if mask is not None:
        tissue = _mask_from_argument(adata, mask)
        params: dict = {"mask": mask if isinstance(mask, str) else "array"}
    elif method == "otsu":
        if K.TIC in adata.obs:
            tic = np.asarray(adata.obs[K.TIC], dtype=np.float64)
            source = f"obs[{K.TIC!r}]"
        else:
            check_finite(adata, layer)
            tic = row_sums(intensity_matrix(adata, layer))
            source = "row sums"
        if not np.isfinite(tic).all() or (tic < 0).any():
            raise ValueError(f"The TIC ({source}) must be finite and non-negative to find the tissue by Otsu's method.")
        log_tic = np.log1p(tic)
        threshold = otsu_threshold(log_tic)
        tissue = log_tic > threshold
        params = {"method": method, "tic": source, "log1p_threshold": threshold}
    else:
        raise invalid_option(method, "method", list(_METHODS))
    if not tissue.any():
        raise ValueError(f"The tissue mask selects none of the {adata.n_obs} pixels (with a single pixel, or one TIC "
                         "everywhere, Otsu's method finds no tissue); pass an explicit `mask`, or use every pixel "
                         "(`spatialclust run --set preprocess.tissue_mask=none`).")
    adata.obs[K.TISSUE] = tissue
    logger.info("Tissue mask: %d of %d pixels on tissue.", int(tissue.sum()), adata.n_obs)
    record_step(adata, "tissue_mask", {**params, "n_tissue": int(tissue.sum())})
    return adata if copy else None
