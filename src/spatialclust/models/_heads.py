"""Heads put on top of a backbone: the SimCLR projection head, the linear cluster classifier and the
DINO head (Caron et al. 2021)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ClassificationHead", "DINOHead", "EncoderClassifier", "ProjectionHead", "SimCLRModel"]


class ProjectionHead(nn.Sequential):
    """SimCLR projection head ``g(h) = W2 ReLU(W1 h)`` (Chen et al. 2020).

    The contrastive loss is computed on ``g(h)``; the representation used downstream is ``h``, the
    backbone's pooled features. Hu et al. (2022, seed 001) use a hidden layer as wide as the
    encoder output.

    Parameters
    ----------
    in_features
        Dimension of the backbone features ``h``.
    hidden_features
        Width of the hidden layer (default ``in_features``).
    out_features
        Dimension of the projection ``z``.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int = 128) -> None:
        for name, value in (("in_features", in_features), ("hidden_features", hidden_features), ("out_features", out_features)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        hidden = hidden_features or in_features
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class ClassificationHead(nn.Linear):
    """Linear cluster classifier on the encoder features; softmax gives the cluster probabilities.

    Hu et al. (2022, seed 001) initialise it on the frozen encoder with the spectral-clustering
    labels and then fine-tune it with the encoder by self-labeling.

    Parameters
    ----------
    in_features
        Dimension of the encoder features.
    n_classes
        Number of clusters.
    """

    def __init__(self, in_features: int, n_classes: int) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"`n_classes` must be an integer >= 2; received {n_classes!r}.")
        super().__init__(in_features, n_classes)


class SimCLRModel(nn.Module):
    """Encoder ``f`` (a backbone) followed by a :class:`ProjectionHead` ``g`` (Chen et al. 2020).

    ``forward`` returns ``(h, z)``: the representation ``h = f(x)`` used downstream and the
    projection ``z = g(h)`` the contrastive loss is computed on.
    """

    def __init__(self, encoder: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x):
        h = self.encoder(x)
        return h, self.head(h)


class EncoderClassifier(nn.Module):
    """Encoder followed by a :class:`ClassificationHead`; ``forward`` returns the logits.

    The model fine-tuned by self-labeling (Hu et al. 2022, Fig. 1, steps 2-3).
    """

    def __init__(self, encoder: nn.Module, head: ClassificationHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x):
        return self.head(self.encoder(x))


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
