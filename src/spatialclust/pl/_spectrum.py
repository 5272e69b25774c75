"""Mean spectrum with every m/z coloured by its cluster (Zhang et al. 2024, seed 000, Figures 4 and 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .. import pp
from ..metrics import C13_SHIFT
from ._means import index_chunks
from ._utils import cluster_colors, cluster_labels, finish

def mean_spectrum(adata: AnnData, *, layer: str | None = None) -> np.ndarray:
    """Mean intensity of every feature over the on-tissue pixels, float64 ``(n_vars,)``."""
    matrix = pp.intensity_matrix(adata, layer)
    if pp.is_dask(matrix):  # one pass over the pixel chunks
        return np.asarray(pp.tissue_pixels(adata, matrix).astype(np.float64).mean(axis=0).compute())
    mask = pp.tissue_mask_image(adata)
    out = np.empty(adata.n_vars)
    for chunk in index_chunks(np.arange(adata.n_vars), n_pixels=mask.size):
        out[chunk] = pp.feature_images(adata, layer=layer, features=chunk)[:, mask].mean(axis=1)
    return out


def _auto_zoom(mz: np.ndarray, intensity: np.ndarray, width: float) -> tuple[float, float]:
    """A window of ``width`` around the most intense ion that has a 13C partner (else the most intense)."""
    order = np.argsort(-intensity, kind="stable")
    tolerance = max(0.01, 3 * float(np.median(np.diff(np.sort(mz)))) if len(mz) > 1 else 0.01)
    tolerance = min(tolerance, 0.1)
    centre = mz[order[0]]
    for i in order:
        if np.any(np.abs(mz - (mz[i] + C13_SHIFT)) <= tolerance):
            centre = mz[i] + C13_SHIFT / 2
            break
    return float(centre - width / 2), float(centre + width / 2)


def spectrum(
    adata: AnnData,
    key: str = K.CLUSTER,
    *,
    layer: str | None = None,
    zoom: tuple[float, float] | str | None = "auto",
    zoom_width: float = 6.0,
    annotate: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (10.0, 5.5),
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Mean spectrum with every m/z (stem) coloured by its cluster, and a zoom window.

    As in Figures 4 and 6 of Zhang et al. (2024, seed 000): the full mean spectrum on top, a
    zoom-in below in which each peak is labelled with its cluster, so that isotopes (spaced by
    ~1.003 m/z) assigned to different clusters stand out. Noise images (label -1) are grey.

    Parameters
    ----------
    adata
        Spatial dataset with ``var["mz"]`` (without it the feature index is the x axis) and
        integer cluster labels in ``var[key]``.
    key
        ``var`` column of the clustering.
    layer
        Intensities to average (e.g. ``"raw"`` for the spectrum before preprocessing); default ``X``.
    zoom
        ``(low, high)`` m/z window, ``"auto"`` (a window of ``zoom_width`` around the most intense
        ion that has a 13C isotope partner), or None for no zoom panel.
    zoom_width
        Width of the automatic window in m/z.
    annotate
        Write the cluster id above every peak of the zoom panel.
    title, figsize
        Figure title (default: the key) and size in inches.
    save, dpi
        Also write the figure to this file (written atomically) at this resolution.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels = cluster_labels(adata, key)
    has_mz = K.MZ in adata.var
    x = np.asarray(adata.var[K.MZ], dtype=float) if has_mz else np.arange(adata.n_vars, dtype=float)
    intensity = mean_spectrum(adata, layer=layer)
    colors = cluster_colors(labels)
    stem_colors = [colors[int(c)] for c in labels]

    if isinstance(zoom, str):
        if zoom != "auto":
            raise ValueError(f"`zoom` must be (low, high), 'auto' or None; received {zoom!r}.")
        if not zoom_width > 0:
            raise ValueError(f"`zoom_width` must be positive; received {zoom_width!r}.")
        window = _auto_zoom(x, intensity, zoom_width) if adata.n_vars else None
    elif zoom is None:
        window = None
    else:
        low, high = (float(v) for v in zoom)
        if not low < high:
            raise ValueError(f"`zoom` must be (low, high) with low < high; received {zoom!r}.")
        window = (low, high)

    rows = 2 if window is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=figsize if rows == 2 else (figsize[0], figsize[1] / 2), squeeze=False)
    full = axes[0, 0]
    full.vlines(x, 0, intensity, colors=stem_colors, linewidth=1.0)
    full.set_ylim(0, max(float(intensity.max(initial=0)) * 1.05, 1e-12))
    full.set_xlabel("m/z" if has_mz else "feature")
    full.set_ylabel("mean intensity")
    full.set_title(title or f"Mean spectrum coloured by cluster: {key}", fontsize=11)
    for spine in ("top", "right"):
        full.spines[spine].set_visible(False)
    if window is not None:
        full.axvspan(*window, color="0.85", zorder=0)
        zoom_ax = axes[1, 0]
        inside = (x >= window[0]) & (x <= window[1])
        zoom_ax.vlines(x[inside], 0, intensity[inside], colors=[stem_colors[i] for i in np.flatnonzero(inside)], linewidth=2.0)
        top = float(intensity[inside].max(initial=0)) or 1.0
        zoom_ax.set_ylim(0, top * 1.2)
        zoom_ax.set_xlim(*window)
        if annotate:
            for i in np.flatnonzero(inside):
                text = "noise" if labels[i] < 0 else str(labels[i])
                zoom_ax.annotate(text, (x[i], intensity[i]), xytext=(0, 2), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=7, color=stem_colors[i])
        zoom_ax.set_xlabel("m/z" if has_mz else "feature")
        zoom_ax.set_ylabel("mean intensity")
        zoom_ax.set_title(f"zoom: {window[0]:.2f} to {window[1]:.2f}", fontsize=9)
        for spine in ("top", "right"):
            zoom_ax.spines[spine].set_visible(False)
    ids = sorted(colors)
    if len(ids) <= 24:
        handles = [Line2D([], [], color=colors[c], linewidth=3) for c in ids if (labels == c).any()]
        names = ["noise" if c < 0 else str(c) for c in ids if (labels == c).any()]
        full.legend(handles, names, title="cluster", fontsize=7, title_fontsize=8, ncols=2,
                    loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)
