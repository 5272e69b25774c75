"""Presence/absence targets of metabolites from MSI intensities (stage-1 labels of the seed).

A metabolite is *present* in a spot when its intensity exceeds a detection threshold. The default
threshold is ``snr`` times the metabolite's noise level (a signal-to-noise criterion as in MSI peak
detection, e.g. MALDIquant's ``detectPeaks(SNR=...)``), with the noise level estimated from the
differences between spatially neighbouring spots: biological signal is spatially smooth, noise is
independent from spot to spot, so ``sigma = 1.4826 * MAD(I_s - I_nn(s)) / sqrt(2)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .._registry import invalid_option

__all__ = ["detection_thresholds", "noise_level", "presence_targets"]

_DETECTION = ("noise", "quantile", "value")


def noise_level(intensities: np.ndarray, coords: np.ndarray, *, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-metabolite noise standard deviation from nearest-neighbour differences.

    Parameters
    ----------
    intensities
        ``(n_spots, n_metabolites)`` intensities.
    coords
        ``(n_spots, 2)`` spot coordinates.
    groups
        Section label per spot; neighbours are only taken within a section.

    Returns
    -------
    ``(n_metabolites,)`` robust noise standard deviation (0 where most neighbouring spots are equal,
    e.g. both zero in sparse MSI).
    """
    intensities = np.asarray(intensities, dtype=float)
    coords = np.asarray(coords, dtype=float)
    groups = np.zeros(len(coords)) if groups is None else np.asarray(groups)
    diffs = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        _, nn = cKDTree(coords[idx]).query(coords[idx], k=2)
        diffs.append(intensities[idx] - intensities[idx[nn[:, 1]]])
    if not diffs:
        raise ValueError("Estimating the noise level needs at least 2 spots in a section.")
    d = np.concatenate(diffs)
    mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    return 1.4826 * mad / np.sqrt(2)


def detection_thresholds(
    intensities: np.ndarray,
    *,
    coords: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    detection: str | float = "noise",
    snr: float = 3.0,
    quantile: float = 0.5,
) -> np.ndarray:
    """Per-metabolite detection thresholds; see :func:`presence_targets` for the parameters."""
    intensities = np.asarray(intensities, dtype=float)
    if isinstance(detection, (int, float)) and not isinstance(detection, bool):
        return np.full(intensities.shape[1], float(detection))
    if detection not in _DETECTION:
        raise invalid_option(detection, "detection", _DETECTION + ("<number>",))
    if detection == "noise":
        if coords is None:
            raise ValueError("`detection='noise'` needs `coords` to estimate the noise from neighbouring spots.")
        if not snr > 0:
            raise ValueError(f"`snr` must be > 0, got {snr!r}.")
        return snr * noise_level(intensities, coords, groups=groups)
    if detection == "quantile":
        if not 0 < quantile < 1:
            raise ValueError(f"`quantile` must be in (0, 1), got {quantile!r}.")
        return np.quantile(intensities, quantile, axis=0)
    raise ValueError("`detection='value'` needs a number: pass the threshold itself as `detection`.")


def presence_targets(
    intensities: np.ndarray,
    *,
    coords: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    detection: str | float = "noise",
    snr: float = 3.0,
    quantile: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary presence/absence of every metabolite in every spot.

    Parameters
    ----------
    intensities
        ``(n_spots, n_metabolites)`` MSI intensities matched to the spots (no NaN).
    coords
        ``(n_spots, 2)`` coordinates (needed for ``detection="noise"``).
    groups
        Section label per spot (neighbours for the noise estimate stay within a section).
    detection
        ``"noise"`` (default): present if intensity > ``snr`` x noise level of the metabolite (see
        :func:`noise_level`); for sparse MSI whose noise level is 0 this is "intensity > 0".
        ``"quantile"``: present if above the metabolite's ``quantile``. A number: one absolute
        threshold for all metabolites.
    snr
        Signal-to-noise ratio for ``"noise"``.
    quantile
        Quantile for ``"quantile"``.

    Returns
    -------
    ``(presence, thresholds)``: int8 ``(n_spots, n_metabolites)`` and the ``(n_metabolites,)``
    thresholds used.
    """
    intensities = np.asarray(intensities, dtype=float)
    if intensities.ndim != 2:
        raise ValueError(f"`intensities` must be 2-D (n_spots, n_metabolites), got shape {intensities.shape}.")
    if np.isnan(intensities).any():
        raise ValueError("`intensities` contains NaN; clean them or pair with nan_policy='zero'.")
    thresholds = detection_thresholds(
        intensities, coords=coords, groups=groups, detection=detection, snr=snr, quantile=quantile
    )
    return (intensities > thresholds).astype(np.int8), thresholds
