"""Abundance-thinned partners: a label-free check of an ion-image representation.

An isotope partner (13C M+1 at 10-50 % of its parent) or a weak ion of the same compartment has the
same spatial distribution as its parent but fewer counts: more Poisson noise, other hot pixels after
winsorising, a different contrast. A representation worth trusting puts such a pair together.
Isotope pairs with a clean image are few in real data (one in the mouse bladder subset), so the
check draws the partners itself, for every ion image with raw counts:

1. **thinning**: each count is kept with probability ``f_i ~ U(fraction)`` (binomial thinning of
   integer counts, the exact law of detecting a fraction of the ions), optionally followed by a
   contrast change ``x -> max (x / max)^g``. Non-integer intensities (TIC-normalised or
   peak-height data, e.g. the mouse urinary bladder file) are first read as **pseudo-counts**: each
   image is divided by its smallest positive value ``q_i`` (the weakest detected signal, taken as
   ``min_counts`` ions), rounded, thinned binomially and multiplied back by ``q_i / min_counts``.
   The smallest positive *step* between values cannot serve as the count unit: after TIC
   normalisation the values are continuous (the bladder's smallest steps are float32 rounding,
   1.5e-5 against values of 30-6000), which would make every pixel millions of counts and the
   thinning noise-free. Pseudo-counts make the check independent of the intensity unit (scaling
   an image scales its partner) and put the weakest pixels at the edge of detection, where a
   real isotope partner loses them;
2. originals and partners go through the same shared preprocessing and the same embedder
   (fitted on the originals only, so the partners are unseen images);
3. **partner recall@k**: the fraction of originals whose partner is among their ``k`` nearest
   neighbours (cosine) among all other ``2n - 1`` vectors (chance: ``k / (2n - 1)``);
4. **co-clustered**: the fraction of pairs that the clusterer puts in one cluster when it clusters
   all ``2n`` vectors into ``n_clusters`` (chance: the pair probability of the cluster sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData

from .._logging import logger
from .._validation import Interval, check_range, validate_params

__all__ = ["ThinnedPartnerResult", "partner_recall", "thin_counts", "thinned_partner_check"]


def thin_counts(
    counts: np.ndarray,
    *,
    fraction: tuple[float, float] = (0.1, 0.5),
    gamma: tuple[float, float] | None = None,
    min_counts: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Abundance-thinned partners of count images.

    Parameters
    ----------
    counts
        Non-negative ``(n_images, ...)`` intensities (any trailing shape, e.g. ``(H, W)``).
    fraction
        ``(low, high)`` range of the kept fraction ``f_i``, drawn uniformly per image.
    gamma
        ``(low, high)`` range of a contrast exponent ``g_i`` applied after thinning
        (``x -> max (x / max)^g``); None: no contrast change.
    min_counts
        Counts that the smallest positive value of a non-integer image stands for (pseudo-counts,
        see the module docstring); integer images are thinned as they are.
    seed
        Seed of the draws.

    Returns
    -------
    ``(partners, fractions)``: float32 array shaped like ``counts`` and the ``(n_images,)`` fractions.
    Integer-valued images are thinned binomially (``Binomial(x, f)``); other images as pseudo-counts,
    ``q / m * Binomial(round(m x / q), f)`` with ``q`` the image's smallest positive value and
    ``m = min_counts``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim < 2 or counts.shape[0] < 1:
        raise ValueError(f"`counts` must have shape (n_images, ...) with n_images >= 1; received shape {counts.shape}.")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("`counts` must be finite and non-negative (raw ion counts or intensities).")
    lo, hi = check_range(fraction, "fraction", low=0.0, high=1.0, closed_low=False)
    if isinstance(min_counts, bool) or not isinstance(min_counts, (int, float)) or not min_counts > 0:
        raise ValueError(f"`min_counts` must be a positive number of counts; received {min_counts!r}.")
    rng = np.random.default_rng(seed)
    fractions = rng.uniform(lo, hi, size=counts.shape[0])
    partners = np.empty(counts.shape, dtype=np.float32)
    for i, (image, f) in enumerate(zip(counts, fractions)):
        unit = 1.0 if np.array_equal(image, np.round(image)) else image[image > 0].min() / min_counts
        partners[i] = unit * rng.binomial(np.round(image / unit).astype(np.int64), f)
    if gamma is not None:
        g_lo, g_hi = check_range(gamma, "gamma", low=0.0, closed_low=False)
        for i, g in enumerate(rng.uniform(g_lo, g_hi, size=counts.shape[0])):
            top = partners[i].max()
            if top > 0:
                partners[i] = top * (partners[i] / top) ** g
    return partners, fractions


def partner_recall(
    features: np.ndarray, partner_features: np.ndarray, *, ks: Sequence[int] = (1, 10)
) -> tuple[dict[int, float], np.ndarray]:
    """Partner recall@k of paired representations under the cosine similarity.

    Parameters
    ----------
    features, partner_features
        ``(n, d)``: row ``i`` of both is a pair.
    ks
        Neighbourhood sizes.

    Returns
    -------
    ``(recall, ranks)``: ``{k: fraction of rows i whose partner is among the k nearest of the other
    2n - 1 vectors}`` and the rank (1 = nearest) of each partner. Ties count against the partner.
    """
    a = np.asarray(features, dtype=np.float64)
    b = np.asarray(partner_features, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(
            f"`features` and `partner_features` must both have shape (n >= 2, d); received {a.shape} and {b.shape}."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("`features` and `partner_features` must be finite.")
    n = a.shape[0]
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"`ks` must be positive integers; received {ks}.")
    both = np.concatenate([a, b])
    both /= np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
    similarity = both[:n] @ both.T  # (n, 2n): originals against everything
    similarity[np.arange(n), np.arange(n)] = -np.inf  # not oneself
    partner = similarity[np.arange(n), n + np.arange(n)]
    ranks = (similarity >= partner[:, None]).sum(axis=1)  # the partner itself and every tie rank ahead
    return {k: float(np.mean(ranks <= k)) for k in ks}, ranks


@dataclass
class ThinnedPartnerResult:
    """Result of :func:`thinned_partner_check`.

    Attributes
    ----------
    recall
        ``{k: partner recall@k}``.
    chance_recall
        ``{k: k / (2n - 1)}``, the recall of a random representation.
    co_clustered
        Fraction of (image, partner) pairs in one cluster.
    chance_co_clustered
        Probability that two random distinct vectors share a cluster, from the cluster sizes.
    n_clusters
        Clusters found.
    n_images
        Images checked (pairs).
    fractions
        Kept fraction of each image's counts.
    ranks
        Rank of each partner among the neighbours of its image (1 = nearest).
    """

    recall: dict[int, float]
    chance_recall: dict[int, float]
    co_clustered: float
    chance_co_clustered: float
    n_clusters: int
    n_images: int
    fractions: np.ndarray = field(repr=False)
    ranks: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain summary (JSON-serialisable; no per-image arrays)."""
        out: dict[str, Any] = {f"partner_recall@{k}": v for k, v in self.recall.items()}
        out.update({f"chance_recall@{k}": v for k, v in self.chance_recall.items()})
        out.update(
            partner_co_clustered=self.co_clustered, chance_co_clustered=self.chance_co_clustered,
            n_clusters=self.n_clusters, n_images=self.n_images,
        )  # fmt: skip
        return out


