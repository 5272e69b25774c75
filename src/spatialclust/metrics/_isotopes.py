"""Isotope pairs, the Relative Isotope Ratio (RIR) and the isotopic recall.

Both metrics score a clustering of ion images without ground truth: images of the isotopic
peaks of one molecule (M and M+1 of 13C) share their spatial distribution, so a good clustering
puts them in the same cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .._logging import logger
from .._registry import invalid_option
from ..pp import is_dask
from ._labels import NOISE, check_labels

#: Mass difference between 13C and 12C in Da (the M+1 isotope shift of a singly charged ion).
C13_SHIFT = 1.00336


def isotope_pairs(
    mz: Any,
    images: Any,
    *,
    delta: float = 0.005,
    unit: str = "Da",
    min_corr: float = 0.85,
    mass_shift: float = C13_SHIFT,
    mask: Any = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Pairs of ion images that are isotopes (Zhang et al. 2024, seed 000, "Relative isotope ratio").

    Two m/z values ``m_i < m_j`` are isotopes if and only if

    1. ``|m_j - m_i - mass_shift| <= delta`` (``mass_shift`` = 1.00336 Da, the 13C - 12C mass
       difference; the paper writes 1.003 ± δ), and
    2. the Pearson correlation of their ion images is at least ``min_corr`` (0.85).

    Parameters
    ----------
    mz
        m/z of every image, shape ``(n_images,)`` (any order).
    images
        Ion images ``(n_images, H, W)`` or flattened ``(n_images, n_pixels)``; also a dask array
        (e.g. ``X.T`` of a chunked dataset), whose correlations are computed for the m/z candidate
        pairs only, in two passes over its pixel chunks.
    delta
        Tolerance of the mass difference, in ``unit``.
    unit
        ``"Da"`` or ``"ppm"`` (parts per million of the heavier m/z ``m_j``).
    min_corr
        Smallest Pearson correlation of the two images.
    mass_shift
        Expected mass difference in Da.
    mask
        Optional bool pixel mask (shape ``(H, W)`` or ``(n_pixels,)``): correlations use these pixels only.
    batch_size
        Candidate pairs whose correlation is computed at once (memory bound).

    Returns
    -------
    int64 array ``(n_pairs, 2)`` of image indices ``(i, j)`` with ``mz[i] < mz[j]``, sorted. Images
    that are constant (Pearson correlation undefined) never form a pair.
    """
    mzs = np.asarray(mz, dtype=np.float64)
    if mzs.ndim != 1:
        raise ValueError(f"`mz` must be 1-D (one m/z per image); received shape {mzs.shape}.")
    if not np.isfinite(mzs).all():
        raise ValueError("`mz` contains NaN or infinite values.")
    chunked = is_dask(images)  # a dask array stays lazy
    arr = images if chunked else np.asarray(images)
    if arr.ndim not in (2, 3) or arr.shape[0] != mzs.size:
        raise ValueError(f"`images` must have shape ({mzs.size}, H, W) or ({mzs.size}, n_pixels) to match `mz`; received {arr.shape}.")
    arr = arr.reshape(arr.shape[0], -1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).ravel()
        if m.size != arr.shape[1]:
            raise ValueError(f"`mask` has {m.size} pixels; the images have {arr.shape[1]}.")
        arr = arr[:, m]
    if unit not in ("Da", "ppm"):
        raise invalid_option(unit, "unit", ["Da", "ppm"])
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"`delta` must be a positive tolerance; received {delta!r}.")
    if not -1.0 <= min_corr <= 1.0:
        raise ValueError(f"`min_corr` must lie in [-1, 1]; received {min_corr!r}.")
    if not chunked and not np.isfinite(arr).all():  # chunked: checked on the statistics, in their one pass
        raise ValueError("`images` contains NaN or infinite values.")

    cand_i, cand_j = _candidate_pairs(mzs, delta=delta, unit=unit, mass_shift=mass_shift)
    if cand_i.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if chunked:
        corr, constant = _chunked_correlations(arr, cand_i, cand_j)
    else:
        corr, constant = _correlations(arr, cand_i, cand_j, batch_size=batch_size)
    n_const = int(constant[np.unique(np.concatenate([cand_i, cand_j]))].sum())
    if n_const:
        logger.info("%d candidate isotope images are constant (correlation undefined) and form no pair.", n_const)
    good = corr >= min_corr
    pairs = np.stack([cand_i[good], cand_j[good]], axis=1).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _candidate_pairs(mzs: np.ndarray, *, delta: float, unit: str, mass_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Image indices ``(i, j)`` whose m/z differ by ``mass_shift`` within ``delta`` (m/z-sorted neighbours only)."""
    order = np.argsort(mzs, kind="stable")
    sorted_mz = mzs[order]
    tol = delta * 1e-6 * (sorted_mz + mass_shift) if unit == "ppm" else np.full_like(sorted_mz, delta)
    lo = np.searchsorted(sorted_mz, sorted_mz + mass_shift - tol, side="left")
    hi = np.searchsorted(sorted_mz, sorted_mz + mass_shift + tol, side="right")
    counts = hi - lo
    first = np.repeat(np.arange(mzs.size), counts)
    second = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if counts.sum() else np.zeros(0, np.int64)
    # exact check in the heavier peak's units (ppm tolerance depends on m_j)
    diff = sorted_mz[second] - sorted_mz[first]
    tol_j = delta * 1e-6 * sorted_mz[second] if unit == "ppm" else delta
    keep = (np.abs(diff - mass_shift) <= tol_j) & (second != first)
    return order[first[keep]], order[second[keep]]


def _constant(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return std <= 1e-12 * np.maximum(1.0, np.abs(mean))


def _correlations(arr: np.ndarray, cand_i: np.ndarray, cand_j: np.ndarray, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of every candidate pair (-inf where undefined) and the constant-image flags."""
    mean = arr.mean(axis=1, dtype=np.float64)
    std = arr.std(axis=1, dtype=np.float64)
    constant = _constant(mean, std)
    corr = np.full(cand_i.size, -np.inf)
    for start in range(0, cand_i.size, batch_size):
        a, b = cand_i[start : start + batch_size], cand_j[start : start + batch_size]
        ok = ~(constant[a] | constant[b])
        if not ok.any():
            continue
        a, b = a[ok], b[ok]
        za = (arr[a] - mean[a, None]) / std[a, None]
        zb = (arr[b] - mean[b, None]) / std[b, None]
        corr[start : start + batch_size][ok] = np.einsum("ij,ij->i", za, zb) / arr.shape[1]
    return corr, constant


def _chunked_correlations(arr: Any, cand_i: np.ndarray, cand_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_correlations` of a dask ``(n_images, n_pixels)`` array in two passes over its pixel chunks
    (the means, then the centred sums of squares and of the candidate products), in the array's own chunks."""
    import dask.array as da

    pixels = arr.T.astype(np.float64)
    mean = pixels.mean(axis=0).compute()
    if not np.isfinite(mean).all():
        raise ValueError("`images` contains NaN or infinite values.")
    centred = pixels - mean
    variance, products = da.compute((centred * centred).mean(axis=0), (centred[:, cand_i] * centred[:, cand_j]).mean(axis=0))
    std = np.sqrt(variance)
    constant = _constant(mean, std)
    ok = ~(constant[cand_i] | constant[cand_j])
    corr = np.full(cand_i.size, -np.inf)
    corr[ok] = products[ok] / (std[cand_i[ok]] * std[cand_j[ok]])
    return corr, constant


def _check_pairs(pairs: Any, n: int) -> np.ndarray:
    arr = np.asarray(pairs)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`pairs` must have shape (n_pairs, 2); received {arr.shape}.")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"`pairs` holds image indices outside [0, {n}).")
    if (arr[:, 0] == arr[:, 1]).any():
        raise ValueError("`pairs` pairs an image with itself.")
    return arr


def co_clustered(labels: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """For every pair, whether both images are in the same cluster; noise (-1) never is."""
    a, b = labels[..., pairs[:, 0]], labels[..., pairs[:, 1]]
    return (a == b) & (a != NOISE)


@dataclass(frozen=True)
class RIRResult:
    """Result of :func:`relative_isotope_ratio`.

    Attributes
    ----------
    value
        ``f_cluster / f_random``, or None when undefined.
    f_cluster
        Fraction of isotope pairs in the same (non-noise) cluster, or None without pairs.
    f_random
        The same fraction for random clusterings with the same cluster sizes (bootstrap mean).
    f_random_expected
        Its exact expectation ``sum_k n_k (n_k - 1) / (n (n - 1))`` over non-noise clusters.
    n_pairs
        Number of isotope pairs.
    n_boot
        Number of bootstrap clusterings.
    defined
        Whether ``value`` is defined.
    reason
        Why it is undefined (empty when defined).
    """

    value: float | None
    f_cluster: float | None
    f_random: float | None
    f_random_expected: float | None
    n_pairs: int
    n_boot: int
    defined: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return asdict(self)


def relative_isotope_ratio(labels: Any, pairs: Any, *, n_boot: int = 1000, random_state: int | None = 0) -> RIRResult:
    """Relative Isotope Ratio ``R = F_clust / F_random`` (Zhang et al. 2024, seed 000).

    ``F_clust`` is the fraction of isotope pairs (:func:`isotope_pairs`) whose two images are in
    the same cluster. Because this favours large clusters, it is divided by ``F_random``: the
    same fraction for random clusterings with the same cluster sizes, estimated by bootstrap
    (``n_boot`` random permutations of the labels). ``R`` is 1 on average for a random clustering
    and ``R >> 1`` for a clustering that groups isotopes.

    Noise: images labelled ``-1`` are never co-clustered, in the clustering and in its random
    counterparts (the noise cluster keeps its size under permutation).

    Parameters
    ----------
    labels
        Cluster of every image (``-1`` = noise).
    pairs
        ``(n_pairs, 2)`` image indices of isotope pairs.
    n_boot
        Number of random clusterings.
    random_state
        Seed of the permutations.

    Returns
    -------
    :class:`RIRResult`; ``defined=False`` with a ``reason`` (and ``value=None``, never 0 or NaN)
    when there are no isotope pairs or no cluster holds two images (random baseline 0).
    """
    lab = check_labels(labels)
    prs = _check_pairs(pairs, lab.size)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"`n_boot` must be a positive integer; received {n_boot!r}.")
    n_pairs = int(prs.shape[0])
    if n_pairs == 0:
        return RIRResult(None, None, None, None, 0, int(n_boot), False,
                         "no isotope pairs found (no m/z pair at the isotope mass shift with correlated images)")
    f_cluster = float(co_clustered(lab, prs).mean())
    n = lab.size
    _, sizes = np.unique(lab[lab != NOISE], return_counts=True)
    expected = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    if expected == 0.0:
        why = "all images are noise" if sizes.size == 0 else "every cluster holds a single image"
        return RIRResult(None, f_cluster, 0.0, 0.0, n_pairs, int(n_boot), False,
                         f"random baseline F_random is 0 ({why}), so the ratio is undefined")
    rng = np.random.default_rng(random_state)
    hits = 0
    chunk = max(1, min(int(n_boot), 2**22 // max(n, 1)))  # at most ~32 MB of permuted labels at once
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        perm = rng.permuted(np.broadcast_to(lab, (m, n)), axis=1)
        hits += int(co_clustered(perm, prs).sum())
        done += m
    f_random = hits / (n_boot * n_pairs)
    if f_random == 0.0:
        return RIRResult(None, f_cluster, 0.0, expected, n_pairs, int(n_boot), False,
                         f"no random clustering out of n_boot={n_boot} grouped an isotope pair; increase `n_boot`")
    return RIRResult(f_cluster / f_random, f_cluster, float(f_random), expected, n_pairs, int(n_boot), True, "")


def isotope_groups(pairs: Any, n: int) -> np.ndarray:
    """Isotope group of every image: connected components of the isotope-pair graph.

    Returns int64 ``(n,)``, ``-1`` for images without an isotope partner; a group is an isotopic
    envelope (M, M+1, M+2, ... chained by pairs).
    """
    prs = _check_pairs(pairs, n)
    graph = sparse.coo_matrix((np.ones(len(prs)), (prs[:, 0], prs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    in_group = np.bincount(comp)[comp] >= 2
    groups = np.full(n, -1, dtype=np.int64)
    groups[in_group] = np.unique(comp[in_group], return_inverse=True)[1]
    return groups


def isotopic_recall(labels: Any, pairs: Any) -> float:
    """Isotopic recall: fraction of isotopic ion images correctly grouped together (Hu et al. 2022, seed 001).

    Isotopic ions are grouped into isotopic envelopes (connected components of the isotope
    pairs, :func:`isotope_groups`). Within an envelope, the images in its most common cluster are
    correctly grouped when that cluster holds at least two of them; all other images of the
    envelope are "falsely classified isotopic ions" (the asterisks of seed 001, Fig. 5c)::

        recall = sum_g max(m_g, if m_g >= 2 else 0) / sum_g |g|

    with ``m_g`` the largest number of images of envelope ``g`` sharing one non-noise cluster.
    Noise images (``-1``) are never correctly grouped. The paper defines the metric in words
    ("percentage of ion images of isotopic peaks correctly grouped together"); this is our
    exact reading of it.

    Raises
    ------
    ValueError
        If there are no isotope pairs (the recall is undefined).
    """
    lab = check_labels(labels)
    groups = isotope_groups(pairs, lab.size)
    member = groups >= 0
    if not member.any():
        raise ValueError("isotopic recall is undefined: no isotope pairs found.")
    correct = 0
    for g in np.unique(groups[member]):
        in_g = lab[groups == g]
        in_g = in_g[in_g != NOISE]
        if in_g.size:
            largest = int(np.bincount(in_g).max())
            correct += largest if largest >= 2 else 0
    return correct / int(member.sum())
