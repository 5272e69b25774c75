"""Classical image features of single cells (image-enabled cell sorting) and their PCA/UMAP.

The features are the real-time image parameters of the image-enabled cell sorter (Schraivogel et
al. 2022, Science 375:315) used by Palli (2023, sec. 2.3) as "classical image features", computed
per channel on the true (unpadded) area of each cell image:

``max_intensity``
    highest pixel value (e.g. Golgi integrity);
``mean_intensity``, ``total_intensity``
    mean and sum of the pixel values;
``size``
    number of pixels above the threshold (nucleus/nucleolus size);
``eccentricity``
    :math:`\\sqrt{1 - \\lambda_2/\\lambda_1}` from the principal components (eigenvalues
    :math:`\\lambda_1 \\ge \\lambda_2`) of the intensity-weighted second moments of the pixels above
    the threshold: 0 for a disc, towards 1 for an elongated object or two separated objects;
``radial_moment``
    intensity-weighted mean squared distance of the above-threshold signal from its centroid
    (separates one from several nuclei/objects);
``correlation_<a>_<b>``
    Pearson correlation of two channels over the cell image (co-localisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger
from .._registry import invalid_option
from ..io._cells import cell_image_stack
from ..pp._tissue import otsu_threshold

__all__ = ["CHANNEL_FEATURES", "cell_features", "classical_features", "cell_pca"]

#: Per-channel features, in output order.
CHANNEL_FEATURES = ("max_intensity", "mean_intensity", "total_intensity", "size", "eccentricity", "radial_moment")


def _thresholds(stack: np.ndarray, valid: np.ndarray, threshold: str | float | Sequence[float]) -> np.ndarray:
    n, n_channels = stack.shape[:2]
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise invalid_option(threshold, "threshold", ["otsu", "<number>", "<one number per channel>"])
        return np.array([[otsu_threshold(stack[i, c][valid[i]]) for c in range(n_channels)] for i in range(n)])
    values = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, n_channels)
    if values.size != n_channels:
        raise ValueError(f"`threshold` must be 'otsu', one number or {n_channels} numbers (one per channel), got {threshold!r}.")
    return np.tile(values, (n, 1))


def classical_features(
    images: np.ndarray,
    *,
    sizes: np.ndarray | None = None,
    channels: Sequence[str] | None = None,
    threshold: str | float | Sequence[float] = "otsu",
) -> pd.DataFrame:
    """Classical per-channel image features and inter-channel correlations of cell images.

    Parameters
    ----------
    images
        ``(n, C, H, W)`` padded cell images.
    sizes
        ``(n, 2)`` true ``(height, width)``; pixels outside are padding and ignored (default: all valid).
    channels
        Channel names used in the feature names (default ``ch0``, ...).
    threshold
        Foreground threshold for ``size``, ``eccentricity`` and ``radial_moment``: ``"otsu"``
        (per cell and channel), one number, or one number per channel.

    Returns
    -------
    DataFrame ``(n, C * 6 + C * (C - 1) / 2)`` with columns ``<feature>_<channel>`` and
    ``correlation_<a>_<b>``.
    """
    stack = np.asarray(images, dtype=np.float64)
    if stack.ndim != 4:
        raise ValueError(f"`images` must have shape (n, C, H, W), got shape {stack.shape}.")
    n, n_channels, height, width = stack.shape
    if n == 0 or height == 0 or width == 0:
        raise ValueError(f"`images` is empty: shape {stack.shape}.")
    channels = [f"ch{i}" for i in range(n_channels)] if channels is None else [str(c) for c in channels]
    if len(channels) != n_channels:
        raise ValueError(f"`channels` has {len(channels)} names for {n_channels} channels.")
    sizes = np.tile([height, width], (n, 1)) if sizes is None else np.asarray(sizes)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    valid = (yy[None] < sizes[:, 0, None, None]) & (xx[None] < sizes[:, 1, None, None])
    n_valid = valid.sum(axis=(1, 2)).astype(np.float64)
    if (n_valid == 0).any():
        raise ValueError(f"Cell image {int(np.argmin(n_valid))} is empty (true size 0).")
    thresholds = _thresholds(stack, valid, threshold)
    masked = np.where(valid[:, None], stack, 0.0)
    columns: dict[str, np.ndarray] = {}
    per_channel: dict[str, np.ndarray] = {
        "max_intensity": np.where(valid[:, None], stack, -np.inf).max(axis=(2, 3)),
        "mean_intensity": masked.sum(axis=(2, 3)) / n_valid[:, None],
        "total_intensity": masked.sum(axis=(2, 3)),
    }
    foreground = valid[:, None] & (stack > thresholds[:, :, None, None])
    per_channel["size"] = foreground.sum(axis=(2, 3)).astype(np.float64)
    weight = np.where(foreground, stack, 0.0)
    mass = weight.sum(axis=(2, 3))
    safe = np.where(mass > 0, mass, 1.0)
    my = (weight * yy).sum(axis=(2, 3)) / safe
    mx = (weight * xx).sum(axis=(2, 3)) / safe
    dy = yy[None, None] - my[:, :, None, None]
    dx = xx[None, None] - mx[:, :, None, None]
    syy = (weight * dy**2).sum(axis=(2, 3)) / safe
    sxx = (weight * dx**2).sum(axis=(2, 3)) / safe
    sxy = (weight * dx * dy).sum(axis=(2, 3)) / safe
    half_trace = (syy + sxx) / 2
    root = np.sqrt(((syy - sxx) / 2) ** 2 + sxy**2)
    lam1, lam2 = half_trace + root, np.clip(half_trace - root, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_channel["eccentricity"] = np.where(lam1 > 0, np.sqrt(np.clip(1.0 - lam2 / lam1, 0.0, 1.0)), 0.0)
    per_channel["radial_moment"] = np.where(mass > 0, syy + sxx, 0.0)
    for c, channel in enumerate(channels):
        for feature in CHANNEL_FEATURES:
            columns[f"{feature}_{channel}"] = per_channel[feature][:, c]
    centred = np.where(valid[:, None], stack - (masked.sum(axis=(2, 3)) / n_valid[:, None])[:, :, None, None], 0.0)
    norms = np.sqrt((centred**2).sum(axis=(2, 3)))
    for a in range(n_channels):
        for b in range(a + 1, n_channels):
            denominator = norms[:, a] * norms[:, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = (centred[:, a] * centred[:, b]).sum(axis=(1, 2)) / denominator
            # a constant channel has no defined correlation; 0 (no co-localisation) keeps X finite
            columns[f"correlation_{channels[a]}_{channels[b]}"] = np.where(denominator > 0, r, 0.0)
    return pd.DataFrame(columns)


def cell_features(adata: ad.AnnData, *, threshold: str | float | Sequence[float] = "otsu") -> ad.AnnData:
    """Compute classical image features of every cell; return a new AnnData with them in ``X``.

    Parameters
    ----------
    adata
        Cell-image AnnData (``obsm["images"]``, see :func:`spatialclust.io.read_cell_images`).
    threshold
        See :func:`classical_features`.

    Returns
    -------
    A new AnnData with the same ``obs``, ``obsm`` and ``uns`` and ``X`` = float32 features,
    ``var`` = feature names (``var["channel"]``, ``var["feature"]``), ``uns["cell_features"]["params"]``.
    (A new object because the number of variables changes.)
    """
    stack = cell_image_stack(adata)
    info = adata.uns[_keys.CELL_IMAGE_INFO]
    sizes = adata.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    table = classical_features(stack, sizes=sizes, channels=info["channels"], threshold=threshold)
    var = pd.DataFrame(index=pd.Index(table.columns, dtype=str))
    var["feature"] = [name.rsplit("_", 1)[0] if not name.startswith("correlation_") else "correlation" for name in table.columns]
    var["channel"] = [name[len(f) + 1 :] for name, f in zip(table.columns, var["feature"])]
    result = ad.AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=adata.obs.copy(),
        var=var,
        obsm={k: v for k, v in adata.obsm.items()},
        uns=dict(adata.uns),
    )
    result.uns["cell_features"] = {_keys.PARAMS: {"threshold": threshold if isinstance(threshold, (str, float, int)) else list(threshold)}}
    logger.info("computed %d classical features for %d cells", table.shape[1], table.shape[0])
    return result


def cell_pca(
    adata: ad.AnnData,
    *,
    n_comps: int = 10,
    scale: bool = True,
    umap: bool = True,
    n_neighbors: int = 15,
    random_state: int = 0,
) -> None:
    """Scale the features, then PCA (+ neighbour graph and UMAP) with scanpy (Palli 2023, sec. 4.1-4.2).

    Parameters
    ----------
    adata
        AnnData with features in ``X`` (from :func:`cell_features` or :func:`spatialclust.io.read_cell_features`).
    n_comps
        Number of principal components; at most the number of features and fewer than the cells.
    scale
        Z-score every feature (``sc.pp.scale``) first; the unscaled features are kept in ``layers["raw"]``.
    umap
        Also compute the kNN graph on the PCs and the UMAP (``obsm["X_umap"]``).
    n_neighbors
        Neighbours of the kNN graph.
    random_state
        Seed of PCA and UMAP.

    Returns
    -------
    None; writes ``obsm["X_pca"]``, ``varm["PCs"]``, ``uns["pca"]`` (scanpy), ``layers["raw"]``,
    and with ``umap`` ``obsp["distances"]``, ``obsp["connectivities"]``, ``obsm["X_umap"]``.
    """
    import scanpy as sc

    n_obs, n_vars = adata.shape
    if n_vars == 0:
        raise ValueError("`adata` has no features in X; compute them first with spatialclust.tl.cell_features.")
    if not isinstance(n_comps, (int, np.integer)) or n_comps < 1:
        raise ValueError(f"`n_comps` must be a positive integer, got {n_comps!r}.")
    if n_comps > n_vars:
        raise ValueError(f"`n_comps`={n_comps} is larger than the number of features ({n_vars}); use at most {n_vars}.")
    if n_comps >= n_obs:
        raise ValueError(f"`n_comps`={n_comps} must be smaller than the number of cells ({n_obs}).")
    if not np.isfinite(np.asarray(adata.X)).all():
        raise ValueError("`adata.X` contains NaN or infinite feature values.")
    adata.layers[_keys.RAW] = np.asarray(adata.X, dtype=np.float32).copy()
    if scale:
        # constant features have zero variance: scanpy sets them to 0, which is what we want
        adata.X = np.asarray(adata.X, dtype=np.float64)
        sc.pp.scale(adata)
        adata.X = adata.X.astype(np.float32)
    sc.pp.pca(adata, n_comps=int(n_comps), svd_solver="full", random_state=random_state)
    if umap:
        sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep="X_pca", random_state=random_state)
        sc.tl.umap(adata, random_state=random_state)
