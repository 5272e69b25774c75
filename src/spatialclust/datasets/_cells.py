"""Simulated multichannel single-cell images with known phenotypes (the package's default cell data).

Two regimes (``regime``):

``"cell_cycle"`` (realistic, the default of ``spatialclust cells run``)
    seven cell-cycle phases of a suspension cell line imaged by imaging flow cytometry, like the
    Jurkat G1 / S / G2 / prophase / metaphase / anaphase / telophase data of Eulenberg et al. (2017,
    Nat. Commun. 8:463) and the cell-cycle set of Palli (2023). The phases differ in subtle
    intensity and texture distributions, not in object counts: DNA content 2N (G1), 2N-4N (S, with
    replication foci), 4N (G2 and mitosis); nuclear size grows with DNA content; chromatin
    condenses from fine (interphase) to coarse threads (prophase), a dense plate (metaphase), two
    plates moving apart (anaphase) and two small dense nuclei (telophase); mitotic cells round up
    and telophase cells pinch in (cytoplasm channel); side scatter (darkfield) rises with
    granularity and chromatin condensation. Nuisance variation is real-scale: cell size (radius CV
    7 %), per-cell stain and illumination brightness (DNA CV 7 %, cytoplasm 20 %, darkfield 25 %),
    focus blur (sigma 0.2-1.2 px), any rotation, position jitter, background, Poisson shot noise
    and read noise. Raw-pixel PCA + k-means(7) reaches purity ~0.5 (real Jurkat data: 0.56). Channels ``dna``, ``cytoplasm``, ``darkfield``; ground truth
    in ``obs["phase"]`` and the continuous ``obs["dna_content"]`` (in units of 2N).
``"phenotypes"`` (the original, easier regime)
    three independent phenotypes, each rendered in its own fluorescence channel (below).

The ``"phenotypes"`` regime mimics what an image-enabled cell sorter records for the phenotypes
studied by Palli (2023): every cell has three independent, known phenotypes:

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
from ..io import cell_images_to_adata

__all__ = ["simulate_cells", "CELL_CHANNELS", "CELL_CYCLE_CHANNELS", "CELL_CYCLE_PHASES", "CELL_PHENOTYPES", "CELL_REGIMES"]

#: Phenotype columns written to ``obs`` and their classes.
CELL_PHENOTYPES: dict[str, tuple[str, ...]] = {
    "objects": ("1", "2", "many"),
    "shape": ("round", "elongated"),
    "nucleus": ("small", "large"),
}
#: Channel names of the simulated images.
CELL_CHANNELS = ("membrane", "nucleus", "objects")
#: Phases of the ``"cell_cycle"`` regime (``obs["phase"]``), in cycle order.
CELL_CYCLE_PHASES = ("G1", "S", "G2", "prophase", "metaphase", "anaphase", "telophase")
#: Channels of the ``"cell_cycle"`` regime.
CELL_CYCLE_CHANNELS = ("dna", "cytoplasm", "darkfield")
#: Simulator regimes.
CELL_REGIMES = ("cell_cycle", "phenotypes")


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


_MITOSIS = ("prophase", "metaphase", "anaphase", "telophase")


def _texture(rng, shape, length, contrast):
    """Log-normal random texture with mean ~1: ``exp(contrast * z)``, ``z`` a unit-variance field of correlation ``length``."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=shape), length, mode="wrap")
    field /= field.std() + 1e-12
    return np.exp(contrast * field - contrast**2 / 2)


