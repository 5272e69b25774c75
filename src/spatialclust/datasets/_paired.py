"""Simulator of paired spatial transcriptomics (ST) + mass spectrometry imaging (MSI) data.

The default dataset of :mod:`spatialclust.translate` and the ground truth its tests check against.
Two regimes:

- ``"linear"``: every section is a grid of spots split into smooth spatial regions; each region
  up-regulates its own signature genes, every metabolite's intensity is a known positive combination
  of a few genes ("gene-to-metabolite program"), and some metabolites are absent (below the detection
  limit) in some regions. The intensity is linear in log expression, so ridge regression is exact.
- ``"gated"``: smooth latent programs drive the genes (each gene loads on one program, plus
  noise-only genes); a metabolite is present only where its program A is high AND its program B is
  low, and its intensity there is a saturating (Michaelis-Menten) function of a third program. Neither
  presence nor intensity is linear in log expression, which gives the two-stage and non-linear
  models something to win.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage

from .._keys import GRID, MZ, PRESENT, PROGRAMS, REGION, SECTION, SIMULATION, SPATIAL

__all__ = ["simulate_paired_st_msi"]

_REGIMES = ("linear", "gated")


def _regions(shape: tuple[int, int], n_regions: int, smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random partition of a grid: argmax over ``n_regions`` Gaussian-filtered noise fields."""
    fields = np.stack(
        [ndimage.gaussian_filter(rng.normal(size=shape), smoothness, mode="reflect") for _ in range(n_regions)]
    )
    fields /= fields.std(axis=(1, 2), keepdims=True)
    labels = fields.argmax(axis=0)
    # make sure every region occurs: give a missing region the block where its field is highest
    for r in range(n_regions):
        if not (labels == r).any():
            labels[np.unravel_index(fields[r].argmax(), shape)] = r
    return labels


