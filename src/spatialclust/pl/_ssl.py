"""Figures of the self-supervised clustering of Hu et al. (2022, Chem. Sci. 13, 90; seed 001).

- :func:`knn_purity_curve`: purity of k-nearest-neighbour neighbourhoods, k = 1..30 (Fig. 2e);
- :func:`representations`: t-SNE / UMAP of several representations side by side, e.g. pretrained,
  after SimCLR and after self-labeling (Fig. 2c-d, Fig. S12);
- :func:`ion_pair_similarity`: cosine similarity of chosen ion pairs in several representations,
  e.g. CNN features vs. image vectors (Fig. 4b);
- :func:`self_labeling_history`: loss, confident images and accuracy per self-labeling epoch (Fig. 2g).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._registry import invalid_option
from ._utils import feature_labels, finish


def _varm(adata: AnnData, key: str, parameter: str = "reps") -> np.ndarray:
    if key not in adata.varm:
        valid = ", ".join(f"`{k}`" for k in adata.varm) or "none (run `sc.tl.embed` first)"
        raise KeyError(f"`{parameter}` entry {key!r} is not in `adata.varm`; present: {valid}.")
    return np.asarray(adata.varm[key], dtype=np.float64)


def _truth_codes(adata: AnnData, truth: str) -> tuple[np.ndarray, list[str]]:
    if truth not in adata.var:
        raise KeyError(f"`truth`={truth!r} is not a column of `adata.var`.")
    values = adata.var[truth].astype(str).to_numpy()
    classes, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes]


def knn_purity_curve(
    adata: AnnData,
    reps: Sequence[str],
    *,
    truth: str = "pattern",
    ks: Sequence[int] = range(1, 31),
    metric: str = "cosine",
    figsize: tuple[float, float] = (5.5, 4.0),
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Neighbourhood purity against k for every representation (Hu et al. 2022, Fig. 2e).

    For every ion image, the fraction of its k nearest neighbours (cosine similarity) with the same
    true class (:func:`spatialclust.metrics.knn_purity`).

    Parameters
    ----------
    adata
        Dataset with the representations in ``varm``.
    reps
        ``varm`` keys, e.g. ``["X_pretrained", "X_simclr"]``.
    truth
        ``var`` column with the true classes.
    ks
        Neighbourhood sizes (1..30 in the paper).
    metric
        Distance of the neighbour search.
    figsize, save, dpi
        Figure size; also write the figure to ``save`` (atomically).

    Returns
    -------
    matplotlib.figure.Figure; the values are in ``fig.purity`` (DataFrame, one column per representation).
    """
    import matplotlib.pyplot as plt

    from ..metrics import knn_purity

    codes, _ = _truth_codes(adata, truth)
    table = pd.DataFrame(
        {rep: pd.Series(knn_purity(_varm(adata, rep), codes, ks=ks, metric=metric)) for rep in reps}
    )
    fig, ax = plt.subplots(figsize=figsize)
    for rep in reps:
        ax.plot(table.index, table[rep], marker="o", markersize=3, label=rep.removeprefix("X_"))
    ax.set_xlabel("neighbourhood size k")
    ax.set_ylabel("k-NN purity (same class)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title("Purity of local neighbourhoods")
    fig.tight_layout()
    fig.purity = table
    return finish(fig, save, dpi=dpi)


def representations(
    adata: AnnData,
    reps: Sequence[str],
    *,
    color: str | None = "pattern",
    method: str = "tsne",
    point_size: float = 10.0,
    random_state: int = 0,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """2-D t-SNE or UMAP of several representations side by side (Hu et al. 2022, Fig. 2c-d, Fig. 5a).

    Parameters
    ----------
    adata
        Dataset with the representations in ``varm``.
    reps
        ``varm`` keys, e.g. ``["X_pretrained", "X_simclr", "X_self_label"]`` (before and after training).
    color
        ``var`` column colouring the points (true classes or clusters); None: black, as in Fig. S12.
    method
        ``"tsne"`` (scikit-learn, cosine metric) or ``"umap"`` (umap-learn, cosine metric).
    point_size, panel_size
        Marker size; size of each panel in inches.
    random_state
        Seed of t-SNE / UMAP.
    save, dpi
        Also write the figure to ``save`` (atomically).

    Returns
    -------
    matplotlib.figure.Figure; the 2-D coordinates are in ``fig.coordinates`` (dict rep -> array).
    """
    import matplotlib.pyplot as plt

    if method not in ("tsne", "umap"):
        raise invalid_option(method, "method", ["tsne", "umap"])
    if color is not None and color not in adata.var:
        raise KeyError(f"`color`={color!r} is not a column of `adata.var`.")
    n = adata.n_vars
    if n < 4:
        raise ValueError(f"A 2-D map needs at least 4 images; `adata` has {n}.")
    coordinates = {}
    for rep in reps:
        X = _varm(adata, rep)
        if method == "tsne":
            from sklearn.manifold import TSNE

            model = TSNE(n_components=2, metric="cosine", init="pca", perplexity=min(30.0, (n - 1) / 3), random_state=random_state)
        else:
            from .._compat import require

            umap = require("umap", package="umap-learn", purpose="UMAP maps")
            model = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(15, n - 1), random_state=random_state)
        coordinates[rep] = np.asarray(model.fit_transform(X))
    fig, axes = plt.subplots(1, len(reps), figsize=(panel_size * len(reps), panel_size), squeeze=False)
    if color is not None:
        values = adata.var[color].astype(str).to_numpy()
        classes = list(np.unique(values))
        cmap = plt.get_cmap("tab20")
        colors = [cmap(classes.index(v) % 20) for v in values]
    else:
        classes, colors = [], "black"
    for ax, rep in zip(axes[0], reps):
        xy = coordinates[rep]
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=point_size, linewidths=0)
        ax.set_title(rep.removeprefix("X_"))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
    if classes and len(classes) <= 20:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", ls="", color=plt.get_cmap("tab20")(i % 20), label=c) for i, c in enumerate(classes)]
        fig.legend(handles=handles, loc="center right", frameon=False, title=color, fontsize=8)
        fig.tight_layout(rect=(0, 0, 0.88, 1))
    else:
        fig.tight_layout()
    fig.coordinates = coordinates
    return finish(fig, save, dpi=dpi)


