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

``feature_set="cellprofiler"`` (the default of ``spatialclust cells run``) adds a CellProfiler-like
set (Carpenter et al. 2006, Genome Biol. 7:R100; McQuin et al. 2018, PLoS Biol. 16:e2005970),
computed with scikit-image (``regionprops``, ``graycomatrix`` / ``graycoprops``) inside a cell mask
(Otsu threshold of the sum of the per-cell min-max scaled channels), per channel:

- intensity distribution (MeasureObjectIntensity): integrated, mean, standard deviation, median,
  MAD, quantiles 5 / 25 / 75 / 95 %, min, skewness, kurtosis, mass displacement (distance of the
  intensity centroid from the mask centroid, relative to the cell radius);
- radial distribution (MeasureObjectIntensityDistribution): fraction of the intensity in 4
  rings at 0-25-50-75-100 % of the cell radius from the mask centroid;
- Haralick texture (MeasureTexture): GLCM contrast, dissimilarity, homogeneity, energy,
  correlation and ASM at distances 1 and 3 px, averaged over 4 directions, on the cell's pixels
  quantised into 8 levels between their 1st and 99th percentiles (brightness-invariant);
- objects (MeasureObjectSizeShape on the channel's own Otsu foreground): number of objects of at
  least 3 px, total and largest area (relative to the cell), eccentricity, solidity, extent and
  form factor of the largest object, distance between the two largest (relative to the cell radius);
- the 7 intensity-weighted Hu moments (rotation-invariant shape descriptors; ``sign * log10|h|``);

and for the cell mask: area, perimeter, eccentricity, solidity, form factor, major / minor axis.
Zernike moments are not computed (Hu moments are the rotation-invariant shape descriptors here).
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger, progress
from .._registry import invalid_option
from ..io import cell_image_stack
from ..pp import otsu_threshold

__all__ = ["BACKGROUNDS", "CHANNEL_FEATURES", "FEATURE_SETS", "border_background", "cell_features", "classical_features", "cell_pca"]

#: Per-channel features, in output order.
CHANNEL_FEATURES = ("max_intensity", "mean_intensity", "total_intensity", "size", "eccentricity", "radial_moment")
#: Feature sets of :func:`classical_features`.
FEATURE_SETS = ("ics", "cellprofiler")
#: Background handling of :func:`classical_features`.
BACKGROUNDS = ("border", "none")
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
_GLCM_DISTANCES = (1, 3)
_GLCM_LEVELS = 8
_RADIAL_BINS = 4
#: A channel whose median border level lies above this fraction of the cells' intensity range has a
#: bright background (measured: real brightfield 0.37, fluorescence and darkfield 0.01-0.15).
_BRIGHT_BACKGROUND_POSITION = 0.25


def _cellprofiler_one(image: np.ndarray) -> dict[str, float]:
    """CellProfiler-like features of one unpadded ``(C, h, w)`` cell image (channel index in the keys)."""
    from scipy import stats
    from skimage.feature import graycomatrix, graycoprops
    from skimage.measure import label, regionprops

    n_channels = image.shape[0]
    low = image.min(axis=(1, 2), keepdims=True)
    span = np.maximum(image.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    combined = ((image - low) / span).sum(axis=0)
    mask = combined > otsu_threshold(combined)
    if mask.sum() < 4:  # a cell without a visible object: the whole image
        mask = np.ones_like(mask)
    labelled = label(mask)
    cell = max(regionprops(labelled), key=lambda r: r.area)
    mask = labelled == cell.label
    cy, cx = cell.centroid
    yy, xx = np.nonzero(mask)
    distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    radius = max(float(distance.max()), 1.0)
    ring = np.minimum((distance / radius * _RADIAL_BINS).astype(int), _RADIAL_BINS - 1)
    out: dict[str, float] = {
        "area_cell": float(cell.area), "perimeter_cell": float(cell.perimeter), "eccentricity_cell": float(cell.eccentricity),
        "solidity_cell": float(cell.solidity), "form_factor_cell": float(4 * np.pi * cell.area / max(cell.perimeter, 1.0) ** 2),
        "major_axis_cell": float(cell.axis_major_length), "minor_axis_cell": float(cell.axis_minor_length),
    }
    for c in range(n_channels):
        values = image[c][mask]
        total = float(values.sum())
        q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
        weight = np.clip(values, 0, None)
        wsum = max(float(weight.sum()), 1e-12)
        displacement = np.hypot((weight * yy).sum() / wsum - cy, (weight * xx).sum() / wsum - cx) / radius
        std = float(values.std())
        features = {
            "integrated_intensity": total, "mean": float(values.mean()), "std": std, "median": float(q[2]),
            "mad": float(np.median(np.abs(values - q[2]))), "q05": float(q[0]), "q25": float(q[1]), "q75": float(q[3]),
            "q95": float(q[4]), "min": float(values.min()),
            "skewness": float(stats.skew(values)) if std > 0 else 0.0,
            "kurtosis": float(stats.kurtosis(values)) if std > 0 else 0.0,
            "mass_displacement": float(displacement),
        }
        rings = np.bincount(ring, weights=weight, minlength=_RADIAL_BINS) / wsum
        features.update({f"radial_fraction_{b + 1}of{_RADIAL_BINS}": float(rings[b]) for b in range(_RADIAL_BINS)})
        # Haralick texture inside the mask: level 0 marks the outside and is dropped from the GLCM
        lo, hi = np.quantile(values, [0.01, 0.99])
        levels = 1 + np.clip(((image[c] - lo) / max(hi - lo, 1e-12) * _GLCM_LEVELS).astype(int), 0, _GLCM_LEVELS - 1)
        levels = np.where(mask, levels, 0).astype(np.uint8)
        glcm = graycomatrix(levels, distances=_GLCM_DISTANCES, angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                            levels=_GLCM_LEVELS + 1, symmetric=True)[1:, 1:].astype(np.float64)
        glcm /= np.maximum(glcm.sum(axis=(0, 1), keepdims=True), 1e-12)
        for prop in _GLCM_PROPS:
            table = graycoprops(glcm, prop)  # (distances, angles)
            for d, distance in enumerate(_GLCM_DISTANCES):
                features[f"glcm_{prop.lower()}_d{distance}"] = float(np.nan_to_num(table[d].mean()))
        # objects of this channel: its own Otsu foreground inside the cell
        foreground = np.zeros_like(mask)
        foreground[mask] = values > otsu_threshold(values) if values.max() > values.min() else True  # uniform: one object
        objects = sorted((r for r in regionprops(label(foreground)) if r.area >= 3), key=lambda r: -r.area)
        largest = objects[0] if objects else None
        features.update({
            "n_objects": float(len(objects)),
            "object_area": float(sum(r.area for r in objects)) / cell.area,
            "largest_area": 0.0 if largest is None else float(largest.area) / cell.area,
            "largest_eccentricity": 0.0 if largest is None else float(largest.eccentricity),
            "largest_solidity": 0.0 if largest is None else float(largest.solidity),
            "largest_extent": 0.0 if largest is None else float(largest.extent),
            "largest_form_factor": 0.0 if largest is None else float(4 * np.pi * largest.area / max(largest.perimeter, 1.0) ** 2),
            "object_distance": 0.0 if len(objects) < 2 else float(np.hypot(*np.subtract(objects[0].centroid, objects[1].centroid))) / radius,
        })
        # a channel without signal in the cell (e.g. darkfield of a cell that scatters nothing) has no
        # intensity-weighted moments: its Hu moments are 0, not NaN
        hu = (regionprops(mask.astype(np.uint8), intensity_image=np.clip(image[c], 0, None))[0].moments_weighted_hu
              if weight.sum() > 0 else np.zeros(7))
        features.update({f"hu_{k + 1}": float(np.sign(h) * np.log10(abs(h) + 1e-30)) if h != 0 else 0.0 for k, h in enumerate(hu)})
        out.update({f"{name}_{c}": value for name, value in features.items()})
    return out


def border_background(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Background level of every cell and channel: the median of the pixels on the border of the true area.

    The border of a cell crop is background in imaging flow cytometry (the cell is centred in its
    frame), so its median estimates the background level whether it is dark (fluorescence,
    darkfield) or bright (brightfield), as CellProfiler's per-image background correction does
    (McQuin et al. 2018).

    Parameters
    ----------
    images
        ``(n, C, H, W)`` padded cell images.
    valid
        ``(n, H, W)`` boolean, True on each cell's true (unpadded) area, a top-left rectangle.

    Returns
    -------
    ``(n, C)`` background levels.
    """
    rows, cols = valid.any(axis=2), valid.any(axis=1)
    heights, widths = rows.sum(axis=1), cols.sum(axis=1)
    out = np.empty(images.shape[:2])
    for i, (h, w) in enumerate(zip(heights, widths)):
        area = images[i, :, :h, :w]
        border = np.concatenate([area[:, 0], area[:, -1], area[:, 1:-1, 0], area[:, 1:-1, -1]], axis=1)
        out[i] = np.median(border, axis=1)
    return out


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
    feature_set: str = "ics",
    background: str = "none",
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
    feature_set
        ``"ics"``: the sorter's real-time features only; ``"cellprofiler"``: also the
        CellProfiler-like intensity-distribution, radial, texture and shape features (module docstring).
    background
        ``"border"``: estimate the background of every cell and channel from the crop's border
        (:func:`border_background`); a channel whose background lies inside the cells' intensity
        range (median over the cells above 25 % of it: a brightfield cell is darker and brighter
        than its bright background) is measured on ``|image - background|``, so that its cell becomes
        a bright object on a dark background as a fluorescent one is; dark-background channels
        (fluorescence, darkfield) are left as they are. ``"none"``: every channel as it is (the
        features assume a dark background).

    Returns
    -------
    DataFrame ``(n, C * 6 + C * (C - 1) / 2)`` (``"ics"``; ``"cellprofiler"``: + ``C * 44 + 7``)
    with columns ``<feature>_<channel>``, ``correlation_<a>_<b>`` and ``<feature>_cell``.
    """
    if feature_set not in FEATURE_SETS:
        raise invalid_option(feature_set, "feature_set", list(FEATURE_SETS))
    if background not in BACKGROUNDS:
        raise invalid_option(background, "background", list(BACKGROUNDS))
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
    if background == "border":
        # bright-background channels (brightfield): the background level sits inside the cells'
        # intensity range (the cell is darker and brighter than it), not at its bottom as in a
        # fluorescence or darkfield channel; decided per channel over all cells
        level = border_background(stack, valid)
        low = np.where(valid[:, None], stack, np.inf).min(axis=(2, 3))
        high = np.where(valid[:, None], stack, -np.inf).max(axis=(2, 3))
        position = np.median((level - low) / np.maximum(high - low, 1e-12), axis=0)
        bright = (position > _BRIGHT_BACKGROUND_POSITION)[None, :, None, None]
        logger.info("bright-background channels (features on |image - border median|): %s",
                    [c for c, b in zip(channels, bright[0, :, 0, 0]) if b] or "none")
        stack = np.where(bright, np.abs(stack - level[:, :, None, None]), stack)
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
    table = pd.DataFrame(columns)
    if feature_set == "ics":
        return table
    rows = [
        _cellprofiler_one(stack[i, :, : int(sizes[i, 0]), : int(sizes[i, 1])])
        for i in progress(range(n), desc="cell features", total=n)
    ]
    extra = pd.DataFrame(rows)
    # channel indices in the keys -> channel names
    extra.columns = [name if name.endswith("_cell") else f"{name.rsplit('_', 1)[0]}_{channels[int(name.rsplit('_', 1)[1])]}" for name in extra.columns]
    return pd.concat([table, extra.astype(np.float64)], axis=1)


def cell_features(
    adata: ad.AnnData,
    *,
    threshold: str | float | Sequence[float] = "otsu",
    feature_set: str = "ics",
    background: str = "none",
    channels: Sequence[str] | None = None,
) -> ad.AnnData:
    """Compute classical image features of every cell; return a new AnnData with them in ``X``.

    Parameters
    ----------
    adata
        Cell-image AnnData (``obsm["images"]``, see :func:`spatialclust.io.read_cell_images`).
    threshold, feature_set, background
        See :func:`classical_features` (a threshold list has one value per channel used).
    channels
        Compute the features on these channels only (names of ``uns["cell_images"]["channels"]``);
        None: every channel. After z-scoring, every feature weighs the same, so a channel that carries
        nothing about the phenotype dilutes the others (on the real Jurkat cells the darkfield and
        brightfield features do: docs/benchmarks.md).

    Returns
    -------
    A new AnnData with the same ``obs``, ``obsm`` and ``uns`` and ``X`` = float32 features,
    ``var`` = feature names (``var["channel"]``, ``var["feature"]``), ``uns["cell_features"]["params"]``.
    (A new object because the number of variables changes.)
    """
    stack = cell_image_stack(adata)
    names = [str(c) for c in adata.uns[_keys.CELL_IMAGE_INFO]["channels"]]
    if channels is not None:
        channels = [channels] if isinstance(channels, str) else [str(c) for c in channels]
        unknown = [c for c in channels if c not in names]
        if unknown or not channels:
            raise ValueError(f"Invalid option {unknown or channels} for `channels`. Valid options are: {', '.join(names)}.")
        stack = stack[:, [names.index(c) for c in channels]]
        names = channels
    sizes = adata.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    table = classical_features(stack, sizes=sizes, channels=names, threshold=threshold, feature_set=feature_set,
                               background=background)
    var = pd.DataFrame(index=pd.Index(table.columns, dtype=str))
    var[_keys.FEATURE] = [name.rsplit("_", 1)[0] if not name.startswith("correlation_") else "correlation" for name in table.columns]
    var[_keys.CHANNEL] = [name[len(f) + 1 :] for name, f in zip(table.columns, var[_keys.FEATURE])]
    result = ad.AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=adata.obs.copy(),
        var=var,
        obsm={k: v for k, v in adata.obsm.items()},
        uns=dict(adata.uns),
    )
    result.uns[_keys.CELL_FEATURES] = {_keys.PARAMS: {
        "threshold": threshold if isinstance(threshold, (str, float, int)) else list(threshold), "feature_set": feature_set,
        "background": background, "channels": names,
    }}
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
