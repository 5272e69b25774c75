"""DARLC: dual advancement of representation learning and clustering (Wang et al., 2024, seed 003).

Embedder ``darlc`` (Module I + Module II, jointly trained) and clusterer ``smm`` (Student's t
mixture by MAP-EM on any embedding). Torch is imported inside the functions that need it.

Training, per dataset of feature images (gene images or ion images):

1. Augmentation (§3.2.1): a graph attention autoencoder trained on the pixel graph of the dataset
   reconstructs every image; the smoothed images are the positive views (ablation: Gaussian kernel
   smoothing, ``augmentation="gaussian"``).
2. Module I (§3.2.2), ``pretrain_epochs`` warm-up epochs: a small ViT is trained with masked image
   modelling (eq. 7, 80 % of patches masked, linear decoder) and a contrastive branch (eqs. 8-10:
   online encoder = the MIM encoder, EMA target encoder with momentum 0.999, InfoNCE between an
   image and its smoothed view with the other images of the batch as negatives, temperature 0.5),
   the two losses weighted by learned uncertainties (eq. 11, Liebel and Körner, 2018).
3. Module II (§3.3), ``cluster_epochs`` epochs: a projection head (linear, batch norm, SELU, linear)
   maps the encoder output to 32 dimensions, modelled by a Student's t mixture (MAP-EM,
   :class:`spatialclust.models.StudentMixture`). Every epoch: EM on all embeddings, then one
   step on the epoch-level loss (eq. 16: -log-likelihood (eq. 18) + decaying Laplacian
   regularisation towards the seeding similarity (eq. 17) + cluster-size hinge (eq. 20) + MIM), then
   batch steps on the batch-level loss (eq. 21: KL to the sharpened target distribution (eq. 22)
   + uncertainty-weighted MIM and contrastive losses).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._compat import resolve_device
from .._logging import logger, progress
from .._validation import RANDOM_STATE, Interval
from ._cluster import estimate_n_clusters
from ._embed import ImageEmbedder, check_images, register_embedder

CHECKPOINT_KIND = "darlc"
#: parameters that fix the network shapes, recorded in a checkpoint's ``architecture``
ARCHITECTURE = ("patch_size", "embed_dim", "depth", "num_heads", "pool_grid", "head_dim")
MIXTURE_TENSORS = ("weights_", "means_", "covariances_", "dof_")
AUGMENTATIONS = ("gat", "gaussian")
MIXTURES = ("t", "gaussian")
OUTPUTS = ("encoder", "projection")
INPUT_SCALINGS = ("max", "zscore")
#: epochs of each training stage with ``"auto"``: fewer than the paper's 50, measured better on real ST
#: (docs/benchmarks.md, "DARLC defaults on real ST")
AUTO_EPOCHS = 10


# --------------------------------------------------------------------------------------------
# image preparation and the seeding similarity
# --------------------------------------------------------------------------------------------


def scale_images(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Each image divided by its maximum inside the mask (so in [0, 1]); off-mask pixels set to 0."""
    out = np.clip(images, 0.0, None).astype(np.float32, copy=True)
    if mask is not None:
        out[:, ~mask] = 0.0
    peak = out.reshape(len(out), -1).max(axis=1)
    np.divide(out, peak[:, None, None], out=out, where=peak[:, None, None] > 0)
    return out