def _feature_index(adata: AnnData, feature: str | float | int) -> int:
    """Index of a feature given by var name, m/z (nearest within 0.01) or integer position."""
    if isinstance(feature, str):
        if feature not in adata.var_names:
            raise KeyError(f"Feature {feature!r} is not in `adata.var_names`.")
        return int(adata.var_names.get_loc(feature))
    if isinstance(feature, (int, np.integer)) and not isinstance(feature, bool):
        if not 0 <= feature < adata.n_vars:
            raise IndexError(f"Feature index {feature} is out of range for {adata.n_vars} features.")
        return int(feature)
    if "mz" not in adata.var:
        raise KeyError("Features given by m/z need `adata.var['mz']`.")
    mz = adata.var["mz"].to_numpy(dtype=float)
    i = int(np.argmin(np.abs(mz - float(feature))))
    if abs(mz[i] - float(feature)) > 0.01:
        raise KeyError(f"No feature within 0.01 of m/z {feature}; nearest is {mz[i]:.4f}.")
    return i


def ion_pair_similarity(
    adata: AnnData,
    pairs: Sequence[tuple[str | float | int, str | float | int]],
    reps: Sequence[str],
    *,
    figsize: tuple[float, float] | None = None,
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Cosine similarity of chosen ion pairs in several representations (Hu et al. 2022, Fig. 4b).

    The paper compares the similarity of a reference ion to two others in the CNN features and in
    the image vectors (``X_regular``): a representation that captures the spatial pattern gives the
    truly co-localised pair the higher score even when the images differ in noise and contrast.

    Parameters
    ----------
    adata
        Dataset with the representations in ``varm``.
    pairs
        Ion pairs, each ion given by var name, m/z or index, e.g. ``[(875.57, 868.52), (875.57, 739.47)]``.
    reps
        ``varm`` keys to compare, e.g. ``["X_regular", "X_simclr"]``.
    figsize, save, dpi
        Figure size; also write the figure to ``save`` (atomically).

    Returns
    -------
    matplotlib.figure.Figure with the ion images of every pair and a grouped bar chart; the scores
    are in ``fig.similarity`` (DataFrame: one row per pair, one column per representation).
    """
    import matplotlib.pyplot as plt

    from .. import pp

    if not pairs:
        raise ValueError("`pairs` is empty: give at least one (ion, ion) pair.")
    index = [(_feature_index(adata, a), _feature_index(adata, b)) for a, b in pairs]
    names = feature_labels(adata)
    rows = {}
    for i, j in index:
        row = {}
        for rep in reps:
            X = _varm(adata, rep)
            norm = np.linalg.norm(X[i]) * np.linalg.norm(X[j])
            if norm == 0:
                raise ValueError(f"Ion {names[i]!r} or {names[j]!r} has an all-zero vector in `{rep}`; cosine similarity is undefined.")
            row[rep] = float(X[i] @ X[j] / norm)
        rows[f"{names[i]} / {names[j]}"] = row
    table = pd.DataFrame(rows).T
    images = pp.feature_images(adata)
    n = len(index)
    fig = plt.figure(figsize=figsize or (3.0 + 2.2 * n, 4.2))
    grid = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [1.6])
    for col, (i, j) in enumerate(index):
        for row, k in enumerate((i, j)):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(images[k], cmap="viridis")
            ax.set_title(names[k], fontsize=8)
            ax.axis("off")
    ax = fig.add_subplot(grid[:, n])
    width = 0.8 / max(len(reps), 1)
    x = np.arange(n)
    for r, rep in enumerate(reps):
        ax.bar(x + r * width - 0.4 + width / 2, table[rep].to_numpy(), width, label=rep.removeprefix("X_"))
    ax.set_xticks(x, [f"pair {p + 1}" for p in range(n)])
    ax.set_ylabel("cosine similarity")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Ion-pair similarity")
    fig.tight_layout()
    fig.similarity = table
    return finish(fig, save, dpi=dpi)


def self_labeling_history(
    adata: AnnData,
    key: str = "self_label",
    *,
    figsize: tuple[float, float] = (6.0, 4.0),
    save: str | Path | None = None,
    dpi: int = 150,
) -> Any:
    """Loss, number of confident images and accuracy per self-labeling epoch (Hu et al. 2022, Fig. 2g).

    Parameters
    ----------
    adata
        Dataset after :func:`spatialclust.tl.self_label` (reads ``uns[key]["history"]``).
    key
        ``key_added`` of the self-labeling.
    figsize, save, dpi
        Figure size; also write the figure to ``save`` (atomically).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    info = adata.uns.get(key)
    if not isinstance(info, dict) or "history" not in info:
        raise KeyError(f"`adata.uns[{key!r}]` holds no self-labeling history; run sc.tl.self_label(adata, key_added={key!r}).")
    history = {k: np.asarray(v, dtype=float) for k, v in info["history"].items()}
    epochs = history["epoch"]
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot(epochs, history["n_confident"], color="tab:blue", marker="o", label="confident images")
    ax.set_xlabel("epoch (last point: final model)")
    ax.set_ylabel("confident images (p >= threshold)")
    right = ax.twinx()
    right.plot(epochs, history["loss"], color="tab:purple", marker="s", label="loss")
    if np.isfinite(history["accuracy"]).any():
        right.plot(epochs, history["accuracy"], color="tab:red", marker="^", label="accuracy")
    right.set_ylabel("loss / accuracy")
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], frameon=False, loc="lower right")
    ax.set_title("Self-labeling")
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)
