"""Per-pixel normalisation of MSI spectra: total ion current (TIC) and root mean square (RMS)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._logging import logger
from ._matrix import check_finite, float_matrix, record_step, row_sums, scale_rows, set_matrix, start


def _normalize_rows(
    adata: AnnData, norms: np.ndarray, target: float, *, layer: str | None, what: str
) -> int:
    """Scale every pixel to ``target / norm``; pixels with a zero norm stay zero. Returns their count."""
    if (norms < 0).any():
        raise ValueError(
            f"{what} normalisation needs non-negative intensities: {int((norms < 0).sum())} pixel(s) have a "
            f"negative {what}."
        )
    zero = norms <= 0
    factors = np.where(zero, 0.0, target / np.where(zero, 1.0, norms))
    set_matrix(adata, layer, scale_rows(float_matrix(adata, layer), factors))
    if zero.any():
        logger.info("%s normalisation: %d pixel(s) with zero %s left at zero.", what, int(zero.sum()), what)
    return int(zero.sum())


def normalize_tic(
    adata: AnnData,
    *,
    target_sum: float | None = None,
    tic_key: str | None = None,
    layer: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Total ion current (TIC) normalisation of every pixel.

    Every spectrum (row) is divided by its TIC and multiplied by ``target_sum``, as in the shared
    preprocessing of Zhang et al. (seed 000, "Spectral preprocessing"). Pixels with zero TIC are
    left at zero and counted in the log and in the recorded parameters.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    target_sum
        TIC of every pixel after normalisation; default: the median TIC of the pixels with a
        non-zero TIC (so intensities keep their usual magnitude).
    tic_key
        Read the TIC from ``obs[tic_key]`` (e.g. ``"tic"``, the TIC of the full raw spectrum written by
        the imzML reader) instead of summing the features of ``X``.
    layer
        Normalise ``layers[layer]`` instead of ``X``.
    copy
        Return a normalised copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Modifies ``X`` (or the layer) and appends
    ``{"step": "normalize_tic", "params": {...}}`` to ``uns["preprocessing"]``.
    """
    adata = start(adata, copy)
    if tic_key is None:
        tic = row_sums(float_matrix(adata, layer))
        if not np.isfinite(tic).all():  # a NaN or infinite intensity makes its row's sum non-finite
            check_finite(adata, layer)
    else:
        check_finite(adata, layer)
        if tic_key not in adata.obs:
            raise KeyError(f"`tic_key`={tic_key!r} is not an obs column; available: {list(adata.obs.columns)}.")
        tic = np.asarray(adata.obs[tic_key], dtype=np.float64)
        if not np.isfinite(tic).all():
            raise ValueError(f"`obs[{tic_key!r}]` holds {int((~np.isfinite(tic)).sum())} non-finite TIC values.")
    positive = tic[tic > 0]
    if target_sum is None:
        target_sum = float(np.median(positive)) if positive.size else 1.0
    elif not target_sum > 0:
        raise ValueError(f"`target_sum` must be > 0, got {target_sum}.")
    n_zero = _normalize_rows(adata, tic, float(target_sum), layer=layer, what="TIC")
    logger.info("TIC-normalised %d pixels to a TIC of %.4g.", adata.n_obs, target_sum)
    record_step(
        adata,
        "normalize_tic",
        {"target_sum": float(target_sum), "tic_key": tic_key, "layer": layer, "n_zero_tic": n_zero},
    )
    return adata if copy else None


def normalize_rms(adata: AnnData, *, layer: str | None = None, copy: bool = False) -> AnnData | None:
    """Root-mean-square (RMS) normalisation of every pixel.

    Every spectrum is divided by ``sqrt(mean_j x_j^2)`` over its features, a normalisation less
    dominated by a few intense (e.g. matrix) peaks than TIC. Pixels whose spectrum is all zero
    are left at zero and counted in the log.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features).
    layer
        Normalise ``layers[layer]`` instead of ``X``.
    copy
        Return a normalised copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Modifies ``X`` (or the layer) and appends
    ``{"step": "normalize_rms", "params": {...}}`` to ``uns["preprocessing"]``.
    """
    adata = start(adata, copy)
    rms = np.sqrt(row_sums(float_matrix(adata, layer), squared=True) / max(adata.n_vars, 1))
    if not np.isfinite(rms).all():  # a NaN or infinite intensity makes its row's sum non-finite
        check_finite(adata, layer)
    n_zero = _normalize_rows(adata, rms, 1.0, layer=layer, what="RMS")
    logger.info("RMS-normalised %d pixels.", adata.n_obs)
    record_step(adata, "normalize_rms", {"layer": layer, "n_zero_rms": n_zero})
    return adata if copy else None
