"""2-D / 3-D scatter of the feature-image embedding coloured by cluster (seed 000, Figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _keys as K
from ._utils import cluster_colors, cluster_labels, finish


def _default_basis(adata: AnnData, key: str) -> str:
    """The clustering's own low-dimensional coordinates (``varm[f"{key}_umap"]``) or its input embedding."""
    if K.umap_key(key) in adata.varm:
        return K.umap_key(key)
    use_rep = adata.uns.get(key, {}).get("use_rep") if isinstance(adata.uns.get(key), dict) else None
    if use_rep in adata.varm:
        return str(use_rep)
    valid = ", ".join(f"`{k}`" for k in adata.varm) or "none"
    raise KeyError(f"No embedding found for clustering `{key}`; pass `basis` (varm keys present: {valid}).")


def embedding(
    adata: AnnData,
    key: str = K.CLUSTER,
    *,
    basis: str | None = None,
    components: int = 3,
    point_size: float = 12.0,
    title: str | None = None,
    figsize: tuple[float, float] = (6.5, 5.5),
    random_state: int = 0,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Scatter plot of the feature images in an embedding, coloured by cluster.

    Each point is one ion image, as in Figure 3 of Zhang et al. (2024, seed 000), which shows the
    3-D UMAP embedding of the UMAP-DBSCAN pipeline. Noise images (label -1) are grey. An embedding
    with more dimensions than ``components`` (e.g. ``X_neural`` of a k-means run) is projected
    onto its first principal components for display, which the axis labels say.

    Parameters
    ----------
    adata
        Dataset with cluster labels in ``var[key]`` and embeddings in ``varm``.
    key
        ``var`` column of the clustering.
    basis
        ``varm`` key to plot; default: the clustering's UMAP coordinates (``varm[f"{key}_umap"]``,
        written by ``umap_dbscan``) or else the embedding it clustered (``uns[key]["use_rep"]``).
    components
        2 or 3 (3-D axes).
    point_size, title, figsize
        Marker size, figure title (default: key and basis) and size in inches.
    random_state
        Seed of the (randomised) PCA projection.
    save, dpi
        Also write the figure to this file (written atomically) at this resolution.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if components not in (2, 3):
        raise ValueError(f"`components` must be 2 or 3; received {components!r}.")
    labels = cluster_labels(adata, key)
    basis = basis or _default_basis(adata, key)
    if basis not in adata.varm:
        valid = ", ".join(f"`{k}`" for k in adata.varm) or "none"
        raise KeyError(f"`basis`={basis!r} is not in `adata.varm`; present: {valid}.")
    coords = np.asarray(adata.varm[basis], dtype=np.float64)
    axis_name = basis.removeprefix("X_")
    if coords.shape[1] > components:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=components, random_state=random_state).fit_transform(coords)
        axis_name = f"PC of {basis}"
    components = min(components, coords.shape[1])
    colors = cluster_colors(labels)
    point_colors = np.array([colors[int(c)] for c in labels])

    fig = plt.figure(figsize=figsize)
    ax = fig.add_subplot(projection="3d" if components == 3 else None)
    noise = labels < 0
    for selection, size, alpha in ((noise, point_size * 0.6, 0.4), (~noise, point_size, 0.9)):
        if selection.any():
            ax.scatter(*coords[selection, :components].T, c=point_colors[selection], s=size, alpha=alpha,
                       linewidths=0)
    for i, setter in enumerate((ax.set_xlabel, ax.set_ylabel, getattr(ax, "set_zlabel", None))[:components]):
        setter(f"{axis_name} {i + 1}", fontsize=8)
    ax.tick_params(labelsize=7)
    present = [c for c in sorted(colors) if (labels == c).any()]
    if len(present) <= 30:
        handles = [Line2D([], [], marker="o", linestyle="", color=colors[c], markersize=5) for c in present]
        names = [f"noise ({int(noise.sum())})" if c < 0 else str(c) for c in present]
        ax.legend(handles, names, title="cluster", fontsize=7, title_fontsize=8, ncols=2,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title(title or f"{key} in {basis}", fontsize=10)
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)
