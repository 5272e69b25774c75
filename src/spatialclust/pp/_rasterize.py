"""Rasterise spatial-transcriptomics spots onto their array grid so that every gene is an image.

Legacy ST arrays are square lattices: array positions map directly to grid cells. Visium (and the
ST 2k array) place spots on a hexagonal lattice whose array coordinates obey ``col + row`` = const
(mod 2); each row is then compressed to an *offset grid* with ``x = col // 2`` (every other column is
empty in array coordinates), ``y = row``. One grid cell = one spot; cells without a spot are
background (``fill`` in :func:`spatialclust.pp.feature_images`). On the offset grid a cell is one
spot pitch wide and sqrt(3)/2 pitch high, and odd rows are shifted by half a cell: the images are
slightly anisotropic, which the image models tolerate (they see the same geometry for every gene).
"""

from __future__ import annotations

import math
from functools import reduce

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from .. import _keys
from .._logging import logger
from .._registry import invalid_option

LAYOUTS = ("auto", "square", "hexagonal")


def rasterize_spots(
    adata: ad.AnnData,
    *,
    layout: str = "auto",
    from_key: str = _keys.SPATIAL_ARRAY,
    pixel_size: float | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Map every spot to an integer grid cell: ``obsm["spatial"]`` (x, y) and ``uns["grid"]``.

    Parameters
    ----------
    adata
        Spots x genes, with spot positions in ``obsm[from_key]``: integer array positions
        (column, row), or continuous positions (e.g. full-resolution image pixels), which are first
        snapped to the lattice of the spots' nearest-neighbour spacing.
    layout
        ``"square"`` (legacy ST), ``"hexagonal"`` (Visium: ``col + row`` has one parity for all
        spots) or ``"auto"`` (hexagonal when the parity rule holds, square otherwise).
    from_key
        ``obsm`` key with the positions.
    pixel_size
        Spot pitch in µm, recorded as ``uns["grid"]["pixel_size"]``.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    None or the copy. Writes ``obsm["spatial"]`` (int64 (n_spots, 2), 0-based (x, y)),
    ``uns["grid"] = {"shape": [H, W], "pixel_size": pixel_size, "layout": layout used}`` and
    ``obs["tissue"]`` (all True) if absent.

    Raises
    ------
    ValueError
        For spots without (finite) coordinates, several spots on one grid cell (duplicated
        coordinates), an unknown ``layout`` or a missing ``from_key``.
    """
    if layout not in LAYOUTS:
        raise invalid_option(layout, "layout", LAYOUTS)
    if from_key not in adata.obsm:
        raise ValueError(f"`from_key`: obsm[{from_key!r}] with the spot positions is missing; obsm has {list(adata.obsm)}.")
    adata = adata.copy() if copy else adata
    coords = np.asarray(adata.obsm[from_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape != (adata.n_obs, 2):
        raise ValueError(f"obsm[{from_key!r}] must have shape ({adata.n_obs}, 2); received {coords.shape}.")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} spots have no coordinates in obsm[{from_key!r}] (first: {list(adata.obs_names[bad][:3])}); "
            "drop them or supply their positions."
        )
    transposed = False
    if np.allclose(coords, np.rint(coords)) and _spacing(coords) <= 2.0:
        col, row = np.rint(coords).astype(np.int64).T  # array positions (neighbours 1 or 2 apart)
    elif adata.n_obs > 1:
        col, row, transposed = _snap_to_lattice(coords)  # e.g. pixel positions on the tissue image
    else:
        col = row = np.zeros(1, dtype=np.int64)
    col, row = col - col.min(), row - row.min()
    col, row = col // _gcd(col), row // _gcd(row)
    parity = np.unique((col + row) % 2)
    hexagonal = len(parity) == 1 and adata.n_obs > 1 and len(np.unique(col % 2)) == 2
    if layout == "hexagonal" and not hexagonal and adata.n_obs > 1:
        raise ValueError("`layout`='hexagonal' but the array positions do not follow the hexagonal rule (col + row of one parity).")
    used = "hexagonal" if (layout == "hexagonal" or (layout == "auto" and hexagonal)) else "square"
    if used == "hexagonal":
        x = (col - (parity[0] - row) % 2) // 2
    else:
        x = col
    x, y = x - x.min(), row - row.min()
    if transposed:  # lattice rows run along the image y axis
        x, y = y, x
    cells = y * (x.max() + 1) + x
    uniq, counts = np.unique(cells, return_counts=True)
    if (counts > 1).any():
        dup = np.isin(cells, uniq[counts > 1])
        raise ValueError(
            f"{int(dup.sum())} spots share a grid position (duplicated coordinates in obsm[{from_key!r}], first: "
            f"{list(adata.obs_names[dup][:4])}); remove the duplicates before rasterising."
        )
    adata.obsm[_keys.SPATIAL] = np.stack([x, y], axis=1).astype(np.int64)
    shape = [int(y.max()) + 1, int(x.max()) + 1]
    adata.uns[_keys.GRID] = {"shape": shape, "pixel_size": pixel_size, "layout": used}
    if _keys.TISSUE not in adata.obs:
        adata.obs[_keys.TISSUE] = True
    logger.info("Rasterised %d spots onto a %s grid of %d x %d cells.", adata.n_obs, used, *shape)
    return adata if copy else None


def _gcd(values: np.ndarray) -> int:
    g = reduce(math.gcd, np.unique(values).tolist(), 0)
    return max(int(g), 1)


def _spacing(coords: np.ndarray) -> float:
    """Median nearest-neighbour distance between spots (0 for a single spot)."""
    if len(coords) < 2:
        return 0.0
    dist, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(dist[:, 1]))


def _snap_to_lattice(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Integer array (column, row) of continuous spot positions on a square or hexagonal lattice.

    The lattice basis is estimated from nearest-neighbour pairs: ``a1`` = mean vector of the
    neighbour direction closest to an image axis (the lattice rows), ``a2`` = mean vector of the
    direction at 60° (hexagonal) or 90° (square) from it. Every spot is then
    ``origin + i * a1 + j * a2`` with integers (i, j), robust to small rotations and to the
    accumulation of rounding errors across the section. Hexagonal lattices get doubled columns
    ``col = 2 i + j`` (Visium's convention, so ``col + row`` is even). Returns
    ``(col, row, transposed)`` where ``transposed`` says that the lattice rows run along y.
    """
    d = _spacing(coords)
    if d <= 0:
        raise ValueError("Several spots share the same coordinates (duplicated coordinates); remove the duplicates.")
    pairs = cKDTree(coords).query_pairs(1.3 * d, output_type="ndarray")
    vec = coords[pairs[:, 1]] - coords[pairs[:, 0]]
    angle = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 180.0  # undirected: [0, 180)
    axis_dev = np.minimum.reduce([angle, np.abs(angle - 90.0), 180.0 - angle])
    ref = angle[np.argmin(axis_dev)]
    near = np.abs((angle - ref + 90.0) % 180.0 - 90.0) < 15.0
    a1 = _mean_direction(vec[near], ref)
    transposed = 45.0 <= ref < 135.0
    rel = (angle - np.degrees(np.arctan2(a1[1], a1[0]))) % 180.0
    hexagonal = np.sum(np.abs(rel - 60.0) < 15.0) > np.sum(np.abs(rel - 90.0) < 15.0)
    target = 60.0 if hexagonal else 90.0
    a2 = _mean_direction(vec[np.abs(rel - target) < 15.0], (np.degrees(np.arctan2(a1[1], a1[0])) + target) % 180.0)
    basis = np.stack([a1, a2], axis=1)
    ij = np.linalg.solve(basis, (coords - coords[0]).T).T
    i, j = np.rint(ij).astype(np.int64).T
    col = 2 * i + j if hexagonal else i
    return col, j, bool(transposed)


def _mean_direction(vectors: np.ndarray, angle_deg: float) -> np.ndarray:
    """Mean of undirected vectors after orienting each along ``angle_deg``."""
    unit = np.array([np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))])
    signs = np.where(vectors @ unit < 0, -1.0, 1.0)
    return (vectors * signs[:, None]).mean(axis=0)
