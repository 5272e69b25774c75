"""Tools: embed feature images and cluster them (scanpy's ``tl`` namespace)."""

from .._validation import check_n_images
from ._cell_cluster import SCAN_CRITERIA, evaluate_cells, leiden_cells
from ._cell_embed import CELL_EMBEDDINGS, ChannelwiseEmbedder, embed_cells
from ._cell_features import BACKGROUNDS, FEATURE_SETS, border_background, cell_features, cell_pca, classical_features
from ._cluster import (
    cluster,
    clusterers,
    DegenerateDataWarning,
    create_clusterer,
    default_min_samples,
    estimate_dbscan_eps,
    estimate_n_clusters,
    list_clusterers,
    register_clusterer,
)
from ._darlc import DARLCEmbedder
from ._embed import (
    POSTPROCESSING,
    ImageEmbedder,
    create_embedder,
    embed,
    embedders,
    fit_postprocessing,
    list_embedders,
    map_image_batches,
    postprocess_vectors,
    register_embedder,
)
from ._metric_learning import MetricLearner, list_metric_learners, metric_learners, metric_learning, NoPseudoLabelsError, self_labelled_metric
from ._neural import NeuralEmbedder
from ._self_label import NoConfidentImagesWarning, SelfLabelingClassifier, self_label
from ._cluster import SMMClusterer, record_clusters
from ._simclr import SimCLREmbedder

__all__ = [
    "BACKGROUNDS",
    "CELL_EMBEDDINGS",
    "FEATURE_SETS",
    "POSTPROCESSING",
    "SCAN_CRITERIA",
    "ChannelwiseEmbedder",
    "MetricLearner",
    "NoPseudoLabelsError",
    "border_background",
    "cell_features",
    "cell_pca",
    "classical_features",
    "embed_cells",
    "evaluate_cells",
    "leiden_cells",
    "list_metric_learners",
    "metric_learners",
    "metric_learning",
    "record_clusters",
    "self_labelled_metric",
    "DARLCEmbedder",
    "SMMClusterer",
    "ImageEmbedder",
    "NeuralEmbedder",
    "NoConfidentImagesWarning",
    "SelfLabelingClassifier",
    "SimCLREmbedder",
    "check_n_images",
    "cluster",
    "clusterers",
    "create_clusterer",
    "create_embedder",
    "embed",
    "fit_postprocessing",
    "postprocess_vectors",
    "map_image_batches",
    "embedders",
    "DegenerateDataWarning",
    "default_min_samples",
    "estimate_dbscan_eps",
    "estimate_n_clusters",
    "list_clusterers",
    "list_embedders",
    "register_clusterer",
    "register_embedder",
    "self_label",
]
