"""Shared helpers of the plotting functions: cluster labels, colours, feature labels, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._atomic import atomic_path

NOISE_COLOR = (0.62, 0.62, 0.62, 1.0)
"""Colour of the noise cluster (label -1) in every figure."""


def cluster_labels(adata: AnnData, key: str) -> np.ndarray:
    """Integer cluster labels ``var[key]`` (-1 = noise), with an error listing the clusterings present."""
    if key not in adata.var:
        candidates = [c for c in adata.var.columns if c in adata.uns and "method" in adata.uns[c]]
        valid = ", ".join(f"`{c}`" for c in candidates) or "none (run `sc.tl.cluster` first)"
        raise KeyError(f"`key`={key!r} is not a column of `adata.var`. Clusterings present: {valid}.")
    labels = np.asarray(adata.var[key])
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`adata.var[{key!r}]` must hold integer cluster labels; found dtype {labels.dtype}.")
    return labels.astype(np.int64)


def cluster_colors(labels: np.ndarray) -> dict[int, tuple[float, float, float, float]]:
    """A stable colour per cluster id (tab20, then tab20b and tab20c, distinct hues first); noise (-1) is grey."""
    import matplotlib

    palette = []
    for name in ("tab20", "tab20b", "tab20c"):
        colors = matplotlib.colormaps[name].colors
        step = 2 if name == "tab20" else 4  # tab20 pairs dark/light shades; tab20b/c groups of four
        palette += [colors[i + j] for j in range(step) for i in range(0, 20, step)]
    palette = [c for c in palette if max(c) - min(c) > 0.1]  # greys are kept for the noise cluster
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    colors = {c: matplotlib.colors.to_rgba(palette[i % len(palette)]) for i, c in enumerate(ids)}
    colors[-1] = NOISE_COLOR
    return colors


def feature_labels(adata: AnnData, *, digits: int = 2) -> list[str]:
    """Display label of every feature: ``"m/z 426.93"`` when ``var["mz"]`` exists, else the var name."""
    if K.MZ in adata.var:
        return [f"m/z {mz:.{digits}f}" for mz in np.asarray(adata.var[K.MZ], dtype=float)]
    return [str(name) for name in adata.var_names]


def check_save(save: Any) -> Path | None:
    """Validate a ``save`` argument (a path ending in an image suffix, or None)."""
    if save is None or save is False:
        return None
    path = Path(save)
    if path.suffix.lower() not in {".png", ".pdf", ".svg", ".jpg", ".jpeg"}:
        raise ValueError(f"`save` must be a file name ending in .png, .pdf, .svg or .jpg; received {str(save)!r}.")
    return path


def finish(fig: Any, save: Any, *, dpi: int) -> Any:
    """Save ``fig`` atomically when ``save`` is a path; return the figure."""
    path = check_save(save)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".").replace("jpg", "jpeg"))
    return fig


def masked(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``image`` as float with cells outside ``mask`` set to NaN (drawn as background)."""
    out = np.asarray(image, dtype=float).copy()
    if mask is not None and not mask.all():
        out[~mask] = np.nan
    return out


def image_axes(ax: Any) -> None:
    """Remove ticks and frame from an image axis."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


#: Scale-bar lengths (µm) to choose from: about a fifth of the image width.
_SCALE_BAR_UM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def add_scale_bar(ax: Any, adata: AnnData, *, width_px: int) -> None:
    """A black scale bar in µm at the lower right of an image axis (nothing without a pixel size).

    The pixel size is ``uns["grid"]["pixel_size"]`` (µm), which the imzML and ST readers record.
    """
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    pixel_size = (adata.uns.get(K.GRID) or {}).get("pixel_size")
    if not pixel_size or not np.isfinite(float(pixel_size)) or float(pixel_size) <= 0:
        return
    target = 0.2 * width_px * float(pixel_size)
    length = max((um for um in _SCALE_BAR_UM if um <= target), default=_SCALE_BAR_UM[0])
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length} µm"
    bar = AnchoredSizeBar(ax.transData, length / float(pixel_size), label, "lower right", pad=0.1, color="black",
                          frameon=False, size_vertical=max(width_px / 100, 0.5), fontproperties={"size": 7})
    ax.add_artist(bar)


def add_colorbar(fig: Any, cmap: str, vmax: float, label: str) -> None:
    """One colour bar from 0 to ``vmax`` at the right of ``fig``, shared by all its image panels."""
    import matplotlib

    fig.subplots_adjust(right=0.88)
    cax = fig.add_axes([0.9, 0.15, 0.015, 0.65])
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, vmax), cmap=cmap)
    fig.colorbar(mappable, cax=cax).set_label(label, fontsize=8)
    cax.tick_params(labelsize=7)