def _render_cycling_cell(rng, height, width, phase):
    """One ``(3, height, width)`` image of a cell in ``phase`` (channels dna, cytoplasm, darkfield) and its DNA content."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = height / 2 + rng.uniform(-2, 2), width / 2 + rng.uniform(-2, 2)
    angle = rng.uniform(0, np.pi)
    cos, sin = np.cos(angle), np.sin(angle)

    def at(u, v):  # cell-frame offsets (u along the division axis) -> image coordinates
        return cy + u * sin + v * cos, cx + u * cos - v * sin

    if phase == "G1":
        content = 1.0
    elif phase == "S":
        content = rng.uniform(1.1, 1.9)
    else:
        content = 2.0
    content *= rng.normal(1.0, 0.04)  # biological spread of the DNA content
    base = 0.28 * min(height, width) * rng.lognormal(0.0, 0.07)  # cell radius of a G1 cell (size nuisance)
    mitotic = phase in _MITOSIS
    radius = base * (2.0 if mitotic else content) ** (1 / 3) * (1.06 if mitotic else 1.0)
    nuclear = 0.62 * base * content ** (1 / 3) * rng.lognormal(0.0, 0.06)
    # cell body (cytoplasm mask): round in interphase/metaphase, elongated in anaphase, dumbbell in telophase
    if phase == "telophase":
        gap = radius * rng.uniform(0.9, 1.25)
        lobes = [at(s * gap / 2, 0.0) for s in (-1, 1)]
        body = np.maximum(*[_soft_ellipse(yy, xx, y, x, 0.78 * radius, 0.74 * radius, angle) for y, x in lobes])
    elif phase == "anaphase":
        body = _soft_ellipse(yy, xx, cy, cx, radius * rng.uniform(1.08, 1.25), radius * rng.uniform(0.85, 0.95), angle)
    else:
        aspect = rng.uniform(1.0, 1.15 if mitotic else 1.3)
        body = _soft_ellipse(yy, xx, cy, cx, radius * aspect**0.5, radius / aspect**0.5, angle)
    # chromatin: (centre, semi-axes, share of the DNA, texture length, texture contrast) per DNA body
    if phase in ("G1", "S", "G2", "prophase"):
        aspect = rng.uniform(1.0, 1.25)
        length, contrast = (1.4, rng.uniform(0.6, 1.0)) if phase == "prophase" else (0.8, rng.uniform(0.2, 0.35))
        ny, nx = at(rng.uniform(-0.12, 0.12) * radius, rng.uniform(-0.12, 0.12) * radius)
        parts = [((ny, nx), (nuclear * aspect**0.5, nuclear / aspect**0.5), 1.0, length, contrast)]
    elif phase == "metaphase":
        plate = (0.3 * nuclear * rng.uniform(0.85, 1.15), 0.85 * nuclear * rng.uniform(0.9, 1.1))
        parts = [((cy, cx), plate, 1.0, 1.0, 0.5)]
    elif phase == "anaphase":
        gap = radius * rng.uniform(0.3, 0.9)
        plate = (0.25 * nuclear, 0.75 * nuclear)
        parts = [(at(s * gap / 2, 0.0), plate, 0.5, 1.0, 0.5) for s in (-1, 1)]
    else:
        nucleus = 0.5 * nuclear * rng.uniform(0.9, 1.1)
        parts = [(at(s * gap / 2, 0.0), (nucleus, nucleus), 0.5, 1.0, 0.45) for s in (-1, 1)]
    dna = np.zeros_like(yy)
    nuclear_mask = np.zeros_like(yy)
    for (py, px), (a, b), share, length, contrast in parts:
        mask = _soft_ellipse(yy, xx, py, px, a, b, angle, edge=0.7)
        density = mask * _texture(rng, yy.shape, length, contrast)
        if phase == "S":  # replication foci: many small bright spots
            for _ in range(int(rng.integers(15, 40))):
                r, t = a * np.sqrt(rng.uniform(0, 0.8)), rng.uniform(0, 2 * np.pi)
                fy, fx = py + r * np.sin(t), px + r * np.cos(t)
                density += 0.8 * mask * np.exp(-((yy - fy) ** 2 + (xx - fx) ** 2) / (2 * 0.7**2))
        dna += share * content * density / density.sum()
        nuclear_mask = np.maximum(nuclear_mask, mask)
    dna *= 6000.0 * rng.lognormal(0.0, 0.07)  # photons per 2N; per-cell stain/illumination variation
    # cytoplasm: excluded by the nucleus in interphase (envelope), faint spindle poles in metaphase/anaphase
    exclusion = 0.75 if not mitotic else 0.3
    cytoplasm = body * (1.0 - exclusion * nuclear_mask) * _texture(rng, yy.shape, 2.0, 0.2)
    if phase in ("metaphase", "anaphase"):
        pole = 0.75 * radius
        for s in (-1, 1):
            qy, qx = at(s * pole, 0.0)
            cytoplasm += 0.5 * body * np.exp(-((yy - qy) ** 2 + (xx - qx) ** 2) / (2 * 1.5**2))
    cytoplasm *= 25.0 * rng.lognormal(0.0, 0.2)
    # side scatter: granular, stronger with condensed chromatin
    granularity = body * _texture(rng, yy.shape, 0.7, 0.8) * (1.35 if mitotic else 1.0)
    darkfield = 8.0 * rng.lognormal(0.0, 0.25) * (granularity + 0.15 * dna / max(dna.max(), 1e-12) * body)
    image = np.stack([dna, cytoplasm, darkfield])
    blur = rng.uniform(0.2, 1.2)  # focus
    image = np.stack([gaussian_filter(channel, blur) for channel in image])
    image += rng.uniform(1.0, 2.0, size=(3, 1, 1))  # background photons
    counts = rng.poisson(np.clip(image, 0, None)).astype(np.float64) + rng.normal(0.0, 1.5, image.shape)
    return (np.clip(counts, 0.0, None) / 100.0).astype(np.float32), float(content)


def simulate_cells(
    n_cells: int = 300,
    *,
    width: int = 48,
    height_range: tuple[int, int] = (34, 48),
    regime: str = "phenotypes",
    label: str | None = None,
    labelled_fraction: float = 1.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate multichannel cell images with known phenotypes.

    Parameters
    ----------
    n_cells
        Number of cells.
    width
        Image width in pixels (fixed, as in the ICS export).
    height_range
        Inclusive range of the true image heights; images are zero-padded to the largest.
    regime
        ``"cell_cycle"``: seven cell-cycle phases that differ in DNA content, chromatin texture,
        nuclear and cell morphology, with realistic nuisance variation (see the module docstring);
        ``"phenotypes"``: three independent, easier phenotypes (objects, shape, nucleus).
    label
        Ground-truth column copied to ``obs["label"]``: ``"phase"`` for ``"cell_cycle"`` (default);
        ``"objects"`` (default), ``"shape"`` or ``"nucleus"`` for ``"phenotypes"``.
    labelled_fraction
        Fraction of cells whose ``obs["label"]`` is kept (the rest NaN), like a partly annotated
        experiment; the phenotype columns always hold the ground truth.
    seed
        Random seed.

    Returns
    -------
    Cell-image AnnData (see :func:`spatialclust.io.cell_images_to_adata`) with ``obs["label"]``,
    ``uns["simulation"]`` and the ground truth: for ``"cell_cycle"`` channels ``dna``,
    ``cytoplasm``, ``darkfield``, ``obs["phase"]`` (balanced classes) and ``obs["dna_content"]``
    (float, units of 2N); for ``"phenotypes"`` channels ``membrane``, ``nucleus``, ``objects`` and
    ``obs["objects"]``, ``obs["shape"]``, ``obs["nucleus"]``.
    """
    if regime not in CELL_REGIMES:
        raise invalid_option(regime, "regime", list(CELL_REGIMES))
    phenotypes = {"phase": CELL_CYCLE_PHASES} if regime == "cell_cycle" else CELL_PHENOTYPES
    label = label if label is not None else next(iter(phenotypes))
    if label not in phenotypes:
        raise invalid_option(label, "label", list(phenotypes))
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
    heights = rng.integers(low, high + 1, size=n_cells)
    if regime == "cell_cycle":
        phases = np.array(CELL_CYCLE_PHASES)[rng.permutation(np.arange(n_cells) % len(CELL_CYCLE_PHASES))]
        truth = {"phase": phases}
        rendered = [_render_cycling_cell(rng, int(h), int(width), phases[i]) for i, h in enumerate(heights)]
        images = [image for image, _ in rendered]
        channels = CELL_CYCLE_CHANNELS
    else:
        truth = {key: rng.choice(np.array(classes), size=n_cells) for key, classes in CELL_PHENOTYPES.items()}
        images = [
            _render_cell(rng, int(h), int(width), truth["objects"][i], truth["shape"][i], truth["nucleus"][i])
            for i, h in enumerate(heights)
        ]
        channels = CELL_CHANNELS
    labels = pd.Series(truth[label], dtype=object)
    if labelled_fraction < 1.0:
        hidden = rng.random(n_cells) >= labelled_fraction
        labels[hidden] = None
    adata = cell_images_to_adata(images, channels=channels, labels=labels, obs_names=[f"cell{i}" for i in range(n_cells)])
    for key, classes in phenotypes.items():
        adata.obs[key] = pd.Categorical(truth[key], categories=list(classes))
    if regime == "cell_cycle":
        adata.obs["dna_content"] = np.array([content for _, content in rendered], dtype=np.float64)
    adata.obs[_keys.LABEL] = adata.obs[_keys.LABEL].cat.set_categories(list(phenotypes[label]))
    adata.uns[_keys.SIMULATION] = {
        "simulator": "simulate_cells",
        "regime": regime,
        "n_cells": int(n_cells),
        "width": int(width),
        "height_range": [low, high],
        "label": label,
        "labelled_fraction": float(labelled_fraction),
        "seed": int(seed),
        "phenotypes": {k: list(v) for k, v in phenotypes.items()},
    }
    return adata

