"""Pair ST spots with MSI pixels: shared grid, nearest pixel, spot footprint, landmark registration.

A paired dataset is two AnnData objects with the same rows (one per matched ST spot): the ST
expression and the MSI intensities attributed to that spot, plus the explicit match (pixel, distance,
number of pixels) in ``msi.obs`` and the pairing parameters and distance summary in ``uns["pairing"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from .._keys import MATCH_COUNT, MATCH_DISTANCE, MATCH_PIXEL, PAIRING, SECTION, SPATIAL
from .._logging import logger
from .._registry import invalid_option
from .._validation import check_unique_names

__all__ = ["affine_from_landmarks", "concatenate_sections", "pair"]

_METHODS = ("auto", "shared", "nearest", "footprint")


def affine_from_landmarks(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine map taking ``source`` landmark points onto ``target`` points.

    Parameters
    ----------
    source, target
        ``(n, 2)`` arrays of corresponding points (n >= 3, not all on one line).

    Returns
    -------
    ``(matrix, rms)``: the ``(3, 2)`` matrix ``A`` with ``[x, y, 1] @ A`` = mapped point, and the
    root-mean-square residual of the landmarks after mapping.
    """
    source = np.asarray(source, dtype=float)
    target = np.asarray(target, dtype=float)
    if source.ndim != 2 or source.shape[1] != 2 or source.shape != target.shape:
        raise ValueError(
            f"`landmarks` must be two (n, 2) arrays of the same shape; got {source.shape} and {target.shape}."
        )
    if len(source) < 3:
        raise ValueError(f"`landmarks` needs at least 3 point pairs for an affine registration, got {len(source)}.")
    design = np.column_stack([source, np.ones(len(source))])
    if np.linalg.matrix_rank(design) < 3:
        raise ValueError("`landmarks` source points are collinear; an affine registration needs 3 non-collinear points.")
    matrix, *_ = np.linalg.lstsq(design, target, rcond=None)
    rms = float(np.sqrt(np.mean(np.sum((design @ matrix - target) ** 2, axis=1))))
    return matrix, rms


def _spacing(coords: np.ndarray, groups: np.ndarray) -> float:
    """Median nearest-neighbour distance of a point set within its sections (its grid pitch)."""
    dists = []
    for g in np.unique(groups):
        xy = coords[groups == g]
        if len(xy) >= 2:
            dists.append(cKDTree(xy).query(xy, k=2)[0][:, 1])
    return float(np.median(np.concatenate(dists))) if dists else 1.0


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)


def _sections(adata: ad.AnnData) -> np.ndarray:
    if SECTION in adata.obs:
        return adata.obs[SECTION].astype(str).to_numpy()
    return np.full(adata.n_obs, "", dtype=object)


def _coords(adata: ad.AnnData, name: str) -> np.ndarray:
    if SPATIAL not in adata.obsm:
        raise KeyError(f"`{name}` has no obsm[{SPATIAL!r}] coordinates; pairing needs the positions of spots/pixels.")
    coords = np.asarray(adata.obsm[SPATIAL], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"`{name}.obsm[{SPATIAL!r}]` must have shape (n_obs, 2), got {coords.shape}.")
    if not np.isfinite(coords).all():
        raise ValueError(f"`{name}.obsm[{SPATIAL!r}]` contains NaN or infinite coordinates.")
    return coords


