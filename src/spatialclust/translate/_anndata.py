"""AnnData side of the translator: expression matrices, synthetic MSI from new ST, integer image grid."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from .._keys import GRID, MZ, PRESENCE_LAYER, SECTION, SPATIAL, SPATIAL_INPUT, TRANSLATION
from .._logging import logger
from .._registry import invalid_option

__all__ = ["expression_matrix", "grid_coordinates", "predict_msi"]


_TRANSFORMS = ("log1p", "none")
_MISSING = ("raise", "zero", "mean")


def _transform(values: np.ndarray, transform: str, name: str) -> np.ndarray:
    if transform not in _TRANSFORMS:
        raise invalid_option(transform, name, _TRANSFORMS)
    if transform == "log1p":
        if (values < 0).any():
            raise ValueError(f"`{name}='log1p'` needs non-negative values; found negative entries.")
        return np.log1p(values)
    return values


def expression_matrix(adata: ad.AnnData, *, genes: Sequence[str] | None = None, layer: str | None = None,
                      transform: str = "log1p", missing_genes: str = "raise", fill: np.ndarray | None = None) -> np.ndarray:
    """Dense ``(n_obs, n_genes)`` matrix of ``adata`` in the order of ``genes``, transformed.

    Parameters
    ----------
    adata
        ST (or MSI) AnnData.
    genes
        Required feature names and order (default: all of ``adata.var_names``).
    layer
        Layer to read instead of X.
    transform
        ``"log1p"`` or ``"none"``.
    missing_genes
        Genes of ``genes`` absent from ``adata``: ``"raise"`` (error listing them), ``"zero"`` (filled
        with 0 after the transform) or ``"mean"`` (filled with ``fill``, the training mean).
    fill
        Per-gene fill values (transformed scale) for ``"mean"``.
    """
    if missing_genes not in _MISSING:
        raise invalid_option(missing_genes, "missing_genes", _MISSING)
    X = adata.layers[layer] if layer is not None else adata.X
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)
    if np.isnan(X).any():
        raise ValueError(f"{'layers[' + repr(layer) + ']' if layer else 'X'} contains NaN values; clean them before translating.")
    if genes is None:
        return _transform(X, transform, "transform")
    index = {g: i for i, g in enumerate(adata.var_names)}
    missing = [g for g in genes if g not in index]
    if missing and missing_genes == "raise":
        raise ValueError(
            f"{len(missing)} of the {len(genes)} genes the model was trained on are missing from the data: "
            f"{missing}. Pass missing_genes='zero' or 'mean' to fill them explicitly."
        )
    if missing:
        logger.warning("%d genes missing, filled with %s: %s", len(missing), missing_genes, missing)
    out = np.zeros((adata.n_obs, len(genes)))
    present = [j for j, g in enumerate(genes) if g in index]
    out[:, present] = _transform(X[:, [index[genes[j]] for j in present]], transform, "transform")
    if missing and missing_genes == "mean":
        if fill is None:
            raise ValueError("missing_genes='mean' needs the training means of the genes (`fill`).")
        for j, g in enumerate(genes):
            if g not in index:
                out[:, j] = fill[j]
    return out


def grid_coordinates(coords: np.ndarray, *, groups: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Integer image grid ``(x, y)`` for (float) spot coordinates, one distinct cell per spot.

    The step is the median spot spacing, halved until no two spots of a section share a cell (a
    hexagonal Visium layout needs half a spacing). Sections are placed side by side along x.
    """
    coords = np.asarray(coords, dtype=float)
    groups = np.zeros(len(coords)).astype(str) if groups is None else np.asarray(groups).astype(str)
    if len(coords) > 1:
        dist, _ = cKDTree(coords).query(coords, k=2)
        step = float(np.median(dist[:, 1])) or 1.0
    else:
        step = 1.0
    if np.allclose(coords, np.round(coords)) and step <= 1.0 + 1e-9:
        step = 1.0
    for _ in range(8):
        grid = np.zeros_like(coords, dtype=np.int64)
        offset, ok = 0, True
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            cell = np.round((coords[idx] - coords[idx].min(0)) / step).astype(np.int64)
            if len(np.unique(cell, axis=0)) < len(idx):
                ok = False
                break
            cell[:, 0] += offset
            grid[idx] = cell
            offset = int(cell[:, 0].max()) + 2
        if ok:
            break
        step /= 2
    else:
        raise ValueError("Spot coordinates could not be rasterised: several spots share one position.")
    shape = [int(grid[:, 1].max()) + 1, int(grid[:, 0].max()) + 1]
    return grid, {"shape": shape, "pixel_size": None, "step": step}


