"""Tools: embed feature images and cluster them (scanpy's ``tl`` namespace)."""

from ._cluster import (
    cluster,
    clusterers,
    create_clusterer,
    estimate_dbscan_eps,
    estimate_n_clusters,
    list_clusterers,
    register_clusterer,
)
from ._darlc import DARLCEmbedder, SMMClusterer
from ._embed import ImageEmbedder, create_embedder, embed, embedders, list_embedders, register_embedder
from ._neural import NeuralEmbedder
from ._self_label import NoConfidentImagesWarning, SelfLabelingClassifier, self_label
from ._simclr import SimCLREmbedder

__all__ = [
    "DARLCEmbedder",
    "SMMClusterer",
    "ImageEmbedder",
    "NeuralEmbedder",
    "NoConfidentImagesWarning",
    "SelfLabelingClassifier",
    "SimCLREmbedder",
    "cluster",
    "clusterers",
    "create_clusterer",
    "create_embedder",
    "embed",
    "embedders",
    "estimate_dbscan_eps",
    "estimate_n_clusters",
    "list_clusterers",
    "list_embedders",
    "register_clusterer",
    "register_embedder",
    "self_label",
]