def pair(
    st: ad.AnnData,
    msi: ad.AnnData,
    *,
    method: str = "auto",
    radius: float | None = None,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    nan_policy: str = "raise",
) -> tuple[ad.AnnData, ad.AnnData]:
    """Match every ST spot to the MSI measured at the same place.

    Three situations are handled (Vicari et al. 2024 and Godfrey et al. 2025 paired data need the
    second and the first):

    - ``"shared"``: ST and MSI were measured on the same grid; rows are matched by identical
      coordinates (distance 0).
    - ``"nearest"``: different point sets in one aligned frame; each spot takes its nearest MSI
      pixel within ``radius`` (default: the median ST spot spacing).
    - ``"footprint"``: each spot takes the mean of the MSI pixels within ``radius`` of its centre
      (default: half the median ST spot spacing, i.e. the spot's footprint on the grid).

    ``"auto"`` uses ``"shared"`` when every spot has an MSI pixel at exactly its coordinates and
    ``"nearest"`` otherwise. With ``landmarks`` (``(msi_points, st_points)``) the MSI coordinates are
    first mapped into the ST frame by the least-squares affine registration of the landmark pairs.
    When both objects have ``obs["section"]``, spots are only matched to pixels of their section.

    Parameters
    ----------
    st
        Spatial transcriptomics (spots x genes) with ``obsm["spatial"]`` (float or int).
    msi
        MSI (pixels x metabolites) with ``obsm["spatial"]`` in the same frame (or registered by
        ``landmarks``).
    method
        ``"auto"``, ``"shared"``, ``"nearest"`` or ``"footprint"``.
    radius
        Matching radius in coordinate units (see above).
    landmarks
        ``(msi_points, st_points)``: two ``(n, 2)`` arrays of corresponding points, n >= 3.
    nan_policy
        What to do with NaN MSI intensities: ``"raise"`` (default) or ``"zero"`` (treated as not
        detected; the count is logged and recorded).

    Returns
    -------
    ``(st_paired, msi_paired)`` with one row per matched spot (same ``obs_names``, the ST spot names):

    - ``st_paired``: the matched ST spots (X, obs, obsm unchanged);
    - ``msi_paired``: X = MSI intensities of the spot (float32), ``var`` = ``msi.var``, ``obsm["spatial"]``
      = the spot coordinates, ``obs["msi_pixel"]``, ``obs["match_distance"]``, ``obs["n_pixels"]``,
      ``obs["section"]`` (if present);
    - ``uns["pairing"]`` of both: ``method``, ``radius``, ``n_spots``, ``n_matched``, distance
      quantiles (``distance_median``, ``distance_p90``, ``distance_max``), landmark ``rms`` and
      ``affine`` (when registered), ``n_nan``.

    Raises
    ------
    ValueError
        No spot has an MSI pixel within ``radius`` (no spatial overlap), NaN intensities with
        ``nan_policy="raise"``, gene or metabolite names that repeat, bad arguments.
    """
    if method not in _METHODS:
        raise invalid_option(method, "method", _METHODS)
    check_unique_names(st.var_names, "The genes of the ST data")
    check_unique_names(msi.var_names, "The metabolites of the MSI data")
    if nan_policy not in ("raise", "zero"):
        raise invalid_option(nan_policy, "nan_policy", ("raise", "zero"))
    if radius is not None and not radius > 0:
        raise ValueError(f"`radius` must be a positive distance, got {radius!r}.")
    st_xy = _coords(st, "st")
    msi_xy = _coords(msi, "msi")
    values = _dense(msi.X)
    n_nan = int(np.isnan(values).sum())
    if n_nan:
        if nan_policy == "raise":
            bad = msi.var_names[np.isnan(values).any(axis=0)].tolist()
            raise ValueError(
                f"`msi` has {n_nan} NaN intensities (metabolites {bad}); pass nan_policy='zero' to treat them as "
                "not detected, or clean the data."
            )
        logger.warning("pair: %d NaN MSI intensities set to 0 (not detected), nan_policy='zero'.", n_nan)
        values = np.nan_to_num(values, nan=0.0)

    record: dict = {"radius": radius, "n_nan": n_nan}
    if landmarks is not None:
        matrix, rms = affine_from_landmarks(*landmarks)
        msi_xy = np.column_stack([msi_xy, np.ones(len(msi_xy))]) @ matrix
        record.update(affine=matrix.tolist(), landmark_rms=rms)
        logger.info("pair: affine registration from %d landmarks, RMS residual %.3g", len(landmarks[0]), rms)

    st_sec, msi_sec = _sections(st), _sections(msi)
    if method == "auto":
        msi_keys = set(zip(msi_sec, map(tuple, msi_xy)))
        shared = all(k in msi_keys for k in zip(st_sec, map(tuple, st_xy)))
        method = "shared" if shared else "nearest"
    spacing = _spacing(st_xy, st_sec)
    if radius is None:
        radius = spacing / 2 if method == "footprint" else (spacing if method == "nearest" else 0.0)

    n_met = values.shape[1]
    matched = np.zeros(st.n_obs, dtype=bool)
    out = np.zeros((st.n_obs, n_met))
    pixel = np.full(st.n_obs, "", dtype=object)
    distance = np.full(st.n_obs, np.nan)
    count = np.zeros(st.n_obs, dtype=np.int64)
    nearest_any = np.inf
    for section in np.unique(st_sec):
        spots = np.flatnonzero(st_sec == section)
        pixels = np.flatnonzero(msi_sec == section)
        if len(pixels) == 0:
            continue
        tree = cKDTree(msi_xy[pixels])
        dist, idx = tree.query(st_xy[spots])
        nearest_any = min(nearest_any, float(dist.min()))
        if method == "footprint":
            for spot, neighbours in zip(spots, tree.query_ball_point(st_xy[spots], r=radius)):
                if neighbours:
                    members = pixels[neighbours]
                    out[spot] = values[members].mean(axis=0)
                    count[spot] = len(members)
                    distance[spot] = float(np.linalg.norm(msi_xy[members] - st_xy[spot], axis=1).mean())
                    matched[spot] = True
        else:
            tolerance = 1e-9 if method == "shared" else radius
            ok = dist <= tolerance
            hit = spots[ok]
            out[hit] = values[pixels[idx[ok]]]
            pixel[hit] = np.asarray(msi.obs_names)[pixels[idx[ok]]]
            distance[hit] = dist[ok]
            count[hit] = 1
            matched[hit] = True

    if not matched.any():
        st_box = np.r_[st_xy.min(0), st_xy.max(0)].round(2).tolist()
        msi_box = np.r_[msi_xy.min(0), msi_xy.max(0)].round(2).tolist()
        raise ValueError(
            f"ST and MSI have no spatial overlap with method={method!r}, radius={radius:.4g}: the closest MSI pixel "
            f"is {nearest_any:.4g} units from any spot (ST x/y range {st_box}, MSI x/y range {msi_box}"
            f"{'; sections must have the same obs[section] names' if SECTION in st.obs else ''}). Check that both "
            "are in one coordinate frame, give `landmarks` for a registration, or a larger `radius`."
        )
    n_unmatched = int((~matched).sum())
    if n_unmatched:
        logger.warning("pair: %d of %d ST spots have no MSI pixel within radius %.4g and are left out.",
                       n_unmatched, st.n_obs, radius)
    d = distance[matched]
    record.update(
        method=method,
        radius=float(radius),
        spot_spacing=spacing,
        n_spots=int(st.n_obs),
        n_matched=int(matched.sum()),
        distance_median=float(np.median(d)),
        distance_p90=float(np.percentile(d, 90)),
        distance_max=float(d.max()),
    )
    logger.info("pair (%s): %d/%d spots matched, median distance %.3g", method, matched.sum(), st.n_obs, record["distance_median"])

    st_paired = st[matched].copy()
    obs = pd.DataFrame(
        {MATCH_PIXEL: pixel[matched], MATCH_DISTANCE: distance[matched], MATCH_COUNT: count[matched]},
        index=st_paired.obs_names,
    )
    if SECTION in st.obs:
        obs[SECTION] = st_paired.obs[SECTION].to_numpy()
    msi_paired = ad.AnnData(
        X=out[matched].astype(np.float32),
        obs=obs,
        var=msi.var.copy(),
        obsm={SPATIAL: np.asarray(st_paired.obsm[SPATIAL]).copy()},
    )
    for adata in (st_paired, msi_paired):
        adata.uns[PAIRING] = dict(record)
    return st_paired, msi_paired


def concatenate_sections(pairs: Sequence[tuple[ad.AnnData, ad.AnnData]], names: Sequence[str]) -> tuple[ad.AnnData, ad.AnnData]:
    """Stack paired sections, labelling ``obs["section"]`` with ``names`` (one per pair).

    Coordinates stay per-section; the section label keeps spatial operations (pairing, folds,
    neighbours) inside a section.
    """
    if len(pairs) != len(names):
        raise ValueError(f"`names` must name every pair: {len(pairs)} pairs, {len(names)} names.")
    sts, msis = [], []
    for (st, msi), name in zip(pairs, names):
        st, msi = st.copy(), msi.copy()
        for adata in (st, msi):
            adata.obs[SECTION] = str(name)
            adata.obs_names = [f"{name}:{o}" for o in adata.obs_names]
            adata.uns = {}
        sts.append(st)
        msis.append(msi)
    st = ad.concat(sts, merge="same")
    msi = ad.concat(msis, merge="same")
    st.uns[PAIRING] = msi.uns[PAIRING] = {str(n): dict(p[1].uns.get(PAIRING, {})) for p, n in zip(pairs, names)}
    return st, msi
