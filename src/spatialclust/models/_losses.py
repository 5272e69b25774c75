"""Losses of the self-supervised clustering of ion images (Hu et al. 2022, Chem. Sci. 13, 90; seed 001).

- :class:`NTXentLoss`: the contrastive loss of SimCLR (Chen et al. 2020, ICML).
- :class:`ConfidenceBasedCrossEntropy`: the self-labeling loss of SCAN (Van Gansbeke et al. 2020,
  ECCV), as in the authors' implementation: pseudo labels from the weak view, cross entropy of the
  strong view, only where the weak view is confident, with class-balancing weights.
- :class:`InfoNCELoss`: the contrastive loss of DARLC's Module I (Wang et al. 2024, seed 003).
- :class:`DINOLoss`: the self-distillation loss of DINO (Caron et al. 2021, ICCV), used by scDINO
  for cell images (seed 002).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConfidenceBasedCrossEntropy", "DINOLoss", "InfoNCELoss", "NTXentLoss"]


class _TemperatureLoss(nn.Module):
    """A contrastive loss with a softmax temperature, checked when the loss is built."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` must be a positive number; received {temperature!r}.")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NTXentLoss(_TemperatureLoss):
    """NT-Xent loss over a batch of positive pairs.

    For a mini-batch of ``N`` images, each seen in two augmented views, the ``2N`` projections are
    L2-normalised; for every view the other view of the same image is the positive and the remaining
    ``2(N - 1)`` views are the negatives. The loss is the cross entropy of the positive among all
    ``2N - 1`` candidates, with cosine similarities divided by ``temperature``, averaged over the
    ``2N`` views (Chen et al. 2020, Eq. 1; Hu et al. 2022, ESI Fig. S1).

    Parameters
    ----------
    temperature
        Softmax temperature ``tau`` > 0 (0.5 in the authors' implementation for ion images).

    Examples
    --------
    >>> loss = NTXentLoss(temperature=0.5)
    >>> z0, z1 = torch.randn(8, 16), torch.randn(8, 16)
    >>> float(loss(z0, z1)) > 0
    True
    """

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Loss of the projections ``z0`` and ``z1`` (``(N, d)`` each; row ``i`` of both is one image)."""
        if z0.ndim != 2 or z0.shape != z1.shape:
            raise ValueError(
                f"NT-Xent needs two projection batches of the same shape (N, d); received {tuple(z0.shape)} and {tuple(z1.shape)}."
            )
        n = z0.shape[0]
        if n < 2:
            raise ValueError(f"NT-Xent needs at least 2 images per batch (the negatives are the other images); received {n}.")
        z = F.normalize(torch.cat([z0, z1], dim=0).float(), dim=1)
        logits = z @ z.T / self.temperature
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, positives)



class InfoNCELoss(_TemperatureLoss):
    """InfoNCE of a query batch against a key batch (MoCo style; DARLC, Wang et al. 2024, eq. 10).

    Row ``i`` of ``q`` and ``k`` are the two views of one image (the positive pair); the other rows
    of ``k`` are the negatives. Both are L2-normalised; the loss is the cross entropy of the
    positive among the ``N`` keys, with cosine similarities divided by ``temperature``. Unlike
    :class:`NTXentLoss` the keys usually come from a momentum (target) encoder and only
    query-to-key similarities count.

    Parameters
    ----------
    temperature
        Softmax temperature ``tau`` > 0 (DARLC: 0.5).

    Examples
    --------
    >>> loss = InfoNCELoss(temperature=0.5)
    >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
    >>> float(loss(q, k)) > 0
    True
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Loss of the queries ``q`` against the keys ``k`` (``(N, d)`` each)."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / self.temperature
        return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


class ConfidenceBasedCrossEntropy(nn.Module):
    """Self-labeling loss: cross entropy of strong views against the confident weak-view predictions.

    For every image of a batch the weakly augmented view gives the pseudo label (its argmax) and
    the confidence (its largest softmax probability). Only images whose confidence exceeds
    ``threshold`` count; the loss is the cross entropy of their *strongly* augmented view against the
    pseudo label, each class weighted by the inverse of its share among the confident images
    (``class_balancing``), so that large clusters do not absorb small ones (Van Gansbeke et al.
    2020; Hu et al. 2022).

    Parameters
    ----------
    threshold
        Confidence an image needs to be trained on, in (0, 1].
    class_balancing
        Weight classes by the inverse of their frequency among the confident images.

    Examples
    --------
    >>> loss = ConfidenceBasedCrossEntropy(threshold=0.5)
    >>> weak = torch.tensor([[4.0, 0.0], [0.0, 0.1]])
    >>> value, n_confident = loss(weak, torch.zeros(2, 2))
    >>> n_confident
    1
    """

    def __init__(self, threshold: float = 0.9, *, class_balancing: bool = True) -> None:
        super().__init__()
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"`threshold` must be a probability in (0, 1]; received {threshold!r}.")
        self.threshold = float(threshold)
        self.class_balancing = bool(class_balancing)

    def forward(self, weak_logits: torch.Tensor, strong_logits: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(loss, n_confident)``; the loss is 0 (still differentiable) when no image is confident."""
        if weak_logits.ndim != 2 or weak_logits.shape != strong_logits.shape:
            raise ValueError(
                f"Weak and strong logits must have the same shape (N, n_classes); received {tuple(weak_logits.shape)} "
                f"and {tuple(strong_logits.shape)}."
            )
        confidence, target = torch.softmax(weak_logits.detach().float(), dim=1).max(dim=1)
        confident = confidence > self.threshold
        n_confident = int(confident.sum())
        if n_confident == 0:
            return strong_logits.sum() * 0.0, 0
        target = target[confident]
        weight = None
        if self.class_balancing:
            counts = torch.bincount(target, minlength=weak_logits.shape[1]).float()
            weight = torch.where(counts > 0, n_confident / counts.clamp_min(1), torch.ones_like(counts))
        return F.cross_entropy(strong_logits[confident].float(), target, weight=weight), n_confident

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, class_balancing={self.class_balancing}"


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
