"""Ion-image standardisation: winsorising, scaling to [0, 1], removal of empty images (seed 000)."""

from __future__ import annotations

from functools import partial

import numpy as np
from anndata import AnnData

from .._logging import logger
from .._registry import invalid_option
from ._images import intensity_matrix
from ._matrix import (
    check_finite,
    column_statistic,
    float_matrix,
    record_step,
    set_matrix,
    start,
    tissue_rows,
    transform_columns,
)


def _statistic_rows(adata: AnnData, tissue_only: bool) -> np.ndarray | None:
    """Rows over which per-image statistics are computed (None = all pixels)."""
    return tissue_rows(adata) if tissue_only else None


def winsorize(
    adata: AnnData,
    *,
    percentile: float = 95.0,
    layer: str | None = None,
    tissue_only: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Clip every feature image above a percentile of its intensities (upper side only).

    Zhang et al. (seed 000, "Ion image standardization") winsorise each ion image above its 95th
    percentile to limit the high-intensity outliers (hot pixels) common in MSI; the lower side is
    left alone because intensities are bounded by 0. The percentile is computed with linear
    interpolation (``numpy.percentile``) over the on-tissue pixels; every pixel above it is set to it.

    A sparse image, with signal in fewer than ``100 - percentile`` % of the pixels (common for
    finely binned data: a localised ion, or a bin that catches a peak in a few spectra), has its
    percentile at its minimum (usually 0) and would become constant, i.e. lose all its spatial
    information. For such an image the percentile is taken over its pixels above the minimum
    (its non-zero pixels) instead, so its hot pixels are still clipped and its pattern is kept.
    Their number is logged and recorded as ``n_sparse``. Only an image that is constant over the
    statistic pixels to begin with becomes constant.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    percentile
        Upper percentile in (0, 100]; 100 leaves the data unchanged.
    layer
        Winsorise ``layers[layer]`` instead of ``X``.
    tissue_only
        Compute the percentile over the pixels with ``obs["tissue"]`` True (when that column
        exists); False: over all pixels.
    copy
        Return a winsorised copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Modifies ``X`` (or the layer) and appends
    ``{"step": "winsorize", "params": {...}}`` to ``uns["preprocessing"]``.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"`percentile` must be in (0, 100], got {percentile}.")
    adata = start(adata, copy)
    _winsorize(adata, percentile=percentile, layer=layer, tissue_only=tissue_only)
    return adata if copy else None