def _images_of(data: AnnData | np.ndarray, layer: str | None, mask: Any, pixel_size: float | None,
               n_images: int | None, seed: int):
    """``(counts, mask, pixel_size)`` from an AnnData (``layer``) or an image stack; with ``n_images``
    the images of a seeded random sample of at most that many (only those are loaded from an AnnData,
    e.g. from the chunks of a dask matrix)."""
    from ..pp import feature_images, tissue_mask_image

    validate_params({"n_images": n_images}, {"n_images": [Interval(int, 2), None]})

    def sample(total: int) -> np.ndarray | None:
        if n_images is None or n_images >= total:
            return None
        return np.sort(np.random.default_rng([seed, total]).choice(total, int(n_images), replace=False))

    if isinstance(data, AnnData):
        if layer is not None and layer not in data.layers:
            raise ValueError(
                f"`layer`={layer!r} is not in `adata.layers` (found: {sorted(data.layers)}); the check needs the raw "
                "counts (`sc.pp.preprocess_ion_images` keeps them in layers['raw']), or pass layer=None to use X."
            )
        counts = feature_images(data, layer=layer, features=sample(data.n_vars))
        mask = tissue_mask_image(data) if mask is None else mask
        pixel_size = data.uns.get("grid", {}).get("pixel_size") if pixel_size is None else pixel_size
        return counts, mask, pixel_size
    counts = np.asarray(data)
    if counts.ndim != 3:
        raise ValueError(f"`data` must be an AnnData or an (n_images, H, W) stack; received shape {counts.shape}.")
    chosen = sample(counts.shape[0])
    return (counts if chosen is None else counts[chosen]), mask, pixel_size


