"""Image embeddings of multichannel cell images: channel-wise pretrained backbones and DINO.

Palli (2023, sec. 3.5) fed cell images to networks pretrained on RGB images (ResNet50, DINO
ViT-S/16, TransPath) "in a channel-wise manner, with similar calculations applied to each
channel": every channel of a cell, zero-padded to a square and rescaled to [0, 1], is a grayscale
image replicated to the 3 input planes; the per-channel vectors are concatenated (``combine=
"concat"``, ``C * d`` features) or averaged (``"mean"``, ``d`` features). The alternative is a
ViT trained on the cells themselves with DINO (scDINO, :class:`spatialclust.models.DINOTrainer`),
which sees all channels at once (``channels="joint"``, the seed's setting: one ViT on the
C-channel images) or one channel at a time (``channels="separate"``, scDINO's channel-wise mode: one
single-channel ViT per channel, CLS tokens concatenated). ``method="pixels"`` is the raw-pixel baseline: the padded images
as recorded, flattened (``C * H * W`` features; the pipeline reduces every embedding by PCA).

>>> sc.tl.embed_cells(adata, method="pretrained", backbone="efficientnet_lite0")  # obsm["X_efficientnet_lite0"]  # doctest: +SKIP
>>> sc.tl.embed_cells(adata, method="dino", epochs=20)  # obsm["X_dino"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import anndata as ad
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .. import _keys
from .._compat import resolve_device
from .._logging import logger, progress
from .._registry import invalid_option
from ..io import cell_image_stack

__all__ = ["COMBINE", "DINO_CHANNELS", "ChannelwiseEmbedder", "embed_cells"]

#: How per-channel vectors are combined.
COMBINE = ("concat", "mean")
#: Embedding methods of :func:`embed_cells`.
CELL_EMBEDDINGS = ("pretrained", "dino", "pixels")
#: How DINO sees the channels: one ViT on all of them, or one ViT per channel.
DINO_CHANNELS = ("joint", "separate")


class ChannelwiseEmbedder(TransformerMixin, BaseEstimator):
    """Embed each channel of each cell with a pretrained backbone and combine the channel vectors.

    Parameters
    ----------
    backbone
        Registered backbone name (:func:`spatialclust.models.list_backbones`), e.g.
        ``"efficientnet_lite0"`` (packaged ImageNet weights, works offline), ``"resnet50"`` or
        ``"dino_vits16"`` (hub download), ``"test_tiny"`` (tests).
    combine
        ``"concat"`` (``C * d`` features, channel-major) or ``"mean"`` (``d`` features).
    image_size
        Input side; default the backbone's ``input_size`` (224 for ImageNet networks).
    scaling
        ``"cell"`` (min-max per cell and channel) or ``"dataset"`` (per-channel 99.9th percentile of
        the images embedded together); see :func:`spatialclust.models.scale_cell_images`.
    weights
        Local weight file for the backbone (instead of its published weights).
    batch_size
        Grayscale images per forward pass.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    num_threads
        Torch CPU threads during inference (None: unchanged).

    Attributes
    ----------
    backbone_
        The loaded :class:`spatialclust.models.Backbone` (eval mode).
    n_features_out_
        Output dimension.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        combine: str = "concat",
        image_size: int | None = None,
        scaling: str = "cell",
        weights: str | os.PathLike | None = None,
        batch_size: int = 64,
        device: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.combine = combine
        self.image_size = image_size
        self.scaling = scaling
        self.weights = weights
        self.batch_size = batch_size
        self.device = device
        self.num_threads = num_threads

    def fit(self, images: np.ndarray | None = None, y: Any = None) -> ChannelwiseEmbedder:
        """Load the backbone (nothing is trained)."""
        from ..models import CELL_SCALINGS, create_backbone

        if self.combine not in COMBINE:
            raise invalid_option(self.combine, "combine", list(COMBINE))
        if self.scaling not in CELL_SCALINGS:
            raise invalid_option(self.scaling, "scaling", list(CELL_SCALINGS))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size!r}.")
        self.device_ = resolve_device(self.device)
        self.backbone_ = create_backbone(self.backbone, pretrained=True, weights=self.weights).eval().to(self.device_)
        return self

    def transform(self, images: np.ndarray, *, sizes: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``(n, C * d)`` or ``(n, d)`` of cell images ``(n, C, H, W)``."""
        import torch

        from ..models import channel_reference, scale_cell_images, torch_threads

        if not hasattr(self, "backbone_"):
            self.fit()
        reference = channel_reference(images, sizes) if self.scaling == "dataset" else None
        data = scale_cell_images(images, sizes, reference=reference)
        n, n_channels, side = data.shape[0], data.shape[1], data.shape[2]
        grays = data.reshape(n * n_channels, side, side)  # cell-major, channel-minor
        size = self.image_size or self.backbone_.config.input_size
        chunks = []
        with torch_threads(self.num_threads), torch.inference_mode():
            starts = range(0, grays.shape[0], int(self.batch_size))
            for first in progress(starts, desc=f"cell embeddings ({self.backbone})", total=len(starts)):
                x = self.backbone_.preprocess(grays[first : first + int(self.batch_size)], size=size).to(self.device_)
                chunks.append(self.backbone_(x).float().cpu().numpy())
        vectors = np.concatenate(chunks).reshape(n, n_channels, -1)
        out = vectors.reshape(n, -1) if self.combine == "concat" else vectors.mean(axis=1)
        if not np.isfinite(out).all():
            raise RuntimeError(f"Backbone `{self.backbone}` produced non-finite features; check its weights.")
        self.n_features_out_ = out.shape[1]
        return out.astype(np.float32)


def _dino_embeddings(images: np.ndarray, sizes: np.ndarray, *, channels: str = "joint",
                     checkpoint: str | os.PathLike | None = None, **params: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """DINO embeddings of ``images`` with all channels in one ViT or one ViT per channel (see :func:`embed_cells`)."""
    from pathlib import Path

    from ..models import DINOTrainer

    if channels not in DINO_CHANNELS:
        raise invalid_option(channels, "channels", list(DINO_CHANNELS))
    if channels == "joint":
        trainer = DINOTrainer(**params, checkpoint=checkpoint).fit(images, sizes=sizes)
        return trainer.transform(images, sizes=sizes), {"history": trainer.history_,
                                                        "checkpoint": None if checkpoint is None else str(checkpoint)}
    vectors, history = [], {}
    for c in range(images.shape[1]):
        name = f"channel_{c}"
        path = None if checkpoint is None else Path(checkpoint) / name
        logger.info("DINO on channel %d of %d", c + 1, images.shape[1])
        trainer = DINOTrainer(**params, checkpoint=path).fit(images[:, [c]], sizes=sizes)
        vectors.append(trainer.transform(images[:, [c]], sizes=sizes))
        history[name] = trainer.history_
    return np.concatenate(vectors, axis=1), {"history": history, "checkpoint": None if checkpoint is None else str(checkpoint)}


def embed_cells(
    adata: ad.AnnData,
    method: str = "pretrained",
    *,
    key_added: str | None = None,
    **params: Any,
) -> None:
    """Embed the cell images of ``adata`` with a channel-wise pretrained backbone or a DINO-trained ViT.

    Parameters
    ----------
    adata
        Cell-image AnnData (``obsm["images"]``).
    method
        ``"pretrained"``: :class:`ChannelwiseEmbedder` (``params``: ``backbone``, ``combine``, ...);
        ``"dino"``: :class:`spatialclust.models.DINOTrainer` trained on all cells (or loaded
        from ``params["checkpoint"]``), embedding = teacher CLS token; ``params["channels"]``
        = ``"joint"`` (default: one ViT on all channels) or ``"separate"`` (one ViT per channel,
        their CLS tokens concatenated, ``C * embed_dim`` features; checkpoints in
        ``<checkpoint>/channel_<c>``); ``"pixels"``: the raw
        images flattened (the raw-pixel baseline, no parameters).
    key_added
        obsm key (default ``"X_<backbone>"`` for ``pretrained``, ``"X_dino"`` for ``dino``,
        ``"X_pixels"`` for ``pixels``).
    **params
        Parameters of the embedder.

    Returns
    -------
    None; writes ``obsm[key_added]`` (float32, one row per cell) and ``uns[key_added]`` =
    ``{"method", "params"}`` (+ ``"history"`` and ``"checkpoint"`` for DINO).
    """
    images = cell_image_stack(adata)
    sizes = adata.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    if method == "pretrained":
        embedder = ChannelwiseEmbedder(**params).fit()
        vectors = embedder.transform(images, sizes=sizes)
        key = key_added or _keys.embedding_key(embedder.backbone)
        extra: dict[str, Any] = {}
    elif method == "dino":
        vectors, extra = _dino_embeddings(images, sizes, **params)
        key = key_added or _keys.embedding_key(method)
    elif method == "pixels":
        if params:
            raise TypeError(f"`pixels` takes no parameters, got {sorted(params)}.")
        vectors = images.reshape(images.shape[0], -1).astype(np.float32)
        key = key_added or _keys.embedding_key(method)
        extra = {}
    else:
        raise invalid_option(method, "method", list(CELL_EMBEDDINGS))
    adata.obsm[key] = vectors
    adata.uns[key] = {"method": method, _keys.PARAMS: {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in params.items()}, **extra}
    logger.info("embedded %d cells with %s -> obsm[%r] (%d features)", vectors.shape[0], method, key, vectors.shape[1])
