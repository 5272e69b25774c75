"""Plots of cell-image datasets: example cells per cluster and 2-D embeddings coloured by cluster/label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from ..io import cell_image_stack
from ._utils import finish, image_axes

__all__ = ["cell_composite", "cell_examples", "cell_scatter"]


def cell_composite(images: np.ndarray, *, channels: Sequence[int] | None = None) -> np.ndarray:
    """RGB composite ``(n, H, W, 3)`` in [0, 1] of up to three channels of cell images ``(n, C, H, W)``.

    Each channel is scaled to [0, 1] by its 99.5th percentile over all given cells (so brightness
    differences between cells stay visible) and shown as red, green, blue in the given order.
    """
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim != 4:
        raise ValueError(f"`images` must have shape (n, C, H, W), got shape {stack.shape}.")
    picks = list(range(min(3, stack.shape[1]))) if channels is None else [int(c) for c in channels]
    if not 1 <= len(picks) <= 3 or any(not 0 <= c < stack.shape[1] for c in picks):
        raise ValueError(f"`channels` must be 1-3 channel indices below {stack.shape[1]}, got {channels!r}.")
    rgb = np.zeros((*stack.shape[:1], *stack.shape[2:], 3), dtype=np.float32)
    for colour, c in enumerate(picks):
        plane = stack[:, c]
        high = float(np.percentile(plane, 99.5)) or 1.0
        rgb[..., colour] = np.clip(plane / high, 0.0, 1.0)
    if len(picks) == 1:
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    return rgb


def _channel_indices(adata: ad.AnnData, channels: Sequence[str | int] | None) -> list[int] | None:
    if channels is None:
        return None
    names = list(adata.uns[_keys.CELL_IMAGE_INFO]["channels"])
    out = []
    for c in channels:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"`channels`: {c!r} is not a channel; channels are {names}.")
            out.append(names.index(c))
        else:
            out.append(int(c))
    return out


def cell_examples(
    adata: ad.AnnData,
    groupby: str,
    *,
    n_examples: int = 6,
    channels: Sequence[str | int] | None = None,
    label_key: str | None = _keys.LABEL,
    seed: int = 0,
    save: Any = None,
    dpi: int = 100,
) -> Any:
    """Grid of example cells: one row per group of ``obs[groupby]`` (e.g. a Leiden clustering).

    Parameters
    ----------
    adata
        Cell-image AnnData.
    groupby
        obs column (clusters or labels).
    n_examples
        Cells drawn at random (seeded) per group.
    channels
        Up to three channels (names or indices) shown as red/green/blue (default the first three).
    label_key
        obs column printed above every cell (None: nothing).
    seed
        Seed of the random choice.
    save, dpi
        Optional output path (written atomically) and resolution.

    Returns
    -------
    The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if groupby not in adata.obs:
        raise KeyError(f"`groupby`={groupby!r} is not a column of adata.obs.")
    groups = pd.Series(adata.obs[groupby].to_numpy())
    names = sorted(groups.dropna().unique(), key=lambda v: (len(str(v)), str(v)))
    rng = np.random.default_rng(seed)
    rgb = cell_composite(cell_image_stack(adata), channels=_channel_indices(adata, channels))
    fig, axes = plt.subplots(len(names), n_examples, figsize=(1.3 * n_examples, 1.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        members = np.flatnonzero((groups == name).to_numpy())
        picks = rng.choice(members, size=min(n_examples, members.size), replace=False)
        for col in range(n_examples):
            ax = axes[row, col]
            image_axes(ax)
            if col < picks.size:
                ax.imshow(rgb[picks[col]], interpolation="nearest")
                if label_key is not None and label_key in adata.obs:
                    ax.set_title(str(adata.obs[label_key].iloc[picks[col]]), fontsize=7)
        axes[row, 0].set_ylabel(f"{groupby} {name}\n(n={members.size})", fontsize=8)
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)


def cell_scatter(
    adata: ad.AnnData,
    basis: str,
    *,
    color: Sequence[str] = (_keys.LEIDEN, _keys.LABEL),
    title: str | None = None,
    save: Any = None,
    dpi: int = 100,
) -> Any:
    """Scatter of the first two columns of ``obsm[basis]`` (e.g. a UMAP), one panel per obs column in ``color``.

    Cells with a missing value in a column are drawn in light grey.
    """
    import matplotlib.pyplot as plt

    if basis not in adata.obsm:
        raise KeyError(f"`basis`={basis!r} is not in adata.obsm (keys: {list(adata.obsm)}).")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    columns = [c for c in color if c in adata.obs]
    if not columns:
        raise KeyError(f"None of `color`={list(color)} is a column of adata.obs.")
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.8), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, column in zip(axes[0], columns):
        values = pd.Series(adata.obs[column].to_numpy())
        missing = values.isna().to_numpy()
        ax.scatter(xy[missing, 0], xy[missing, 1], s=4, c="0.85", label="n/a" if missing.any() else None)
        names = sorted(values.dropna().unique(), key=lambda v: (len(str(v)), str(v)))
        for i, name in enumerate(names):
            sel = (values == name).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % 20), label=str(name))
        ax.set_title(f"{title + ': ' if title else ''}{column}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(names) <= 20:
            ax.legend(fontsize=6, markerscale=2, frameon=False, loc="best")
    fig.tight_layout()
    return finish(fig, save, dpi=dpi)
