"""Generic PyTorch helpers shared by every training loop of the package.

Mixed precision (:func:`autocast_context`), channels-last inputs (:func:`channels_last`), the
backward pass + optimizer step through an optional gradient scaler (:func:`optimizer_step`), a
momentum (EMA) update of a target network (:func:`ema_update`), a temporary thread limit
(:func:`torch_threads`) and batched, gradient-free encoding of images
(:func:`encode`). The SimCLR, self-labeling, DARLC, DINO, neural-ion-image and translation code
combine these instead of keeping their own copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["autocast_context", "channels_last", "ema_update", "encode", "optimizer_step", "torch_threads"]


def autocast_context(device: str, enabled: bool) -> tuple[Any, Any]:
    """Mixed precision on CUDA: bfloat16 where supported (no scaler), else float16 with a GradScaler.

    Returns the autocast context (a null context off CUDA or when not ``enabled``) and the
    gradient scaler (None when none is needed).
    """
    if not (enabled and device.startswith("cuda")):
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last layout for 4-D inputs (faster convolutions on CPU and tensor cores)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Any | None) -> None:
    """Backward pass and optimizer step, through the mixed-precision ``scaler`` when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, momentum: float) -> None:
    """Momentum (EMA) update ``target = momentum * target + (1 - momentum) * online``, parameter by
    parameter (the target/teacher networks of BYOL/MoCo, DARLC eq. 8 and DINO)."""
    for pt, po in zip(target.parameters(), online.parameters()):
        pt.mul_(momentum).add_(po.detach(), alpha=1 - momentum)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it as it is)."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encode(
    encoder: Any, images: np.ndarray, *, image_size: int, device: str, mask: np.ndarray | None = None, batch_size: int = 128
) -> np.ndarray:
    """Features of clean images ``(n, H, W)`` in [0, 1] by a :class:`~spatialclust.models.Backbone`
    (eval mode, batched, no gradients), zeroed outside ``mask`` first when given."""
    encoder.eval()
    out = []
    mask_t = None if mask is None else torch.as_tensor(mask, device=device)
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            if mask_t is not None:
                batch = batch * mask_t
            x = channels_last(encoder.preprocess(batch, size=image_size))
            out.append(encoder(x).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)
