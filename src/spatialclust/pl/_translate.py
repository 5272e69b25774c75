"""Plots of the ST -> MSI translation: measured vs predicted maps, gene-importance heatmaps, images."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._keys import SECTION, SPATIAL

__all__ = ["importance_heatmap", "metabolite_images", "translation_maps"]


def translation_maps(st: ad.AnnData, measured: np.ndarray, predicted: np.ndarray, *, names: Sequence[str],
                     max_metabolites: int = 8, section: str | None = None, spot_size: float | None = None):
    """Spatial maps of measured (top row) vs predicted (bottom row) metabolites of one section.

    Parameters
    ----------
    st
        Paired ST AnnData (its ``obsm["spatial"]`` places the spots).
    measured, predicted
        ``(n_spots, n_metabolites)`` on the same scale.
    names
        Metabolite names.
    max_metabolites
        At most this many columns (the first metabolites).
    section
        Section to show (default: the first).
    spot_size
        Marker size (default from the number of spots).

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    keep = np.ones(st.n_obs, dtype=bool)
    if SECTION in st.obs:
        sections = st.obs[SECTION].astype(str).to_numpy()
        keep = sections == (section if section is not None else sections[0])
    k = min(len(names), max_metabolites)
    fig, axes = plt.subplots(2, k, figsize=(2.3 * k, 4.6), squeeze=False)
    size = spot_size or max(2.0, 4000.0 / max(keep.sum(), 1))
    for j in range(k):
        vmin, vmax = np.percentile(measured[keep, j], [1, 99])
        for row, (label, values) in enumerate((("measured", measured), ("predicted", predicted))):
            ax = axes[row, j]
            ax.scatter(coords[keep, 0], coords[keep, 1], c=values[keep, j], s=size, cmap="viridis", vmin=vmin, vmax=vmax, marker="s", linewidths=0)
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(str(names[j]), fontsize=8)
            if j == 0:
                ax.set_ylabel(label)
    fig.tight_layout()
    return fig


def importance_heatmap(importance: pd.DataFrame, *, title: str = "gene importance"):
    """Heatmap of a metabolite x gene importance matrix (:func:`spatialclust.translate.gene_importance`)."""
    import matplotlib.pyplot as plt

    values = importance.to_numpy()
    fig, ax = plt.subplots(figsize=(0.35 * values.shape[1] + 2.5, 0.3 * values.shape[0] + 1.8))
    signed = (values < 0).any()
    limit = np.abs(values).max() or 1.0
    im = ax.imshow(values, cmap="RdBu_r" if signed else "viridis", vmin=-limit if signed else None, vmax=limit if signed else None, aspect="auto")
    ax.set_xticks(range(values.shape[1]), importance.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(values.shape[0]), importance.index, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def metabolite_images(adata: ad.AnnData, *, max_metabolites: int = 12):
    """Images of the (predicted) metabolites of an MSI-like AnnData with an integer grid."""
    import matplotlib.pyplot as plt

    from ..pp import feature_images

    images = feature_images(adata)
    k = min(images.shape[0], max_metabolites)
    cols = min(k, 4)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for j, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if j < k:
            ax.imshow(images[j], cmap="viridis", interpolation="nearest")
            ax.set_title(str(adata.var_names[j]), fontsize=8)
    fig.tight_layout()
    return fig