def _preprocessed(stack: np.ndarray, mask: np.ndarray | None, preprocess: dict[str, Any]) -> np.ndarray:
    """The shared preprocessing (:func:`spatialclust.pp.preprocess_ion_images`) of an image stack."""
    from ..io import images_to_adata
    from ..pp import feature_images, preprocess_ion_images

    obs_images = None if mask is None else {"tissue": np.asarray(mask, dtype=bool)}
    adata = images_to_adata(stack, obs_images=obs_images)
    if mask is not None:
        adata.obs["tissue"] = adata.obs["tissue"].astype(bool)
    preprocess_ion_images(adata, **{"remove_empty": False, "keep_raw": False, **preprocess})
    return feature_images(adata)


def thinned_partner_check(
    data: AnnData | np.ndarray,
    *,
    embedder: Any = "regular",
    clusterer: Any = "kmeans",
    n_clusters: int = 10,
    layer: str | None = "raw",
    mask: np.ndarray | None = None,
    pixel_size: float | None = None,
    fraction: tuple[float, float] = (0.1, 0.5),
    gamma: tuple[float, float] | None = None,
    min_counts: float = 1.0,
    preprocess: dict[str, Any] | None = None,
    ks: Sequence[int] = (1, 10),
    refit: bool = True,
    n_images: int | None = None,
    seed: int = 0,
) -> ThinnedPartnerResult:
    """Does a representation put an ion image and its abundance-thinned partner together?

    The label-free check of issue 12, usable on any dataset with raw counts: see the module
    docstring for the procedure. Originals and partners are stacked into one dataset (so every pixel
    gets one TIC factor for both), preprocessed together with the shared preprocessing of Zhang et
    al. (seed 000), embedded by ``embedder`` fitted on the originals, and clustered together. The
    originals are therefore re-preprocessed from the raw counts: with TIC normalisation their
    images differ slightly from those of a run on the originals alone (the partners add ~10-50 % to
    every pixel's TIC, almost uniformly).

    Parameters
    ----------
    data
        AnnData of ion images (obs = pixels; counts in ``layers[layer]``) or an
        ``(n_images, H, W)`` stack of raw counts.
    embedder
        A registered embedder name (``"regular"``, ``"neural"``, ...; see
        :func:`spatialclust.tl.list_embedders`), an embedder object with ``fit_transform`` and ``transform``
        (``images, mask=, pixel_size=``), or a callable ``images -> (n, d)`` features.
    clusterer
        A registered clusterer name (built with ``n_clusters`` and ``random_state=seed`` where it
        takes them), an
        object with ``fit_predict``, or None to skip the co-clustering part.
    n_clusters
        Clusters of the named clusterer.
    layer
        Layer of ``data`` holding the raw counts (None: ``X``). Ignored for a stack.
    mask
        bool ``(H, W)`` tissue mask (AnnData default: its ``obs["tissue"]``).
    pixel_size
        Pixel size in µm (AnnData default: ``uns["grid"]["pixel_size"]``), passed to the embedder.
    fraction, gamma, min_counts
        Thinning range, optional contrast change and the pseudo-count unit of non-integer
        intensities (see :func:`thin_counts`).
    preprocess
        Keyword arguments of :func:`spatialclust.pp.preprocess_ion_images` (default: its defaults:
        TIC, winsorise at 95, scale).
    ks
        Neighbourhood sizes of the partner recall.
    refit
        Fit an embedder object on the originals of the check (default). False: use it as already
        fitted (e.g. the embedder of a pipeline run, fitted on this dataset), which saves the
        training of a learned embedder.
    n_images
        Check a random sample of at most this many images (seeded; None: all). Only the sampled
        images are loaded, so the check stays small on a whole slide held as a chunked (dask)
        matrix; the partners are drawn, preprocessed and embedded among the sample only.
    seed
        Seed of the thinning, of the sample and of a named clusterer.

    Returns
    -------
    :class:`ThinnedPartnerResult`.

    Examples
    --------
    >>> import spatialclust as sc
    >>> adata = sc.datasets.simulate_msi(seed=0)
    >>> result = sc.metrics.thinned_partner_check(adata, layer=None, embedder="regular", n_clusters=7)
    >>> result.recall[10] > result.chance_recall[10]
    True
    """
    from .._registry import registry

    counts, mask, pixel_size = _images_of(data, layer, mask, pixel_size, n_images, seed)
    n = counts.shape[0]
    if n < 2:
        raise ValueError(f"The check needs at least 2 ion images; received {n}.")
    partners, fractions = thin_counts(counts, fraction=fraction, gamma=gamma, min_counts=min_counts, seed=seed)
    stack = _preprocessed(np.concatenate([counts, partners]).astype(np.float32), mask, preprocess or {})
    originals, thinned = stack[:n], stack[n:]

    if isinstance(embedder, str):
        embedder = registry("embedder").create(embedder)
    if hasattr(embedder, "fit_transform") and hasattr(embedder, "transform"):
        if refit:
            a = embedder.fit_transform(originals, mask=mask, pixel_size=pixel_size)
        else:
            a = embedder.transform(originals, mask=mask, pixel_size=pixel_size)
        b = embedder.transform(thinned, mask=mask, pixel_size=pixel_size)
    elif callable(embedder):
        a, b = embedder(originals), embedder(thinned)
    else:
        raise TypeError(
            "`embedder` must be a registered embedder name, an object with fit/transform or a callable; "
            f"received {type(embedder).__name__}."
        )
    a, b = np.asarray(a, dtype=np.float64).reshape(n, -1), np.asarray(b, dtype=np.float64).reshape(n, -1)
    recall, ranks = partner_recall(a, b, ks=ks)
    chance = {k: min(1.0, k / (2 * n - 1)) for k in recall}

    co, chance_co, found = float("nan"), float("nan"), 0
    if clusterer is not None:
        if isinstance(clusterer, str):
            clusterer = registry("clusterer").create(clusterer)
            accepted = clusterer.get_params()
            clusterer.set_params(**{k: v for k, v in {"n_clusters": n_clusters, "random_state": seed}.items() if k in accepted})
        if not hasattr(clusterer, "fit_predict"):
            raise TypeError(f"`clusterer` must be a registered clusterer name or have fit_predict; received {type(clusterer).__name__}.")
        labels = np.asarray(clusterer.fit_predict(np.concatenate([a, b])))
        co = float(np.mean(labels[:n] == labels[n:]))
        _, sizes = np.unique(labels, return_counts=True)
        chance_co = float((sizes * (sizes - 1)).sum() / (2 * n * (2 * n - 1)))
        found = int(sizes.size)
    result = ThinnedPartnerResult(recall, chance, co, chance_co, found, n, fractions, ranks)
    clustered = "" if clusterer is None else f", co-clustered {co:.2f} (chance {chance_co:.2f})"
    logger.info(
        "Thinned partners (%d images, kept %.0f-%.0f%% of the counts): recall %s%s.",
        n, 100 * min(fractions), 100 * max(fractions),
        ", ".join(f"@{k} {v:.2f} (chance {chance[k]:.2f})" for k, v in recall.items()), clustered,
    )  # fmt: skip
    return result
