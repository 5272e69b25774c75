"""Simulated spatial transcriptomics: sparse, noisy gene images with known spatial patterns."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import ndimage

from .. import _keys


def simulate_st(
    *,
    shape: tuple[int, int] = (32, 32),
    n_patterns: int = 4,
    genes_per_pattern: int = 10,
    mean_counts: float = 2.0,
    abundance_sigma: float = 0.7,
    background: float = 0.05,
    dropout: float = 0.5,
    smoothness: float = 3.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate a spot x gene count matrix whose genes follow ``n_patterns`` spatial patterns.

    The generative model (sparse and noisy, like the gene images DARLC targets):

    1. ``n_patterns`` patterns: a smooth random field (white noise blurred with ``smoothness``
       grid cells), the top 25 % of it inside an elliptical tissue mask, blurred once more;
       scaled to [0, 1]. Patterns are decorrelated by construction (independent fields).
    2. per gene: abundance ``a ~ LogNormal(log(mean_counts), abundance_sigma)``, expected counts
       ``a * (background + pattern)`` per spot;
    3. Poisson counts, then dropout: each count is zeroed with probability ``dropout``.

    Spots lie on a square array (one spot per grid cell, tissue spots only), so
    ``sc.pp.feature_images`` shows every gene as an image directly.

    Returns
    -------
    AnnData (spots x genes) with raw counts in ``X``, ``obsm["spatial"]``/``obsm["spatial_array"]``,
    ``uns["grid"]``, ``obs["tissue"]``, ``var["pattern"]`` (truth, ``"P0"``...) and
    ``uns["simulation"]`` (parameters and the pattern images).
    """
    if n_patterns < 1 or genes_per_pattern < 1:
        raise ValueError("`n_patterns` and `genes_per_pattern` must be positive integers.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1); received {dropout!r}.")
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    tissue = ((yy - (h - 1) / 2) / (0.48 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.48 * w)) ** 2 <= 1.0
    patterns = []
    for _ in range(n_patterns):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), smoothness)
        field[~tissue] = -np.inf
        blob = (field >= np.quantile(field[tissue], 0.75)).astype(float)
        blob = ndimage.gaussian_filter(blob, 1.0) * tissue
        patterns.append(blob / blob.max())
    patterns = np.stack(patterns)
    n_genes = n_patterns * genes_per_pattern
    labels = np.repeat(np.arange(n_patterns), genes_per_pattern)
    abundance = rng.lognormal(np.log(mean_counts), abundance_sigma, n_genes)
    expected = abundance[:, None, None] * (background + patterns[labels]) * tissue
    counts = rng.poisson(expected) * (rng.random(expected.shape) >= dropout)
    spot_y, spot_x = np.nonzero(tissue)
    X = counts[:, spot_y, spot_x].T.astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(X),
        obs=pd.DataFrame(index=[f"{x}x{y}" for x, y in zip(spot_x, spot_y)]),
        var=pd.DataFrame({_keys.PATTERN: [f"P{k}" for k in labels]}, index=[f"gene{i}" for i in range(n_genes)]),
    )
    coords = np.stack([spot_x, spot_y], axis=1).astype(np.int64)
    adata.obsm[_keys.SPATIAL] = coords
    adata.obsm[_keys.SPATIAL_ARRAY] = coords.copy()
    adata.obs[_keys.TISSUE] = True
    adata.uns[_keys.GRID] = {"shape": [h, w], "pixel_size": None, "layout": "square"}
    adata.uns[_keys.SIMULATION] = {
        "simulator": "simulate_st", "seed": seed, "n_patterns": n_patterns, "genes_per_pattern": genes_per_pattern,
        "mean_counts": mean_counts, "dropout": dropout, "patterns": patterns.astype(np.float32),
    }
    return adata
