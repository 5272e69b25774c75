"""Plots (scanpy's ``pl`` namespace): figures of a clustering of feature images.

Every function takes an AnnData (and the ``var`` key of a clustering), returns the matplotlib
Figure and, with ``save=path``, also writes it (atomically). Figures follow Zhang et al. (2024,
seed 000): cluster mean images, the mean spectrum coloured by cluster with a zoom window, the
(3-D UMAP) embedding coloured by cluster, and an RGB composite of three cluster mean images over
histology.
"""

from ._cells import cell_composite, cell_examples, cell_scatter
from ._embedding import embedding
from ..io import read_histology  # the reader lives in io; kept as sc.pl.read_histology
from ._images import cluster_mean_images, cluster_members, distinct_clusters, rgb_composite
from ._means import cluster_means, index_chunks, mean_image_correlation, standardized_images
from ._spectrum import mean_spectrum, spectrum
from ._ssl import ion_pair_similarity, knn_purity_curve, representations, self_labeling_history
from ._translate import importance_heatmap, metabolite_images, translation_maps
from ._utils import cluster_colors, feature_labels

__all__ = [
    "cell_composite",
    "cell_examples",
    "cell_scatter",
    "cluster_colors",
    "cluster_mean_images",
    "cluster_means",
    "cluster_members",
    "distinct_clusters",
    "embedding",
    "feature_labels",
    "importance_heatmap",
    "index_chunks",
    "ion_pair_similarity",
    "knn_purity_curve",
    "mean_image_correlation",
    "mean_spectrum",
    "metabolite_images",
    "read_histology",
    "representations",
    "rgb_composite",
    "self_labeling_history",
    "spectrum",
    "standardized_images",
    "translation_maps",
]