def simulate_paired_st_msi(
    *,
    n_sections: int = 2,
    shape: tuple[int, int] = (24, 24),
    n_genes: int = 20,
    n_metabolites: int = 8,
    n_regions: int = 4,
    n_signature_genes: int = 3,
    genes_per_metabolite: int = 2,
    absent_fraction: float = 0.35,
    depth: float = 50.0,
    noise: float = 0.1,
    smoothness: float = 3.0,
    regime: str = "linear",
    n_programs: int = 4,
    seed: int = 0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Simulate paired ST + MSI sections with known gene-to-metabolite programs.

    Every section is a ``shape`` grid of spots (ST and MSI share the coordinates). Spots fall into
    ``n_regions`` smooth spatial regions; region ``r`` multiplies the expression of its
    ``n_signature_genes`` signature genes by ``e``. Each metabolite ``m`` has a program: positive
    weights ``W[m, g]`` on ``genes_per_metabolite`` genes (drawn among the signature genes, so the
    programs are spatial), and its intensity in a spot is::

        I[s, m] = present[s, m] * max(1, 2 + W[m] @ z[s] / 2) + noise

    with ``z`` the standardised log1p of the spot's true expression rate (before Poisson sampling) and the noise
    Gaussian with standard deviation ``noise``, clipped at 0. ``present[s, m]`` is False in the
    regions where metabolite ``m`` is absent (each metabolite is absent in each region with
    probability ``absent_fraction``, but present in at least one region); there the intensity is pure
    noise, i.e. below the detection limit of :func:`spatialclust.translate.presence_targets`.

    Parameters
    ----------
    n_sections
        Number of tissue sections (``obs["section"]`` = ``"section0"``, ...; coordinates restart at
        0 in every section).
    shape
        ``(height, width)`` of each section's spot grid.
    n_genes, n_metabolites
        Number of genes (ST var) and metabolites (MSI var).
    n_regions
        Number of spatial regions (ground-truth spatial clusters).
    n_signature_genes
        Signature genes per region (up-regulated there).
    genes_per_metabolite
        Number of genes in each metabolite's program.
    absent_fraction
        Probability that a metabolite is absent from a region.
    depth
        Mean count of a gene outside its regions (ST sequencing depth).
    noise
        Standard deviation of the additive MSI noise.
    smoothness
        Spatial scale (in spots) of the regions (and of the programs).
    regime
        ``"linear"`` (above) or ``"gated"``: ``n_programs`` smooth standardised fields ``P`` per section;
        60 % of the genes load on one program each (log rate ``log(depth) + L P + N(0, 0.2)``, loadings
        U(0.4, 1.0)), the rest are noise. Metabolite ``m`` has gate programs ``a != b`` and an intensity
        program ``c``; it is present where ``P_a > t_a`` and ``P_b < t_b`` (thresholds drawn so that
        ~30-60 % of the spots qualify) and there ``I = v * s / (1 + s)``, ``s = exp(P_c + P_a / 2)``,
        ``v ~ U(2, 5)``; plus the same noise. ``n_signature_genes``, ``genes_per_metabolite``,
        ``n_regions`` and ``absent_fraction`` are not used (regions = argmax program).
    n_programs
        Latent programs of the ``"gated"`` regime (>= 3).
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    ``(st, msi)``: two AnnData objects with the same ``obs_names`` and coordinates.

    ``st``: X = float32 counts (spots x genes); ``obs["section"]``, ``obs["region"]`` (true region);
    ``obsm["spatial"]`` int (x, y); ``uns["grid"]``; ``uns["simulation"]`` with ``signatures``
    (region -> genes), ``gene_weights`` (n_metabolites x n_genes program matrix, genes in
    ``st.var_names`` order), ``absent`` (n_metabolites x n_regions bool) and the parameters.

    ``msi``: X = float32 intensities (spots x metabolites); ``var["mz"]``; the same obs columns,
    ``obsm``, ``uns["grid"]``; ``uns["simulation"]`` as in ``st``.

    ``"gated"`` regime: ``uns["simulation"]`` has ``loadings`` (n_programs x n_genes), ``gates``
    (per metabolite: programs a, b, c, thresholds, v) and ``present`` is in ``msi.layers["present"]``;
    ``st.obsm["programs"]`` holds the true program values (for oracle models).
    """
    if regime not in _REGIMES:
        raise ValueError(f"Invalid option `{regime}` for `regime`. Valid options are: {', '.join(f'`{r}`' for r in _REGIMES)}.")
    if regime == "gated":
        return _simulate_gated(n_sections=n_sections, shape=shape, n_genes=n_genes, n_metabolites=n_metabolites,
                               n_programs=n_programs, depth=depth, noise=noise, smoothness=smoothness, seed=seed)
    for name, value, low in (
        ("n_sections", n_sections, 1),
        ("n_genes", n_genes, 2),
        ("n_metabolites", n_metabolites, 1),
        ("n_regions", n_regions, 1),
        ("n_signature_genes", n_signature_genes, 1),
        ("genes_per_metabolite", genes_per_metabolite, 1),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if n_regions * n_signature_genes > n_genes:
        raise ValueError(
            f"`n_regions` * `n_signature_genes` ({n_regions} * {n_signature_genes}) must not exceed "
            f"`n_genes` ({n_genes}): every region needs its own signature genes."
        )
    if genes_per_metabolite > n_regions * n_signature_genes:
        raise ValueError(
            f"`genes_per_metabolite` ({genes_per_metabolite}) must not exceed the number of signature genes "
            f"({n_regions * n_signature_genes})."
        )
    if not 0 <= absent_fraction < 1:
        raise ValueError(f"`absent_fraction` must be in [0, 1), got {absent_fraction!r}.")
    rng, (height, width), genes, metabolites, mz = _setup(shape, n_genes, n_metabolites, noise, depth, seed)

    order = rng.permutation(n_genes)
    signatures = {r: order[r * n_signature_genes : (r + 1) * n_signature_genes] for r in range(n_regions)}
    signature_genes = np.concatenate(list(signatures.values()))
    baseline = np.log(depth) + rng.normal(0, 0.3, n_genes)
    up = np.zeros((n_regions, n_genes))
    for r, idx in signatures.items():
        up[r, idx] = 1.0

    weights = np.zeros((n_metabolites, n_genes))
    for m in range(n_metabolites):
        idx = rng.choice(signature_genes, size=genes_per_metabolite, replace=False)
        weights[m, idx] = rng.uniform(0.5, 1.5, genes_per_metabolite)
    absent = rng.random((n_metabolites, n_regions)) < absent_fraction
    for m in range(n_metabolites):
        if absent[m].all():
            absent[m, rng.integers(n_regions)] = False

    yy, xx = np.mgrid[0:height, 0:width]
    coords, counts, intensities, regions, sections = [], [], [], [], []
    for s in range(n_sections):
        labels = _regions((height, width), n_regions, smoothness, rng).ravel()
        rate = baseline[None, :] + up[labels] + rng.normal(0, 0.1, (labels.size, n_genes))
        z = np.log1p(np.exp(rate))
        z = (z - z.mean(0)) / z.std(0).clip(1e-8)
        counts.append(rng.poisson(np.exp(rate)))
        present = ~absent[:, labels].T
        signal = present * np.clip(2.0 + 0.5 * z @ weights.T, 1.0, None)
        intensities.append(np.clip(signal + rng.normal(0, noise, signal.shape), 0, None))
        coords.append(np.column_stack([xx.ravel(), yy.ravel()]))
        regions.append(labels)
        sections.append(np.full(labels.size, f"section{s}"))

    simulation = {
        "seed": int(seed),
        "regime": "linear",
        "n_regions": int(n_regions),
        "noise": float(noise),
        "depth": float(depth),
        "absent_fraction": float(absent_fraction),
        "signatures": {str(r): [genes[g] for g in idx] for r, idx in signatures.items()},
        "gene_weights": weights,
        "absent": absent,
        "genes": genes,
        "metabolites": metabolites,
    }
    return _assemble(coords, counts, intensities, regions, sections, genes=genes, metabolites=metabolites, mz=mz,
                     shape=(height, width), simulation=simulation)



def _setup(shape, n_genes, n_metabolites, noise, depth, seed):
    """Checks shared by both regimes; the seeded generator, grid shape, names and m/z values."""
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"`shape` must be (height, width) with both >= 2, got {shape!r}.")
    if noise < 0 or depth <= 0:
        raise ValueError(f"`noise` must be >= 0 and `depth` > 0, got noise={noise!r}, depth={depth!r}.")
    rng = np.random.default_rng(seed)
    genes = [f"Gene{g:03d}" for g in range(n_genes)]
    metabolites = [f"Met{m:02d}" for m in range(n_metabolites)]
    mz = np.sort(rng.uniform(100.0, 900.0, n_metabolites)).round(4)
    return rng, (int(shape[0]), int(shape[1])), genes, metabolites, mz


def _assemble(coords, counts, intensities, regions, sections, *, genes, metabolites, mz, shape, simulation,
              programs=None, present=None) -> tuple[ad.AnnData, ad.AnnData]:
    """Paired ST and MSI AnnData from the per-section arrays of a simulation."""
    section = np.concatenate(sections)
    obs = pd.DataFrame(
        {
            SECTION: pd.Categorical(section),
            REGION: pd.Categorical(np.concatenate(regions).astype(str)),
        },
        index=[f"{sec}_spot{i}" for i, sec in enumerate(section)],
    )
    spatial = np.concatenate(coords).astype(np.int64)
    grid = {"shape": [int(shape[0]), int(shape[1])], "pixel_size": None}
    st = ad.AnnData(
        X=np.concatenate(counts).astype(np.float32),
        obs=obs.copy(),
        var=pd.DataFrame(index=genes),
        obsm={SPATIAL: spatial.copy()},
        uns={GRID: dict(grid), SIMULATION: dict(simulation)},
    )
    msi = ad.AnnData(
        X=np.concatenate(intensities).astype(np.float32),
        obs=obs.copy(),
        var=pd.DataFrame({MZ: mz}, index=metabolites),
        obsm={SPATIAL: spatial.copy()},
        uns={GRID: dict(grid), SIMULATION: dict(simulation)},
    )
    if programs is not None:
        st.obsm[PROGRAMS] = np.concatenate(programs).astype(np.float32)
    if present is not None:
        msi.layers[PRESENT] = np.concatenate(present).astype(np.int8)
    return st, msi


def _simulate_gated(*, n_sections, shape, n_genes, n_metabolites, n_programs, depth, noise, smoothness, seed):
    """The ``"gated"`` regime of :func:`simulate_paired_st_msi` (see there)."""
    for name, value, low in (("n_sections", n_sections, 1), ("n_genes", n_genes, 2), ("n_metabolites", n_metabolites, 1),
                             ("n_programs", n_programs, 3)):
        if int(value) != value or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    rng, (height, width), genes, metabolites, mz = _setup(shape, n_genes, n_metabolites, noise, depth, seed)
    baseline = np.log(depth) + rng.normal(0, 0.3, n_genes)
    loadings = np.zeros((n_programs, n_genes))
    n_loaded = max(n_programs, int(round(0.6 * n_genes)))
    loaded = rng.permutation(n_genes)[: min(n_loaded, n_genes)]
    for i, g in enumerate(loaded):
        loadings[i % n_programs, g] = rng.uniform(0.4, 1.0)
    gates = []
    for _ in range(n_metabolites):
        a, b, c = rng.choice(n_programs, size=3, replace=False)
        gates.append({"a": int(a), "b": int(b), "c": int(c), "t_a": float(rng.uniform(-0.6, 0.0)),
                      "t_b": float(rng.uniform(0.0, 0.8)), "v": float(rng.uniform(2.0, 5.0))})
    yy, xx = np.mgrid[0:height, 0:width]
    coords, counts, intensities, regions, sections, programs, presents = [], [], [], [], [], [], []
    for s in range(n_sections):
        fields = np.stack([ndimage.gaussian_filter(rng.normal(size=(height, width)), smoothness, mode="reflect")
                           for _ in range(n_programs)]).reshape(n_programs, -1).T
        P = (fields - fields.mean(0)) / fields.std(0).clip(1e-12)
        rate = baseline[None, :] + P @ loadings + rng.normal(0, 0.2, (len(P), n_genes))
        counts.append(rng.poisson(np.exp(rate)))
        present = np.zeros((len(P), n_metabolites), dtype=bool)
        signal = np.zeros((len(P), n_metabolites))
        for m, g in enumerate(gates):
            present[:, m] = (P[:, g["a"]] > g["t_a"]) & (P[:, g["b"]] < g["t_b"])
            substrate = np.exp(P[:, g["c"]] + 0.5 * P[:, g["a"]])
            signal[:, m] = present[:, m] * g["v"] * substrate / (1.0 + substrate)
        intensities.append(np.clip(signal + rng.normal(0, noise, signal.shape), 0, None))
        coords.append(np.column_stack([xx.ravel(), yy.ravel()]))
        regions.append(P.argmax(1))
        sections.append(np.full(len(P), f"section{s}"))
        programs.append(P)
        presents.append(present)
    simulation = {
        "seed": int(seed),
        "regime": "gated",
        "n_programs": int(n_programs),
        "noise": float(noise),
        "depth": float(depth),
        "loadings": loadings,
        "gates": {metabolites[m]: g for m, g in enumerate(gates)},
        "genes": genes,
        "metabolites": metabolites,
    }
    return _assemble(coords, counts, intensities, regions, sections, genes=genes, metabolites=metabolites, mz=mz,
                     shape=(height, width), simulation=simulation, programs=programs, present=presents)
