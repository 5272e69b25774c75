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

Parts (lightly style, the trainer only combines them): :func:`adapt_patch_embedding`,
:func:`channel_vit`, :class:`DINOHead`, :class:`DINOLoss`, :class:`MultiCropTransform`,
:class:`DINOTrainer`. Checkpoints use :mod:`spatialclust.models._checkpoint` (kind ``"dino"``).
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

__all__ = [
    "CHECKPOINT_KIND",
    "DINOHead",
    "DINOLoss",
    "DINOTrainer",
    "MultiCropTransform",
    "CELL_SCALINGS",
    "adapt_patch_embedding",
    "channel_reference",
    "channel_vit",
    "scale_cell_images",
]

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
# channel-adapted ViT


def adapt_patch_embedding(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt an RGB patch-embedding kernel ``(D, 3, p, p)`` to ``in_chans`` channels (scDINO).

    The three RGB kernels are averaged and the average is used for every channel, so that each
    channel has equal weight: ``W'[:, c] = mean_rgb W[:, rgb]`` for ``c = 1..in_chans``.
    """
    if weight.ndim != 4:
        raise ValueError(f"`weight` must be a (D, C, p, p) convolution kernel, got shape {tuple(weight.shape)}.")
    if int(in_chans) < 1:
        raise ValueError(f"`in_chans` must be a positive integer, got {in_chans!r}.")
    if weight.shape[1] == in_chans:
        return weight.clone()
    return weight.mean(dim=1, keepdim=True).repeat(1, int(in_chans), 1, 1)


def channel_vit(
    in_chans: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    embed_dim: int = 96,
    depth: int = 3,
    num_heads: int = 3,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A timm VisionTransformer for ``in_chans``-channel images, pooled by its CLS token.

    Parameters
    ----------
    in_chans
        Number of image channels.
    image_size, patch_size, embed_dim, depth, num_heads
        Architecture; crops of other sizes are accepted (positional embeddings are interpolated,
        ``dynamic_img_size``), as multi-crop needs.
    state_dict
        Weights of a ViT with the same width/depth/patch size but possibly 3 (RGB) input channels
        and another image size, e.g. DINO ViT-S/16; its patch embedding is adapted with
        :func:`adapt_patch_embedding` and its positional embedding resampled to ``image_size``.

    Returns
    -------
    ``nn.Module`` mapping ``(B, in_chans, h, w)`` to the CLS embedding ``(B, embed_dim)``.
    """
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    if image_size % patch_size:
        raise ValueError(f"`image_size`={image_size} must be a multiple of `patch_size`={patch_size}.")
    if embed_dim % num_heads:
        raise ValueError(f"`embed_dim`={embed_dim} must be divisible by `num_heads`={num_heads}.")
    model = VisionTransformer(
        img_size=image_size, patch_size=patch_size, in_chans=int(in_chans), num_classes=0, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, global_pool="token", dynamic_img_size=True,
    )
    if state_dict is not None:
        state = {k: v for k, v in state_dict.items() if not k.startswith("head")}
        key = "patch_embed.proj.weight"
        if key not in state:
            raise ValueError("`state_dict` is not a timm VisionTransformer state dict (no `patch_embed.proj.weight`).")
        state[key] = adapt_patch_embedding(state[key], in_chans)
        if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
            grid = image_size // patch_size
            state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=(grid, grid), num_prefix_tokens=1)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"`state_dict` does not fit the ViT (embed_dim={embed_dim}, depth={depth}, patch_size={patch_size}): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
    return model


# ----------------------------------------------------------------------------------------------
# head and loss