def predict_msi(
    model,
    st: ad.AnnData,
    *,
    metadata: dict | None = None,
    layer: str | None = None,
    missing_genes: str = "raise",
) -> ad.AnnData:
    """Synthetic MSI (spots x metabolites) predicted from a new ST dataset.

    Parameters
    ----------
    model
        Fitted :class:`~spatialclust.translate.TwoStageTranslator` with ``genes_`` and ``metabolites_``.
    st
        Spatial transcriptomics AnnData with the training genes (by name) and ``obsm["spatial"]``.
    metadata
        Checkpoint metadata (:func:`~spatialclust.translate.load_translator`): ``expression_transform``,
        ``intensity_transform``, ``mz`` and ``gene_means`` (for ``missing_genes="mean"``).
    layer
        ST layer to use instead of X.
    missing_genes
        ``"raise"`` (default: error listing the missing genes), ``"zero"`` or ``"mean"``.

    Returns
    -------
    AnnData with X = predicted intensities (float32, original scale: ``expm1`` of the model output when
    trained on log1p; every metabolite combined as in ``model.combination_``), ``layers["presence"]`` (stage-1 0/1), ``var["mz"]`` (when known),
    ``obsm["spatial"]`` = integer image grid and ``uns["grid"]`` (see :func:`grid_coordinates`),
    ``obsm["spatial_input"]`` = the input coordinates, ``obs["section"]`` (if in ``st``),
    ``uns["translation"]`` = parameters. Images: ``sc.pp.feature_images(result)``; imzML:
    ``sc.io.write_imzml(result, path)``.
    """
    metadata = dict(metadata or {})
    if getattr(model, "genes_", None) is None or getattr(model, "metabolites_", None) is None:
        raise ValueError("`model` was fitted without gene/metabolite names; fit it with genes=..., metabolites=....")
    if SPATIAL not in st.obsm:
        raise KeyError(f"`st` has no obsm[{SPATIAL!r}]; spot coordinates are needed for the predicted images.")
    fill = np.asarray(metadata["gene_means"]) if "gene_means" in metadata else None
    X = expression_matrix(st, genes=model.genes_, layer=layer, transform=metadata.get("expression_transform", "log1p"),
                          missing_genes=missing_genes, fill=fill)
    groups = st.obs[SECTION].astype(str).to_numpy() if SECTION in st.obs else None
    coords = np.asarray(st.obsm[SPATIAL], dtype=np.float64)
    presence = model.predict_presence(X, coords=coords, groups=groups)
    values = model.predict(X, coords=coords, groups=groups)
    if metadata.get("intensity_transform", "log1p") == "log1p":
        values = np.expm1(np.clip(values, 0, None))
    grid, grid_info = grid_coordinates(coords, groups=groups)
    var = pd.DataFrame(index=list(model.metabolites_))
    if metadata.get("mz") is not None:
        var[MZ] = np.asarray(metadata["mz"], dtype=np.float64)
    obs = pd.DataFrame(index=st.obs_names.copy())
    if groups is not None:
        obs[SECTION] = pd.Categorical(groups)
    out = ad.AnnData(
        X=values.astype(np.float32),
        obs=obs,
        var=var,
        layers={PRESENCE_LAYER: presence.astype(np.int8)},
        obsm={SPATIAL: grid, SPATIAL_INPUT: np.asarray(st.obsm[SPATIAL], dtype=np.float64)},
        uns={GRID: grid_info},
    )
    out.uns[TRANSLATION] = {
        "presence_model": str(model.presence_model),
        "intensity_model": str(model.intensity_model),
        "combination": dict(zip(model.metabolites_, getattr(model, "combination_", []))),
        "params": {"missing_genes": missing_genes, "layer": layer},
        "missing_genes": [g for g in model.genes_ if g not in set(st.var_names)],
    }
    return out
