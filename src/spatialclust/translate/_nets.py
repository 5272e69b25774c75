"""PyTorch modules of the translator (imported lazily: only when a neural model is fitted or loaded).

- :class:`MLP`: multilayer perceptron, one output per metabolite (a sigmoid per metabolite for
  presence, a linear output per metabolite for intensity).
- :class:`GeneTokenTransformer`: a transformer over tokens (gene modules, see
  :class:`~spatialclust.translate.TransformerIntensityRegressor`) in which every metabolite has one
  learned query (its identity/positional encoding, as the seed proposes) that attends over the gene
  tokens; the attention weights of these queries are the model's gene-to-metabolite attribution
  (cf. the learned-query decoders of Casanovo, Yilmaz et al. 2024, and the attention profiling of
  SEQUOIA, Pizurica et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "GeneTokenTransformer"]


class MLP(nn.Module):
    """``Linear -> GELU -> Dropout`` blocks, then a linear layer with ``n_outputs`` outputs."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden_sizes: Sequence[int] = (64,), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.GELU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GeneTokenTransformer(nn.Module):
    """Metabolite intensities from tokens with one learned query per metabolite.

    Token ``k`` of a spot with (standardised) value ``x_k`` -- a gene-module score in
    :class:`~spatialclust.translate.TransformerIntensityRegressor`, or a gene's expression --:
    ``t_k = E[k] + x_k * V[k]`` (token identity embedding + value-scaled embedding).
    ``n_layers`` transformer encoder layers let the tokens interact, then each metabolite query ``Q[m]``
    cross-attends over them; a per-metabolite linear read-out of the attended vector gives the
    intensity. Cost per spot: ``O(n_tokens^2 * d_model)``.

    Parameters
    ----------
    n_genes, n_metabolites
        Numbers of tokens and metabolite queries.
    d_model
        Token width.
    n_heads
        Attention heads (``d_model`` must be divisible by it).
    n_layers
        Encoder layers over the tokens (0: metabolite queries attend the raw tokens).
    dropout
        Dropout in the encoder and before the read-out.
    """

    def __init__(self, n_genes: int, n_metabolites: int, *, d_model: int = 32, n_heads: int = 4, n_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads}).")
        self.gene_embedding = nn.Parameter(torch.randn(n_genes, d_model) * 0.02)
        self.value_embedding = nn.Parameter(torch.randn(n_genes, d_model) * 0.02)
        self.encoder = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True, norm_first=True),
                num_layers=n_layers,
                enable_nested_tensor=False,
            )
            if n_layers > 0
            else None
        )
        self.queries = nn.Parameter(torch.randn(n_metabolites, d_model) * 0.02)
        self.cross_attention = nn.MultiheadAttention(d_model, n_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.readout_weight = nn.Parameter(torch.randn(n_metabolites, d_model) * 0.02)
        self.readout_bias = nn.Parameter(torch.zeros(n_metabolites))

    def forward(self, x: torch.Tensor, *, return_attention: bool = False):
        """``x``: ``(batch, n_genes)`` -> ``(batch, n_metabolites)`` [, attention ``(batch, n_metabolites, n_genes)``]."""
        tokens = self.gene_embedding[None] + x[..., None] * self.value_embedding[None]
        if self.encoder is not None:
            tokens = self.encoder(tokens)
        queries = self.queries[None].expand(x.shape[0], -1, -1)
        attended, weights = self.cross_attention(queries, tokens, tokens, need_weights=True, average_attn_weights=True)
        hidden = self.dropout(self.norm(attended + queries))
        out = (hidden * self.readout_weight[None]).sum(-1) + self.readout_bias
        return (out, weights) if return_attention else out
