"""Denoising augmentations of DARLC: graph attention autoencoder (GAT) and Gaussian kernel smoothing.

DARLC (Wang et al., 2024, seed 003, §3.2.1) trains a graph attention autoencoder on the pixel graph
of a dataset (pixels = nodes with their C-channel vector, edges to the neighbours within a radius)
and uses its reconstruction as the smoothed positive view of every image. Following STAGATE
(Dong and Zhang, 2022), on which the paper builds:

- encoder layer k: ``h_i^(k) = sigma(sum_{j in N(i)} a_ij^(k) W_k h_j^(k-1))`` (eq. 1), no
  activation on the last (bottleneck) layer;
- attention: ``e_ij = Sigmoid(v_s^T W_k h_i + v_r^T W_k h_j)``, ``a_ij = softmax_{j in N(i)} e_ij``
  (eqs. 2-3);
- decoder: mirror of the encoder with tied weights ``W_k^T`` and tied attention;
- loss: ``sum_i ||x_i - x_hat_i||^2`` (eq. 4); the smoothed image is the reconstruction (eq. 5).

The paper's structure is C-512-30 with one attention head (the defaults here). The ablation
"GAT -> GKS" replaces it by Gaussian kernel smoothing (:func:`gaussian_smooth`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .._logging import logger, progress

__all__ = ["gat_smooth", "gaussian_smooth", "pixel_graph"]


def pixel_graph(mask: np.ndarray, *, radius: float = 1.5) -> np.ndarray:
    """Edges ``(2, n_edges)`` between on-mask pixels closer than ``radius`` (grid units), self-loops included.

    Nodes are numbered in row-major order of ``mask``'s True pixels.
    """
    if radius < 1:
        raise ValueError(f"`radius` must be >= 1 grid cell so that pixels have neighbours; received {radius!r}.")
    yx = np.argwhere(mask).astype(np.float64)
    pairs = cKDTree(yx).query_pairs(radius, output_type="ndarray")
    n = len(yx)
    loops = np.arange(n)
    src = np.concatenate([pairs[:, 0], pairs[:, 1], loops])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0], loops])
    return np.stack([src, dst]).astype(np.int64)


def _build_module(in_dim: int, hidden_dims: tuple[int, ...]):
    import torch
    from torch import nn

    class GraphAttentionAutoencoder(nn.Module):
        """Tied-weight graph attention autoencoder (STAGATE / DARLC eqs. 1-5)."""

        def __init__(self) -> None:
            super().__init__()
            dims = (in_dim, *hidden_dims)
            self.weights = nn.ParameterList(
                [nn.Parameter(nn.init.xavier_uniform_(torch.empty(a, b))) for a, b in zip(dims[:-1], dims[1:])]
            )
            self.att_src = nn.ParameterList([nn.Parameter(torch.randn(b) * 0.1) for b in dims[1:]])
            self.att_dst = nn.ParameterList([nn.Parameter(torch.randn(b) * 0.1) for b in dims[1:]])

        @staticmethod
        def _propagate(h: torch.Tensor, att: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
            """``out_i = sum_j a_ij h_j`` over the edges ``j -> i``."""
            src, dst = edges
            return torch.zeros_like(h).index_add_(0, dst, att[:, None] * h[src])

        @staticmethod
        def _attention(h: torch.Tensor, w: torch.Tensor, a_s: torch.Tensor, a_r: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
            """Eqs. 2-3 with per-node scores ``h W a`` gathered per edge (gathering ``h W`` per edge
            would build an ``(n_edges, width)`` matrix)."""
            src, dst = edges  # message from src (neighbour j) to dst (node i)
            e = torch.sigmoid((h @ (w @ a_s))[dst] + (h @ (w @ a_r))[src])
            e = torch.exp(e - 1.0)  # sigmoid in (0, 1): exp cannot overflow
            denom = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(0, dst, e)
            return e / denom[dst]

        def _layer(self, h: torch.Tensor, w: torch.Tensor, att: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
            """``A (h W)`` computed as ``(A h) W`` when that propagates fewer columns: message
            passing is memory-bound, and the 512-wide layers would otherwise move 512 values per edge."""
            if w.shape[1] > w.shape[0]:
                return self._propagate(h, att, edges) @ w
            return self._propagate(h @ w, att, edges)

        def encode(self, x: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            h, atts = x, []
            last = len(self.weights) - 1
            for k, w in enumerate(self.weights):
                att = self._attention(h, w, self.att_src[k], self.att_dst[k], edges)
                atts.append(att)
                h = self._layer(h, w, att, edges)
                if k < last:
                    h = torch.nn.functional.elu(h)
            return h, atts

        def forward(self, x: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z, atts = self.encode(x, edges)
            h = z
            for k in reversed(range(len(self.weights))):
                h = self._layer(h, self.weights[k].T, atts[k], edges)
                if k > 0:
                    h = torch.nn.functional.elu(h)
            return z, h

    return GraphAttentionAutoencoder()


def gat_smooth(
    images: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    hidden_dims: tuple[int, ...] = (512, 30),
    radius: float = 1.5,
    epochs: int = 300,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    random_state: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, list[float]]:
    """Train the graph attention autoencoder on one dataset and return the smoothed images.

    Parameters
    ----------
    images
        float32 ``(C, H, W)``: all feature images of one dataset (C = channels of every pixel).
    mask
        bool ``(H, W)`` tissue mask (None: all pixels); off-mask pixels are not nodes and stay 0.
    hidden_dims
        Encoder layer sizes after the input (paper: 512, 30).
    radius
        Neighbourhood radius in grid cells (1.5: the 8-neighbourhood).
    epochs, lr, weight_decay
        Full-batch Adam training (gradient norm clipped at 5, as STAGATE).
    random_state
        Seed of the weight initialisation.

    Returns
    -------
    smoothed
        float32 ``(C, H, W)``: the reconstructions ``x_hat`` (eq. 5).
    losses
        Reconstruction loss (eq. 4, mean over pixels) per epoch.
    """
    import torch

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (C, H, W); received {images.shape}.")
    mask = np.ones(images.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != images.shape[1:]:
        raise ValueError(f"`mask` must have shape {images.shape[1:]}; received {mask.shape}.")
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1; received {epochs!r}.")
    torch.manual_seed(random_state)
    edges = torch.as_tensor(pixel_graph(mask, radius=radius), device=device)
    x = torch.as_tensor(images[:, mask].T.copy(), device=device)  # (n_pixels, C)
    model = _build_module(images.shape[0], tuple(int(h) for h in hidden_dims)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    for _ in progress(range(epochs), desc="GAT augmentation"):
        optimizer.zero_grad()
        _, recon = model(x, edges)
        loss = ((x - recon) ** 2).sum(dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.inference_mode():
        _, recon = model(x, edges)
    smoothed = np.zeros_like(images)
    smoothed[:, mask] = recon.cpu().numpy().T
    logger.info("GAT augmentation: reconstruction loss %.4g -> %.4g over %d epochs.", losses[0], losses[-1], epochs)
    return smoothed, losses


def gaussian_smooth(images: np.ndarray, mask: np.ndarray | None = None, *, sigma: float = 1.0) -> np.ndarray:
    """Gaussian kernel smoothing inside the tissue mask (normalised convolution; the "GKS" ablation).

    Off-mask pixels neither contribute nor receive intensity.
    """
    images = np.asarray(images, dtype=np.float32)
    mask = np.ones(images.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if sigma <= 0:
        raise ValueError(f"`sigma` must be positive; received {sigma!r}.")
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    out = np.stack([ndimage.gaussian_filter(img * mask, sigma) for img in images])
    out = np.divide(out, weight, out=np.zeros_like(out), where=weight > 1e-6)
    out[:, ~mask] = 0.0
    return out.astype(np.float32)
