"""Self-labeling: fine-tune the SimCLR encoder and a linear classifier on confidently classified images.

Steps 2-3 of the self-supervised clustering of Hu, Padmakumar Bindu & Laskin (2022), Chem. Sci.
13, 90 (seed 001), after the SCAN self-labeling of Van Gansbeke et al. (2020, ECCV), as the
authors' implementation (github.com/LabLaskin/MSI-self-supervised-clustering) does it:

1. the initial labels come from spectral clustering of the SimCLR representations on a 10-NN graph
   (``create_clusterer("spectral")``);
2. a linear classifier (linear layer + softmax) is initialised on the frozen encoder with these
   labels, briefly (40 steps), so that its confidences still rank the images;
3. the confidence threshold is the one that keeps the most confident 60% of the images after the
   initialisation (the paper: 0.9, which kept 58%); encoder and classifier are then fine-tuned:
   for every image of a batch a weak view gives the pseudo label and the confidence, and the
   strong view of the images above the threshold is trained with a class-balanced cross entropy
   (:class:`~spatialclust.models.ConfidenceBasedCrossEntropy`).

PyTorch is imported inside the functions, so ``import spatialclust`` stays light.
"""

from __future__ import annotations

import copy as _copy
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anndata as ad
import numpy as np
from sklearn.base import BaseEstimator

from .. import _keys
from .._compat import resolve_device
from .._logging import logger, progress
from .._validation import GEOMETRY_CONSTRAINTS, NON_NEGATIVE, POSITIVE, SEED, Check, Interval, ValidatedParams, augmentation_strength
from ._embed import _plain_params, check_images, embedders
from ._training import resolve_batch_size

if TYPE_CHECKING:
    from ._simclr import SimCLREmbedder

__all__ = ["INIT_ASSIGN_LABELS", "NoConfidentImagesWarning", "SelfLabelingClassifier", "initial_clusterer", "self_label"]

#: Epochs of ``epochs="auto"``: the authors' 150 on a GPU, fewer on a CPU (see docs/methods.md).
GPU_EPOCHS = 150
CPU_EPOCHS = 10
#: Label assignment of the initial spectral clustering (the authors' code).
INIT_ASSIGN_LABELS = "discretize"


def initial_clusterer(n_clusters: int | str, *, random_state: int | None) -> Any:
    """The unfitted clusterer of the initial labels: spectral clustering of the SimCLR features on a
    10-NN graph with the authors' label assignment (step 1 above)."""
    from ._cluster import create_clusterer

    return create_clusterer("spectral", n_clusters=n_clusters, random_state=random_state, assign_labels=INIT_ASSIGN_LABELS)


class NoConfidentImagesWarning(UserWarning):
    """No image reached the confidence threshold: self-labeling stopped without training."""


