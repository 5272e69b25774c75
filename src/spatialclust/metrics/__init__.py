"""Clustering metrics: isotope-based (RIR, isotopic recall), against ground truth, internal, and the
label-free abundance-thinned partner check."""

from ._evaluate import evaluate_clustering
from ._families import GENE_FAMILIES, MARKER_GENES, gene_families, gene_family_coherence
from ._external import ari, clustering_accuracy, contingency, nmi, purity
from ._internal import davies_bouldin, knn_purity, pearson_distance, silhouette
from ._isotopes import (
    C13_SHIFT,
    RIRResult,
    isotope_groups,
    isotope_pairs,
    isotopic_recall,
    relative_isotope_ratio,
)
from ._knn import knn_accuracy
from ._linear import linear_evaluation
from ._labels import n_clusters, n_meaningful_clusters, noise_size
from ._sam import cluster_quality_groups, spectral_angle_mapper
from ._thinning import ThinnedPartnerResult, partner_recall, thin_counts, thinned_partner_check

__all__ = [
    "C13_SHIFT",
    "GENE_FAMILIES",
    "MARKER_GENES",
    "RIRResult",
    "ThinnedPartnerResult",
    "ari",
    "cluster_quality_groups",
    "clustering_accuracy",
    "contingency",
    "davies_bouldin",
    "evaluate_clustering",
    "gene_families",
    "gene_family_coherence",
    "isotope_groups",
    "isotope_pairs",
    "isotopic_recall",
    "knn_accuracy",
    "knn_purity",
    "linear_evaluation",
    "n_clusters",
    "n_meaningful_clusters",
    "nmi",
    "partner_recall",
    "noise_size",
    "pearson_distance",
    "purity",
    "relative_isotope_ratio",
    "silhouette",
    "spectral_angle_mapper",
    "thin_counts",
    "thinned_partner_check",
]