def zscore_images(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Each image centred and divided by its standard deviation inside the mask; off-mask pixels 0.

    The geometry of Pearson correlation: a sparse image is no longer scaled by its single brightest
    spot (as :func:`scale_images` does), and constant images become all zero.
    """
    inside = np.ones(images.shape[1:], dtype=bool) if mask is None else mask
    values = images[:, inside].astype(np.float32)
    values -= values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    np.divide(values, std, out=values, where=std > 0)
    values[(std <= 0).ravel()] = 0.0
    out = np.zeros(images.shape, dtype=np.float32)
    out[:, inside] = values
    return out


DEFAULT_PATCH_SIZE = 4


def resolve_patch_size(patch_size: int | str, grid: tuple[int, int]) -> int:
    """The ViT patch size for an image grid of ``grid = (H, W)`` pixels.

    ``"auto"`` is :data:`DEFAULT_PATCH_SIZE` (4) when both sides hold at least one such patch;
    on a smaller grid it is the largest size that leaves at least 2 patches per side (at least 1 px),
    so that the masked branch has patches to mask; the change is logged as a warning. An explicit
    ``patch_size`` larger than the grid is an error (raised before any training).
    """
    h, w = (int(v) for v in grid)
    if patch_size == "auto":
        if min(h, w) >= DEFAULT_PATCH_SIZE:
            return DEFAULT_PATCH_SIZE
        adapted = max(1, min(h, w) // 2)
        logger.warning("DARLC: the image grid %d x %d is smaller than the default `patch_size`=%d; using `patch_size`=%d.",
                       h, w, DEFAULT_PATCH_SIZE, adapted)
        return adapted
    if h < patch_size or w < patch_size:
        raise ValueError(
            f"The image grid {h} x {w} is smaller than `patch_size`={patch_size}; use a `patch_size` of at most "
            f"{min(h, w)}, or `patch_size=\"auto\"`."
        )
    return int(patch_size)


def tissue_patches(mask: np.ndarray | None, patch_size: int) -> np.ndarray | None:
    """Boolean patch grid of the padded image: True where a patch overlaps the tissue ``mask``.

    ``None`` (every patch) without a mask or when fewer than 2 patches overlap it.
    """
    if mask is None:
        return None
    padded = pad_to_patches(np.asarray(mask, dtype=bool)[None], patch_size)[0]
    gh, gw = padded.shape[0] // patch_size, padded.shape[1] // patch_size
    patches = padded.reshape(gh, patch_size, gw, patch_size).any(axis=(1, 3))
    return patches if patches.sum() >= 2 else None


def pad_to_patches(images: np.ndarray, patch_size: int) -> np.ndarray:
    """Zero-pad ``(n, H, W)`` at the bottom/right to multiples of ``patch_size``.

    Raises a ValueError when the grid is smaller than one patch in either direction.
    """
    h, w = images.shape[1:]
    resolve_patch_size(patch_size, (h, w))
    ph, pw = -h % patch_size, -w % patch_size
    return np.pad(images, ((0, 0), (0, ph), (0, pw))) if ph or pw else images


def seeding_similarity(images: np.ndarray, mask: np.ndarray | None = None, *, n_neighbors: int = 10) -> np.ndarray:
    """Seeding image-image similarity ``S_tilde`` (eq. 23) from the (smoothed) images.

    ``S`` keeps, for every image, the positive Pearson correlations with its ``n_neighbors`` most
    correlated images (symmetrised with the maximum); ``S_tilde = S @ S`` (two-step similarity:
    images that share neighbours) strengthens the block structure, with a zero diagonal.
    """
    flat = images[:, mask] if mask is not None else images.reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    flat = np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)
    corr = np.clip(flat @ flat.T, 0.0, None)
    np.fill_diagonal(corr, 0.0)
    k = min(n_neighbors, len(images) - 1)
    keep = np.zeros_like(corr, dtype=bool)
    idx = np.argpartition(-corr, k - 1, axis=1)[:, :k]
    np.put_along_axis(keep, idx, True, axis=1)
    s = np.where(keep | keep.T, corr, 0.0)
    s_tilde = s @ s
    np.fill_diagonal(s_tilde, 0.0)
    return s_tilde


# --------------------------------------------------------------------------------------------
# torch parts
# --------------------------------------------------------------------------------------------


def _target_distribution(q: np.ndarray) -> np.ndarray:
    """Eq. 22 (DEC): ``p_ik ∝ q_ik^2 / f_k`` with soft cluster frequencies ``f_k = sum_i q_ik``."""
    w = q**2 / np.clip(q.sum(axis=0), 1e-12, None)
    return w / w.sum(axis=1, keepdims=True)


def _build_networks(image_size, params: dict[str, Any], device: str, token_mask: np.ndarray | None = None):
    import torch
    from torch import nn

    from ..models import SparseImageViT

    vit = SparseImageViT(image_size, patch_size=params["patch_size"], embed_dim=params["embed_dim"],
                         depth=params["depth"], num_heads=params["num_heads"], pool_grid=params["pool_grid"],
                         token_mask=None if token_mask is None else torch.as_tensor(token_mask))
    d, width = params["embed_dim"], max(params["embed_dim"], params["head_dim"])
    net = nn.ModuleDict({
        "encoder": vit,
        # g in eq. 9; the paper's linear map gets a batch-norm + ReLU hidden layer (MoCo v3 / BYOL
        # projector): centring over the batch removes the component all embeddings share at the
        # start, without which InfoNCE barely moves on a few hundred sparse images
        "proj": nn.Sequential(nn.Linear(vit.out_dim, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, d)),
        "head": nn.Sequential(nn.Linear(vit.out_dim, width), nn.BatchNorm1d(width), nn.SELU(),
                              nn.Linear(width, params["head_dim"])),  # eq. 12
    })
    net.register_parameter("log_sigma", nn.Parameter(torch.zeros(2)))  # eq. 11 noise parameters (log sigma)
    target = nn.ModuleDict({"encoder": copy.deepcopy(vit), "proj": copy.deepcopy(net["proj"])})
    for p in target.parameters():
        p.requires_grad_(False)
    return net.to(device), target.to(device)


def init_head_from_pca(head, embeddings: np.ndarray) -> None:
    """Start the projection head (eq. 12) from the principal axes of the warm-up embeddings.

    The paper does not say how the head is initialised. A random one maps the warm-up embedding
    (thousands of dimensions) to 32 by a random projection, which scrambles the structure Module I
    learned, and the mixture then fits noise (simulated gene images, 5 patterns: k-means NMI 0.84
    on the warm-up embedding, 0.21 on its random projection, 0.98 on the head started here). The
    first layer starts as the leading principal axes (remaining units keep their random init),
    batch norm's scale restores each axis's relative spread (batch norm alone would whiten, blowing
    the noise axes up to the size of the signal), and the output layer starts by passing the
    leading ``head_dim`` units through.
    """
    import torch

    first, norm, _, last = head
    centred = embeddings - embeddings.mean(axis=0)
    _, spread, axes = np.linalg.svd(centred, full_matrices=False)
    if spread[0] <= 0:  # identical embeddings: nothing to align with
        return
    r = min(first.out_features, len(spread))
    scale = np.full(first.out_features, spread[r - 1] / spread[0])
    scale[:r] = spread[:r] / spread[0]
    with torch.no_grad():
        first.weight[:r] = torch.as_tensor(axes[:r], dtype=first.weight.dtype, device=first.weight.device)
        first.bias.zero_()
        norm.weight.copy_(torch.as_tensor(scale, dtype=norm.weight.dtype))
        norm.bias.zero_()
        last.weight.copy_(torch.eye(last.out_features, last.in_features, dtype=last.weight.dtype))
        last.bias.zero_()


# --------------------------------------------------------------------------------------------
# the embedder
# --------------------------------------------------------------------------------------------


@register_embedder("darlc")
class DARLCEmbedder(ImageEmbedder):
    """DARLC embedder and clusterer of sparse, noisy feature images (Wang et al., 2024).

    Parameters
    ----------
    n_clusters
        Number of clusters of Module II, or ``"auto"``: the eigengap of the normalised Laplacian of
        the seeding similarity (eqs. 23-25, :func:`spatialclust.tl.estimate_n_clusters`), at least
        2 (with a warning when the largest gap says 1, i.e. no clear structure).
    max_clusters
        Upper bound for ``"auto"``.
    patch_size, embed_dim, depth, num_heads
        ViT encoder (paper: 4 blocks, 4 heads). Images are zero-padded to multiples of
        ``patch_size``. ``"auto"``: 4 (measured better than 8 on real ST, docs/benchmarks.md), or
        on a grid smaller than 4 px the largest size giving at
        least 2 patches per side (logged as a warning; :func:`resolve_patch_size`); the size used
        is ``patch_size_``. An explicit ``patch_size`` larger than the grid is an error.
    pool_grid
        The encoder's image representation keeps the token grid, average-pooled to at most
        ``pool_grid`` positions per side (:class:`~spatialclust.models.SparseImageViT`).
    tissue_tokens
        Only the patches that overlap the tissue mask become ViT tokens (True), or every patch of
        the padded grid (False, the paper's ViT, the default). Off-tissue patches are constant
        padding that costs attention (on the olfactory bulb 95 of 128 patches at patch 4), so True
        is 1.5-4x faster, but it lost the gene-family check on the olfactory bulb (docs/benchmarks.md,
        "DARLC tissue tokens"): a speed setting for large gene sets.
    mask_ratio
        Fraction of masked patches in the MIM branch (paper: 0.8).
    momentum
        EMA momentum of the target encoder (paper: 0.999).
    temperature
        InfoNCE temperature (paper: 0.5).
    head_dim
        Output size of the projection head (paper: 32).
    input_scaling
        How each image is scaled before the encoder: ``"zscore"`` (centred and divided by its
        standard deviation inside the mask: the geometry of Pearson correlation) or ``"max"``
        (divided by its maximum, the paper's [0, 1] scaling). The augmentation always works on the
        max-scaled images; see docs/benchmarks.md for the measured choice.
    pretrain_epochs
        Warm-up epochs of Module I (paper: 50; 0 = the "w/o pre-training" ablation), or
        ``"auto"``: 10 epochs, which on real ST gave a better embedding than the paper's 50 at a
        third of the time (gene-family check, 3 seeds; docs/benchmarks.md, "DARLC defaults on real
        ST"); the epochs used are in ``epochs_``.
    cluster_epochs
        Joint training epochs of Module I + II (paper: 50), or ``"auto"`` (as ``pretrain_epochs``).
    batch_size, lr
        Adam mini-batches and learning rate (paper: 1e-3).
    augmentation
        ``"gat"`` (paper) or ``"gaussian"`` (ablation "GAT -> GKS").
    gat_epochs, gat_hidden_dims, gat_radius
        Graph attention autoencoder training (paper: C-512-30); 100 epochs measured as good as 300
        on real ST at a third of the time.
    gaussian_sigma
        Kernel width (grid cells) of the Gaussian smoothing ablation.
    contrastive
        Use the contrastive branch (False: the "w/o CLR" ablation).
    joint_clustering
        Use Module II (False: the "w/o Module II" ablation; clusters then come from the mixture
        fitted once on the projection of the warm-up embeddings, without joint training).
    mixture
        ``"t"`` (SMM) or ``"gaussian"`` (ablation "SMM -> GMM").
    laplacian_weight, laplacian_decay
        Initial weight of the Laplacian regularisation (paper: 0.5) and its decay factor per epoch.
    min_cluster_fraction
        Hinge threshold of eq. 20 as a fraction of the uniform cluster size ``1/K``.
    seed_neighbors
        Neighbours per image in the seeding similarity.
    em_iter
        MAP-EM iterations per epoch (warm-started).
    output
        What :meth:`transform` returns: ``"encoder"`` (the pooled token grid,
        ``embed_dim * rows * cols``) or ``"projection"`` (the ``head_dim`` space the mixture clusters).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    random_state
        Seed of every random step.

    Attributes
    ----------
    labels_
        Cluster of every training image (Module II's mixture).
    n_clusters_
        Number of clusters used.
    mixture_
        The fitted :class:`~spatialclust.models.StudentMixture`.
    smoothed_
        The positive views ``(n, H, W)`` (after scaling).
    history_
        Loss values per epoch.
    epochs_
        Epochs used per stage, ``{"pretrain": int, "cluster": int}`` (``"auto"`` resolved).
    timings_
        Wall seconds of the stages: ``augmentation`` (GAT or Gaussian views), ``pretraining``
        (Module I warm-up) and ``clustering`` (head, mixture and joint training).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(int, 1), "auto"],
        "patch_size": [Interval(int, 1), "auto"],
        **{name: [Interval(int, 1)] for name in ("max_clusters", "embed_dim", "depth", "num_heads", "pool_grid",
                                                 "head_dim", "batch_size", "seed_neighbors", "em_iter")},
        "tissue_tokens": [bool],
        "mask_ratio": [Interval(float, 0, 1, closed="neither")], "momentum": [Interval(float, 0, 1, closed="left")],
        "temperature": [Interval(float, 0, closed="neither")], "lr": [Interval(float, 0, closed="neither")],
        "input_scaling": [*INPUT_SCALINGS], "pretrain_epochs": [Interval(int, 0), "auto"],
        "cluster_epochs": [Interval(int, 0), "auto"], "augmentation": [*AUGMENTATIONS], "gat_epochs": [Interval(int, 0)],
        "gat_hidden_dims": [list, tuple], "gat_radius": [Interval(float, 0, closed="neither")],
        "gaussian_sigma": [Interval(float, 0)], "contrastive": [bool], "joint_clustering": [bool], "mixture": [*MIXTURES],
        "laplacian_weight": [Interval(float, 0)], "laplacian_decay": [Interval(float, 0, 1)],
        "min_cluster_fraction": [Interval(float, 0, 1)], "output": [*OUTPUTS], "device": [str], "random_state": [RANDOM_STATE],
    }

    def __init__(
        self,
        n_clusters: int | str = "auto",
        *,
        max_clusters: int = 30,
        patch_size: int | str = "auto",
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        pool_grid: int = 8,
        tissue_tokens: bool = False,
        mask_ratio: float = 0.8,
        momentum: float = 0.999,
        temperature: float = 0.5,
        head_dim: int = 32,
        input_scaling: str = "zscore",
        pretrain_epochs: int | str = "auto",
        cluster_epochs: int | str = "auto",
        batch_size: int = 64,
        lr: float = 1e-3,
        augmentation: str = "gat",
        gat_epochs: int = 100,
        gat_hidden_dims: tuple[int, ...] = (512, 30),
        gat_radius: float = 1.5,
        gaussian_sigma: float = 1.0,
        contrastive: bool = True,
        joint_clustering: bool = True,
        mixture: str = "t",
        laplacian_weight: float = 0.5,
        laplacian_decay: float = 0.9,
        min_cluster_fraction: float = 0.5,
        seed_neighbors: int = 10,
        em_iter: int = 10,
        output: str = "encoder",
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.pool_grid = pool_grid
        self.tissue_tokens = tissue_tokens
        self.mask_ratio = mask_ratio
        self.momentum = momentum
        self.temperature = temperature
        self.head_dim = head_dim
        self.input_scaling = input_scaling
        self.pretrain_epochs = pretrain_epochs
        self.cluster_epochs = cluster_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.augmentation = augmentation
        self.gat_epochs = gat_epochs
        self.gat_hidden_dims = gat_hidden_dims
        self.gat_radius = gat_radius
        self.gaussian_sigma = gaussian_sigma
        self.contrastive = contrastive
        self.joint_clustering = joint_clustering
        self.mixture = mixture
        self.laplacian_weight = laplacian_weight
        self.laplacian_decay = laplacian_decay
        self.min_cluster_fraction = min_cluster_fraction
        self.seed_neighbors = seed_neighbors
        self.em_iter = em_iter
        self.output = output
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        super()._validate_params()
        if self.augmentation == "gat" and self.gat_epochs < 1:
            raise ValueError("`gat_epochs` must be >= 1 with augmentation='gat'.")

    def _min_images(self) -> int:
        return 3

    # ------------------------------------------------------------------ fit
    def fit(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> DARLCEmbedder:
        """Train the augmentation, Module I and (unless disabled) Module II on ``images``."""
        import torch

        from ..models import StudentMixture, gat_smooth, gaussian_smooth, optimizer_step

        arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
        self._validate_params()
        if len(arr) < self._min_images():
            raise ValueError(f"DARLC needs at least {self._min_images()} images; received {len(arr)}.")
        seed = int(self.random_state)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        device = resolve_device(self.device)
        scaled = scale_images(arr, mask)
        self.patch_size_ = resolve_patch_size(self.patch_size, scaled.shape[1:])  # before any training
        clock = time.perf_counter()
        self.timings_: dict[str, float] = {}
        if self.augmentation == "gat":
            smoothed, gat_losses = gat_smooth(scaled, mask, hidden_dims=tuple(self.gat_hidden_dims), radius=self.gat_radius,
                                              epochs=self.gat_epochs, lr=1e-3, random_state=seed, device=device)
        else:
            smoothed, gat_losses = gaussian_smooth(scaled, mask, sigma=self.gaussian_sigma), []
        smoothed = scale_images(smoothed, mask)
        self.timings_["augmentation"], clock = time.perf_counter() - clock, time.perf_counter()
        self.smoothed_ = smoothed
        self.mask_ = mask
        # standardise pixel values over the dataset (sparse images have a tiny mean intensity, which
        # would leave the patch tokens dominated by the position embedding)
        scaled, conditioned_smoothed = self._condition(scaled, mask), self._condition(smoothed, mask)
        self.pixel_mean_, self.pixel_std_ = float(scaled.mean()), float(scaled.std()) or 1.0
        x = torch.as_tensor(self._standardise(pad_to_patches(scaled, self.patch_size_))[:, None], device=device)
        xs = torch.as_tensor(self._standardise(pad_to_patches(conditioned_smoothed, self.patch_size_))[:, None], device=device)
        params = {**self.get_params(), "patch_size": self.patch_size_}
        token_mask = tissue_patches(mask, self.patch_size_) if self.tissue_tokens else None
        net, target = _build_networks(tuple(x.shape[2:]), params, device, token_mask)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
        generator = torch.Generator(device=device).manual_seed(seed)
        self.history_: dict[str, list[float]] = {"gat": gat_losses, "pretrain": [], "epoch_level": [], "batch_level": []}
        self._net, self._target, self._device = net, target, device

        n = len(x)
        self.epochs_ = {"pretrain": self._resolve_epochs(self.pretrain_epochs),
                        "cluster": self._resolve_epochs(self.cluster_epochs)}
        logger.info("DARLC: %d pre-training and %d joint clustering epochs on %d images.",
                    self.epochs_["pretrain"], self.epochs_["cluster"], n)
        for _ in progress(range(self.epochs_["pretrain"]), desc="DARLC pre-training"):
            total = 0.0
            for idx in self._batches(n, rng):
                loss = self._ssl_loss(x[idx], xs[idx], generator)
                optimizer_step(loss, optimizer, None)
                self._ema_update()
                total += float(loss.detach()) * len(idx)
            self.history_["pretrain"].append(total / n)
        self.timings_["pretraining"], clock = time.perf_counter() - clock, time.perf_counter()

        # seeding similarity (eq. 23): for the eigengap and Module II's Laplacian term, computed once
        needed = self.joint_clustering or self.n_clusters == "auto"
        similarity = seeding_similarity(smoothed, mask, n_neighbors=self.seed_neighbors) if needed else None
        k = self._resolve_k(similarity, n)
        init_head_from_pca(net["head"], self._encode(x, "encoder"))
        self.mixture_ = StudentMixture(k, distribution=self.mixture, random_state=seed).fit(self._all_projections(x))
        if self.joint_clustering:
            self._fit_module2(x, xs, similarity, optimizer, generator, rng)
        self.timings_["clustering"] = time.perf_counter() - clock
        logger.info("DARLC wall time: " + ", ".join(f"{stage} {sec:.1f} s" for stage, sec in self.timings_.items()))
        self.labels_ = self.mixture_.labels_.astype(np.int64)
        self.n_clusters_ = k
        return self

    @staticmethod
    def _resolve_epochs(value: int | str) -> int:
        """``"auto"``: :data:`AUTO_EPOCHS`."""
        return AUTO_EPOCHS if value == "auto" else int(value)

    def _condition(self, scaled: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The encoder's per-image scaling (``input_scaling``) of max-scaled images."""
        return zscore_images(scaled, mask) if self.input_scaling == "zscore" else scaled

    def _standardise(self, images: np.ndarray) -> np.ndarray:
        return ((images - self.pixel_mean_) / self.pixel_std_).astype(np.float32)

    def _batches(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(n)
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # batch norm and InfoNCE need 2+ images
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        return batches

    def _ssl_loss(self, xb, xsb, generator, h=None):
        """Eq. 11: uncertainty-weighted MIM (eq. 7) and contrastive (eq. 10) losses.

        ``h``: the encoder output of ``xb`` when the caller already has it.
        """
        import torch

        from ..models import InfoNCELoss

        net = self._net
        mim, _ = net["encoder"].mim_loss(xb, self.mask_ratio, generator)
        if not self.contrastive:
            return mim
        q1 = net["proj"](net["encoder"](xb) if h is None else h)
        q2 = net["proj"](net["encoder"](xsb))
        with torch.no_grad():
            k1 = self._target["proj"](self._target["encoder"](xsb))
            k2 = self._target["proj"](self._target["encoder"](xb))
        info_nce = InfoNCELoss(self.temperature)
        con = 0.5 * (info_nce(q1, k1) + info_nce(q2, k2))
        s2 = torch.exp(2 * net.log_sigma)
        return mim / (2 * s2[0]) + con / (2 * s2[1]) + torch.log1p(s2).sum()

    def _ema_update(self) -> None:
        """Eq. 8: target parameters follow the online ones with momentum ``m``."""
        from ..models import ema_update

        if not self.contrastive:
            return
        for part in ("encoder", "proj"):
            ema_update(self._target[part], self._net[part], self.momentum)

    def _encode(self, x, space: str, batch: int = 256) -> np.ndarray:
        import torch

        net = self._net
        net.eval()
        with torch.inference_mode():
            h = torch.cat([net["encoder"](x[i : i + batch]) for i in range(0, len(x), batch)])
            out = net["head"](h) if space == "projection" else h
        net.train()
        return out.cpu().numpy().astype(np.float64)

    def _all_projections(self, x) -> np.ndarray:
        """Projection of every image with batch-norm statistics of the whole set (no gradient)."""
        import torch

        net = self._net
        with torch.no_grad():
            h = torch.cat([net["encoder"](x[i : i + 256]) for i in range(0, len(x), 256)])
            return net["head"](h).cpu().numpy().astype(np.float64)

    def _resolve_k(self, similarity: np.ndarray | None, n: int) -> int:
        if self.n_clusters == "auto":
            k = estimate_n_clusters(similarity, affinity="precomputed", max_clusters=min(self.max_clusters, n - 1),
                                    min_clusters=2)
            logger.info("DARLC: %d clusters from the eigengap of the seeding similarity (eqs. 23-25).", k)
            return k
        if not isinstance(self.n_clusters, (int, np.integer)) or not 1 <= self.n_clusters <= n:
            raise ValueError(f"`n_clusters` must be 'auto' or an integer in [1, {n}]; received {self.n_clusters!r}.")
        return int(self.n_clusters)

    def _fit_module2(self, x, xs, similarity, optimizer, generator, rng) -> None:
        """Joint optimisation (§3.3.2), starting from the mixture fitted on the warm-up projections."""
        import torch

        from ..models import optimizer_step, t_mixture_log_prob

        net, n, mixture = self._net, len(x), self.mixture_
        k = mixture.n_components
        similarity = torch.as_tensor(similarity, dtype=torch.float32, device=self._device)
        lam = float(self.laplacian_weight)
        threshold = self.min_cluster_fraction / k
        for _ in progress(range(self.epochs_["cluster"]), desc="DARLC joint clustering"):
            z_all = self._all_projections(x)
            mixture.warm_start(z_all, n_iter=self.em_iter)
            params = self._mixture_tensors(mixture)
            q_all = mixture.predict_proba(z_all)
            p_all = torch.as_tensor(_target_distribution(q_all), dtype=torch.float32, device=self._device)
            # epoch-level loss (eq. 16), gradients accumulated over the batches, one step
            optimizer.zero_grad()
            epoch_total = 0.0
            for idx in self._batches(n, rng):
                xb = x[idx]
                z = net["head"](net["encoder"](xb))
                logp = t_mixture_log_prob(z, *params)
                # eq. 18 per embedding dimension: the summed log-likelihood of a 32-d embedding pulls
                # 32x harder than the other terms and drives the head to a degenerate, low-rank
                # embedding whose components all merge (measured: 1 of 5 clusters left after 30
                # epochs on simulated gene images; per dimension: NMI 0.98 after 30 epochs)
                loglik = torch.logsumexp(logp, dim=1).mean() / z.shape[1]
                sizes = torch.softmax(logp, dim=1).mean(dim=0)
                hinge = torch.relu(np.log(threshold) - torch.log(sizes + 1e-12)).sum()  # eq. 20
                zn = torch.nn.functional.normalize(z, dim=1)
                s = similarity[idx][:, idx]
                lap = (s * torch.cdist(zn, zn) ** 2).sum() / s.sum().clamp_min(1e-12)  # eq. 17
                mim, _ = net["encoder"].mim_loss(xb, self.mask_ratio, generator)
                loss = -loglik + lam * lap + hinge + mim
                (loss * len(idx) / n).backward()
                epoch_total += float(loss.detach()) * len(idx) / n
            optimizer.step()
            self.history_["epoch_level"].append(epoch_total)
            # batch-level loss (eq. 21)
            batch_total = 0.0
            for idx in self._batches(n, rng):
                h = net["encoder"](x[idx])
                log_q = torch.log_softmax(t_mixture_log_prob(net["head"](h), *params), dim=1)
                p = p_all[idx]
                kl = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=1).mean()
                loss = kl + self._ssl_loss(x[idx], xs[idx], generator, h=h)
                optimizer_step(loss, optimizer, None)
                self._ema_update()
                batch_total += float(loss.detach()) * len(idx) / n
            self.history_["batch_level"].append(batch_total)
            lam *= self.laplacian_decay
        mixture.warm_start(self._all_projections(x), n_iter=self.em_iter)

    def _mixture_tensors(self, mixture):
        import torch

        dev = self._device
        return (torch.as_tensor(mixture.means_, dtype=torch.float32, device=dev),
                torch.as_tensor(np.linalg.cholesky(mixture.covariances_), dtype=torch.float32, device=dev),
                mixture.dof_.copy(),
                torch.as_tensor(np.log(mixture.weights_), dtype=torch.float32, device=dev))

    # ------------------------------------------------------------------ transform
    def _prepare(self, images: np.ndarray, mask: np.ndarray | None, pixel_size: float | None):
        """Scaled, padded, standardised ``(n, 1, H, W)`` tensor of new images on the training grid."""
        import torch

        if not hasattr(self, "_net"):
            raise RuntimeError("This DARLCEmbedder is not fitted yet; call `fit` first.")
        arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
        scaled = pad_to_patches(self._condition(scale_images(arr, mask), mask), self.patch_size_)
        expected = tuple(self._net["encoder"].grid[i] * self.patch_size_ for i in range(2))
        if scaled.shape[1:] != expected:
            raise ValueError(f"`images` must have the training grid size; padded shape {scaled.shape[1:]} != {expected}.")
        return torch.as_tensor(self._standardise(scaled)[:, None], device=self._device)

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Embed ``images`` with the trained encoder (``output="encoder"``) or projection head."""
        return self._encode(self._prepare(images, mask, pixel_size), self.output).astype(np.float32)

    def predict(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Module II cluster of each of ``images`` (MAP component of the fitted mixture)."""
        return self.mixture_.predict(self._encode(self._prepare(images, mask, pixel_size), "projection")).astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model as a checkpoint directory (safetensors + config.json, atomic).

        It holds the encoder, both heads, the mixture and the pixel scaling: enough for
        :meth:`from_checkpoint` to embed and cluster new images of the same grid without training.
        """
        import torch

        from ..models import save_checkpoint

        if not hasattr(self, "_net"):
            raise RuntimeError("This DARLCEmbedder is not fitted yet; call `fit` first.")
        state = {f"net.{k}": v for k, v in self._net.state_dict().items()}
        state.update({f"mixture.{name}": torch.as_tensor(np.asarray(getattr(self.mixture_, name), dtype=np.float64))
                      for name in MIXTURE_TENSORS})
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        config = {
            "architecture": {**{k: params[k] for k in ARCHITECTURE}, "patch_size": self.patch_size_,
                             "image_size": [g * self.patch_size_ for g in self._net["encoder"].grid]},
            "preprocessing": {"pixel_mean": self.pixel_mean_, "pixel_std": self.pixel_std_,
                              "input": f"feature images scaled per image inside the mask ({self.input_scaling}), zero-padded to the patch grid"},
            "params": params,
        }
        training = {"history": self.history_, "n_clusters": int(self.n_clusters_), "mixture": self.mixture_.distribution,
                    "labels": self.labels_.tolist()}
        return save_checkpoint(path, state, config, kind=CHECKPOINT_KIND, training=training)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "auto") -> DARLCEmbedder:
        """A fitted embedder from a checkpoint written by :meth:`save`."""
        from ..models import CheckpointError, StudentMixture, load_checkpoint

        state, config = load_checkpoint(path, kind=CHECKPOINT_KIND)
        params = {k: v for k, v in config["params"].items() if k != "device"}
        if isinstance(params.get("gat_hidden_dims"), list):
            params["gat_hidden_dims"] = tuple(params["gat_hidden_dims"])
        params.setdefault("input_scaling", "max")  # checkpoints written before the options existed
        params.setdefault("tissue_tokens", False)
        model = cls(**params, device=device)
        model._device = resolve_device(device)
        model.pixel_mean_ = float(config["preprocessing"]["pixel_mean"])
        model.pixel_std_ = float(config["preprocessing"]["pixel_std"])
        image_size = tuple(config["architecture"]["image_size"])
        model.patch_size_ = int(config["architecture"]["patch_size"])
        model._net, _ = _build_networks(image_size, {**model.get_params(), "patch_size": model.patch_size_}, model._device)
        net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        net_state.setdefault("encoder.token_mask", model._net["encoder"].token_mask)  # before tissue tokens: all
        try:
            model._net.load_state_dict(net_state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"Checkpoint {str(path)!r} does not fit the DARLC architecture: {err}") from err
        training = config["training"]
        mixture = StudentMixture.from_parameters(
            *(state[f"mixture.{name}"].cpu().numpy() for name in MIXTURE_TENSORS), distribution=training["mixture"],
            labels=training["labels"],
        )
        model.mixture_, model.labels_, model.n_clusters_ = mixture, mixture.labels_, mixture.n_components
        model.history_ = training["history"]
        return model