class SelfLabelingClassifier(ValidatedParams, BaseEstimator):
    """Self-labeling of ion images with a SimCLR encoder and a linear classifier (Hu et al. 2022).

    Parameters
    ----------
    embedder
        A fitted :class:`~spatialclust.tl.SimCLREmbedder` or the directory of a SimCLR checkpoint.
        Its encoder is copied; the embedder itself is not modified.
    threshold
        Softmax probability above which an image (its weak view) is trained on; ``"auto"`` = the
        probability that the ``confident_fraction`` most confident images exceed after the
        classifier initialisation (the authors' code; the paper's 0.9 kept 58%). Fixed for the
        whole training and never lowered: if no image exceeds it in an epoch, training stops with a
        :class:`NoConfidentImagesWarning`.
    confident_fraction
        Share of the images above ``threshold="auto"`` (0.6 as in the authors' code).
    epochs
        Self-labeling epochs; ``"auto"`` = 150 on a GPU (authors' code), 10 on a CPU (logged).
    init_epochs
        Full-batch steps of the classifier initialisation on the frozen encoder (0: random
        classifier; 40 = the authors' 20 epochs of two batches).
    batch_size
        Images per mini-batch; ``"auto"`` = half the images (at most 256), as the authors' code.
    lr, init_lr, weight_decay
        AdamW learning rates of fine-tuning (1e-4) and of the classifier initialisation (1e-3),
        and weight decay.
    class_balancing
        Weight every class of a batch by the inverse of its share among the confident images.
    weak, strong
        Augmentation strengths of the two views (:data:`~spatialclust.models.AUGMENTATION_STRENGTHS`
        names or parameter mappings).
    rotation, translation, resized_crop
        Optional geometric augmentations added to both views (off by default, as in the paper).
    device, mixed_precision, seed
        As in :class:`~spatialclust.tl.SimCLREmbedder`.

    Attributes
    ----------
    classes_ : ndarray
        The initial cluster labels, in the order of the classifier outputs.
    labels_ : ndarray
        Final cluster of every image (a value of ``classes_``): the classifier's prediction for the
        un-augmented image.
    probabilities_ : ndarray
        ``(n_images, n_classes)`` softmax probabilities after fine-tuning.
    initial_labels_ : ndarray
        Classifier prediction after initialisation, before fine-tuning.
    threshold_ : float
        The confidence threshold used.
    history_ : list of dict
        Per epoch: ``epoch``, ``n_confident`` (weak views above the threshold in that epoch),
        ``loss``, ``accuracy`` (of the predictions for the clean images after the epoch against
        ``true_labels``, NaN without), ``seconds``; the last entry (``epoch`` = number of epochs
        + 1, ``loss`` NaN, ``n_confident`` of the clean images) describes the final model.
    confidences_ : list of ndarray
        Largest softmax probability of every clean image after the initialisation and at the end
        (and after every epoch when ``true_labels`` are given).
    stopped_early_ : bool
        True if no image passed the threshold in an epoch and training stopped.
    model_ : torch.nn.Module
        Fine-tuned encoder + classifier (``model_.encoder``, ``model_.head``).
    embedder_ : SimCLREmbedder
        The SimCLR embedder started from; its input conditioning
        (:meth:`SimCLREmbedder.condition`) is applied to every image given to ``fit``,
        ``predict_proba`` and ``transform``.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "threshold": [Interval(float, 0, 1, closed="right", description="a probability in (0, 1]"), "auto"],
        "confident_fraction": [Interval(float, 0, 1, closed="right", description="a probability in (0, 1]")],
        "epochs": [Interval(int, 0), "auto"], "init_epochs": [Interval(int, 0)], "batch_size": [Interval(int, 1), "auto"],
        "lr": [POSITIVE], "init_lr": [POSITIVE], "weight_decay": [NON_NEGATIVE], "class_balancing": [bool],
        "weak": [Check(augmentation_strength)], "strong": [Check(augmentation_strength)], **GEOMETRY_CONSTRAINTS,
        "device": [str], "mixed_precision": [bool], "seed": [SEED],
    }

    def __init__(
        self,
        embedder: SimCLREmbedder | str | os.PathLike | None = None,
        *,
        threshold: float | str = "auto",
        confident_fraction: float = 0.6,
        epochs: int | str = "auto",
        init_epochs: int = 40,
        batch_size: int | str = "auto",
        lr: float = 1e-4,
        init_lr: float = 1e-3,
        weight_decay: float = 1e-4,
        class_balancing: bool = True,
        weak: str | dict[str, Any] = "weak",
        strong: str | dict[str, Any] = "strong",
        rotation: float = 0.0,
        translation: float = 0.0,
        resized_crop: bool = False,
        device: str = "auto",
        mixed_precision: bool = True,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.confident_fraction = confident_fraction
        self.epochs = epochs
        self.init_epochs = init_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.init_lr = init_lr
        self.weight_decay = weight_decay
        self.class_balancing = class_balancing
        self.weak = weak
        self.strong = strong
        self.rotation = rotation
        self.translation = translation
        self.resized_crop = resized_crop
        self.device = device
        self.mixed_precision = mixed_precision
        self.seed = seed

    # ------------------------------------------------------------------ helpers

    def _resolve_embedder(self) -> SimCLREmbedder:
        simclr = embedders.get("simclr")  # through the registry: self-labeling builds on SimCLR, not the reverse
        if isinstance(self.embedder, (str, os.PathLike)):
            return simclr.from_checkpoint(self.embedder, device=self.device)
        if isinstance(self.embedder, simclr):
            if not hasattr(self.embedder, "model_"):
                raise ValueError("`embedder` is a SimCLREmbedder that is not fitted; fit it or pass a checkpoint directory.")
            return self.embedder
        raise ValueError(
            f"`embedder` must be a fitted SimCLREmbedder or a SimCLR checkpoint directory; received {type(self.embedder).__name__}."
        )

    def _probabilities(self, data) -> np.ndarray:
        """Softmax probabilities of the clean images (eval mode)."""
        import torch

        from ..models import channels_last

        self.model_.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, data.shape[0], 128):
                x = channels_last(self.model_.encoder.preprocess(data[start : start + 128], size=self.image_size_))
                out.append(torch.softmax(self.model_(x).float(), dim=1).cpu())
        return torch.cat(out).numpy()

    def _resolve_threshold(self, confidence: np.ndarray) -> float:
        if self.threshold != "auto":
            return float(self.threshold)
        threshold = float(np.quantile(confidence, 1.0 - float(self.confident_fraction)))
        logger.info(
            "Self-labeling threshold %.3f: the %.0f%% most confident images after the classifier initialisation "
            "(threshold='auto').", threshold, 100 * float(self.confident_fraction),
        )
        return threshold

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        images: np.ndarray,
        labels: Any,
        *,
        mask: np.ndarray | None = None,
        true_labels: Any = None,
    ) -> SelfLabelingClassifier:
        """Initialise the classifier with ``labels`` and fine-tune by self-labeling.

        Parameters
        ----------
        images
            float32 ``(n_images, H, W)`` in [0, 1], the images the encoder was trained on.
        labels
            Initial cluster of every image (e.g. spectral clustering of the SimCLR features);
            ``-1`` (noise) images are left out of the initialisation.
        mask
            Tissue mask ``(H, W)``; off-tissue pixels are zeroed.
        true_labels
            Optional ground truth, only to log the accuracy per epoch.
        """
        import torch
        from torch import nn

        from ..metrics import clustering_accuracy
        from ..models import (
            ClassificationHead,
            ConfidenceBasedCrossEntropy,
            EncoderClassifier,
            autocast_context,
            encode,
            self_labeling_views,
        )

        arr, mask = check_images(images, mask=mask)
        self._validate_params()
        n = arr.shape[0]
        init = np.asarray(labels)
        if init.shape != (n,):
            raise ValueError(f"`labels` must hold one label per image, shape ({n},); received shape {init.shape}.")
        if not np.issubdtype(init.dtype, np.integer):
            raise ValueError(f"`labels` must be integer cluster labels; received dtype {init.dtype}.")
        truth = None if true_labels is None else np.asarray(true_labels)
        if truth is not None and truth.shape != (n,):
            raise ValueError(f"`true_labels` must hold one label per image, shape ({n},); received shape {truth.shape}.")
        self.classes_ = np.unique(init[init >= 0])
        if self.classes_.size < 2:
            raise ValueError(f"`labels` must contain at least 2 clusters (noise -1 excluded); received {self.classes_.size}.")
        target = np.searchsorted(self.classes_, init)
        labelled = init >= 0

        embedder = self._resolve_embedder()
        self.embedder_ = embedder
        arr = embedder.condition(arr, mask=mask)  # the SimCLR embedder's input conditioning, if any
        self.device_ = resolve_device(self.device)
        self.image_size_ = embedder.image_size_
        encoder = _copy.deepcopy(embedder.model_.encoder).to(self.device_)
        if self.device_ == "cpu":
            encoder.to(memory_format=torch.channels_last)
        data_np = arr if mask is None else arr * mask
        data = torch.from_numpy(np.ascontiguousarray(data_np, dtype=np.float32)).to(self.device_)

        # step 2: linear classifier on the frozen encoder, trained with the initial labels
        features = torch.from_numpy(encode(encoder, data_np, image_size=self.image_size_, device=self.device_)).to(self.device_)
        torch.manual_seed(int(self.seed))
        head = ClassificationHead(features.shape[1], int(self.classes_.size)).to(self.device_)
        optimizer = torch.optim.AdamW(head.parameters(), lr=self.init_lr, weight_decay=self.weight_decay)
        x_init, y_init = features[torch.from_numpy(labelled).to(self.device_)], torch.from_numpy(target[labelled]).to(self.device_)
        for _ in range(int(self.init_epochs)):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(head(x_init), y_init).backward()
            optimizer.step()
        self.model_ = EncoderClassifier(encoder, head)
        probs = self._probabilities(data)
        self.initial_labels_ = self.classes_[probs.argmax(1)]
        self.confidences_ = [probs.max(1)]
        self.threshold_ = self._resolve_threshold(probs.max(1))

        # step 3: self-labeling, confident weak views teach the strong views
        epochs = self._resolve_epochs()
        views = self_labeling_views(
            self.weak, self.strong, rotation=self.rotation, translation=self.translation,
            resized_crop=self.resized_crop, mask=None if mask is None else torch.as_tensor(mask),
        ).to(self.device_)
        criterion = ConfidenceBasedCrossEntropy(self.threshold_, class_balancing=self.class_balancing)
        optimizer = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        autocast, scaler = autocast_context(self.device_, self.mixed_precision)
        batch_size = resolve_batch_size(self.batch_size, n)
        self.history_ = []
        self.stopped_early_ = False
        bar = progress(range(epochs), desc="Self-labeling", total=epochs, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            loss, n_confident = self._train_epoch(data, epoch, views, criterion, optimizer, batch_size, autocast, scaler)
            if n_confident:
                scheduler.step()
            accuracy = float("nan")
            if truth is not None:
                probs = self._probabilities(data)
                self.confidences_.append(probs.max(1))
                accuracy = clustering_accuracy(truth, probs.argmax(1))
            self.history_.append({
                "epoch": epoch + 1, "n_confident": n_confident, "loss": loss, "accuracy": accuracy,
                "seconds": round(time.perf_counter() - start, 3),
            })
            if n_confident == 0:
                self.stopped_early_ = True
                msg = (
                    f"Self-labeling epoch {epoch + 1}: no image reached the confidence threshold {self.threshold_:.3g}; "
                    "stopping without training. The threshold is not lowered automatically: pass a lower `threshold` "
                    "(or threshold='auto'), more `init_epochs`, or check the initial labels."
                )
                logger.warning(msg)
                warnings.warn(msg, NoConfidentImagesWarning, stacklevel=2)
                break
            bar.set_postfix(loss=f"{loss:.4f}", confident=n_confident)
            logger.info(
                "Self-labeling epoch %d/%d: %d/%d confident weak views (p > %.3g), loss %.4f%s", epoch + 1, epochs,
                n_confident, n, self.threshold_, loss, "" if truth is None else f", accuracy {accuracy:.3f}",
            )
        probs = self._probabilities(data)
        confidence = probs.max(1)
        if truth is None or not self.history_:
            self.confidences_.append(confidence)
        self.history_.append({
            "epoch": len(self.history_) + 1, "n_confident": int((confidence > self.threshold_).sum()), "loss": float("nan"),
            "accuracy": float("nan") if truth is None else clustering_accuracy(truth, probs.argmax(1)), "seconds": 0.0,
        })
        self.probabilities_ = probs
        self.labels_ = self.classes_[probs.argmax(1)]
        self.epochs_ = epochs
        return self

    def _resolve_epochs(self) -> int:
        if self.epochs != "auto":
            return int(self.epochs)
        if self.device_ == "cpu":
            logger.info("Self-labeling on a CPU: %d epochs (epochs='auto'; %d on a GPU).", CPU_EPOCHS, GPU_EPOCHS)
            return CPU_EPOCHS
        return GPU_EPOCHS

    def _train_epoch(self, data, epoch, views, criterion, optimizer, batch_size, autocast, scaler) -> tuple[float, int]:
        """One pass over all images in a seeded random order; returns the mean loss of the batches
        that had confident images (NaN if none had) and the number of confident weak views."""
        import torch

        self.model_.train()
        generator = torch.Generator().manual_seed(int(self.seed) * 100_003 + epoch)
        order = torch.randperm(data.shape[0], generator=generator)
        losses, n_confident = [], 0
        for start in range(0, data.shape[0], batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:  # a single left-over image: no batch statistics
                continue
            loss, confident = self._train_step(data[idx.to(data.device)], generator, views, criterion, optimizer, autocast, scaler)
            n_confident += confident
            if confident:
                losses.append(loss)
        return (float(np.mean(losses)) if losses else float("nan")), n_confident

    def _train_step(self, batch, generator, views, criterion, optimizer, autocast, scaler) -> tuple[float, int]:
        """Pseudo labels from the weak views, a gradient step on the confident strong views."""
        import torch

        from ..models import channels_last, optimizer_step

        weak, strong = views(batch, generator=generator)
        with torch.no_grad(), autocast:
            weak_logits = self.model_(channels_last(self.model_.encoder.preprocess(weak, size=self.image_size_)))
        with autocast:
            strong_logits = self.model_(channels_last(self.model_.encoder.preprocess(strong, size=self.image_size_)))
        loss, n_confident = criterion(weak_logits.float(), strong_logits.float())
        if n_confident:
            optimizer_step(loss, optimizer, scaler)
        return float(loss.detach()), n_confident

    # ------------------------------------------------------------------ inference

    def predict_proba(self, images: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Softmax cluster probabilities ``(n_images, n_classes)``."""
        import torch

        if not hasattr(self, "model_"):
            raise RuntimeError("This SelfLabelingClassifier is not fitted yet; call `fit` first.")
        arr, mask = check_images(images, mask=mask)
        arr = self.embedder_.condition(arr, mask=mask)
        data = torch.from_numpy(arr if mask is None else arr * mask).to(self.device_)
        return self._probabilities(data)

    def predict(self, images: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Cluster of every image (values of ``classes_``)."""
        return self.classes_[self.predict_proba(images, mask=mask).argmax(1)]

    def transform(self, images: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Features of the fine-tuned encoder ``(n_images, d)``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("This SelfLabelingClassifier is not fitted yet; call `fit` first.")
        from ..models import encode

        arr, mask = check_images(images, mask=mask)
        return encode(self.model_.encoder, self.embedder_.condition(arr, mask=mask), image_size=self.image_size_, device=self.device_, mask=mask)


def _embedding_checkpoint(adata: ad.AnnData, use_rep: str) -> str | None:
    info = adata.uns.get(use_rep, {})
    for value in (info.get("checkpoint"), info.get(_keys.PARAMS, {}).get("checkpoint")):
        if value not in (None, "None", ""):
            return str(value)
    return None


def self_label(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_simclr",
    init_labels: str | None = None,
    n_clusters: int | str = "auto",
    checkpoint: str | os.PathLike | SimCLREmbedder | None = None,
    truth: str | None = None,
    key_added: str = _keys.SELF_LABEL,
    layer: str | None = None,
    random_state: int = 0,
    copy: bool = False,
    **params: Any,
) -> ad.AnnData | None:
    """Cluster the ion images of ``adata`` by SimCLR + spectral clustering + self-labeling (Hu et al. 2022).

    Parameters
    ----------
    adata
        Dataset embedded with ``sc.tl.embed(adata, method="simclr", checkpoint=...)``.
    use_rep
        ``varm`` key of the SimCLR representation (for the initial spectral clustering).
    init_labels
        ``var`` column with the initial clusters; None: spectral clustering of ``varm[use_rep]`` on a
        10-NN graph with ``n_clusters`` clusters, written to ``var[f"{key_added}_init"]``.
    n_clusters
        Number of clusters of the initial spectral clustering (``"auto"``: eigengap).
    checkpoint
        SimCLR checkpoint directory or fitted :class:`~spatialclust.tl.SimCLREmbedder`; default the
        checkpoint recorded in ``uns[use_rep]`` by ``sc.tl.embed``.
    truth
        Optional ``var`` column with true classes, only to log the accuracy per epoch.
    key_added
        ``var`` column of the final labels.
    layer
        Layer the images are built from (as for ``sc.tl.embed``).
    random_state
        Seed of the spectral clustering and of the self-labeling.
    copy
        Return a modified copy instead of writing to ``adata``.
    **params
        Parameters of :class:`SelfLabelingClassifier` (``threshold``, ``epochs``, ...).

    Returns
    -------
    None, or the copy if ``copy=True``. Writes

    ``adata.var[key_added]``
        int final cluster of every image.
    ``adata.var[f"{key_added}_confidence"]``
        float largest softmax probability of every image.
    ``adata.var[f"{key_added}_init"]``
        int initial spectral clusters (when ``init_labels`` is None).
    ``adata.varm[f"X_{key_added}"]``
        float32 features of the fine-tuned encoder (representation after self-labeling).
    ``adata.uns[key_added]``
        ``{"method": "self_label", "use_rep", "init_labels", "checkpoint", "params", "n_clusters", "n_noise",
        "stopped_early", "history": {"epoch", "n_confident", "loss", "accuracy"}}``.
    """
    from .. import pp

    if use_rep not in adata.varm:
        available = ", ".join(f"`{k}`" for k in adata.varm.keys()) or "none"
        raise KeyError(f"`use_rep`={use_rep!r} is not in `adata.varm` (available: {available}); run sc.tl.embed(adata, method='simclr') first.")
    source = checkpoint if checkpoint is not None else _embedding_checkpoint(adata, use_rep)
    if source is None:
        raise ValueError(
            f"No SimCLR checkpoint for `{use_rep}`: pass `checkpoint=` or embed with "
            "sc.tl.embed(adata, method='simclr', checkpoint='path/to/dir') so the encoder can be fine-tuned."
        )
    adata = adata.copy() if copy else adata
    if init_labels is None:
        init_key = _keys.initial_labels_key(key_added)
        spectral = initial_clusterer(n_clusters, random_state=random_state)
        adata.var[init_key] = spectral.fit(adata.varm[use_rep]).labels_
        logger.info("Initial labels: spectral clustering of `%s` into %d clusters.", use_rep, spectral.n_clusters_)
    else:
        if init_labels not in adata.var:
            raise KeyError(f"`init_labels`={init_labels!r} is not a column of `adata.var`.")
        init_key = init_labels
    true = None
    if truth is not None:
        if truth not in adata.var:
            raise KeyError(f"`truth`={truth!r} is not a column of `adata.var`.")
        true = adata.var[truth].to_numpy()
    images = pp.feature_images(adata, layer=layer)
    mask = pp.tissue_mask_image(adata)
    params.setdefault("seed", random_state)
    estimator = SelfLabelingClassifier(source, **params)
    estimator.fit(images, adata.var[init_key].to_numpy().astype(np.int64), mask=mask, true_labels=true)
    adata.var[key_added] = estimator.labels_.astype(np.int64)
    adata.var[_keys.confidence_key(key_added)] = estimator.probabilities_.max(1).astype(np.float32)
    adata.varm[_keys.embedding_key(key_added)] = estimator.transform(images, mask=mask)
    history = estimator.history_
    adata.uns[key_added] = {
        "method": "self_label",
        "use_rep": use_rep,
        "init_labels": init_key,
        "checkpoint": str(source) if isinstance(source, (str, Path)) else str(getattr(source, "checkpoint_", "None")),
        _keys.PARAMS: _plain_params({k: v for k, v in estimator.get_params(deep=False).items() if k != "embedder"}),
        "n_clusters": int(np.unique(estimator.labels_).size),
        "n_noise": 0,
        "stopped_early": bool(estimator.stopped_early_),
        "history": {k: np.asarray([h[k] for h in history]) for k in ("epoch", "n_confident", "loss", "accuracy")},
    }
    return adata if copy else None
