"""SimCLR embedder: contrastive re-training of a CNN encoder on the ion images of one dataset.

Step 1 of the self-supervised clustering of Hu, Padmakumar Bindu & Laskin (2022), "Self-supervised
clustering of mass spectrometry imaging data using contrastive learning", Chem. Sci. 13, 90
(seed 001). The training code only combines parts: backbone, projection head, NT-Xent loss,
ion-image views, checkpoints and the torch training helpers, all from :mod:`spatialclust.models`.

PyTorch and the model parts are imported inside the functions, so ``import spatialclust`` stays light.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._compat import resolve_device
from .._compute import scratch_dir
from .._logging import logger, progress
from .._validation import GEOMETRY_CONSTRAINTS, NON_NEGATIVE, POSITIVE, SEED, Check, Interval, augmentation_strength, check_range, validate_params
from ..pp import CONDITIONING_CONSTRAINTS, FeatureImageBatches
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
from ._training import resolve_batch_size

__all__ = [
    "CHECKPOINT_KIND",
    "SimCLREmbedder",
    "resolve_image_size",
]

CHECKPOINT_KIND = "simclr"
#: Epochs of ``epochs="auto"``: the paper's 50 on a GPU, fewer on a CPU (see docs/methods.md).
PAPER_EPOCHS = 50
CPU_EPOCHS = 40
#: Largest input side of ``image_size="auto"`` on a CPU (the paper fed its 96 px images natively).
CPU_MAX_SIDE = 128
GPU_MAX_SIDE = 224
#: ``image_size``: a side in pixels, ``"auto"`` or None (native size).
IMAGE_SIZE = [Interval(int, 1), "auto", None]


def resolve_image_size(image_size: int | str | None, shape: tuple[int, int], device: str, *, min_size: int) -> int:
    """Input side for images of ``shape``: ``"auto"`` = native side, capped at 128 px on CPU / 224 px on GPU."""
    native = max(shape)
    if image_size is None:
        side = native
    elif image_size == "auto":
        side = min(native, CPU_MAX_SIDE if device == "cpu" else GPU_MAX_SIDE)
    else:
        validate_params({"image_size": image_size}, {"image_size": IMAGE_SIZE})
        side = int(image_size)
    return max(side, min_size)


@register_embedder("simclr")
class SimCLREmbedder(ImageEmbedder):
    """Contrastive (SimCLR) re-training of a pretrained CNN on the ion images of one dataset.

    Each mini-batch of ``N`` ion images is augmented twice with appearance-changing transforms
    (Gaussian blur, Gaussian noise, intensity distortion); the encoder and a projection head are
    trained with the NT-Xent loss to map the two views of an image together and away from the
    ``2(N - 1)`` other views (Hu et al. 2022, Chem. Sci. 13, 90, seed 001; Chen et al. 2020). The
    representation of an image is the encoder output (before the projection head) of the
    un-augmented image, post-processed (``postprocess``; by default L2, PCA to 50, L2).

    Parameters
    ----------
    backbone
        Registered backbone (:func:`spatialclust.models.list_backbones`). The paper used ImageNet
        EfficientNet-B0 (``"efficientnet_b0"``, downloads weights); the offline default is
        ImageNet EfficientNet-Lite0.
    pretrained, weights
        Start from the backbone's published weights, or from a local weight file.
    epochs
        Training epochs; ``"auto"`` = 50 on a GPU (paper) and 40 on a CPU (logged; see
        docs/methods.md for the measured effect).
    batch_size
        Images per mini-batch ``N``; ``"auto"`` = half the images (at most 256), so an epoch is two
        steps as in the authors' code (183 of 367 images). A number larger than the data is capped
        (logged).
    lr, weight_decay
        AdamW learning rate (1e-3 as in the authors' code) and weight decay; the learning rate
        follows a cosine schedule over ``epochs``.
    temperature
        NT-Xent temperature (0.5 as in the authors' code).
    projection_dim, hidden_dim
        Output and hidden width of the projection head (1024 and the encoder width, as in the
        authors' code).
    image_size
        Input side in pixels; ``"auto"`` = the images' native side capped at 128 px on a CPU and
        224 px on a GPU; None = native side.
    augmentation
        Strength of the appearance augmentations: ``"medium"`` (the authors' SimCLR view: blur
        sigma 0.01-0.75 px, brightness/contrast +-50%, noise sigma up to 0.2, always applied),
        ``"weak"``, ``"strong"``, or a mapping of the parameters
        (:func:`spatialclust.models.augmentation_strength`).
    blur, noise, intensity
        Appearance augmentations (all on, as in the paper).
    rotation, translation, resized_crop
        Optional geometric augmentations (off; strong geometric changes hurt in the paper):
        largest angle in degrees, largest shift as a fraction of the side, and a 0.8-0.9 area crop.
    abundance_views, abundance_counts
        Probability that a view is drawn from a new acquisition of the image at lower abundance:
        the image before conditioning is Poisson-resampled at ``c`` counts at its maximum (``c``
        log-uniform in ``abundance_counts``, :class:`~spatialclust.models.RandomCountThinning`) and
        then conditioned, so the two views of an ion can differ as an ion and its weak isotope
        partner do (counting noise, hot pixels, what the conditioning makes of them). Each view
        is resampled independently. Not in the paper; the defaults (0.5, counts 10-100) are the
        measured winners on the realistic simulator (5 seeds: ACC up with every clusterer, e.g.
        spectral + self-labeling 0.705 against 0.661 without) and on the real bladder's weak
        partners (docs/benchmarks.md); 0 = off (the paper's views). Counts down to 1 find weak
        partners better still but cost ACC. The thinning of ``augmentation={"counts": ...}`` acts
        on the conditioned image instead.
    denoise, denoise_size, clip_percentile, contrast
        Conditioning of every image (:func:`spatialclust.pp.condition_images`: ``denoise``
        ``"gaussian"`` / ``"median"`` / None with ``denoise_size`` px, hot-spot clipping at the
        ``clip_percentile``-th percentile, ``contrast`` ``"minmax"`` / ``"rank"`` / None), the same
        arguments as the ``regular`` and ``neural`` embedders. Applied once to the images before the
        views are drawn, again to the images of :meth:`transform` and of self-labeling, and recorded
        in the checkpoint, so a saved model conditions its inputs the same way. Default: Gaussian
        3 px, clip at the 99th percentile, min-max, which measured best on the realistic simulator
        (SimCLR + SC + self-labeling ACC 0.61 against 0.49 unconditioned at 40 + 10 epochs, 3 seeds;
        docs/benchmarks.md, "Input conditioning"); all three None feeds the images as given, as the
        paper.
    postprocess, n_components
        Post-processing of the encoder features (:func:`spatialclust.tl.postprocess_vectors`):
        ``"pca_l2"`` (default: unit length, PCA to ``n_components`` = 50 fitted on the images of
        :meth:`fit`, unit length again), ``"l2"``, ``"pca_whiten"`` or None (the encoder output as the paper
        clusters it). With ``self_label`` the initial spectral clustering is done on the
        post-processed SimCLR features, and the PCA is fitted again on the features of the
        fine-tuned encoder. The PCA is not part of the checkpoint: :meth:`from_checkpoint` fits it
        on the images of its first :meth:`transform` (logged), or call :meth:`fit` with the images.
    checkpoint
        Directory of a checkpoint. If it holds a finished training of a matching model, it is
        loaded instead of training; an unfinished one is resumed (``resume=True``); otherwise a
        new training is written there after every ``save_every`` epochs.
    resume
        Continue an unfinished training found in ``checkpoint`` (False: start over and replace it).
    save_every
        Checkpoint interval in epochs.
    device
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...
    mixed_precision
        bfloat16/float16 autocast on CUDA (ignored elsewhere).
    seed
        Seed of the weight initialisation of the head, the batch order and every augmentation.
    self_label
        After SimCLR, also run steps 2-3 of the paper (spectral clustering of the representation into
        ``n_clusters`` on a 10-NN graph, then :class:`~spatialclust.tl.SelfLabelingClassifier` with
        ``self_label_params``); :meth:`transform` then returns the features of the fine-tuned encoder
        and the classifier's clusters are in ``labels_``. This is how ``spatialclust run`` uses
        self-labeling (``embedding: [{method: simclr, params: {self_label: true}}]``).
    n_clusters
        Clusters of the initial spectral clustering when ``self_label`` (``"auto"``: eigengap).
    self_label_params
        Parameters of the :class:`~spatialclust.tl.SelfLabelingClassifier` (``threshold``, ``epochs``, ...).

    Attributes
    ----------
    model_ : spatialclust.models.SimCLRModel
        The trained encoder and projection head (on ``device_``).
    history_ : list of dict
        ``{"epoch", "loss", "seconds"}`` of every epoch trained or found in the checkpoint.
    image_size_ : int
        Input side used.
    epochs_ : int
        Number of epochs the model was trained for.
    checkpoint_ : str or None
        Checkpoint directory written or loaded.
    device_ : str
    n_features_out_ : int
        Dimension of the representation (after the post-processing).
    pca_ : sklearn.decomposition.PCA or None
        The PCA of ``postprocess="pca_l2"`` / ``"pca_whiten"`` (None otherwise, or not yet fitted).
    self_labeling_ : SelfLabelingClassifier or None
        With ``self_label=True``: the fitted self-labeling model (None when the initial spectral
        clustering found a single cluster, so there was nothing to self-label).
    labels_ : ndarray
        With ``self_label=True``: the final cluster of every image.

    Examples
    --------
    >>> import spatialclust as sc
    >>> sc.tl.embed(adata, method="simclr", checkpoint="simclr_ckpt")  # doctest: +SKIP
    >>> adata.varm["X_simclr"].shape  # doctest: +SKIP
    (400, 1280)
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "backbone": [str], "pretrained": [bool], "weights": [str, os.PathLike, None],
        "epochs": [Interval(int, 1, description="an integer >= 1"), "auto"], "batch_size": [Interval(int, 2), "auto"],
        "lr": [POSITIVE], "weight_decay": [NON_NEGATIVE], "temperature": [POSITIVE], "projection_dim": [Interval(int, 1)],
        "hidden_dim": [Interval(int, 1), None], "image_size": IMAGE_SIZE,
        "augmentation": [Check(augmentation_strength)], "blur": [bool], "noise": [bool], "intensity": [bool],
        **GEOMETRY_CONSTRAINTS, "abundance_views": [Interval(float, 0, 1, description="a probability in [0, 1]")],
        "abundance_counts": [Check(partial(check_range, name="abundance_counts", low=1e-3))],
        "checkpoint": [str, os.PathLike, None], "resume": [bool], "save_every": [Interval(int, 1)], "device": [str],
        "mixed_precision": [bool], "seed": [SEED], "self_label": [bool], "n_clusters": [Interval(int, 1), "auto"],
        "self_label_params": [dict, None], "postprocess": [*POSTPROCESSING, None], "n_components": [Interval(int, 1)],
        **CONDITIONING_CONSTRAINTS,
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        pretrained: bool = True,
        weights: str | None = None,
        epochs: int | str = "auto",
        batch_size: int | str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        temperature: float = 0.5,
        projection_dim: int = 1024,
        hidden_dim: int | None = None,
        image_size: int | str | None = "auto",
        augmentation: str | dict[str, Any] = "medium",
        blur: bool = True,
        noise: bool = True,
        intensity: bool = True,
        rotation: float = 0.0,
        translation: float = 0.0,
        resized_crop: bool = False,
        abundance_views: float = 0.5,
        abundance_counts: tuple[float, float] = (10.0, 100.0),
        denoise: str | None = "gaussian",
        denoise_size: float = 3.0,
        clip_percentile: float | None = 99.0,
        contrast: str | None = "minmax",
        postprocess: str | None = "pca_l2",
        n_components: int = 50,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = True,
        save_every: int = 1,
        device: str = "auto",
        mixed_precision: bool = True,
        seed: int = 0,
        self_label: bool = False,
        n_clusters: int | str = "auto",
        self_label_params: dict[str, Any] | None = None,
    ) -> None:
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.image_size = image_size
        self.augmentation = augmentation
        self.blur = blur
        self.noise = noise
        self.intensity = intensity
        self.rotation = rotation
        self.translation = translation
        self.resized_crop = resized_crop
        self.abundance_views = abundance_views
        self.abundance_counts = abundance_counts
        self.denoise = denoise
        self.denoise_size = denoise_size
        self.clip_percentile = clip_percentile
        self.contrast = contrast
        self.postprocess = postprocess
        self.n_components = n_components
        self.checkpoint = checkpoint
        self.resume = resume
        self.save_every = save_every
        self.device = device
        self.mixed_precision = mixed_precision
        self.seed = seed
        self.self_label = self_label
        self.n_clusters = n_clusters
        self.self_label_params = self_label_params

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **params: Any) -> SimCLREmbedder:
        """A fitted embedder from a finished checkpoint, with the architecture the checkpoint records.

        ``params`` override other settings (e.g. ``device``).
        """
        from ..models import load_checkpoint

        _, config = load_checkpoint(path, kind=CHECKPOINT_KIND)
        arch, prep = config["architecture"], config["preprocessing"]
        conditioning = prep.get("conditioning") or {"denoise": None, "clip_percentile": None, "contrast": None}
        embedder = cls(
            arch["backbone"], projection_dim=arch["projection_dim"], hidden_dim=arch["hidden_dim"],
            image_size=prep["image_size"], epochs=int(config["training"]["epochs"]), checkpoint=path,
            **{**conditioning, **params},
        )
        embedder._load_finished(Path(path))
        return embedder

    def _architecture(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "projection_dim": int(self.projection_dim), "hidden_dim": self.hidden_dim}

    def _build_model(self, *, from_checkpoint: bool) -> Any:
        import torch

        from ..models import ProjectionHead, SimCLRModel, create_backbone

        if from_checkpoint:  # weights come from the checkpoint: do not fetch pretrained ones
            encoder = create_backbone(self.backbone, pretrained=False, random_init=True)
        else:
            encoder = create_backbone(self.backbone, pretrained=self.pretrained, weights=self.weights)
        torch.manual_seed(self.seed)
        head = ProjectionHead(encoder.config.num_features, self.hidden_dim, self.projection_dim)
        return SimCLRModel(encoder, head)

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.self_label:  # the parameters of step 2 too, so that they fail before step 1 trains
            from ._self_label import SelfLabelingClassifier

            SelfLabelingClassifier(self, **(self.self_label_params or {}))._validate_params()

    def _resolve_epochs(self) -> int:
        if self.epochs != "auto":
            return int(self.epochs)
        if self.device_ == "cpu":
            logger.info(
                "SimCLR on a CPU: training %d epochs instead of the paper's %d (epochs='auto'); pass epochs=%d "
                "for the paper's setting.", CPU_EPOCHS, PAPER_EPOCHS, PAPER_EPOCHS,
            )
            return CPU_EPOCHS
        return PAPER_EPOCHS

    def _checkpoint_config(self) -> dict[str, Any]:
        cfg = self.model_.encoder.config
        return {
            "architecture": {**self._architecture(), "num_features": cfg.num_features},
            "preprocessing": {
                "image_size": self.image_size_, "mean": list(cfg.mean), "std": list(cfg.std), "in_chans": cfg.in_chans,
                "input": "grayscale ion images in [0, 1], replicated to 3 channels",
                "conditioning": conditioning_params(self),
            },
            "params": {
                "lr": self.lr, "weight_decay": self.weight_decay, "temperature": self.temperature,
                "batch_size": self.batch_size, "seed": self.seed, "augmentation": self.augmentation, "blur": self.blur, "noise": self.noise,
                "intensity": self.intensity, "rotation": self.rotation, "translation": self.translation,
                "resized_crop": self.resized_crop, "abundance_views": self.abundance_views,
                "abundance_counts": list(self.abundance_counts), "pretrained": self.pretrained,
            },
        }

    def _expected(self) -> dict[str, Any]:
        expected: dict[str, Any] = {"architecture": self._architecture()}
        if self.image_size not in ("auto", None):
            expected["preprocessing"] = {"image_size": int(self.image_size)}
        return expected

    def _check_conditioning(self, config: dict[str, Any], path: Path) -> None:
        """A checkpoint is only used on images conditioned as the ones it was trained on."""
        from ..models import CheckpointError

        saved = config["preprocessing"].get("conditioning")  # absent: written before conditioning existed, none
        if saved != conditioning_params(self):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} was trained on images conditioned with {saved!r}; this embedder conditions "
                f"them with {conditioning_params(self)!r}. Pass the checkpoint's `denoise`, `denoise_size`, "
                "`clip_percentile` and `contrast`, or another checkpoint directory."
            )

    def condition(self, images: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
        """``images`` with this embedder's conditioning (:func:`spatialclust.pp.condition_images`),
        or as given when it has none; float32 ``(n_images, H, W)``."""
        conditioning = conditioning_params(self)
        if conditioning is None:
            return images
        from ..pp import condition_images

        return condition_images(images, mask=mask, **conditioning)

    def _load_finished(self, path: Path) -> None:
        from ..models import load_checkpoint

        self.device_ = resolve_device(self.device)
        state, config = load_checkpoint(path, kind=CHECKPOINT_KIND, expected=self._expected())
        self._check_conditioning(config, path)
        self.model_ = self._build_model(from_checkpoint=True)
        self._load_state(state, path)
        self.image_size_ = int(config["preprocessing"]["image_size"])
        self.history_ = list(config["training"].get("history", []))
        self.epochs_ = int(config["training"]["epoch"])
        self.checkpoint_ = str(path)
        self.n_features_out_ = self.model_.encoder.config.num_features
        self.pca_ = None
        self.model_.to(self.device_)

    def _load_state(self, state: dict[str, Any], path: Path) -> None:
        from ..models import CheckpointError

        try:
            self.model_.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"Checkpoint {str(path)!r} does not fit the model architecture: {err}") from err

    # ------------------------------------------------------------------ training

    def fit(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> SimCLREmbedder:
        """Train the encoder on ``images`` (or load/resume ``checkpoint``), then self-label if asked.

        Parameters
        ----------
        images
            float32 ``(n_images, H, W)`` in [0, 1], at least 2 images.
        mask
            Tissue mask ``(H, W)``; off-tissue pixels are zeroed in every view.
        pixel_size
            Unused (accepted for the embedder interface).
        """
        self.fit_transform(images, mask=mask, pixel_size=pixel_size)
        return self

    def fit_transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit`, returning the post-processed features of ``images`` that the fit computed."""
        self._fit_simclr(images, mask=mask, pixel_size=pixel_size)
        self.self_labeling_ = None
        vectors = self._fit_postprocessing(self._encoder_features(images, mask=mask))
        if self.self_label:
            from ._self_label import SelfLabelingClassifier, initial_clusterer

            init = initial_clusterer(self.n_clusters, random_state=self.seed).fit(vectors).labels_
            if np.unique(init[init >= 0]).size < 2:  # tiny or structureless data: nothing to self-label
                logger.warning("The spectral clustering of the SimCLR features found a single cluster; self-labeling "
                               "is skipped and every image keeps that cluster.")
                self.labels_ = init
                return vectors
            params = {"seed": self.seed, "device": self.device, **(self.self_label_params or {})}
            self.self_labeling_ = SelfLabelingClassifier(self, **params).fit(images, init, mask=mask)
            self.labels_ = self.self_labeling_.labels_
            vectors = self._fit_postprocessing(self._encoder_features(images, mask=mask))  # on the fine-tuned encoder
        return vectors

    def _fit_postprocessing(self, features: np.ndarray) -> np.ndarray:
        """Fit the post-processing on the encoder features of every image; the features post-processed."""
        self.pca_ = fit_postprocessing(features, self.postprocess, self.n_components)
        self.n_features_out_ = int(features.shape[1] if self.pca_ is None else self.pca_.n_components_)
        return postprocess_vectors(features, self.postprocess, self.pca_)

    def _fit_simclr(self, images: np.ndarray | FeatureImageBatches, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> SimCLREmbedder:
        """Step 1: train the encoder on ``images`` (or load/resume ``checkpoint``)."""
        import torch

        from ..models import NTXentLoss, RandomCountThinning, autocast_context, load_checkpoint, load_optimizer_state, simclr_views

        if isinstance(images, FeatureImageBatches):
            _, mask = check_images(images.load(slice(0, 1)), mask=mask, pixel_size=pixel_size)
            n_images, shape = images.n_images, images.shape
        else:
            arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
            n_images, shape = arr.shape[0], arr.shape[1:]
        self._validate_params()
        if n_images < 2:
            raise ValueError(
                f"`images` holds {n_images} image; SimCLR needs at least 2 (the other images of a batch are the negatives)."
            )
        self.device_ = resolve_device(self.device)
        path = Path(self.checkpoint) if self.checkpoint is not None else None
        start_epoch = 0
        saved: dict[str, Any] | None = None
        if path is not None and path.exists():
            state, saved = load_checkpoint(path, kind=CHECKPOINT_KIND, expected=self._expected())
            self._check_conditioning(saved, path)
            if not self.resume:
                logger.info("`resume=False`: retraining and replacing the checkpoint %s.", path)
                saved = None
        epochs = self._resolve_epochs()
        if saved is not None and int(saved["training"]["epoch"]) >= epochs and saved["training"].get("complete", False):
            logger.info("Loaded the finished SimCLR training from %s (%d epochs).", path, saved["training"]["epoch"])
            self._load_finished(path)
            return self
        self.model_ = self._build_model(from_checkpoint=saved is not None)
        self.image_size_ = resolve_image_size(
            self.image_size if saved is None else int(saved["preprocessing"]["image_size"]),
            shape, self.device_, min_size=self.model_.encoder.config.min_size,
        )
        self.model_.to(self.device_)
        if self.device_ == "cpu":
            self.model_.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        self.history_ = []
        if saved is not None:
            self._load_state(state, path)
            optimizer.load_state_dict(load_optimizer_state(path, saved))
            scheduler.load_state_dict(saved["training"]["scheduler"])
            scheduler.T_max = epochs  # the requested length, also when extending a finished training
            self.history_ = list(saved["training"].get("history", []))
            start_epoch = int(saved["training"]["epoch"])
            logger.info("Resuming SimCLR training from %s at epoch %d of %d.", path, start_epoch, epochs)
        views = simclr_views(
            strength=self.augmentation, blur=self.blur, noise=self.noise, intensity=self.intensity, rotation=self.rotation,
            translation=self.translation, resized_crop=self.resized_crop,
            mask=None if mask is None else torch.as_tensor(mask),
        ).to(self.device_)
        criterion = NTXentLoss(self.temperature)
        batch_size = resolve_batch_size(self.batch_size, n_images)
        # conditioned once before any view is drawn, unless abundance views resample the images before conditioning
        condition = partial(self.condition, mask=mask)
        prepare = (lambda batch: batch) if self.abundance_views else condition
        if isinstance(images, FeatureImageBatches):  # to a temporary file read by mini-batch
            data = _TrainingImages(n_images, _ImageFile(images, prepare), self.device_)
        else:
            prepared = torch.from_numpy(prepare(arr)).to(self.device_)
            data = _TrainingImages(n_images, lambda idx: prepared[idx.to(prepared.device)], self.device_)
        if self.abundance_views:
            views = _AbundanceViews(views, RandomCountThinning(self.abundance_counts, p=self.abundance_views), condition)
        autocast, scaler = autocast_context(self.device_, self.mixed_precision)
        bar = progress(range(start_epoch, epochs), desc="SimCLR", total=epochs - start_epoch, leave=False)
        try:
            for epoch in bar:
                start = time.perf_counter()
                loss = self._train_epoch(data, epoch, views, criterion, optimizer, batch_size, autocast, scaler)
                scheduler.step()
                self.history_.append({"epoch": epoch + 1, "loss": loss, "seconds": round(time.perf_counter() - start, 3)})
                bar.set_postfix(loss=f"{loss:.4f}")
                logger.info("SimCLR epoch %d/%d: loss %.4f", epoch + 1, epochs, loss)
                if path is not None and ((epoch + 1) % self.save_every == 0 or epoch + 1 == epochs):
                    self._save(path, optimizer, scheduler, epoch + 1, epochs)
        finally:
            data.close()
        self.epochs_ = epochs
        self.checkpoint_ = None if path is None else str(path)
        self.n_features_out_ = self.model_.encoder.config.num_features
        return self

    def _train_epoch(self, data: _TrainingImages, epoch, views, criterion, optimizer, batch_size, autocast, scaler) -> float:
        """One pass over the images in a seeded random order; returns the mean loss."""
        import torch

        from ..models import channels_last, optimizer_step

        self.model_.train()
        generator = torch.Generator().manual_seed(int(self.seed) * 100_003 + epoch)
        order = torch.randperm(data.n_images, generator=generator)
        losses = []
        for start in range(0, data.n_images, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:  # a single left-over image has no negatives
                continue
            batch = data.batch(idx)
            view0, view1 = views(batch, generator=generator)
            x = channels_last(self.model_.encoder.preprocess(torch.cat([view0, view1]), size=self.image_size_))
            with autocast:
                _, z = self.model_(x)
            loss = criterion(*z.float().chunk(2))
            optimizer_step(loss, optimizer, scaler)
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    def _save(self, path: Path, optimizer, scheduler, epoch: int, epochs: int) -> None:
        from ..models import save_checkpoint

        save_checkpoint(
            path, self.model_.state_dict(), self._checkpoint_config(), kind=CHECKPOINT_KIND,
            optimizer_state=optimizer.state_dict(),
            training={"epoch": epoch, "epochs": epochs, "complete": epoch >= epochs, "history": self.history_,
                      "scheduler": scheduler.state_dict()},
        )
        logger.debug("Saved SimCLR checkpoint (epoch %d) to %s.", epoch, path)

    def fit_transform_batches(self, batches: FeatureImageBatches, *, mask: np.ndarray | None = None,
                              pixel_size: float | None = None) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on images given a batch at a time (e.g. over a chunked ``X``).

        The images are conditioned once, a batch at a time, into a temporary file (dask's ``temporary-directory``, else ``TMPDIR``;
        ``n_images x H x W x 4`` bytes) from which every training mini-batch reads its images, so
        one mini-batch is held at a time; the features are computed batch by batch (on the workers
        of a ``dask.distributed`` cluster when one is active, the trained encoder sent to each
        once). Same seed, same vectors as on the whole stack. With ``self_label=True`` the
        self-labeling steps need every image at once: the stack is built from the batches (logged).
        """
        if self.self_label:
            return super().fit_transform_batches(batches, mask=mask, pixel_size=pixel_size)
        self._fit_simclr(batches, mask=mask, pixel_size=pixel_size)
        self.self_labeling_ = None
        mask = None if mask is None else np.asarray(mask, dtype=bool)
        return self._fit_postprocessing(np.concatenate(map_image_batches(self._encoder_features, batches, mask=mask)))

    # ------------------------------------------------------------------ inference

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Post-processed encoder features ``(n_images, n_features_out_)`` of the un-augmented
        images (of the self-labeled encoder when ``self_label=True``)."""
        features = self._encoder_features(images, mask=mask, pixel_size=pixel_size)
        if getattr(self, "pca_", None) is None and self.postprocess in PCA_POSTPROCESSING:
            logger.info("Fitting the `postprocess=%r` PCA of the SimCLR features on the %d images given to `transform` "
                        "(it is not part of a checkpoint).", self.postprocess, features.shape[0])
            return self._fit_postprocessing(features)
        return postprocess_vectors(features, self.postprocess, getattr(self, "pca_", None))

    def _encoder_features(self, images: np.ndarray, *, mask: np.ndarray | None = None,
                          pixel_size: float | None = None) -> np.ndarray:
        """Encoder output ``(n_images, n_features)`` before any post-processing."""
        if not hasattr(self, "model_"):
            raise RuntimeError("This SimCLREmbedder is not fitted yet; call `fit` first.")
        if self.self_label and getattr(self, "self_labeling_", None) is not None:
            return self.self_labeling_.transform(images, mask=mask)
        from ..models import encode

        arr, mask = check_images(images, mask=mask, pixel_size=pixel_size)
        return encode(self.model_.encoder, self.condition(arr, mask=mask), image_size=self.image_size_, device=self.device_, mask=mask)


class _ImageFile:
    """The conditioned images of a :class:`~spatialclust.pp.FeatureImageBatches`, written once
    (image-major float32, one batch at a time) to an anonymous temporary file (in dask's
    ``temporary-directory``, else ``TMPDIR``; deleted when closed) and read back by index (``load(idx)``): SimCLR's random mini-batches then
    read their own images only, where from the m/z-chunked store every mini-batch would read most
    of the chunks, and only a mini-batch is in memory. ``n_images x H x W x 4`` bytes on disk."""

    def __init__(self, batches: FeatureImageBatches, condition: Any) -> None:
        import tempfile

        self.shape = tuple(batches.shape)
        self._file = tempfile.TemporaryFile(prefix="spatialclust-simclr-", dir=scratch_dir())
        for images in progress(batches, desc="SimCLR images to a temporary file", total=len(batches)):
            self._file.write(memoryview(np.ascontiguousarray(condition(images), dtype=np.float32)).cast("B"))
        self._file.flush()

    def __call__(self, idx: Any) -> np.ndarray:
        size = 4 * self.shape[0] * self.shape[1]
        out = np.empty((len(idx), *self.shape), dtype=np.float32)
        for i, j in enumerate(np.asarray(idx)):
            out[i] = np.frombuffer(os.pread(self._file.fileno(), size, int(j) * size), dtype=np.float32).reshape(self.shape)
        return out

    def close(self) -> None:
        """Delete the file."""
        self._file.close()


class _AbundanceViews:
    """SimCLR's two views of images given before conditioning: each view is, independently, the
    image or its count-thinned resampling (``thinning``), conditioned (``condition``, numpy in and
    out) and then augmented by its transform of ``views``."""

    def __init__(self, views: Any, thinning: Any, condition: Any) -> None:
        self.views, self.thinning, self.condition = views, thinning, condition

    def __call__(self, images: Any, *, generator: Any = None) -> list[Any]:
        import torch

        out = []
        for transform in self.views.transforms:
            resampled = self.thinning(images.cpu(), generator=generator)
            conditioned = torch.from_numpy(self.condition(resampled.numpy()))
            out.append(transform(conditioned.to(images.device), generator=generator))
        return out


class _TrainingImages:
    """The (conditioned) training images of :class:`SimCLREmbedder`: ``batch(idx)`` gives the images
    ``idx`` (a CPU index tensor) as a float32 tensor ``(len(idx), H, W)`` on ``device``."""

    def __init__(self, n_images: int, load: Any, device: str) -> None:
        self.n_images = n_images
        self._load = load
        self._device = device

    def batch(self, idx: Any) -> Any:
        import torch

        images = self._load(idx)
        return (torch.from_numpy(images) if isinstance(images, np.ndarray) else images).to(self._device)

    def close(self) -> None:
        """Release what holds the images (the temporary file of a chunked ``X``)."""
        if hasattr(self._load, "close"):
            self._load.close()
