"""Neural ion images: pretrained-network embeddings of feature images (Zhang et al., seed 000).

"Generation of neural ion images" (seed 000): every preprocessed ion image is

1. split into overlapping square patches of a chosen physical size (40-50 % overlap; the image is
   up-sampled when a patch would be smaller than the network's minimum input),
2. each patch is fed through an ImageNet-pretrained network (Xception in the paper) as a
   grayscale image replicated to 3 channels, giving one pooled feature vector per patch,
3. the patch vectors are aggregated by max-pooling (the paper's choice: a feature counts if it was
   detected in *any* patch, which keeps the representation sensitive to localised structure).

The result, one vector per ion image (2048-d for Xception, 1280-d for the default
EfficientNet-Lite0), replaces the regular (flattened) ion image in any downstream pipeline.

Measured additions (issue 12; docs/benchmarks.md, "Neural ion images"): the images can be
conditioned before the network (:func:`spatialclust.pp.condition_images`: denoising, hot-spot
clipping, contrast normalisation), the patch vectors concatenated in grid order instead of pooled
(``pooling="concat"``, which keeps *where* a feature was seen), and the vectors post-processed
(L2 normalisation, PCA whitening).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from .. import __version__
from .._cache import Fingerprint, load_cached_array, save_cached_array
from .._compat import resolve_device
from .._logging import logger, progress
from .._validation import Interval
from ..pp import CONDITIONING_CONSTRAINTS, MAX_UPSAMPLE, FeatureImageBatches, PatchGrid, condition_images, extract_patches, patch_grid
from ._embed import (
    PCA_POSTPROCESSING,
    POSTPROCESSING,
    ImageEmbedder,
    check_images,
    conditioning_params,
    fit_postprocessing,
    map_image_batches,
    postprocess_vectors,
    register_embedder,
)

__all__ = ["DEFAULT_PATCH_UM", "NeuralEmbedder", "POOLINGS"]

#: Default physical patch side in µm (seed 000: 1-2 mm worked well; 1 mm measured best here).
DEFAULT_PATCH_UM = 1000.0
#: Largest concatenated (``pooling="concat"``) embedding of one dataset, in bytes.
MAX_CONCAT_BYTES = 4 * 2**30

POOLINGS = ("max", "mean", "concat")


@register_embedder("neural")
class NeuralEmbedder(ImageEmbedder):
    """Neural ion images: embeddings of overlapping image patches by a pretrained network.

    Implements "Generation of neural ion images" of Zhang et al. (seed 000). All images share one
    patch grid (they share the tissue mask; patches without tissue are skipped); patches of many
    images are batched together and run under ``torch.inference_mode()`` (channels-last on the CPU).

    The defaults are the measured best on the realistic simulator and the mouse bladder data
    (docs/benchmarks.md, "Neural ion images"): 1 mm patches over the whole grid, images conditioned
    (Gaussian denoising of 5 px, clipping at the 99th percentile, min-max contrast), patch vectors
    concatenated, then L2, PCA to 50 components, L2 (``postprocess="pca_l2"``). The paper's
    configuration is ``patch_size_um=None, pooling="max", denoise=None, clip_percentile=None,
    contrast=None, postprocess=None`` (with the patch size it chose).

    Parameters
    ----------
    backbone
        Registered backbone name (see :func:`spatialclust.models.list_backbones`; default
        ``"efficientnet_lite0"``, the paper used ``"xception"``) or a
        :class:`~spatialclust.models.Backbone` instance (e.g. fine-tuned), used as given.
    patch_size
        Patch side in pixels of the original image; takes precedence over ``patch_size_um``.
    patch_size_um
        Patch side in µm (default 1000; the paper found 1-2 mm to work well), from the pixel size
        of the grid (``uns["grid"]["pixel_size"]``, which the imzML reader takes from the file).
        Without a pixel size, or when the patch would be larger than the image, the patch is the
        shorter image side (logged). None with no ``patch_size``: the shorter image side.
    overlap
        Overlap between neighbouring patches, fraction in [0, 1) (paper: 0.4-0.5; default 0.5).
    pooling
        Aggregation of the patch embeddings: ``"max"`` (paper), ``"mean"``, or ``"concat"`` (the
        patch vectors concatenated in grid order: ``n_patches x`` the backbone's features, keeping
        where in the image each feature was seen; all images share the grid).
    denoise, denoise_size, clip_percentile, contrast
        Conditioning of every image before it is cut into patches
        (:func:`spatialclust.pp.condition_images`): ``denoise`` ``"gaussian"`` / ``"median"`` / None
        with ``denoise_size`` px, hot-spot clipping at ``clip_percentile`` (None: none) and contrast
        normalisation ``"minmax"`` / ``"rank"`` / None over the tissue. All None: the images are fed
        as given (the paper). Default: Gaussian of 5 px, measured against 3 px (the regular images'
        conditioning) on the realistic simulator (5 seeds; Leiden ACC 0.721 vs 0.702, partner
        recall@1 0.643 vs 0.488, @10 0.923 vs 0.784) and on the real bladder (2-10 % partners,
        recall@1 0.367 vs 0.291): the CNN describes the counting noise that a smaller filter leaves.
    postprocess
        Post-processing of the vectors: None, ``"l2"`` (unit length, so that Euclidean clusterers
        act on the cosine distance), ``"pca_l2"`` (L2, PCA to ``n_components`` fitted on the images
        of :meth:`fit`, L2 again) or ``"pca_whiten"`` (L2, then PCA with whitening, then L2 again); see
        :func:`spatialclust.tl.postprocess_vectors`.
    n_components
        Components of the ``"pca_l2"`` and ``"pca_whiten"`` PCA (at most ``n_images - 1``).
    tissue_only
        Use the tissue mask: skip patches without tissue and condition over tissue pixels only.
        Default False (measured: off-tissue patches carry the matrix ions, one of the classes; on the
        realistic simulator ACC 0.63 vs 0.56 and partner recall@10 0.86 vs 0.80 without the mask).
    max_upsample
        Largest up-sampling factor used to reach the backbone's minimum input size. None (default):
        ``MAX_UPSAMPLE`` (4), or more for images so small that even 4x does not reach the
        backbone's minimum input (e.g. 8 x 8 px for a 71-px Xception), with a warning.
    input_size
        Side (px) at which patches are fed to the network. None (default, as in the paper): their own
        size (after any up-sampling to the minimum input); an int resizes every patch to that side
        (e.g. the backbone's training size 224), which costs ``(input_size / patch)^2`` more compute.
        Fixed-input backbones (ViT) always get their ``input_size``.
    pretrained, weights, random_init
        Weights of a named backbone (see :func:`spatialclust.models.create_backbone`).
    batch_size
        Patches per forward pass.
    num_threads
        torch CPU threads during embedding (None: leave torch's setting).
    device
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...
    cache_dir
        Directory of an on-disk cache of embeddings keyed by the images, mask, parameters and
        network weights (None: no cache). Re-embedding the same data is then a file read.

    Attributes
    ----------
    backbone_
        The network used (in eval mode, on ``device_``).
    device_
        The resolved device.
    grid_
        :class:`~spatialclust.pp.PatchGrid` of the last :meth:`transform`.
    n_features_out_
        Dimension of the neural ion images.
    pca_
        The fitted :class:`sklearn.decomposition.PCA` of ``postprocess="pca_l2"`` / ``"pca_whiten"`` (else None).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **CONDITIONING_CONSTRAINTS,
        "patch_size": [Interval(int, 1), None], "patch_size_um": [Interval(float, 0, closed="neither"), None],
        "overlap": [Interval(float, 0, 1, closed="left", description="a fraction in [0, 1) (the paper used 0.4-0.5)")],
        "pooling": [*POOLINGS], "postprocess": [*POSTPROCESSING, None], "n_components": [Interval(int, 1)],
        "tissue_only": [bool], "max_upsample": [Interval(float, 1), None], "input_size": [Interval(int, 1), None],
        "pretrained": [bool], "weights": [str, os.PathLike, None], "random_init": [bool], "batch_size": [Interval(int, 1)],
        "num_threads": [Interval(int, 1), None], "device": [str], "cache_dir": [str, os.PathLike, None],
    }

    def __init__(
        self,
        backbone: Any = "efficientnet_lite0",
        *,
        patch_size: int | None = None,
        patch_size_um: float | None = DEFAULT_PATCH_UM,
        overlap: float = 0.5,
        pooling: str = "concat",
        denoise: str | None = "gaussian",
        denoise_size: float = 5.0,
        clip_percentile: float | None = 99.0,
        contrast: str | None = "minmax",
        postprocess: str | None = "pca_l2",
        n_components: int = 50,
        tissue_only: bool = False,
        max_upsample: float | None = None,
        input_size: int | None = None,
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        batch_size: int = 64,
        num_threads: int | None = None,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.backbone = backbone
        self.patch_size = patch_size
        self.patch_size_um = patch_size_um
        self.overlap = overlap
        self.pooling = pooling
        self.denoise = denoise
        self.denoise_size = denoise_size
        self.clip_percentile = clip_percentile
        self.contrast = contrast
        self.postprocess = postprocess
        self.n_components = n_components
        self.tissue_only = tissue_only
        self.max_upsample = max_upsample
        self.input_size = input_size
        self.pretrained = pretrained
        self.weights = weights
        self.random_init = random_init
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device = device
        self.cache_dir = cache_dir

    def _load(self, images: np.ndarray, mask: np.ndarray | None, pixel_size: float | None) -> None:
        """Validate the parameters and the images, and load the backbone."""
        from ..models import Backbone, create_backbone

        self._validate_params()
        check_images(images, mask=mask, pixel_size=pixel_size)
        if isinstance(self.backbone, Backbone):
            backbone = self.backbone
        elif isinstance(self.backbone, str):
            backbone = create_backbone(
                self.backbone, pretrained=self.pretrained, weights=self.weights, random_init=self.random_init
            )
        else:
            raise TypeError(
                f"`backbone` must be a registered backbone name or a Backbone; received {type(self.backbone).__name__}."
            )
        self.device_ = resolve_device(self.device)
        self.backbone_ = backbone.to(self.device_).eval()
        self.n_features_out_ = backbone.config.num_features
        self.pca_ = None

    def fit(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> NeuralEmbedder:
        """Validate the parameters and load the backbone; with ``postprocess="pca_l2"`` or
        ``"pca_whiten"`` also embed ``images`` and fit the PCA (nothing else is learned).

        Parameters
        ----------
        images
            float32 ``(n_images, H, W)`` preprocessed feature images in [0, 1].
        mask
            bool ``(H, W)`` tissue mask or None.
        pixel_size
            Pixel size in µm (needed for ``patch_size_um``).
        """
        self._load(images, mask, pixel_size)
        if self.postprocess in PCA_POSTPROCESSING:
            self._fit_pca(self._features(images, mask, pixel_size))
        return self

    def fit_transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit` then :meth:`transform`, with a single pass of the network over ``images``."""
        self._load(images, mask, pixel_size)
        pooled = self._features(images, mask, pixel_size)
        self._fit_pca(pooled)
        return self._postprocessed(pooled)

    def _max_upsample(self, shape: tuple[int, int], min_size: int) -> float:
        """``max_upsample``, or for None the default adapted to images smaller than the backbone's minimum."""
        if self.max_upsample is not None:
            return self.max_upsample
        needed = min_size / min(shape)
        if needed <= MAX_UPSAMPLE:
            return MAX_UPSAMPLE
        logger.warning(
            "The %d x %d px images are smaller than the backbone's minimum input of %d px even after the default "
            "up-sampling by %g; up-sampling them by %.3g instead (set `max_upsample` to choose).",
            *shape, min_size, MAX_UPSAMPLE, needed,
        )
        return needed

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Neural ion images of ``images``.

        Parameters
        ----------
        images
            float32 ``(n_images, H, W)`` preprocessed feature images in [0, 1].
        mask
            bool ``(H, W)`` tissue mask; patches without tissue are skipped. None: all pixels.
        pixel_size
            Pixel size in µm (needed for ``patch_size_um``).

        Returns
        -------
        float32 ``(n_images, n_features_out_)``.
        """
        if not hasattr(self, "backbone_"):
            raise RuntimeError("This NeuralEmbedder is not fitted yet; call `fit` first.")
        return self._postprocessed(self._features(images, mask, pixel_size))

    def _fit_pca(self, pooled: np.ndarray) -> None:
        self.pca_ = fit_postprocessing(pooled, self.postprocess, self.n_components)

    def _postprocessed(self, pooled: np.ndarray) -> np.ndarray:
        out = postprocess_vectors(pooled, self.postprocess, self.pca_)
        self.n_features_out_ = int(out.shape[1])
        return out

    def _input_side(self, grid: PatchGrid) -> int:
        """Side at which the patches of ``grid`` are fed to the backbone."""
        return self.backbone_.input_size_for(self.input_size or grid.patch_size)

    def _patch_side(self, shape: tuple[int, int], pixel_size: float | None) -> dict[str, Any]:
        """Patch-size arguments of :func:`spatialclust.pp.patch_grid` (see ``patch_size_um``)."""
        if self.patch_size is not None:
            return {"patch_size": self.patch_size}
        if self.patch_size_um is None:
            return {}
        if pixel_size is None:
            logger.info("No pixel size known: neural patches of the shorter image side instead of %g µm.", self.patch_size_um)
            return {}
        if self.patch_size_um / pixel_size > min(shape):
            logger.info(
                "A %g µm patch (%.0f px) is larger than the image %s: patches of the shorter image side instead.",
                self.patch_size_um, self.patch_size_um / pixel_size, tuple(shape),
            )  # fmt: skip
            return {}
        return {"patch_size_um": self.patch_size_um, "pixel_size": pixel_size}

    def _cache_key(self, images: np.ndarray, mask: np.ndarray | None, grid: PatchGrid) -> str:
        fp = Fingerprint()
        fp.update({"spatialclust": __version__, "embedder": "neural", "pooling": self.pooling})
        fp.update({"conditioning": conditioning_params(self)})
        fp.update(self.backbone_.config.to_dict())
        fp.update(
            {
                "patch_size": grid.patch_size,
                "scale": grid.scale,
                "image_shape": list(grid.image_shape),
                "input_side": self._input_side(grid),
            }
        )
        fp.update(grid.origins)
        for tensor in self.backbone_.state_dict().values():
            fp.update(tensor)
        fp.update(images)
        fp.update(np.zeros(0, bool) if mask is None else mask)
        return fp.hexdigest()

    def _features(self, images: np.ndarray, mask: np.ndarray | None, pixel_size: float | None) -> np.ndarray:
        """Pooled (or concatenated) patch features of ``images``, before any post-processing."""
        arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
        mask = mask if self.tissue_only else None
        self._patch_grid(arr.shape, mask, pixel_size)
        vectors, blank = self._batch_features(arr, mask=mask)
        self._warn_blank(blank, arr.shape[0])
        return vectors

    def fit_transform_batches(self, batches: FeatureImageBatches, *, mask: np.ndarray | None = None,
                              pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit_transform` of images given a batch at a time (e.g. over a chunked ``X``).

        The network is loaded once; every batch is conditioned and embedded on its own (on the
        workers of a ``dask.distributed`` cluster when one is active, the embedder sent to each
        once: :func:`spatialclust.tl.map_image_batches`); only the ``(n_images, d)`` features are
        stacked, and the post-processing (and its PCA, fitted over all images) is
        done on them. The vectors are those of :meth:`fit_transform` on the whole stack.
        """
        first, mask = check_images(batches.load(slice(0, 1)), mask=mask, pixel_size=pixel_size)
        self._load(first, mask, pixel_size)
        mask = mask if self.tissue_only else None
        self._patch_grid((batches.n_images, *batches.shape), mask, pixel_size)
        parts = map_image_batches(self._batch_features, batches, mask=mask)
        pooled = np.concatenate([vectors for vectors, _ in parts])
        self._warn_blank(sum(blank for _, blank in parts), batches.n_images)
        self._fit_pca(pooled)
        return self._postprocessed(pooled)

    def _patch_grid(self, shape: tuple[int, int, int], mask: np.ndarray | None, pixel_size: float | None) -> PatchGrid:
        """The patch grid of ``shape`` ``(n_images, H, W)`` images (stored as ``grid_``), checked and logged."""
        n_images, image_shape = shape[0], tuple(shape[1:])
        config = self.backbone_.config
        grid = patch_grid(
            image_shape,
            **self._patch_side(image_shape, pixel_size),
            overlap=self.overlap,
            min_size=config.min_size,
            max_upsample=self._max_upsample(image_shape, config.min_size),
            mask=mask,
        )
        self.grid_ = grid
        n_out = config.num_features * (grid.n_patches if self.pooling == "concat" else 1)
        if 4 * n_out * n_images > MAX_CONCAT_BYTES:
            raise ValueError(
                f"`pooling='concat'` would give {n_images} x {n_out} features ({grid.n_patches} patches x "
                f"{config.num_features}), over {MAX_CONCAT_BYTES / 2**30:.0f} GiB; use `pooling='max'` or 'mean', or a larger "
                "`patch_size_um`."
            )
        logger.info(
            "Neural ion images with `%s`: %d patches of %d px per image (%.1f px of the original image, "
            "up-sampling x%.2f, overlap %.0f%%, %d background patches skipped), %s-pooled, %d-d.",
            config.name,
            grid.n_patches,
            grid.patch_size,
            grid.patch_size_original,
            grid.scale,
            100 * grid.overlap,
            grid.n_skipped,
            self.pooling,
            n_out,
        )
        return grid

    @staticmethod
    def _warn_blank(blank: int, n_images: int) -> None:
        if blank:
            logger.warning("%d of %d images are all zero; their neural ion images describe a blank image.", blank, n_images)

    def _batch_features(self, images: np.ndarray, *, mask: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Features of a batch of images on the patch grid ``grid_`` (conditioned first) and the
        number of all-zero images among them; ``mask`` is the grid's mask (None without ``tissue_only``)."""
        arr, _ = check_images(images)
        grid = self.grid_
        n_out = self.backbone_.config.num_features * (grid.n_patches if self.pooling == "concat" else 1)
        blank = int((arr.reshape(arr.shape[0], -1).max(axis=1) <= 0).sum())
        # the key covers the given images and the conditioning parameters: a hit skips the conditioning too
        key = self._cache_key(arr, mask, grid) if self.cache_dir is not None else ""
        cached = load_cached_array(self.cache_dir, "neural", key)
        if cached is not None and cached.shape == (arr.shape[0], n_out):
            return cached.astype(np.float32, copy=False), blank
        conditioning = conditioning_params(self)
        if conditioning is not None:
            arr = condition_images(arr, mask=mask, **conditioning)
        vectors = self._embed(arr, grid)
        save_cached_array(self.cache_dir, "neural", key, vectors)
        return vectors, blank

    def _embed(self, images: np.ndarray, grid: PatchGrid) -> np.ndarray:
        """Run the patches of all images through the backbone in full batches and pool per image."""
        import torch

        from ..models import torch_threads

        backbone = self.backbone_
        n_images, n_patches, n_features = images.shape[0], grid.n_patches, backbone.config.num_features
        side = self._input_side(grid)
        memory_format = torch.channels_last if self.device_ == "cpu" else torch.contiguous_format
        n_batches = math.ceil(n_images * n_patches / self.batch_size)
        if self.pooling == "concat":  # one row per (image, patch), image-major
            pooled = torch.empty((n_images * n_patches, n_features))
        else:
            pooled = torch.full((n_images, n_features), -torch.inf if self.pooling == "max" else 0.0)
        done = 0  # (image, patch) pairs embedded so far, in image-major order
        with torch_threads(self.num_threads), torch.inference_mode():
            batches = _patch_batches(images, grid, self.batch_size)
            for patches in progress(batches, desc=f"neural ion images ({backbone.config.name})", total=n_batches):
                x = backbone.preprocess(patches, size=side).to(self.device_).contiguous(memory_format=memory_format)
                features = backbone(x).float().cpu()
                if self.pooling == "concat":
                    pooled[done : done + len(patches)] = features
                else:
                    owner = (torch.arange(done, done + len(patches)) // n_patches)[:, None].expand_as(features)
                    pooled.scatter_reduce_(0, owner, features, reduce="amax" if self.pooling == "max" else "sum")
                done += len(patches)
        if self.pooling == "mean":
            pooled /= n_patches
        out = pooled.reshape(n_images, -1).numpy()
        if not np.isfinite(out).all():
            raise RuntimeError(f"Backbone `{backbone.config.name}` produced non-finite features; check its weights.")
        return out


def _patch_batches(images: np.ndarray, grid: PatchGrid, batch_size: int) -> Iterator[np.ndarray]:
    """Patches of all images, image-major, in batches of ``batch_size`` (patches of several images
    share a batch). Images are cut in chunks so that memory stays bounded for large stacks."""
    per_chunk = max(1, math.ceil(4 * batch_size / grid.n_patches))
    pending: np.ndarray | None = None
    for start in range(0, images.shape[0], per_chunk):
        patches = extract_patches(images[start : start + per_chunk], grid)
        patches = patches.reshape(-1, grid.patch_size, grid.patch_size)
        pending = patches if pending is None else np.concatenate([pending, patches])
        n_full = (len(pending) // batch_size) * batch_size
        for b in range(0, n_full, batch_size):
            yield pending[b : b + batch_size]
        pending = pending[n_full:]
    if pending is not None and len(pending):
        yield pending
