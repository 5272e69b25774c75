"""Simulated multichannel single-cell images with known phenotypes (the package's default cell data).

Mimics what an image-enabled cell sorter records for the phenotypes studied by Palli (2023): every
cell has three independent, known phenotypes, each rendered in its own fluorescence channel:

- ``objects``: number of bright intracellular objects (bacteria), ``"1"``, ``"2"`` or ``"many"``
  (4-7), like the Salmonella-infected macrophages (one, two or many bacteria per cell);
- ``shape``: ``"round"`` or ``"elongated"`` cell body (membrane stain), like the eccentricity
  phenotypes of the ICS paper (Schraivogel et al. 2022);
- ``nucleus``: ``"small"`` (dim, G1-like) or ``"large"`` (bright, G2-like) nucleus, a cell-cycle-like state.

Images have a fixed width and variable heights (as in the ICS export), random orientation,
per-cell brightness, background and Poisson-Gaussian-like noise, so that classical features
separate the phenotypes only partly.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._registry import invalid_option
from ..io._cells import cell_images_to_adata

__all__ = ["simulate_cells", "CELL_PHENOTYPES", "CELL_CHANNELS"]

#: Phenotype columns written to ``obs`` and their classes.
CELL_PHENOTYPES: dict[str, tuple[str, ...]] = {
    "objects": ("1", "2", "many"),
    "shape": ("round", "elongated"),
    "nucleus": ("small", "large"),
}
#: Channel names of the simulated images.
CELL_CHANNELS = ("membrane", "nucleus", "objects")


def _soft_ellipse(yy, xx, cy, cx, a, b, angle, edge=1.0):
    """Soft-edged filled ellipse (values in [0, 1]) with semi-axes ``a`` (along ``angle``) and ``b``."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(a, b) / edge))


def _render_cell(rng, height, width, objects, shape, nucleus):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy = height / 2 + rng.uniform(-1.5, 1.5)
    cx = width / 2 + rng.uniform(-1.5, 1.5)
    extent = min(height, width) / 2 - 2
    if shape == "round":
        a = extent * rng.uniform(0.72, 0.9)
        b = a * rng.uniform(0.88, 1.0)
    else:
        a = extent * rng.uniform(0.85, 0.98)
        b = a / rng.uniform(1.7, 2.4)
    angle = rng.uniform(0, np.pi)
    body = _soft_ellipse(yy, xx, cy, cx, a, b, angle)
    # membrane stain: rim brighter than the cytoplasm, smooth texture
    rim = body - _soft_ellipse(yy, xx, cy, cx, a - 2.0, b - 2.0, angle)
    membrane = rng.uniform(0.5, 1.0) * (0.35 * body + 0.9 * np.clip(rim, 0, 1))
    # nucleus: small/dim (G1-like) or large/bright (G2-like), off-centre inside the body
    scale = rng.uniform(0.3, 0.4) if nucleus == "small" else rng.uniform(0.5, 0.62)
    na, nb = b * scale * rng.uniform(1.0, 1.15), b * scale
    ncy = cy + rng.uniform(-0.15, 0.15) * b
    ncx = cx + rng.uniform(-0.15, 0.15) * b
    brightness = rng.uniform(0.5, 0.8) if nucleus == "small" else rng.uniform(0.75, 1.1)
    nucleus_img = brightness * _soft_ellipse(yy, xx, ncy, ncx, na, nb, rng.uniform(0, np.pi))
    # bright intracellular objects inside the cytoplasm
    count = {"1": 1, "2": 2}.get(objects) or int(rng.integers(4, 8))
    spots = np.zeros_like(yy)
    cos, sin = np.cos(angle), np.sin(angle)
    for _ in range(count):
        radius = np.sqrt(rng.uniform(0.1, 0.7))
        theta = rng.uniform(0, 2 * np.pi)
        u, v = radius * a * np.cos(theta), radius * b * np.sin(theta)
        sy, sx = cy + u * sin + v * cos, cx + u * cos - v * sin
        sigma = rng.uniform(1.0, 1.6)
        spots += rng.uniform(0.6, 1.0) * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * sigma**2))
    image = np.stack([membrane, nucleus_img, spots]).astype(np.float32)
    background = rng.uniform(0.02, 0.06)
    noise = rng.normal(0.0, 1.0, image.shape).astype(np.float32) * (0.03 + 0.05 * np.sqrt(np.clip(image, 0, None)))
    return np.clip(image + background + noise, 0.0, None)


