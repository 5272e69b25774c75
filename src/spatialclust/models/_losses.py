"""Losses of the self-supervised clustering of ion images (Hu et al. 2022, Chem. Sci. 13, 90; seed 001).

- :class:`NTXentLoss`: the contrastive loss of SimCLR (Chen et al. 2020, ICML).
- :class:`ConfidenceBasedCrossEntropy`: the self-labeling loss of SCAN (Van Gansbeke et al. 2020,
  ECCV), as in the authors' implementation: pseudo labels from the weak view, cross entropy of the
  strong view, only where the weak view is confident, with class-balancing weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConfidenceBasedCrossEntropy", "NTXentLoss"]


class NTXentLoss(nn.Module):
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

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` must be a positive number; received {temperature!r}.")
        self.temperature = float(temperature)

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

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


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
