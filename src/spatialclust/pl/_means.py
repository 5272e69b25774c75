"""Cluster mean images and how well each member matches its cluster's mean.

Zhang et al. (2024, seed 000, "Visualization of Clustering Results") compute the mean ion image of
a cluster "by first winsorizing each ion image ..., followed by stratified averaging over all m/z
images per cluster". Here every member image is winsorised at the upper ``winsorize`` percentile
and scaled to [0, 1] (the paper's regular-ion-image standardisation, so bright ions do not dominate
the mean), then the members of each cluster are averaged. Images are built a chunk of features at a
time, so memory stays bounded by the output even for thousands of ion images. A chunked (dask)
matrix is never imaged: the sums over the members are one dask matrix product streaming over its
pixel chunks (:func:`_chunked_sums`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from .. import pp
from .._logging import logger
from ._utils import cluster_labels

_CHUNK = 256  # feature images built at a time


def standardized_images(
    adata: AnnData,
    features: Sequence[int] | np.ndarray,
    *,
    layer: str | None = None,
    winsorize: float | None = 95.0,
) -> np.ndarray:
    """Feature images ``(n, H, W)`` winsorised at the upper ``winsorize`` percentile and scaled to [0, 1].

    Percentiles and ranges are taken over on-tissue pixels (:func:`spatialclust.pp.tissue_mask_image`);
    off-tissue grid cells are 0. ``winsorize=None`` skips winsorising (only scales).
    """
    return pp.feature_images(_standardized(adata, features, layer=layer, winsorize=winsorize), layer=layer)


def _standardized(adata: AnnData, features: Sequence[int] | np.ndarray, *, layer: str | None,
                  winsorize: float | None) -> AnnData:
    """A copy of the ``features`` of ``adata`` winsorised and scaled as in :func:`standardized_images`
    (lazily for a dask matrix, whose statistics only are computed)."""
    subset = adata[:, np.asarray(features, dtype=np.int64)]
    # The pp steps log at INFO that they changed the data; here they only change a private copy
    # made for display, so their messages would mislead (and repeat for every chunk).
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        if winsorize is not None:
            subset = pp.winsorize(subset, percentile=winsorize, layer=layer, copy=True)
            pp.scale_images(subset, layer=layer)
        else:
            subset = pp.scale_images(subset, layer=layer, copy=True)
    finally:
        logger.setLevel(level)
    return subset


def index_chunks(indices: np.ndarray, *, n_pixels: int) -> Iterator[np.ndarray]:
    """Split feature ``indices`` into chunks of at most ``_CHUNK`` images of ``n_pixels`` pixels, and at
    most ``pp``'s chunk budget of entries (images are built one chunk at a time)."""
    size = max(1, min(_CHUNK, pp.CHUNK_ENTRIES // max(n_pixels, 1)))
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def cluster_means(
    adata: AnnData,
    key: str = "cluster",
    *,
    layer: str | None = None,
    winsorize: float | None = 95.0,
    include_noise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean image of every cluster of ``var[key]`` (Zhang et al. 2024, seed 000).

    Parameters
    ----------
    adata
        Spatial dataset with a clustering of its feature images in ``var[key]``.
    key
        ``var`` column with integer cluster labels (-1 = noise).
    layer
        Build images from ``layers[layer]`` instead of ``X``.
    winsorize
        Upper percentile at which every member is winsorised before averaging (None: off).
    include_noise
        Also return the mean of the noise images (label -1), first.

    Returns
    -------
    clusters
        int64 ``(k,)`` cluster ids, ascending.
    means
        float32 ``(k, H, W)`` mean images, values in [0, 1].
    """
    labels = cluster_labels(adata, key)
    clusters = np.array(sorted(c for c in np.unique(labels) if include_noise or c >= 0), dtype=np.int64)
    height, width = pp.tissue_mask_image(adata).shape
    sums = np.zeros((len(clusters), height, width), dtype=np.float64)
    position = {int(c): i for i, c in enumerate(clusters)}
    selected = np.flatnonzero(np.isin(labels, clusters))
    if pp.is_dask(pp.intensity_matrix(adata, layer)):
        x, y = pp.pixel_coordinates(adata)
        pixels, onehot = _chunked_members(adata, selected, labels, clusters, layer=layer, winsorize=winsorize)
        sums[:, y, x] = (pixels @ onehot).compute().T
        selected = selected[:0]  # summed above
    for chunk in index_chunks(selected, n_pixels=height * width):
        images = standardized_images(adata, chunk, layer=layer, winsorize=winsorize)
        rows = np.array([position[int(c)] for c in labels[chunk]], dtype=np.int64)
        np.add.at(sums, rows, images)
    sizes = np.array([(labels == c).sum() for c in clusters], dtype=np.float64)
    return clusters, (sums / np.maximum(sizes, 1)[:, None, None]).astype(np.float32)


def mean_image_correlation(
    adata: AnnData,
    key: str = "cluster",
    *,
    layer: str | None = None,
    winsorize: float | None = 95.0,
    means: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Pearson correlation of every feature image with the mean image of its cluster.

    A high value means the member resembles the pattern its cluster reports (the consistency the
    paper judges visually). Correlations are computed over on-tissue pixels on the same winsorised,
    scaled images the means are built from; the member itself is part of its cluster mean.

    Parameters
    ----------
    adata, key, layer, winsorize
        As in :func:`cluster_means`.
    means
        The output of :func:`cluster_means` for the same arguments, to avoid computing it twice.

    Returns
    -------
    numpy.ndarray
        float64 ``(n_vars,)``; NaN for noise images (label -1) and for constant images.
    """
    labels = cluster_labels(adata, key)
    clusters, mean_images = means if means is not None else cluster_means(
        adata, key, layer=layer, winsorize=winsorize
    )
    mask = pp.tissue_mask_image(adata)
    centred = mean_images[:, mask].astype(np.float64)
    centred -= centred.mean(axis=1, keepdims=True)
    position = {int(c): i for i, c in enumerate(clusters)}
    out = np.full(adata.n_vars, np.nan)
    selected = np.flatnonzero(np.isin(labels, clusters))
    if pp.is_dask(pp.intensity_matrix(adata, layer)):
        out[selected] = _chunked_correlation(adata, selected, labels, clusters, centred, layer=layer, winsorize=winsorize)
        selected = selected[:0]
    for chunk in index_chunks(selected, n_pixels=mask.size):
        values = standardized_images(adata, chunk, layer=layer, winsorize=winsorize)[:, mask].astype(np.float64)
        values -= values.mean(axis=1, keepdims=True)
        reference = centred[[position[int(c)] for c in labels[chunk]]]
        denominator = np.linalg.norm(values, axis=1) * np.linalg.norm(reference, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[chunk] = np.where(denominator > 0, (values * reference).sum(axis=1) / denominator, np.nan)
    return out


def _chunked_members(
    adata: AnnData, selected: np.ndarray, labels: np.ndarray, clusters: np.ndarray, *, layer: str | None,
    winsorize: float | None,
) -> tuple[Any, np.ndarray]:
    """The standardised images of ``selected`` as a lazy float64 dask ``(n_obs, n_selected)`` matrix
    (statistics computed, values not) and their one-hot cluster membership ``(n_selected, n_clusters)``."""
    subset = _standardized(adata, selected, layer=layer, winsorize=winsorize)
    onehot = (labels[selected][:, None] == clusters[None, :]).astype(np.float64)
    return pp.intensity_matrix(subset, layer).astype(np.float64), onehot


def _chunked_correlation(
    adata: AnnData, selected: np.ndarray, labels: np.ndarray, clusters: np.ndarray, centred: np.ndarray, *,
    layer: str | None, winsorize: float | None,
) -> np.ndarray:
    """:func:`mean_image_correlation` of ``selected`` for a dask matrix: two passes over the on-tissue
    pixels (the image means, then the centred sums of squares and the products with the centred means)."""
    import dask.array as da

    pixels, onehot = _chunked_members(adata, selected, labels, clusters, layer=layer, winsorize=winsorize)
    subset = adata[:, selected]
    values = pp.tissue_pixels(subset, pixels)  # rows in the order of the mask's pixels, as `centred`
    means = values.mean(axis=0).compute()
    # Both sums of the second pass from every block at once: computing them as two dask reductions
    # sharing `values` kept many of its blocks alive between the two (measured: 2.4x the peak memory).
    reference = da.from_array(centred.T, chunks=(values.chunks[0], -1))
    sums = da.blockwise(_centred_sums, "ijk", values, "ij", means, "j", reference, "ik",
                        adjust_chunks={"i": 1, "k": lambda n: n + 1}, dtype=np.float64, concatenate=False)
    sums = sums.sum(axis=0).compute()
    squares, products = sums[:, 0], sums[:, 1:]
    own = products[np.arange(selected.size), onehot.argmax(axis=1)]  # with the centred mean of its cluster
    denominator = np.sqrt(squares) * np.linalg.norm(centred, axis=1)[onehot.argmax(axis=1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, own / denominator, np.nan)


def _centred_sums(block: np.ndarray, means: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per column of ``block`` (pixels x images): the sum of squares of its values centred by ``means``,
    then the products of its values with every column of ``reference`` (pixels x clusters):
    ``(1, n_images, 1 + n_clusters)``."""
    centred = block - means
    return np.concatenate([(centred**2).sum(axis=0)[:, None], block.T @ reference], axis=1)[None]
