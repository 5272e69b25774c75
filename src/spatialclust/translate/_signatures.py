"""Spatial-cluster gene signatures and the per-spot signature mask (stage-1 input of the seed).

The seed's input for presence prediction is the spot's gene expression vector plus a *signature
mask*: 1 for the signature genes of the spot's spatial cluster, 0 otherwise. When the clusters and
their signatures are given (``obs`` column + mapping) they are used as is; otherwise they are computed
the scanpy way: Leiden clustering (Traag et al. 2019; the package's ``leiden`` clusterer on the kNN
graph of the standardised expression) and the top marker genes of each cluster by the one-vs-rest
Wilcoxon rank-sum test of ``scanpy.tl.rank_genes_groups(method="wilcoxon")`` (genes higher in the
cluster only). scanpy's own ``neighbors`` is not called: its numba compilation costs ~30 s per process. New spots (prediction on another ST dataset) get the cluster of the nearest cluster
centroid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._logging import logger

__all__ = ["SignatureMask"]


class SignatureMask(TransformerMixin, BaseEstimator):
    """Signature mask of every spot: 1 for the signature genes of its cluster, 0 elsewhere.

    Parameters
    ----------
    n_genes
        Marker genes per cluster when signatures are computed.
    resolution
        Leiden resolution when clusters are computed.
    n_neighbors
        Neighbours of the kNN graph for Leiden.
    random_state
        Seed of the Leiden clustering.

    Attributes
    ----------
    clusters_
        Cluster labels (str) of the training spots.
    signatures_
        ``{cluster: [gene index, ...]}``.
    centroids_
        ``(n_clusters, n_genes)`` mean expression per cluster (nearest-centroid assignment of new spots).
    cluster_names_
        Cluster labels in the row order of ``centroids_``.
    source_
        ``"given"`` or ``"leiden+wilcoxon"``: how clusters and signatures were obtained.
    """

    def __init__(self, n_genes: int = 3, resolution: float = 1.0, n_neighbors: int = 15, random_state: int = 0) -> None:
        self.n_genes = n_genes
        self.resolution = resolution
        self.n_neighbors = n_neighbors
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: None = None,
        *,
        clusters: Sequence | None = None,
        signatures: Mapping[str, Sequence[int]] | None = None,
    ) -> SignatureMask:
        """Learn clusters (or take ``clusters``) and their signatures (or take ``signatures``).

        Parameters
        ----------
        X
            ``(n_spots, n_genes)`` log-expression.
        clusters
            Given cluster label of every spot.
        signatures
            Given ``{cluster: [gene indices]}``; needs ``clusters``.
        """
        X = np.asarray(X, dtype=np.float64)
        if self.n_genes < 1:
            raise ValueError(f"`n_genes` must be >= 1, got {self.n_genes!r}.")
        if signatures is not None and clusters is None:
            raise ValueError("`signatures` needs `clusters`: the signature of a spot is that of its cluster.")
        if clusters is None:
            clusters = self._leiden(X)
            source = "leiden+wilcoxon"
        else:
            clusters = np.asarray(clusters).astype(str)
            if len(clusters) != len(X):
                raise ValueError(f"`clusters` must have one label per spot: expected {len(X)}, got {len(clusters)}.")
            source = "given"
        names = np.unique(clusters)
        if signatures is None:
            signatures = self._markers(X, clusters)
        else:
            missing = set(names) - {str(k) for k in signatures}
            if missing:
                raise ValueError(f"`signatures` has no entry for clusters {sorted(missing)}.")
            signatures = {str(k): [int(g) for g in v] for k, v in signatures.items()}
        self.clusters_ = clusters
        self.signatures_ = {str(k): list(v) for k, v in signatures.items()}
        self.cluster_names_ = names
        self.centroids_ = np.stack([X[clusters == c].mean(axis=0) for c in names])
        self.source_ = source
        self.n_features_in_ = X.shape[1]
        return self

    def _leiden(self, X: np.ndarray) -> np.ndarray:
        from ..tl import create_clusterer

        scaled = (X - X.mean(0)) / X.std(0).clip(1e-8)
        leiden = create_clusterer(
            "leiden", resolution=self.resolution, n_neighbors=min(self.n_neighbors, len(X) - 1), random_state=self.random_state
        ).fit(scaled)
        labels = leiden.labels_.astype(str)
        logger.info("signatures: Leiden (resolution %s) found %d clusters", self.resolution, len(np.unique(labels)))
        return labels

    def _markers(self, X: np.ndarray, clusters: np.ndarray) -> dict[str, list[int]]:
        """Top genes of each cluster by the one-vs-rest Wilcoxon rank-sum statistic (positive only),
        the test of ``scanpy.tl.rank_genes_groups(method="wilcoxon")``."""
        from scipy.stats import mannwhitneyu

        names = np.unique(clusters)
        if len(names) < 2:
            # one cluster: its signature is its most expressed genes
            return {names[0]: [int(g) for g in np.argsort(-X.mean(0))[: self.n_genes]]}
        out = {}
        for c in names:
            inside, outside = X[clusters == c], X[clusters != c]
            u = mannwhitneyu(inside, outside, axis=0, alternative="two-sided").statistic
            effect = u / (len(inside) * len(outside)) - 0.5  # > 0: higher in the cluster
            order = np.argsort(-effect, kind="stable")
            out[c] = [int(g) for g in order if effect[g] > 0][: self.n_genes]
        return out

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Cluster of each spot of ``X``: nearest centroid."""
        check_is_fitted(self, "centroids_")
        X = np.asarray(X, dtype=np.float64)
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        return self.cluster_names_[d.argmin(axis=1)]

    def transform(self, X: np.ndarray, *, clusters: Sequence | None = None) -> np.ndarray:
        """``(n_spots, n_genes)`` float32 mask; clusters from ``clusters`` or :meth:`assign`."""
        check_is_fitted(self, "centroids_")
        X = np.asarray(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` must have {self.n_features_in_} genes, got {X.shape[1]}.")
        labels = self.assign(X) if clusters is None else np.asarray(clusters).astype(str)
        lookup = np.zeros((len(self.cluster_names_), self.n_features_in_), dtype=np.float32)
        for i, c in enumerate(self.cluster_names_):
            lookup[i, self.signatures_.get(c, [])] = 1.0
        index = {c: i for i, c in enumerate(self.cluster_names_)}
        unknown = set(labels) - set(index)
        if unknown:
            raise ValueError(f"`clusters` has labels {sorted(unknown)} that were not seen in fit.")
        return lookup[[index[c] for c in labels]]

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit, then return the mask of the training spots (using their fitted clusters)."""
        return self.fit(X, **fit_params).transform(X, clusters=self.clusters_)