class DINOHead(nn.Module):
    """DINO projection head: 3-layer MLP (GELU) -> L2-normalised bottleneck -> weight-normalised linear.

    Parameters
    ----------
    in_dim
        Backbone feature dimension.
    out_dim
        Number of prototypes K (paper 65536; smaller for small data).
    hidden_dim, bottleneck_dim
        MLP width (paper 2048) and bottleneck (paper 256).
    n_layers
        MLP layers (paper 3).
    norm_last_layer
        Freeze the weight-norm gain of the last layer at 1 (paper default, stabilises training).
    """

    def __init__(
        self, in_dim: int, out_dim: int = 4096, *, hidden_dim: int = 512, bottleneck_dim: int = 128,
        n_layers: int = 3, norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"`n_layers` must be at least 1, got {n_layers}.")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over all view pairs.

    ``L = mean_{t in global, s in all, s != t} sum_k -softmax((g_t - c) / tau_t)_k log softmax(g_s / tau_s)_k``;
    after each step the centre ``c`` follows the batch mean of the teacher outputs with momentum
    ``center_momentum``. The teacher temperature warms up linearly from ``warmup_teacher_temp`` to
    ``teacher_temp`` over ``warmup_teacher_temp_epochs`` (Caron et al. 2021, Algorithm 1).

    Parameters
    ----------
    out_dim
        Head output dimension K.
    epochs
        Total training epochs (length of the temperature schedule).
    teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs
        Teacher temperature schedule (paper/scDINO: 0.04 throughout).
    student_temp
        Student temperature (0.1).
    center_momentum
        Momentum of the centre (0.9).
    """

    def __init__(
        self, out_dim: int, *, epochs: int, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0, student_temp: float = 0.1, center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        for name, value in (("teacher_temp", teacher_temp), ("warmup_teacher_temp", warmup_teacher_temp), ("student_temp", student_temp)):
            if not value > 0:
                raise ValueError(f"`{name}` must be positive, got {value!r}.")
        if not 0 <= center_momentum < 1:
            raise ValueError(f"`center_momentum` must be in [0, 1), got {center_momentum!r}.")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        warmup = min(int(warmup_teacher_temp_epochs), int(epochs))
        self.teacher_temps = np.concatenate(
            [np.linspace(warmup_teacher_temp, teacher_temp, warmup), np.full(max(int(epochs) - warmup, 1), teacher_temp)]
        )
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], epoch: int) -> torch.Tensor:
        """``student``: head outputs of all crops (global first); ``teacher``: of the global crops."""
        temp = float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])
        targets = [F.softmax((t - self.center) / temp, dim=-1).detach() for t in teacher]
        log_probs = [F.log_softmax(s / self.student_temp, dim=-1) for s in student]
        total, pairs = 0.0, 0
        for ti, target in enumerate(targets):
            for si, log_prob in enumerate(log_probs):
                if si == ti:  # the same view through student and teacher is skipped
                    continue
                total = total + torch.sum(-target * log_prob, dim=-1).mean()
                pairs += 1
        self._update_center(torch.cat(list(teacher)))
        return total / pairs

    @torch.no_grad()
    def _update_center(self, teacher_output: torch.Tensor) -> None:
        batch_center = teacher_output.mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


# ----------------------------------------------------------------------------------------------
# multi-crop augmentation


class MultiCropTransform(nn.Module):
    """DINO multi-crop for ``(B, C, H, W)`` cell images in [0, 1]: 2 global + ``n_local_crops`` local crops.

    Every crop is a random resized crop (area fraction ``global_scale`` / ``local_scale``, aspect
    3/4-4/3) with a random rotation (any angle: cells have no orientation) and flip, resampled
    bilinearly to ``global_size`` / ``local_size``; the same geometry is applied to all channels
    of a cell. Appearance changes are those suited to fluorescence (per channel): brightness and
    contrast jitter, Gaussian blur (p = 1.0 / 0.1 for the two global crops, 0.5 for local crops as
    in DINO) and Gaussian noise. DINO's colour jitter, grey-scale and solarisation are RGB-specific
    and not used.

    Parameters
    ----------
    global_size, local_size
        Output sides (pixels) of global and local crops.
    n_local_crops
        Number of local crops (paper 8 at 96 px for 224 px global crops; fewer for small images).
    global_scale, local_scale
        Crop area ranges (paper (0.4, 1) and (0.05, 0.4)).
    intensity_jitter
        Maximum relative brightness/contrast change (0: none). Brightness jitter teaches the network
        to ignore how bright a cell is, which is wrong when brightness is the phenotype (DNA content).
    """

    def __init__(
        self, global_size: int = 32, local_size: int = 16, *, n_local_crops: int = 4,
        global_scale: Sequence[float] = (0.4, 1.0), local_scale: Sequence[float] = (0.05, 0.4),
        intensity_jitter: float = 0.4,
    ) -> None:
        super().__init__()
        from ._transforms import RandomGaussianBlur, RandomGaussianNoise, RandomIntensityDistortion

        if n_local_crops < 0:
            raise ValueError(f"`n_local_crops` must be >= 0, got {n_local_crops}.")
        for name, scale in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0 < scale[0] <= scale[1] <= 1:
                raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high <= 1, got {scale!r}.")
        self.global_size, self.local_size = int(global_size), int(local_size)
        self.n_local_crops = int(n_local_crops)
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.intensity = RandomIntensityDistortion(intensity_jitter, p=0.8 if intensity_jitter > 0 else 0.0)
        self.blurs = nn.ModuleList([RandomGaussianBlur((0.1, 1.5), p=p) for p in (1.0, 0.1, 0.5)])
        self.noise = RandomGaussianNoise((0.001, 0.1), p=0.5)

    def _crop(self, images: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
        b, dev = images.shape[0], images.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * (high - low) + low).to(dev)

        area = uniform(*scale)
        ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
        sx, sy = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
        tx, ty = uniform(-1, 1) * (1 - sx), uniform(-1, 1) * (1 - sy)
        angle = uniform(0, 2 * math.pi)
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([sx * cos * flip, -sy * sin, tx], 1), torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta.to(images.dtype), [b, images.shape[1], size, size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _appearance(self, crops: torch.Tensor, blur: nn.Module, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = crops.shape
        flat = crops.reshape(b * c, h, w).clamp(0.0, 1.0)
        for transform in (self.intensity, blur, self.noise):
            flat = transform(flat, generator=generator)
        return flat.reshape(b, c, h, w)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator) -> list[torch.Tensor]:
        """List of crops: 2 global ``(B, C, global_size, global_size)`` then the local ones."""
        if images.ndim != 4:
            raise ValueError(f"Multi-crop takes a batch (B, C, H, W), got shape {tuple(images.shape)}.")
        views = [
            self._appearance(self._crop(images, self.global_size, self.global_scale, generator), self.blurs[i], generator)
            for i in range(2)
        ]
        views += [
            self._appearance(self._crop(images, self.local_size, self.local_scale, generator), self.blurs[2], generator)
            for _ in range(self.n_local_crops)
        ]
        return views


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
        ``"cell"``: every channel of every cell min-max scaled to [0, 1] (scDINO); ``"dataset"``:
        divided by the channel's 99.9th percentile over all training cells (keeps brightness
        differences between cells, e.g. DNA content); see :func:`scale_cell_images`.
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
        scaling: str = "cell",
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
                with torch.no_grad():
                    for ps, pt in zip(self.student_.parameters(), self.teacher_.parameters()):
                        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
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
        data = scale_cell_images(images, sizes, reference=self.reference_)
        if data.shape[1] != self.in_chans_:
            raise ValueError(f"The model was trained on {self.in_chans_} channels; `images` have {data.shape[1]}.")
        tensor = torch.from_numpy(self._resize(data))
        backbone = self.teacher_.backbone.to(self.device_).eval()
        out = []
        with torch.inference_mode():
            for first in range(0, tensor.shape[0], batch_size):
                out.append(backbone(tensor[first : first + batch_size].to(self.device_)).float().cpu().numpy())
        return np.concatenate(out)
