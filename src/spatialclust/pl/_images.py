"""Image figures of a clustering: cluster mean images, a cluster's members, RGB composites.

Figures follow Zhang et al. (2024, seed 000): a grid of mean cluster images ("Visualization of
Clustering Results"), the member images of one cluster, and a false-colour composite of three
cluster mean images (red, green, blue) overlaid on a histology image of a neighbouring section
(Figures 5 and 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .. import pp
from ..io import read_histology
from ._means import cluster_means, mean_image_correlation, standardized_images
from ._utils import add_colorbar, add_scale_bar, cluster_colors, cluster_labels, feature_labels, finish, image_axes, masked


def _grid(n_panels: int, ncols: int, panel_size: float, height_ratio: float):
    import matplotlib.pyplot as plt

    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"`ncols` must be a positive integer; received {ncols!r}.")
    ncols = int(min(ncols, max(n_panels, 1)))
    nrows = int(np.ceil(max(n_panels, 1) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * height_ratio * nrows + 0.4), squeeze=False
    )
    for ax in axes.ravel():
        image_axes(ax)
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _aspect(adata: AnnData) -> float:
    height, width = pp.tissue_mask_image(adata).shape
    return min(max(height / width, 0.3), 3.0)


def cluster_mean_images(
    adata: AnnData,
    key: str = K.CLUSTER,
    *,
    clusters: Sequence[int] | None = None,
    layer: str | None = None,
    winsorize: float | None = 95.0,
    include_noise: bool = False,
    ncols: int = 6,
    panel_size: float = 2.0,
    cmap: str = "viridis",
    title: str | None = None,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Grid of the mean image of every cluster (Zhang et al. 2024, seed 000).

    Every member image is winsorised at its upper ``winsorize`` percentile and scaled to [0, 1],
    then the members of each cluster are averaged (:func:`cluster_means`). Each panel is titled
    with the cluster id (in the cluster's colour, shared by all figures) and its number of images.

    Parameters
    ----------
    adata
        Spatial dataset with integer cluster labels in ``var[key]`` (-1 = noise).
    key
        ``var`` column of the clustering.
    clusters
        Cluster ids to show (default: all, ascending).
    layer
        Build images from ``layers[layer]`` instead of ``X``.
    winsorize
        Upper percentile for winsorising each member (None: off).
    include_noise
        Also show the mean of the noise images (label -1).
    ncols, panel_size
        Panels per row and panel width in inches.
    cmap
        Colour map of the images.
    title
        Figure title (default: the clustering key).
    means
        Precomputed ``cluster_means(adata, key, ...)`` output (saves recomputing it).
    save
        Also write the figure to this file (png, pdf, svg or jpg; written atomically).
    dpi
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = cluster_labels(adata, key)
    ids, images = means if means is not None else cluster_means(
        adata, key, layer=layer, winsorize=winsorize, include_noise=include_noise
    )
    if clusters is not None:
        missing = sorted(set(int(c) for c in clusters) - set(ids.tolist()))
        if missing:
            raise ValueError(f"`clusters` {missing} are not clusters of `var[{key!r}]`; found {ids.tolist()}.")
        keep = [int(np.flatnonzero(ids == c)[0]) for c in clusters]
        ids, images = ids[keep], images[keep]
    mask = pp.tissue_mask_image(adata)
    colors = cluster_colors(labels)
    fig, axes = _grid(len(ids), ncols, panel_size, _aspect(adata))
    # one intensity scale for every panel, so that a faint cluster mean looks faint (colour bar)
    vmax = max(float(np.nanmax(images)) if len(ids) else 0.0, 1e-12)
    for ax, cluster, image in zip(axes, ids, images):
        ax.imshow(masked(image, mask), cmap=cmap, vmin=0, vmax=vmax)
        name = "noise" if cluster < 0 else f"cluster {cluster}"
        ax.set_title(f"{name} ({int((labels == cluster).sum())} images)", fontsize=9, color=colors[int(cluster)])
    if not len(ids):
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no clusters", ha="center", va="center")
    else:
        add_scale_bar(axes[0], adata, width_px=mask.shape[1])
    fig.suptitle(title or f"Cluster mean images: {key}", fontsize=11)
    fig.tight_layout()
    if len(ids):
        add_colorbar(fig, cmap, vmax, "mean intensity\n(members scaled to [0, 1])")
    return finish(fig, save, dpi=dpi)


def cluster_members(
    adata: AnnData,
    key: str = K.CLUSTER,
    cluster: int = 0,
    *,
    layer: str | None = None,
    winsorize: float | None = 95.0,
    max_images: int = 24,
    ncols: int = 8,
    panel_size: float = 1.6,
    cmap: str = "viridis",
    title: str | None = None,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    correlation: np.ndarray | None = None,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """The mean image of one cluster followed by its member images, best-matching first.

    Members are sorted by their Pearson correlation with the cluster mean
    (:func:`mean_image_correlation`), which is shown under each m/z.

    Parameters
    ----------
    adata, key, layer, winsorize, cmap, save, dpi
        As in :func:`cluster_mean_images`.
    title
        Name of the clustering in the figure title (default: the clustering key).
    cluster
        Cluster id (-1 for the noise images).
    max_images
        Show at most this many members.
    ncols, panel_size
        Panels per row and panel width in inches.
    means, correlation
        The outputs of :func:`cluster_means` (with the noise mean for ``cluster=-1``) and
        :func:`mean_image_correlation` for the same arguments, to avoid computing them again (each
        is a pass over the data).

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = cluster_labels(adata, key)
    if cluster not in set(labels.tolist()):
        raise ValueError(f"`cluster`={cluster!r} is not a cluster of `var[{key!r}]`; found {sorted(set(labels.tolist()))}.")
    if int(max_images) != max_images or max_images < 1:
        raise ValueError(f"`max_images` must be a positive integer; received {max_images!r}.")
    if means is None or (cluster < 0 and cluster not in means[0]):
        means = cluster_means(adata, key, layer=layer, winsorize=winsorize, include_noise=cluster < 0)
    ids, mean_images = means
    members = np.flatnonzero(labels == cluster)
    if cluster >= 0:
        if correlation is None:
            correlation = mean_image_correlation(adata, key, layer=layer, winsorize=winsorize, means=means)
        corr = np.asarray(correlation)[members]
        order = np.argsort(-np.nan_to_num(corr, nan=-2.0), kind="stable")
        members, corr = members[order], corr[order]
    else:
        corr = np.full(len(members), np.nan)
    members, corr = members[: int(max_images)], corr[: int(max_images)]
    images = standardized_images(adata, members, layer=layer, winsorize=winsorize)
    mask = pp.tissue_mask_image(adata)
    names = feature_labels(adata)
    color = cluster_colors(labels)[int(cluster)]
    fig, axes = _grid(len(members) + 1, ncols, panel_size, _aspect(adata))
    axes[0].imshow(masked(mean_images[int(np.flatnonzero(ids == cluster)[0])], mask), cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title("mean", fontsize=8, color=color, fontweight="bold")
    add_scale_bar(axes[0], adata, width_px=mask.shape[1])
    for ax, index, image, r in zip(axes[1:], members, images, corr):
        ax.imshow(masked(image, mask), cmap=cmap, vmin=0, vmax=1)
        ax.set_title(names[index] + ("" if np.isnan(r) else f"\nr = {r:.2f}"), fontsize=7)
    name = "noise images" if cluster < 0 else f"cluster {cluster}"
    shown = f"{len(members)} of {int((labels == cluster).sum())}"
    fig.suptitle(f"{title or key}: {name} ({shown} images)", fontsize=10, color=color)
    fig.tight_layout()
    add_colorbar(fig, cmap, 1.0, "intensity\n(scaled to [0, 1])")
    return finish(fig, save, dpi=dpi)


def distinct_clusters(
    clusters: np.ndarray, means: np.ndarray, sizes: np.ndarray, *, n: int = 3, max_correlation: float = 0.6
) -> list[int]:
    """Pick ``n`` large clusters whose mean images differ (for an RGB composite).

    Greedy: clusters by decreasing size, skipping one whose mean image correlates above
    ``max_correlation`` with one already picked; if too few remain, the largest skipped are added.
    """
    flat = means.reshape(len(means), -1).astype(np.float64)
    corr = np.nan_to_num(np.corrcoef(flat), nan=1.0) if len(flat) > 1 else np.ones((1, 1))
    chosen: list[int] = []
    for i in np.argsort(-sizes, kind="stable"):
        if all(corr[i, j] <= max_correlation for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    for i in np.argsort(-sizes, kind="stable"):
        if len(chosen) == n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return [int(clusters[i]) for i in chosen]


def rgb_composite(
    adata: AnnData,
    key: str = K.CLUSTER,
    clusters: Sequence[int] | None = None,
    *,
    histology: str | Path | np.ndarray | None = None,
    alpha: float = 0.7,
    layer: str | None = None,
    winsorize: float | None = 95.0,
    panel_size: float = 3.0,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """False-colour composite of three cluster mean images (red, green, blue), optionally over histology.

    Reproduces Figures 5 and 7 of Zhang et al. (2024, seed 000): the three mean images, each in
    its own colour channel, their composite, and (with ``histology``) the histology image and the
    composite overlaid onto it. The histology image must cover the same field of view as the ion
    images (registered beforehand); it is stretched onto the ion-image grid.

    Parameters
    ----------
    adata, key, layer, winsorize, save, dpi
        As in :func:`cluster_mean_images`.
    clusters
        Three cluster ids for red, green and blue; default: three large clusters with distinct
        mean images (:func:`distinct_clusters`).
    histology
        Histology image (array ``(H, W)``/``(H, W, 3|4)`` or a tiff/png/jpg file), or None.
    alpha
        Opacity of the composite over the histology where the cluster images are brightest.
    panel_size
        Panel width in inches.
    means
        The output of :func:`cluster_means` for the same arguments, to avoid computing it again.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    if not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1]; received {alpha!r}.")
    labels = cluster_labels(adata, key)
    ids, means = means if means is not None else cluster_means(adata, key, layer=layer, winsorize=winsorize)
    if clusters is None:
        if len(ids) == 0:
            raise ValueError(f"`var[{key!r}]` has no clusters (only noise); an RGB composite needs at least one.")
        sizes = np.array([(labels == c).sum() for c in ids])
        clusters = distinct_clusters(ids, means, sizes, n=min(3, len(ids)))
    clusters = [int(c) for c in clusters]
    if not 1 <= len(clusters) <= 3 or any(c not in ids for c in clusters):
        raise ValueError(f"`clusters` must be one to three cluster ids of `var[{key!r}]` ({ids.tolist()}); received {clusters}.")
    mask = pp.tissue_mask_image(adata)
    channels = np.zeros((3, *mask.shape))
    for i, c in enumerate(clusters):
        image = means[int(np.flatnonzero(ids == c)[0])].astype(np.float64)
        top = image.max()
        channels[i] = image / top if top > 0 else image
    rgb = np.moveaxis(channels, 0, -1)
    tissue = read_histology(histology) if histology is not None else None
    extent = (0, mask.shape[1], mask.shape[0], 0)

    n_panels = 1 + len(clusters) + (1 if tissue is not None else 0)
    aspect = _aspect(adata)
    fig, axes = plt.subplots(1, n_panels, figsize=(panel_size * n_panels, panel_size * aspect + 0.6), squeeze=False)
    axes = axes.ravel()
    for ax in axes:
        image_axes(ax)
    column = 0
    if tissue is not None:
        axes[0].imshow(tissue, extent=extent)
        axes[0].set_title("histology", fontsize=9)
        column = 1
    composite_ax = axes[column]
    if tissue is not None:
        composite_ax.imshow(tissue, extent=extent)
        overlay = np.concatenate([rgb, (alpha * rgb.max(axis=2) * mask)[..., None]], axis=2)
        composite_ax.imshow(overlay, extent=extent, interpolation="nearest")
        composite_ax.set_title("composite over histology", fontsize=9)
    else:
        composite_ax.imshow(np.where(mask[..., None], rgb, 1.0), extent=extent, interpolation="nearest")
        composite_ax.set_title("RGB composite", fontsize=9)
    for i, c in enumerate(clusters):
        name = ("red", "green", "blue")[i]
        cmap = LinearSegmentedColormap.from_list(name, [(0, 0, 0), tuple(np.eye(3)[i])])
        ax = axes[column + 1 + i]
        ax.imshow(masked(channels[i], mask), cmap=cmap, vmin=0, vmax=1, extent=extent, interpolation="nearest")
        ax.set_title(f"cluster {c} ({name})", fontsize=9)
    fig.suptitle(f"{key}: clusters {', '.join(map(str, clusters))}", fontsize=10)
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)
