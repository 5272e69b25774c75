"""Settings shared by the self-supervised trainers of ion images (SimCLR, self-labeling), free of torch."""

from __future__ import annotations

from .._logging import logger

__all__ = ["MAX_AUTO_BATCH", "resolve_batch_size"]

#: Largest mini-batch of ``batch_size="auto"`` (half the images, as the authors' 183 of 367).
MAX_AUTO_BATCH = 256


def resolve_batch_size(batch_size: int | str, n_images: int) -> int:
    """Images per mini-batch: ``"auto"`` = half the images (two batches per epoch, as the authors'
    code: 183 of 367 images), at most 256; a number larger than ``n_images`` is capped (logged)."""
    if batch_size == "auto":
        return max(2, min(n_images // 2, MAX_AUTO_BATCH))
    if int(batch_size) > n_images:
        logger.info("`batch_size`=%d is larger than the %d images; using batches of %d.", batch_size, n_images, n_images)
    return min(int(batch_size), n_images)