def _winsorize(adata: AnnData, *, percentile: float, layer: str | None, tissue_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`winsorize` in place; returns the minimum and maximum of every image after it, over the same
    pixels (what :func:`scale_images` needs, without another pass over the data)."""
    matrix = float_matrix(adata, layer)
    rows = _statistic_rows(adata, tissue_only)
    (thresholds, sparse, minimum, maximum), finite = column_statistic(
        matrix, rows, partial(_winsorize_thresholds, percentile=percentile), finite=True)
    check_finite(adata, layer, finite=finite)
    thresholds = thresholds.astype(matrix.dtype)
    set_matrix(adata, layer, transform_columns(matrix, np.minimum, thresholds))
    n_sparse = int(sparse.sum())
    logger.info("Winsorised %d feature images above their %gth percentile.", adata.n_vars, percentile)
    if n_sparse:
        logger.info(
            "winsorize: %d sparse image(s) (signal in fewer than %g%% of the pixels) winsorised at the %gth "
            "percentile of their non-zero pixels, so that they keep their pattern.",
            n_sparse, 100 - percentile, percentile,
        )
    record_step(
        adata,
        "winsorize",
        {"percentile": float(percentile), "layer": layer, "tissue_only": tissue_only, "n_sparse": n_sparse},
    )
    return np.minimum(minimum, thresholds), np.minimum(maximum, thresholds)


def _winsorize_thresholds(block: np.ndarray, *, percentile: float) -> np.ndarray:
    """Per-column winsorising threshold of ``block`` (row 0), whether the column is sparse (row 1), its
    minimum and maximum (rows 2, 3).

    The ``percentile`` of every column; for a non-constant column whose percentile does not exceed
    its minimum (clipping there would make it constant), the ``percentile`` of its values above
    the minimum.
    """
    thresholds = np.percentile(block, percentile, axis=0)
    minimum, maximum = block.min(axis=0, initial=np.inf), block.max(axis=0, initial=-np.inf)
    sparse = (thresholds <= minimum) & (maximum > minimum)
    for j in np.flatnonzero(sparse):
        column = block[:, j]
        thresholds[j] = np.percentile(column[column > minimum[j]], percentile)
    return np.vstack([thresholds, sparse, minimum, maximum])


def _min_max(block: np.ndarray) -> np.ndarray:
    return np.vstack([block.min(axis=0), block.max(axis=0)])


def _min_max_scale(values, minimum, inverse_range):
    return np.clip((values - minimum) * inverse_range, 0.0, 1.0)


def scale_images(
    adata: AnnData, *, layer: str | None = None, tissue_only: bool = True, copy: bool = False
) -> AnnData | None:
    """Scale every feature image to [0, 1] (min-max).

    As in Zhang et al. (seed 000), after winsorising "the resulting pixel intensities for each
    image are scaled to the range [0, 1]". Minimum and maximum are taken over the on-tissue pixels;
    off-tissue pixels outside that range are clipped to [0, 1]. Constant images (maximum equal to
    minimum) become all zero; their number is logged.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    layer
        Scale ``layers[layer]`` instead of ``X``.
    tissue_only
        Take minimum and maximum over the pixels with ``obs["tissue"]`` True (when that column
        exists); False: over all pixels.
    copy
        Return a scaled copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Modifies ``X`` (or the layer) and appends
    ``{"step": "scale_images", "params": {...}}`` to ``uns["preprocessing"]``.
    """
    adata = start(adata, copy)
    (minimum, maximum), finite = column_statistic(float_matrix(adata, layer), _statistic_rows(adata, tissue_only),
                                                  _min_max, finite=True)
    check_finite(adata, layer, finite=finite)
    _scale(adata, minimum, maximum, layer=layer, tissue_only=tissue_only)
    return adata if copy else None


def _scale(adata: AnnData, minimum: np.ndarray, maximum: np.ndarray, *, layer: str | None, tissue_only: bool) -> np.ndarray:
    """:func:`scale_images` in place from the minimum and maximum of every image; returns the float
    inverse ranges applied (0 for a constant image)."""
    matrix = float_matrix(adata, layer)
    spread = maximum - minimum
    constant = spread <= 0
    inverse = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, spread)).astype(matrix.dtype)
    # a constant image gets inverse 0: (x - min) * 0 = 0 for every (finite) pixel
    matrix = transform_columns(matrix, _min_max_scale, minimum.astype(matrix.dtype), inverse)
    set_matrix(adata, layer, matrix)
    if constant.any():
        logger.info("scale_images: %d constant image(s) set to 0.", int(constant.sum()))
    logger.info("Scaled %d feature images to [0, 1].", adata.n_vars)
    record_step(
        adata, "scale_images", {"layer": layer, "tissue_only": tissue_only, "n_constant": int(constant.sum())}
    )
    return inverse


def _image_summary(block: np.ndarray) -> np.ndarray:
    """Per column of ``block``: number of non-zero pixels, minimum and maximum of the finite values,
    all-finite flag (rows 0 to 3)."""
    ok = np.isfinite(block)
    if ok.all():  # the usual case: no masked copies of the block
        minimum, maximum = block.min(axis=0, initial=np.inf), block.max(axis=0, initial=-np.inf)
    else:
        minimum = np.where(ok, block, np.inf).min(axis=0, initial=np.inf)
        maximum = np.where(ok, block, -np.inf).max(axis=0, initial=-np.inf)
    return np.vstack([np.count_nonzero(block, axis=0), minimum, maximum, ok.all(axis=0)]).astype(np.float64)


def remove_empty_features(
    adata: AnnData, *, min_nonzero: int = 1, layer: str | None = None, tissue_only: bool = False,
    nonfinite: str = "drop", copy: bool = False,
) -> AnnData | None:
    """Drop feature images that carry no spatial information.

    Removed are images with fewer than ``min_nonzero`` non-zero pixels (all-zero images by default),
    constant images, and images holding NaN or infinite values (the other ``pp`` steps refuse
    those with an error). How many and which were removed is logged and recorded.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    min_nonzero
        Minimum number of non-zero pixels an image must have to be kept.
    layer
        Judge the images of ``layers[layer]`` instead of ``X``.
    tissue_only
        Judge the images over the pixels with ``obs["tissue"]`` True (when that column exists),
        which is what the embeddings see: an image with signal only off the tissue is then empty.
    nonfinite
        ``"drop"`` (default): images holding NaN or infinite values are removed; ``"raise"``: they
        raise the ValueError of :func:`check_finite` (without ``tissue_only``), from the same pass over the data.
    copy
        Return a filtered copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Subsets the var axis of ``adata`` and appends
    ``{"step": "remove_empty_features", "params": {"min_nonzero", "n_removed", "removed"}}`` to
    ``uns["preprocessing"]``.
    """
    if int(min_nonzero) != min_nonzero or min_nonzero < 0:
        raise ValueError(f"`min_nonzero` must be a non-negative integer, got {min_nonzero!r}.")
    if nonfinite not in ("drop", "raise"):
        raise invalid_option(nonfinite, "nonfinite", ["drop", "raise"])
    adata = start(adata, copy)
    summary = column_statistic(intensity_matrix(adata, layer), _statistic_rows(adata, tissue_only), _image_summary)
    finite = summary[3].astype(bool)
    if nonfinite == "raise":
        check_finite(adata, layer, finite=finite if not tissue_only else None)
    _drop_features(adata, *summary[:3], finite, min_nonzero=int(min_nonzero), layer=layer, tissue_only=tissue_only)
    return adata if copy else None


def _drop_features(adata: AnnData, nonzero: np.ndarray, minimum: np.ndarray, maximum: np.ndarray, finite: np.ndarray,
                   *, min_nonzero: int, layer: str | None, tissue_only: bool) -> None:
    """The removal of :func:`remove_empty_features` from the per-image summary (non-zero pixels,
    minimum, maximum, all finite), logged and recorded."""
    drop = (nonzero < min_nonzero) | (maximum <= minimum) | ~finite
    removed = [str(name) for name in adata.var_names[drop]]
    if drop.any():
        logger.info(
            "Removed %d of %d feature images (empty: %d, constant: %d, non-finite: %d): %s",
            int(drop.sum()),
            adata.n_vars,
            int((nonzero < min_nonzero).sum()),
            int(((maximum <= minimum) & (nonzero >= min_nonzero) & finite).sum()),
            int((~finite).sum()),
            removed[:20] + (["..."] if len(removed) > 20 else []),
        )
        adata._inplace_subset_var(~drop)
    else:
        logger.info("remove_empty_features: all %d feature images kept.", adata.n_vars)
    record_step(
        adata,
        "remove_empty_features",
        {"min_nonzero": int(min_nonzero), "layer": layer, "tissue_only": tissue_only, "n_removed": int(drop.sum()),
         "removed": removed},
    )


def _scale_and_remove_empty(adata: AnnData, minimum: np.ndarray, maximum: np.ndarray) -> None:
    """:func:`scale_images` over the tissue pixels from their known minimum and maximum (e.g. from
    :func:`_winsorize`), then :func:`remove_empty_features` over the tissue pixels without another
    pass: on them every scaled image spans [0, 1] exactly (its minimum maps to 0, its maximum to
    about 1) unless it is constant, when it is all zero, i.e. empty."""
    inverse = _scale(adata, minimum, maximum, layer=None, tissue_only=True)
    constant = inverse == 0
    if not np.isfinite(inverse).all():  # a spread too small for the float type: judge the scaled values
        remove_empty_features(adata, tissue_only=True)
        return
    _drop_features(adata, np.where(constant, 0, 1), np.zeros(constant.size), np.where(constant, 0.0, 1.0),
                   np.ones(constant.size, dtype=bool), min_nonzero=1, layer=None, tissue_only=True)
