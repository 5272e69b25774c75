"""Embedding interface for feature images (ion images, gene images) and its registry.

Every embedder maps a stack of preprocessed feature images ``(n_images, H, W)`` to one vector per
image ``(n_images, d)``. Embedders are scikit-learn estimators registered by name (timm style):

>>> import spatialclust as sc
>>> sc.tl.list_embedders()  # doctest: +SKIP
['neural', 'regular', ...]
>>> sc.tl.embed(adata, method="regular")  # writes adata.varm["X_regular"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import anndata as ad
import numpy as np
from sklearn.base import BaseEstimator

from .. import _keys
from .._compute import current_client, scratch_dir, store_array
from .._logging import logger, progress
from .._registry import Registry
from .._validation import RANDOM_STATE, Interval, ValidatedParams
from ..pp import CHUNK_ENTRIES, CONDITIONING_CONSTRAINTS, DENSE_MAX_ENTRIES, GROUP_CHUNK_ENTRIES, FeatureImageBatches, chunk_spans

embedders: Registry[ImageEmbedder] = Registry("embedder")
"""Registry of image embedders (name -> :class:`ImageEmbedder` subclass)."""
register_embedder = embedders.register


def create_embedder(name: str, **params: Any) -> ImageEmbedder:
    """Build the embedder registered under ``name`` with ``params`` (unknown names list the valid ones)."""
    return embedders.create(name, **params)


def list_embedders() -> list[str]:
    """Names of the registered embedders, sorted."""
    return embedders.names()


def check_images(images: Any, *, mask: Any = None, pixel_size: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a stack of feature images and its tissue mask.

    Returns ``images`` as C-contiguous float32 ``(n, H, W)`` and ``mask`` as bool ``(H, W)`` (or None).
    Raises a ValueError naming the parameter for a wrong shape, non-finite values, a mask of the
    wrong shape or an empty mask, and a non-positive ``pixel_size``.
    """
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ValueError(f"`images` must have shape (n_images, height, width); received an array of shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"`images` is empty: expected at least one image, received shape {arr.shape}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("`images` contains NaN or infinite values; preprocess (e.g. fill=0) before embedding.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != arr.shape[1:]:
            raise ValueError(f"`mask` must have the image shape {arr.shape[1:]}; received shape {mask.shape}.")
        mask = mask.astype(bool, copy=False)
        if not mask.any():
            raise ValueError("`mask` selects no pixel: the tissue mask is empty.")
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"`pixel_size` must be a positive number of µm or None; received {pixel_size!r}.")
    return arr, mask


class ImageEmbedder(ValidatedParams, BaseEstimator):
    """Base class of the feature-image embedders.

    Subclasses declare what their parameters accept (``_parameter_constraints``, see
    :mod:`spatialclust._validation`) and implement :meth:`fit` (learning, if any; it calls
    ``_validate_params()`` first) and :meth:`transform`; both take the preprocessed images float32
    ``(n_images, H, W)`` (usually in [0, 1]), the tissue mask bool ``(H, W)`` or None (all pixels)
    and the pixel size in µm or None. ``__init__`` only stores parameters (scikit-learn convention).
    """

    def fit(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> ImageEmbedder:
        """Learn what the embedder needs from ``images`` (no-op for training-free embedders)."""
        self._validate_params()
        check_images(images, mask=mask, pixel_size=pixel_size)
        return self

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Embed ``images``: float32 ``(n_images, d)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `transform`.")

    def fit_transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """``fit`` then ``transform`` on the same images."""
        return self.fit(images, mask=mask, pixel_size=pixel_size).transform(images, mask=mask, pixel_size=pixel_size)

    def fit_transform_batches(self, batches: FeatureImageBatches, *, mask: np.ndarray | None = None,
                              pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit_transform` of images given a batch at a time (:class:`spatialclust.pp.FeatureImageBatches`,
        e.g. over a chunked ``X``): the same vectors as on the whole stack.

        Embedders that embed every image independently once fitted (``neural``, ``simclr``) hold one
        batch at a time; this default, for those that need every image at once, builds the whole
        stack from the batches first.
        """
        logger.info("`%s` needs every image at once: building the %d x %s image stack from the batches.",
                    type(self).__name__, batches.n_images, batches.shape)
        images = np.empty((batches.n_images, *batches.shape), dtype=np.float32)
        for columns, block in zip(batches.bounds, batches):
            images[columns] = block
        return self.fit_transform(images, mask=mask, pixel_size=pixel_size)


def map_image_batches(func: Callable[..., Any], batches: FeatureImageBatches, **params: Any) -> list[Any]:
    """``func(images, **params)`` for the images of every batch of ``batches``, in order.

    With an active ``dask.distributed`` client (a run's ``compute.scheduler``,
    :func:`spatialclust._compute.compute_context`) every batch is one task on the workers: it loads
    its images there (the workers read the chunks of ``X`` themselves), and ``func`` with ``params``
    (e.g. a fitted embedder's method: the model weights) is scattered to every worker once
    (``broadcast=True``) and shared by all tasks; only the results come back. Otherwise the batches
    are loaded and processed one after another in this process (one batch of images in memory).
    """
    bound = partial(func, **params)
    client = current_client()
    if client is None:
        return [bound(images) for images in progress(batches, desc="image batches", total=len(batches))]
    import dask

    logger.info("Embedding %d batches of images on the %d worker(s) of the dask cluster (the model sent once).",
                len(batches), len(client.scheduler_info()["workers"]))
    shared = client.scatter(bound, broadcast=True, hash=False)
    return list(dask.compute(*(dask.delayed(_apply)(shared, images) for images in batches.delayed())))


def _apply(func: Callable[[np.ndarray], Any], images: np.ndarray) -> Any:
    return func(images)


def conditioning_params(embedder: Any) -> dict[str, Any] | None:
    """The :func:`spatialclust.pp.condition_images` arguments of an embedder with conditioning
    parameters (``denoise``, ``denoise_size``, ``clip_percentile``, ``contrast``), or None when its
    images are used as given."""
    if embedder.denoise is None and embedder.clip_percentile is None and embedder.contrast is None:
        return None
    return {"denoise": embedder.denoise, "denoise_size": embedder.denoise_size,
            "clip_percentile": embedder.clip_percentile, "contrast": embedder.contrast}


#: ``postprocess`` of the regular, neural and SimCLR embedders: what is done to their vectors.
POSTPROCESSING = ("l2", "pca_l2", "pca_whiten")
#: The ``postprocess`` values that fit a PCA in ``fit``.
PCA_POSTPROCESSING = ("pca_l2", "pca_whiten")


#: ``n_components="auto"`` of the post-processing PCA: this many components per square root of the
#: number of images ...
AUTO_COMPONENTS_PER_SQRT_IMAGE = 1.2
#: ... and at most this many.
MAX_AUTO_COMPONENTS = 50


def auto_components(n_images: int) -> int:
    """The ``"auto"`` number of components of the post-processing PCA for ``n_images`` images:
    1.2 sqrt(n_images), rounded, between 1 and 50 (24 for 390 images, 38 for 1,000)."""
    return max(1, min(MAX_AUTO_COMPONENTS, round(AUTO_COMPONENTS_PER_SQRT_IMAGE * np.sqrt(n_images))))


def fit_postprocessing(vectors: np.ndarray, method: str | None, n_components: int | str) -> Any:
    """The PCA of ``postprocess=method`` fitted on ``vectors`` ``(n_images, d)``, or None when
    ``method`` needs none (None, ``"l2"``).

    ``n_components`` is capped at ``n_images - 1`` and ``d``; ``"auto"`` = :func:`auto_components`,
    1.2 sqrt(n_images), at most 50. Whitening as many components as the images allow makes every
    image nearly equidistant from every other: on 80 images of the realistic simulator Leiden ACC
    fell to 0.32 with 50 whitened components, against 0.67-0.72 with 10-11 and 0.55 without the
    PCA. Over seven simulator regimes (7-21 classes, 80-1,066 images) 1.2 sqrt(n_images) whitened
    components gave the best mean ACC of Leiden, UMAP-DBSCAN and k-means together; one per 8 images
    (the rule before) tied with Leiden and UMAP-DBSCAN and lost 0.05 with k-means
    (docs/benchmarks.md, "Post-processing").
    """
    if method not in PCA_POSTPROCESSING:
        return None
    from sklearn.decomposition import PCA

    if n_components == "auto":
        n_components = auto_components(vectors.shape[0])
    n_components = min(n_components, vectors.shape[0] - 1, vectors.shape[1])
    if n_components < 1:
        raise ValueError(f"`postprocess={method!r}` needs at least 2 images; received {vectors.shape[0]}.")
    return PCA(n_components, whiten=method == "pca_whiten", random_state=0).fit(unit_rows(vectors))


def postprocess_vectors(vectors: np.ndarray, method: str | None, pca: Any) -> np.ndarray:
    """``vectors`` post-processed: None = as given; ``"l2"`` = rows of unit length (Euclidean
    clusterers then act on the cosine distance); ``"pca_l2"`` = L2, projected on the fitted ``pca``,
    L2 again; ``"pca_whiten"`` = the same with a whitening ``pca``. float32."""
    if method is None:
        out = vectors
    elif method == "l2":
        out = unit_rows(vectors)
    else:
        out = unit_rows(pca.transform(unit_rows(vectors)))
    return np.asarray(out, dtype=np.float32)


#: Vectors of more entries than this stay float32 in :func:`unit_rows` (and so in the post-processing
#: PCA): 128 MiB as float64; below it the PCA runs in float64.
FLOAT32_ENTRIES = 2**24


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean length (zero rows stay zero), float64; float32 vectors of more
    than ``FLOAT32_ENTRIES`` entries (a whole slide's flattened images) stay float32, so that they
    are not doubled in memory. The norms are computed in float64."""
    x = np.asarray(x)
    if not (x.dtype == np.float32 and x.size > FLOAT32_ENTRIES):
        x = x.astype(np.float64, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]
    return x / np.maximum(norms, 1e-12).astype(x.dtype)


@register_embedder("regular")
class RegularEmbedder(ImageEmbedder):
    """The preprocessed image itself, flattened inside the tissue mask ("regular ion images").

    This is the baseline representation of Zhang et al. (2024, seed 000, "regular ion images"):
    every pixel of the (normalised, winsorised, scaled) ion image inside the tissue mask becomes one
    coordinate, so ``d`` = number of on-tissue pixels. Pixels outside the mask are dropped so that
    empty background does not dominate distances.

    With ``n_components`` the flattened images are projected onto their ``n_components`` leading
    singular vectors (a truncated, uncentred SVD, which keeps Euclidean distances and cosines of the
    images up to the discarded spectrum) computed by randomized SVD (Halko, Martinsson & Tropp 2011,
    "Finding structure with randomness", SIAM Review 53(2); :func:`_randomized_svd`):
    a fixed-size input to k-means/UMAP whatever the number of pixels. On a chunked (dask) matrix
    this streams over the pixel chunks (a few passes over the data; in memory one chunk, the
    ``(n_images, n_components)`` result and the pixel-side singular vectors ``components_``, as
    many values as ``n_components`` images); it is required when the flattened images of a chunked
    matrix would exceed ``DENSE_MAX_ENTRIES`` entries.

    Parameters
    ----------
    denoise, denoise_size, clip_percentile, contrast
        Optional conditioning of every image first (:func:`spatialclust.pp.condition_images`); all
        None (default) is the paper's regular ion image. ``denoise="gaussian", denoise_size=3,
        clip_percentile=99, contrast="minmax"`` was the best representation measured on the realistic
        simulator: k-means ACC 0.65-0.79 against 0.62-0.65 unconditioned, thinned-partner recall@10
        0.93-0.99 against 0.81-0.83 (docs/benchmarks.md, "Neural ion images on realistic data").
    n_components
        None (default): the flattened image. An integer: that many randomized-SVD components.
    postprocess, postprocess_components
        Post-processing of the vectors (:func:`postprocess_vectors`): None (default, the paper's
        regular ion image), ``"l2"``, ``"pca_l2"`` or ``"pca_whiten"`` (unit length, whitening PCA
        to ``postprocess_components`` fitted on the images of :meth:`fit`, unit length again;
        ``"auto"`` = 1.2 sqrt(n_images), at most 50: :func:`fit_postprocessing`). The
        conditioned images with ``"pca_whiten"`` are the default of ``spatialclust run``
        (docs/benchmarks.md, "Post-processing").
    random_state
        Seed of the randomized SVD.

    Attributes
    ----------
    components_ : numpy.ndarray or None
        With ``n_components``: the pixel-side singular vectors, float32 ``(n_pixels, n_components)``
        (on-tissue pixels), fitted by :meth:`fit`; :meth:`transform` projects images on them, so
        images embedded after the fit (e.g. the thinned partners of
        :func:`spatialclust.metrics.thinned_partner_check`) share the fitted images' basis.
    pca_ : sklearn.decomposition.PCA or None
        The PCA of ``postprocess="pca_l2"`` / ``"pca_whiten"``, fitted by :meth:`fit`.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **CONDITIONING_CONSTRAINTS, "n_components": [Interval(int, 1), None], "random_state": [RANDOM_STATE],
        "postprocess": [*POSTPROCESSING, None], "postprocess_components": [Interval(int, 1), "auto"],
    }

    def __init__(self, *, denoise: str | None = None, denoise_size: float = 3.0, clip_percentile: float | None = None,
                 contrast: str | None = None, n_components: int | None = None, postprocess: str | None = None,
                 postprocess_components: int | str = "auto", random_state: int = 0) -> None:
        self.denoise = denoise
        self.denoise_size = denoise_size
        self.clip_percentile = clip_percentile
        self.contrast = contrast
        self.n_components = n_components
        self.postprocess = postprocess
        self.postprocess_components = postprocess_components
        self.random_state = random_state

    def fit(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> RegularEmbedder:
        """Fit the singular vectors of ``n_components`` and the post-processing PCA on ``images``
        (nothing to learn without either)."""
        self.fit_transform(images, mask=mask, pixel_size=pixel_size)
        return self

    def fit_transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit` and the vectors of ``images``, with one pass over them."""
        self._validate_params()
        flat = self._flat(images, mask=mask, pixel_size=pixel_size)
        return self._fit_postprocessing(self._fit_svd(flat.T))

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Regular ion images of ``images``, projected on the singular vectors and post-processed with
        the PCA fitted by :meth:`fit` (a fitted image gets the vector :meth:`fit_transform` gave it).
        With ``n_components`` the images must be of the tissue mask of the fit (only the number of its
        pixels can be checked)."""
        vectors = self._flat(images, mask=mask, pixel_size=pixel_size)
        if self.n_components is not None:
            components = getattr(self, "components_", None)
            if components is None:
                raise RuntimeError("`n_components` projects on the singular vectors fitted by `fit`; call `fit` or "
                                   "`fit_transform` first.")
            if vectors.shape[1] != components.shape[0]:
                raise ValueError(f"The images have {vectors.shape[1]} (on-tissue) pixels; the embedder was fitted on "
                                 f"images of {components.shape[0]}: give the images and tissue mask it was fitted on.")
            vectors = np.asarray(vectors, dtype=np.float32) @ components
        if self.postprocess in PCA_POSTPROCESSING and getattr(self, "pca_", None) is None:
            raise RuntimeError(f"`postprocess={self.postprocess!r}` projects on a PCA fitted by `fit`; call `fit` or "
                               "`fit_transform` first.")
        return postprocess_vectors(vectors, self.postprocess, getattr(self, "pca_", None))

    def _fit_postprocessing(self, vectors: np.ndarray) -> np.ndarray:
        """Fit the post-processing on the vectors of every image; the vectors post-processed."""
        self.pca_ = fit_postprocessing(vectors, self.postprocess, self.postprocess_components)
        return postprocess_vectors(vectors, self.postprocess, self.pca_)

    def _fit_svd(self, pixels: Any, *, keep_basis: bool = True) -> np.ndarray:
        """The ``(n_pixels, n_images)`` matrix transposed, or with ``n_components`` the image-side factor
        of its randomized SVD, whose pixel-side singular vectors become ``components_`` (None without
        ``keep_basis``)."""
        self.components_ = None
        if self.n_components is None:
            return pixels.T
        k = self._components(pixels.shape)
        if not keep_basis:
            return _randomized_svd(pixels, k, seed=self.random_state)
        vectors, self.components_ = _randomized_svd(pixels, k, seed=self.random_state, pixel_basis=True)
        return vectors

    def _flat(self, images: np.ndarray, *, mask: np.ndarray | None, pixel_size: float | None) -> np.ndarray:
        """The flattened (conditioned) images ``(n_images, n_pixels)``, on-tissue pixels only."""
        arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
        conditioning = conditioning_params(self)
        if conditioning is not None:
            from .. import pp

            arr = pp.condition_images(arr, mask=mask, **conditioning)
        return arr.reshape(arr.shape[0], -1) if mask is None else arr[:, mask]

    def fit_transform_pixels(self, pixels: Any, *, conditioned: bool = False, keep_basis: bool = True) -> np.ndarray:
        """Fit on a chunked ``(n_pixels, n_images)`` matrix (e.g. the on-tissue rows of a dask ``X``)
        and return its regular embedding, without building the images: float32 ``(n_images, d)``.

        Without ``n_components`` the transposed matrix itself (refused above ``DENSE_MAX_ENTRIES``
        entries); with it, the randomized SVD streaming over the pixel chunks, whose pixel-side
        singular vectors (``components_``, float32 ``(n_pixels, n_components)``) :meth:`transform`
        then projects other images of the same tissue on. With conditioning parameters ``pixels``
        must be the conditioned images' pixels (:func:`spatialclust.pp.conditioned_tissue_pixels`,
        ``conditioned=True``). ``keep_basis=False`` keeps no ``components_`` (a one-off embedding, whose
        ``n_pixels x n_components`` basis is not needed). Not post-processed (:func:`embed` fits the
        ``postprocess`` on the result).
        """
        n_pixels, n_images = pixels.shape
        if conditioning_params(self) is not None and not conditioned:
            raise ValueError("`RegularEmbedder` conditions whole images (denoise, clip_percentile, contrast); pass the "
                             "pixels of the conditioned images (`sc.pp.conditioned_tissue_pixels`) with `conditioned=True`.")
        if self.n_components is None and n_pixels * n_images > DENSE_MAX_ENTRIES:
            raise ValueError(
                f"The regular embedding of {n_images} images x {n_pixels} on-tissue pixels would hold "
                f"{n_pixels * n_images * 4 / 2**30:.1f} GiB; set `n_components` (e.g. 50) for a fixed-size "
                "embedding by randomized SVD."
            )
        vectors = self._fit_svd(pixels, keep_basis=keep_basis)
        return np.ascontiguousarray(vectors.compute() if hasattr(vectors, "compute") else vectors, dtype=np.float32)

    def _components(self, shape: tuple[int, int]) -> int:
        """``n_components``, checked against the ``(n_pixels, n_images)`` matrix."""
        k = int(self.n_components)
        if not 1 <= k <= min(shape):
            raise ValueError(f"`n_components` must lie in [1, min(n_pixels, n_images)] = [1, {min(shape)}]; "
                             f"received {self.n_components!r}.")
        return k


def _randomized_svd(pixels: Any, k: int, *, seed: int, n_oversamples: int = 20, n_power_iter: int = 2,
                    pixel_basis: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Image-side factor ``V S`` of the ``k`` leading singular triplets of a ``(n_pixels, n_images)``
    matrix ``A`` (numpy or dask), float32 ``(n_images, k)``; with ``pixel_basis`` also the pixel-side
    singular vectors ``U``, float32 ``(n_pixels, k)``, on which an image's projection is its row of
    ``V S``.

    Halko, Martinsson & Tropp (2011), Algorithm 4.4 (randomized subspace iteration: ``Q = orth(A Ω)``,
    ``n_power_iter`` times ``Q = orth(A orth(Aᵀ Q))``, then the SVD of ``B = Qᵀ A``), computed from
    image-side matrices only (without ``pixel_basis`` nothing of size ``n_pixels`` is held): the image
    bases ``P`` are ``orth(AᵀA P)`` (the same subspaces as ``orth(Aᵀ Q)``), and the last ``Q =
    orth(A P)`` is never formed: with ``Z = AᵀA P`` and ``Pᵀ Z = (A P)ᵀ(A P) = W Λ Wᵀ``, ``Q = A P W
    Λ^-1/2`` and ``Bᵀ = Aᵀ Q = Z W Λ^-1/2``, whose SVD ``V S Ũᵀ`` gives ``V S``, and ``U = Q Ũ``
    (with ``pixel_basis``, from the ``A P`` of the last pass, kept as float32: no further pass).
    Every product ``AᵀA P = Σ_b A_bᵀ (A_b P)`` is one pass over blocks of whole pixel rows
    (:func:`_gram_times`): ``n_power_iter + 1`` passes, half those of the pixel-side iteration,
    holding ``(n_images, k + n_oversamples)`` matrices and one block (with ``pixel_basis`` also ``A P``,
    float32 ``(n_pixels, k + n_oversamples)``, during the last pass). Directions of ``A P`` whose
    squared singular value is below ``1e-10`` times the largest (numerically rank-deficient data)
    are dropped: their singular values (and vectors) are reported as 0. The random test matrix
    ``Ω`` is drawn once on the image side, so the result does not depend on how the matrix is
    chunked (in memory or over a Zarr store). Signs: the largest entry of every image-side singular
    vector is positive.
    """
    n_pixels, n_images = pixels.shape
    width = min(k + n_oversamples, n_pixels, n_images)
    basis = np.random.default_rng(seed).standard_normal((n_images, width))
    for _ in range(n_power_iter):
        basis = np.linalg.qr(_gram_times(pixels, basis)[0])[0]
    gram_basis, left = _gram_times(pixels, basis, keep_left=pixel_basis)
    ritz = basis.T @ gram_basis
    values, vectors = np.linalg.eigh((ritz + ritz.T) / 2)
    kept = values > max(values.max(), 0.0) * 1e-10
    factor = np.zeros((n_images, k), dtype=np.float32)
    components = np.zeros((n_pixels, k), dtype=np.float32) if pixel_basis else None
    if kept.any():  # an all-zero matrix has no singular direction
        rotation = vectors[:, kept] / np.sqrt(values[kept])
        v, s, ut = np.linalg.svd(gram_basis @ rotation, full_matrices=False)
        found = min(k, s.size)
        signs = np.sign(v[np.abs(v[:, :found]).argmax(axis=0), np.arange(found)])
        factor[:, :found] = v[:, :found] * signs * s[:found]
        if pixel_basis:
            projection = ((rotation @ ut[:found].T) * signs).astype(np.float32)
            if found == k:  # written in place: no second n_pixels x k array
                np.matmul(left, projection, out=components)
            else:
                components[:, :found] = left @ projection
    return (factor, components) if pixel_basis else factor


def _gram_times(pixels: Any, basis: np.ndarray, *, keep_left: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``AᵀA basis`` (float64 ``(n_images, width)``) of a ``(n_pixels, n_images)`` matrix ``A``, one pass over
    blocks of whole pixel rows: a numpy matrix in slices, a dask one per block of its pixel chunks
    (all its m/z joined), a few pixel chunks per dask compute (``pp.GROUP_CHUNK_ENTRIES``) so that
    dask never reads more of the matrix ahead than that. A dask matrix whose chunks span more pixels
    than that (e.g. every pixel of a few images) is multiplied twice in its own chunks instead.
    With ``keep_left`` also ``A basis`` (float32 ``(n_pixels, width)``), else None."""
    if not (hasattr(pixels, "compute") and hasattr(pixels, "chunks")):
        return _block_gram_times(pixels, basis, keep_left)
    import dask
    import dask.array as da

    if max(pixels.chunks[0]) * pixels.shape[1] > GROUP_CHUNK_ENTRIES:
        # chunks of many pixels (e.g. every pixel of a few images): no block of whole spectra fits, so
        # two products in the array's own chunks, holding A P (n_pixels x width) between them
        left = (pixels @ basis).compute()
        gram = np.asarray((pixels.T @ da.from_array(left, chunks=(pixels.chunks[0], -1))).compute(), dtype=np.float64)
        return gram, np.asarray(left, dtype=np.float32) if keep_left else None
    shared = dask.delayed(basis, pure=True)
    out = np.zeros(basis.shape, dtype=np.float64)
    left = np.empty((pixels.shape[0], basis.shape[1]), dtype=np.float32) if keep_left else None
    start = 0
    for span in chunk_spans(pixels.chunks[0], GROUP_CHUNK_ENTRIES // max(pixels.shape[1], 1)):
        blocks = pixels[span].rechunk({1: -1}).to_delayed().ravel()  # the pixel blocks of the span, in order
        for gram, block_left in dask.compute(*(dask.delayed(_block_gram_times, pure=True)(block, shared, keep_left)
                                               for block in blocks)):
            out += gram
            if keep_left:
                left[start:start + block_left.shape[0]] = block_left
                start += block_left.shape[0]
    return out, left


def _block_gram_times(block: np.ndarray, basis: np.ndarray, keep_left: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``blockᵀ (block basis)`` in float64, a slice of pixel rows of at most ``CHUNK_ENTRIES / 8`` entries
    at a time; with ``keep_left`` also ``block basis`` as float32, else None."""
    rows = max(1, CHUNK_ENTRIES // 8 // max(block.shape[1], 1))
    out = np.zeros(basis.shape, dtype=np.float64)
    left = np.empty((block.shape[0], basis.shape[1]), dtype=np.float32) if keep_left else None
    for start in range(0, block.shape[0], rows):
        part = np.asarray(block[start:start + rows], dtype=np.float64)
        product = part @ basis
        out += part.T @ product
        if keep_left:
            left[start:start + rows] = product
    return out, left


def _method_name(method: str | ImageEmbedder) -> str:
    if isinstance(method, str):
        return method
    for name in embedders.names():
        if type(method) is embedders.get(name):
            return name
    return type(method).__name__


def embed(
    adata: ad.AnnData,
    method: str | ImageEmbedder = "regular",
    *,
    key_added: str | None = None,
    layer: str | None = None,
    copy: bool = False,
    **params: Any,
) -> ad.AnnData | None:
    """Embed every feature image of ``adata`` (one vector per var).

    Builds the images with :func:`spatialclust.pp.feature_images` and the tissue mask with
    :func:`spatialclust.pp.tissue_mask_image`, fits the embedder and transforms the images. A
    chunked (dask) matrix is never turned into the image stack by the embedders that do not need
    it: ``regular`` streams over the pixel chunks (conditioned images: a lazy map over column
    blocks), the others get their images a batch at a time
    (:meth:`ImageEmbedder.fit_transform_batches`, on the workers of a ``dask.distributed`` cluster
    when one is active, see :func:`map_image_batches`).

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features) with ``obsm["spatial"]`` and ``uns["grid"]``.
    method
        A registered embedder name (see :func:`list_embedders`), or an :class:`ImageEmbedder`
        instance (used as given; ``params`` must then be empty).
    key_added
        ``varm`` key of the result; default ``X_<method>`` (e.g. ``X_regular``).
    layer
        Layer to build images from (default ``X``).
    copy
        Return a modified copy instead of writing to ``adata``.
    **params
        Parameters of the embedder.

    Returns
    -------
    None, or the copy if ``copy=True``. Writes

    ``adata.varm[key_added]``
        float32 ``(n_vars, d)``: the embedding of every feature image.
    ``adata.uns[key_added]``
        ``{"method": name, "params": {...}}``: the embedder and its parameters.
    """
    from .. import pp

    if isinstance(method, ImageEmbedder):
        if params:
            raise ValueError(f"`method` is an embedder instance; pass its parameters to it, not to `embed` (received {sorted(params)}).")
        embedder = method
    elif isinstance(method, str):
        embedder = create_embedder(method, **params)
    else:
        raise TypeError(f"`method` must be a registered embedder name or an ImageEmbedder; received {type(method).__name__}.")
    name = _method_name(method)
    key = key_added or _keys.embedding_key(name)

    adata = adata.copy() if copy else adata
    matrix = pp.intensity_matrix(adata, layer)
    mask = pp.tissue_mask_image(adata)
    pixel_size = adata.uns.get(_keys.GRID, {}).get("pixel_size")
    if pp.is_dask(matrix) and isinstance(embedder, RegularEmbedder):
        logger.info("Embedding %d feature images of a chunked matrix with `%s`.", adata.n_vars, name)
        conditioning = conditioning_params(embedder)
        embedder._validate_params()
        if conditioning is None:
            vectors = embedder.fit_transform_pixels(pp.tissue_pixels(adata, matrix))
        else:
            vectors = _conditioned_regular(embedder, adata, layer, conditioning)
        vectors = embedder._fit_postprocessing(vectors)
    elif pp.is_dask(matrix):
        batches = pp.FeatureImageBatches(adata, layer=layer)
        logger.info("Embedding %d feature images of a chunked matrix with `%s`, %d images per batch.",
                    adata.n_vars, name, batches.batch_size)
        vectors = np.asarray(embedder.fit_transform_batches(batches, mask=mask, pixel_size=pixel_size), dtype=np.float32)
    else:
        images = pp.feature_images(adata, layer=layer)
        logger.info("Embedding %d feature images of %s with `%s`.", images.shape[0], images.shape[1:], name)
        vectors = np.asarray(embedder.fit_transform(images, mask=mask, pixel_size=pixel_size), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != adata.n_vars:
        raise RuntimeError(f"Embedder `{name}` returned shape {vectors.shape}; expected ({adata.n_vars}, d).")
    adata.varm[key] = vectors
    adata.uns[key] = {"method": name, _keys.PARAMS: _plain_params(embedder.get_params(deep=False))}
    return adata if copy else None


def _conditioned_regular(embedder: RegularEmbedder, adata: ad.AnnData, layer: str | None,
                         conditioning: dict[str, Any]) -> np.ndarray:
    """Regular embedding of the conditioned images of a chunked matrix.

    The conditioned pixels are a lazy dask map over column blocks of images
    (:func:`spatialclust.pp.conditioned_tissue_pixels`). The randomized SVD passes over them
    ``n_power_iter + 1`` times, so on the threads of this process they are computed once into a
    temporary Zarr store (the writer of the run's preprocessed matrix; in dask's
    ``temporary-directory``, else ``TMPDIR``; ``n_tissue_pixels x n_images`` float32, deleted
    afterwards) that the passes read; on a dask cluster, whose workers need not see this machine's
    disk, every pass conditions again on the workers.
    """
    from .. import pp

    pixels = pp.conditioned_tissue_pixels(adata, layer=layer, **conditioning)
    if embedder.n_components is None or current_client() is not None:  # one pass, or no shared disk
        return embedder.fit_transform_pixels(pixels, conditioned=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="spatialclust-conditioned-", dir=scratch_dir()) as folder:
        logger.info("Conditioning the %d images once into a temporary store for the randomized SVD.", pixels.shape[1])
        return embedder.fit_transform_pixels(store_array(pixels, f"{folder}/pixels.zarr"), conditioned=True)


def _plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as h5ad-storable values (None -> "None", objects -> their repr)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v is None:
            out[k] = "None"
        elif isinstance(v, (bool, int, float, str, np.integer, np.floating)):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out