def simulate_cells(
    n_cells: int = 300,
    *,
    width: int = 48,
    height_range: tuple[int, int] = (34, 48),
    label: str = "objects",
    labelled_fraction: float = 1.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate multichannel cell images with three known, independent phenotypes.

    Parameters
    ----------
    n_cells
        Number of cells.
    width
        Image width in pixels (fixed, as in the ICS export).
    height_range
        Inclusive range of the true image heights; images are zero-padded to the largest.
    label
        Phenotype copied to ``obs["label"]``: ``"objects"``, ``"shape"`` or ``"nucleus"``.
    labelled_fraction
        Fraction of cells whose ``obs["label"]`` is kept (the rest NaN), like a partly annotated
        experiment; the phenotype columns always hold the ground truth.
    seed
        Random seed.

    Returns
    -------
    Cell-image AnnData (see :func:`spatialclust.io.cell_images_to_adata`) with channels
    ``membrane``, ``nucleus``, ``objects``; ``obs["objects"]``, ``obs["shape"]``,
    ``obs["nucleus"]`` (ground truth), ``obs["label"]`` and ``uns["simulation"]``.
    """
    if label not in CELL_PHENOTYPES:
        raise invalid_option(label, "label", list(CELL_PHENOTYPES))
    if int(n_cells) < 1:
        raise ValueError(f"`n_cells` must be a positive integer, got {n_cells!r}.")
    low, high = (int(v) for v in height_range)
    if not 16 <= low <= high:
        raise ValueError(f"`height_range` must be (low, high) with 16 <= low <= high, got {height_range!r}.")
    if int(width) < 16:
        raise ValueError(f"`width` must be at least 16 pixels, got {width!r}.")
    if not 0.0 < labelled_fraction <= 1.0:
        raise ValueError(f"`labelled_fraction` must be in (0, 1], got {labelled_fraction!r}.")
    rng = np.random.default_rng(seed)
    truth = {key: rng.choice(np.array(classes), size=n_cells) for key, classes in CELL_PHENOTYPES.items()}
    heights = rng.integers(low, high + 1, size=n_cells)
    images = [
        _render_cell(rng, int(h), int(width), truth["objects"][i], truth["shape"][i], truth["nucleus"][i])
        for i, h in enumerate(heights)
    ]
    labels = pd.Series(truth[label], dtype=object)
    if labelled_fraction < 1.0:
        hidden = rng.random(n_cells) >= labelled_fraction
        labels[hidden] = None
    adata = cell_images_to_adata(images, channels=CELL_CHANNELS, labels=labels, obs_names=[f"cell{i}" for i in range(n_cells)])
    for key, classes in CELL_PHENOTYPES.items():
        adata.obs[key] = pd.Categorical(truth[key], categories=list(classes))
    adata.obs[_keys.LABEL] = adata.obs[_keys.LABEL].cat.set_categories(list(CELL_PHENOTYPES[label]))
    adata.uns[_keys.SIMULATION] = {
        "simulator": "simulate_cells",
        "n_cells": int(n_cells),
        "width": int(width),
        "height_range": [low, high],
        "label": label,
        "labelled_fraction": float(labelled_fraction),
        "seed": int(seed),
        "phenotypes": {k: list(v) for k, v in CELL_PHENOTYPES.items()},
    }
    return adata

