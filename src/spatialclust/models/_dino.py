"""DINO self-distillation for multichannel cell images (scDINO), with a channel-adapted ViT.

DINO (Caron et al. 2021, "Emerging properties in self-supervised vision transformers") trains a
student ViT to match the output distribution of a momentum (EMA) teacher ViT over several crops of
the same image: 2 global crops go through the teacher, all crops (2 global + several small local
ones: *multi-crop*) through the student; the loss is the cross-entropy between the teacher's
*centred and sharpened* softmax (temperature 0.04, running centre, momentum 0.9) and the student's
softmax (temperature 0.1), over all pairs of different views. Collapse is avoided by centring +
sharpening alone (no negatives). scDINO (Pfaendler et al. 2023, bioRxiv) applies it to
fluorescence images of single cells with any number of channels: the ViT's patch embedding, which
has 3 RGB input planes in ImageNet/DINO weights, is adapted by averaging the RGB weights and
repeating the average for every channel, so each channel gets equal weight. Palli (2023, sec.
3.5.2) trained scDINO on ICS images (lr 0.0005, AdamW, checkpoints every 2 epochs) and used the
teacher's CLS token as the cell embedding.

This module holds the trainer, :class:`DINOTrainer`, and the input scaling it shares with
inference; it only combines parts that live with their kind (lightly style): the channel-adapted
ViT (:func:`~spatialclust.models.channel_vit`, ``_vit.py``), :class:`~spatialclust.models.DINOHead`
(``_heads.py``), :class:`~spatialclust.models.DINOLoss` (``_losses.py``) and
:class:`~spatialclust.models.MultiCropTransform` (``_transforms.py``). Checkpoints use
``_checkpoint.py`` (kind ``"dino"``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._compat import resolve_device
from .._logging import logger, progress
from ._heads import DINOHead
from ._losses import DINOLoss
from ._torch import ema_update
from ._transforms import MultiCropTransform
from ._vit import channel_vit

__all__ = ["CELL_SCALINGS", "CHECKPOINT_KIND", "DINOTrainer", "channel_reference", "scale_cell_images"]

CHECKPOINT_KIND = "dino"


# ----------------------------------------------------------------------------------------------
# input scaling shared by training and inference


#: Intensity scalings of :func:`scale_cell_images`.
CELL_SCALINGS = ("cell", "dataset")


def channel_reference(images: np.ndarray, sizes: np.ndarray | None = None, *, quantile: float = 0.999) -> np.ndarray:
    """Per-channel ``quantile`` of the pixel values over the true areas of all cells, ``(C,)`` (the ``"dataset"`` scale)."""
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim != 4:
        raise ValueError(f"`images` must have shape (n, C, H, W), got shape {stack.shape}.")
    valid = _valid_mask(stack.shape, sizes)
    reference = np.array([np.quantile(stack[:, c][valid], quantile) for c in range(stack.shape[1])], dtype=np.float64)
    return np.where(reference > 0, reference, 1.0)


def _valid_mask(shape: tuple[int, ...], sizes: np.ndarray | None) -> np.ndarray:
    n, _, height, width = shape
    sizes = np.tile([height, width], (n, 1)) if sizes is None else np.asarray(sizes)
    yy, xx = np.mgrid[0:height, 0:width]
    return (yy[None] < sizes[:, 0, None, None]) & (xx[None] < sizes[:, 1, None, None])


def scale_cell_images(images: np.ndarray, sizes: np.ndarray | None = None, *, reference: np.ndarray | None = None) -> np.ndarray:
    """Rescale the channels of every cell to [0, 1] over its true area and pad to a square with zeros.

    ``reference=None`` (``"cell"`` scaling): min-max per cell and channel, as scDINO rescales each
    channel to [0, 1]; this removes every between-cell difference in brightness (e.g. DNA content).
    ``reference`` = one value per channel (``"dataset"`` scaling, :func:`channel_reference`):
    ``clip(x / reference_c, 0, 1)``, which keeps the relative intensities of the cells. Padding
    stays 0 (Palli 2023 pads with zeros). Returns float32 ``(n, C, S, S)`` with ``S = max(H, W)``.
    """
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim != 4:
        raise ValueError(f"`images` must have shape (n, C, H, W), got shape {stack.shape}.")
    n, n_channels, height, width = stack.shape
    valid = _valid_mask(stack.shape, sizes)[:, None]
    if reference is None:
        low = np.where(valid, stack, np.inf).min(axis=(2, 3), keepdims=True)
        high = np.where(valid, stack, -np.inf).max(axis=(2, 3), keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        scaled = np.where(valid, (stack - low) / span, 0.0).astype(np.float32)
    else:
        reference = np.asarray(reference, dtype=np.float32).reshape(-1)
        if reference.shape != (n_channels,) or not (reference > 0).all():
            raise ValueError(f"`reference` must hold {n_channels} positive values (one per channel), got {reference.tolist()}.")
        scaled = np.where(valid, np.clip(stack / reference[None, :, None, None], 0.0, 1.0), 0.0).astype(np.float32)
    side = max(height, width)
    out = np.zeros((n, n_channels, side, side), dtype=np.float32)
    out[:, :, :height, :width] = scaled
    return out


# ----------------------------------------------------------------------------------------------
# trainer


class _StudentTeacherNet(nn.Module):
    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # crops of equal size share one forward pass (DINO's MultiCropWrapper)
        outputs: list[torch.Tensor] = []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            features = self.head(self.backbone(torch.cat(list(crops[start:end]))))
            outputs.extend(features.chunk(end - start))
            start = end
        return outputs


class DINOTrainer:
    """Train a channel-adapted ViT with DINO on cell images and embed cells with the teacher's CLS token.

    Scikit-learn style: ``__init__`` stores parameters, :meth:`fit` trains (or loads/resumes
    ``checkpoint``), :meth:`transform` embeds, :meth:`from_checkpoint` rebuilds a trained model.

    Parameters
    ----------
    image_size
        Side of the global crops and of the inference input (images are rescaled per channel to
        [0, 1], zero-padded to a square, and resized to this side).
    patch_size, embed_dim, depth, num_heads
        ViT architecture (default a tiny ViT for CPUs; scDINO uses ViT-S/16: 384, 12, 6).
    pretrained
        Name of a registered ViT backbone (e.g. ``"dino_vits16"``) or None. Its weights initialise
        the ViT (architecture taken from it) with the patch embedding adapted to the channels.
    pretrained_weights
        Local weight file for ``pretrained`` (instead of the hub).
    out_dim, hidden_dim, bottleneck_dim
        DINO head (paper 65536 / 2048 / 256).
    n_local_crops, local_size
        Multi-crop: number and side of local crops (default ``image_size // 2``).
    scaling
        ``"dataset"`` (default): divided by the channel's 99.9th percentile over all training cells
        (keeps brightness differences between cells, e.g. DNA content); ``"cell"``: every channel of
        every cell min-max scaled to [0, 1] (scDINO), which on the real Jurkat cells erased the
        cell-cycle signal (k-means purity 0.30 against 0.67, docs/benchmarks.md); see
        :func:`scale_cell_images`.
    intensity_jitter
        Brightness/contrast jitter of the crops (:class:`MultiCropTransform`; DINO 0.4).
    epochs, batch_size, lr, weight_decay
        AdamW training (scDINO/Palli 2023: lr 0.0005; lr is scaled by batch_size / 256 as in
        DINO, with a linear warm-up over ``warmup_epochs`` then cosine decay).
    warmup_epochs
        Learning-rate warm-up epochs.
    momentum_teacher
        Base EMA momentum of the teacher, raised to 1 with a cosine schedule (0.996).
    teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, student_temp, center_momentum
        See :class:`DINOLoss`.
    checkpoint
        Checkpoint directory: saved every ``save_every`` epochs and at the end; a finished
        matching checkpoint is loaded instead of training; an unfinished one is resumed.
    save_every
        Epochs between checkpoints (scDINO: 2).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    seed
        Seed of initialisation, crops and batch order.

    Attributes
    ----------
    teacher_, student_
        Trained networks (backbone + head); the teacher backbone embeds.
    history_
        ``[{"epoch", "loss", "seconds"}]``.
    in_chans_
        Number of channels trained on.
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 8,
        embed_dim: int = 96,
        depth: int = 3,
        num_heads: int = 3,
        pretrained: str | None = None,
        pretrained_weights: str | os.PathLike | None = None,
        out_dim: int = 4096,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        n_local_crops: int = 4,
        local_size: int | None = None,
        scaling: str = "dataset",
        intensity_jitter: float = 0.4,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 0.0005,
        weight_decay: float = 0.04,
        warmup_epochs: int = 2,
        momentum_teacher: float = 0.996,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        checkpoint: str | os.PathLike | None = None,
        save_every: int = 2,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.pretrained = pretrained
        self.pretrained_weights = pretrained_weights
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.n_local_crops = n_local_crops
        self.local_size = local_size
        self.scaling = scaling
        self.intensity_jitter = intensity_jitter
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.momentum_teacher = momentum_teacher
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.checkpoint = checkpoint
        self.save_every = save_every
        self.device = device
        self.seed = seed

    # ------------------------------------------------------------------ construction

    def _validate(self) -> None:
        for name in ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "out_dim", "hidden_dim",
                     "bottleneck_dim", "epochs", "batch_size", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.n_local_crops < 0:
            raise ValueError(f"`n_local_crops` must be >= 0, got {self.n_local_crops!r}.")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr!r}.")
        if self.scaling not in CELL_SCALINGS:
            from .._registry import invalid_option

            raise invalid_option(self.scaling, "scaling", list(CELL_SCALINGS))
        if not 0 <= self.intensity_jitter < 1:
            raise ValueError(f"`intensity_jitter` must be in [0, 1), got {self.intensity_jitter!r}.")
        if not 0 <= self.momentum_teacher <= 1:
            raise ValueError(f"`momentum_teacher` must be in [0, 1], got {self.momentum_teacher!r}.")

    def _architecture(self, in_chans: int) -> dict[str, Any]:
        """Architecture asked for by the parameters (a ``pretrained`` ViT overrides the ViT part in ``fit``)."""
        return {
            "in_chans": int(in_chans), "image_size": int(self.image_size), "patch_size": int(self.patch_size),
            "embed_dim": int(self.embed_dim), "depth": int(self.depth), "num_heads": int(self.num_heads),
            "out_dim": int(self.out_dim), "hidden_dim": int(self.hidden_dim), "bottleneck_dim": int(self.bottleneck_dim),
        }

    def _pretrained_state(self, arch: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """Weights of the ``pretrained`` ViT; its width, depth, heads and patch size go into ``arch``."""
        if self.pretrained is None:
            return None
        from ._backbones import create_backbone

        backbone = create_backbone(self.pretrained, pretrained=True, weights=self.pretrained_weights)
        vit = backbone.model
        if not hasattr(vit, "patch_embed") or not hasattr(vit, "blocks"):
            raise ValueError(f"`pretrained`={self.pretrained!r} is not a ViT backbone; DINO needs a VisionTransformer.")
        arch.update(
            patch_size=int(vit.patch_embed.patch_size[0]), embed_dim=int(vit.embed_dim), depth=len(vit.blocks),
            num_heads=int(vit.blocks[0].attn.num_heads),
        )
        return vit.state_dict()

    def _build(self, arch: dict[str, Any], state: dict[str, torch.Tensor] | None) -> None:
        torch.manual_seed(int(self.seed))
        backbone = channel_vit(
            arch["in_chans"], image_size=arch["image_size"], patch_size=arch["patch_size"], embed_dim=arch["embed_dim"],
            depth=arch["depth"], num_heads=arch["num_heads"], state_dict=state,
        )
        head = DINOHead(arch["embed_dim"], arch["out_dim"], hidden_dim=arch["hidden_dim"], bottleneck_dim=arch["bottleneck_dim"])
        self.student_ = _StudentTeacherNet(backbone, head)
        self.teacher_ = copy.deepcopy(self.student_)
        for p in self.teacher_.parameters():
            p.requires_grad = False
        self.arch_ = dict(arch)
        self.in_chans_ = int(arch["in_chans"])

    # ------------------------------------------------------------------ checkpoints

    def _config(self) -> dict[str, Any]:
        return {
            "architecture": self.arch_,
            "preprocessing": {
                "image_size": int(self.image_size), "scaling": self.scaling,
                "reference": None if self.reference_ is None else [float(v) for v in self.reference_],
            },
        }

    def _save(self, path: Path, optimizer: Any, epoch: int, loss_fn: DINOLoss) -> None:
        from ._checkpoint import save_checkpoint

        state = {f"student.{k}": v for k, v in self.student_.state_dict().items()}
        state.update({f"teacher.{k}": v for k, v in self.teacher_.state_dict().items()})
        state["loss.center"] = loss_fn.center
        save_checkpoint(
            path, state, self._config(), kind=CHECKPOINT_KIND, optimizer_state=optimizer.state_dict(),
            training={"epoch": epoch, "epochs": int(self.epochs), "complete": epoch >= int(self.epochs),
                      "history": self.history_, "seed": int(self.seed)},
        )
        logger.debug("Saved DINO checkpoint (epoch %d) to %s.", epoch, path)

    def _load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.student_.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})
        self.teacher_.load_state_dict({k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")})

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "auto") -> DINOTrainer:
        """A trained model from a checkpoint directory (architecture read from the checkpoint)."""
        from ._checkpoint import load_checkpoint

        state, config = load_checkpoint(path, kind=CHECKPOINT_KIND)
        arch = config["architecture"]
        trainer = cls(
            image_size=arch["image_size"], patch_size=arch["patch_size"], embed_dim=arch["embed_dim"], depth=arch["depth"],
            num_heads=arch["num_heads"], out_dim=arch["out_dim"], hidden_dim=arch["hidden_dim"],
            bottleneck_dim=arch["bottleneck_dim"], epochs=int(config["training"]["epochs"]), checkpoint=path, device=device,
            scaling=config["preprocessing"].get("scaling", "cell"),
        )
        reference = config["preprocessing"].get("reference")
        trainer.reference_ = None if reference is None else np.asarray(reference, dtype=np.float64)
        trainer._build(arch, None)
        trainer._load_weights(state)
        trainer.history_ = list(config["training"].get("history", []))
        trainer.device_ = resolve_device(device)
        return trainer

    # ------------------------------------------------------------------ training

    def fit(self, images: np.ndarray, *, sizes: np.ndarray | None = None) -> DINOTrainer:
        """Train on cell images ``(n, C, H, W)`` (true sizes ``(n, 2)`` exclude the padding).

        Every image is one sample; labels are not used (all cells, labelled or not, as in Palli 2023).
        """
        from ._checkpoint import load_checkpoint, load_optimizer_state

        self._validate()
        self.reference_ = channel_reference(images, sizes) if self.scaling == "dataset" else None
        data = scale_cell_images(images, sizes, reference=self.reference_)
        n, in_chans = data.shape[:2]
        if n < 2:
            raise ValueError(f"`images` holds {n} cell; DINO needs at least 2.")
        self.device_ = resolve_device(self.device)
        path = Path(self.checkpoint) if self.checkpoint is not None else None
        saved = None
        if path is not None and path.exists():
            expected = {k: v for k, v in self._architecture(in_chans).items() if self.pretrained is None or k in ("in_chans", "image_size", "out_dim")}
            state, saved = load_checkpoint(path, kind=CHECKPOINT_KIND, expected={"architecture": expected})
            if saved["training"].get("complete") and int(saved["training"]["epoch"]) >= int(self.epochs):
                logger.info("Loaded the finished DINO training from %s.", path)
                self._build(saved["architecture"], None)
                self._load_weights(state)
                reference = saved["preprocessing"].get("reference")
                self.reference_ = None if reference is None else np.asarray(reference, dtype=np.float64)
                self.history_ = list(saved["training"].get("history", []))
                return self
        arch = self._architecture(in_chans) if saved is None else dict(saved["architecture"])
        self._build(arch, None if saved is not None else self._pretrained_state(arch))
        loss_fn = DINOLoss(
            self.out_dim, epochs=int(self.epochs), teacher_temp=self.teacher_temp, warmup_teacher_temp=self.warmup_teacher_temp,
            warmup_teacher_temp_epochs=self.warmup_teacher_temp_epochs, student_temp=self.student_temp,
            center_momentum=self.center_momentum,
        )
        decay = [p for name, p in self.student_.named_parameters() if p.requires_grad and p.ndim > 1 and "pos_embed" not in name]
        no_decay = [p for name, p in self.student_.named_parameters() if p.requires_grad and (p.ndim <= 1 or "pos_embed" in name)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}])
        self.history_ = []
        start_epoch = 0
        if saved is not None:
            self._load_weights(state)
            loss_fn.center.copy_(state["loss.center"])
            optimizer.load_state_dict(load_optimizer_state(path, saved))
            self.history_ = list(saved["training"].get("history", []))
            start_epoch = int(saved["training"]["epoch"])
            logger.info("Resuming DINO training from %s at epoch %d of %d.", path, start_epoch, self.epochs)
        self.student_.to(self.device_)
        self.teacher_.to(self.device_)
        loss_fn.to(self.device_)
        crops = MultiCropTransform(
            self.image_size, self.local_size or max(self.arch_["patch_size"], self.image_size // 2), n_local_crops=self.n_local_crops,
            intensity_jitter=float(self.intensity_jitter),
        )
        batch_size = min(int(self.batch_size), n)
        steps_per_epoch = math.ceil(n / batch_size)
        total_steps = steps_per_epoch * int(self.epochs)
        base_lr = self.lr * batch_size / 256
        tensor = torch.from_numpy(self._resize(data))
        bar = progress(range(start_epoch, int(self.epochs)), desc="DINO", total=int(self.epochs) - start_epoch)
        for epoch in bar:
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(int(self.seed) * 100_003 + epoch)
            order = torch.randperm(n, generator=generator)
            losses = []
            self.student_.train()
            for i, first in enumerate(range(0, n, batch_size)):
                step = epoch * steps_per_epoch + i
                lr = self._lr(step, steps_per_epoch, total_steps, base_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = tensor[order[first : first + batch_size]]
                if batch.shape[0] < 2:
                    continue
                views = [v.to(self.device_) for v in crops(batch, generator=generator)]
                with torch.no_grad():
                    teacher_out = self.teacher_(views[:2])
                student_out = self.student_(views)
                loss = loss_fn(student_out, teacher_out, epoch)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"DINO loss became {float(loss)} at epoch {epoch + 1}; lower `lr`.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.student_.parameters(), 3.0)
                optimizer.step()
                momentum = 1 - (1 - self.momentum_teacher) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2
                ema_update(self.teacher_, self.student_, momentum)
                losses.append(float(loss.detach()))
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - start, 3)}
            self.history_.append(record)
            logger.info("DINO epoch %d/%d: loss %.4f", epoch + 1, self.epochs, record["loss"])
            if path is not None and ((epoch + 1) % int(self.save_every) == 0 or epoch + 1 == int(self.epochs)):
                self._save(path, optimizer, epoch + 1, loss_fn)
        return self

    def _lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        warmup = int(self.warmup_epochs) * steps_per_epoch
        if step < warmup:
            return base_lr * (step + 1) / warmup
        progress_ = (step - warmup) / max(total_steps - warmup, 1)
        return 1e-6 + (base_lr - 1e-6) * (1 + math.cos(math.pi * progress_)) / 2

    def _resize(self, data: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(data)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        return x.numpy()

    # ------------------------------------------------------------------ inference

    def transform(self, images: np.ndarray, *, sizes: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
        """Teacher CLS embeddings ``(n, embed_dim)`` of the (un-augmented) cell images."""
        if not hasattr(self, "teacher_"):
            raise RuntimeError("This DINOTrainer is not fitted yet; call `fit` or `from_checkpoint` first.")
        n_channels = np.shape(images)[1] if np.ndim(images) == 4 else None
        if n_channels is not None and n_channels != self.in_chans_:  # before the scaling, whose reference has in_chans_ values
            raise ValueError(f"The model was trained on {self.in_chans_} channels; `images` have {n_channels}.")
        data = scale_cell_images(images, sizes, reference=self.reference_)
        tensor = torch.from_numpy(self._resize(data))
        backbone = self.teacher_.backbone.to(self.device_).eval()
        out = []
        with torch.inference_mode():
            for first in range(0, tensor.shape[0], batch_size):
                out.append(backbone(tensor[first : first + batch_size].to(self.device_)).float().cpu().numpy())
        return np.concatenate(out)
