"""Contrastive loss of SimCLR: NT-Xent (normalised temperature-scaled cross entropy).

Chen et al. (2020), "A simple framework for contrastive learning of visual representations",
ICML; used for ion images by Hu et al. (2022, Chem. Sci. 13, 90; seed 001).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NTXentLoss"]


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
