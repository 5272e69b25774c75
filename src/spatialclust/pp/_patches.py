"""Overlapping square patches of feature images, as fed to a pretrained network.

Zhang et al. (seed 000, "Generation of neural ion images"): every ion image is split into
overlapping square patches (40-50 % overlap) of a chosen *physical* size (1-2 mm worked best);
when such a patch has fewer pixels than the network's minimum input (71 px for Xception), the
image is up-sampled first (the paper up-sampled its 50 µm data by 2).

Here the patch grid is computed once per dataset (all images share the grid and the tissue mask):

- the patch side is given in pixels (``patch_size``) or in µm (``patch_size_um``, using the pixel size);
- the image is up-sampled by ``min_size / patch_px`` (at most ``max_upsample``) if needed;
- along each axis patches start every ``round(side * (1 - overlap))`` pixels and the last row/column
  of patches is aligned to the image border, so no pixel is lost;
- patches that contain no tissue pixel are skipped.

Before the patches are cut, :func:`condition_images` can condition every image the way
METASPACE prepares ion images for its cosine co-localisation (hot-spot removal by percentile
clipping, denoising by a median or Gaussian filter) and normalise its contrast (min-max or rank),
so that images of one pattern at different abundance look alike to the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import Interval, validate_params

__all__ = ["CONDITIONING_CONSTRAINTS", "CONTRASTS", "DENOISERS", "PatchGrid", "condition_images", "extract_patches", "patch_grid", "upsample_images"]

#: Largest up-sampling factor applied by default (the paper used 2).
MAX_UPSAMPLE = 4.0
#: Denoising filters of :func:`condition_images`.
DENOISERS = ("gaussian", "median")
#: Contrast normalisations of :func:`condition_images`.
CONTRASTS = ("minmax", "rank")
#: What the parameters of :func:`condition_images` accept (also declared by the embedders that condition).
CONDITIONING_CONSTRAINTS: dict[str, list] = {
    "denoise": [*DENOISERS, None], "denoise_size": [Interval(float, 0, closed="neither", description="> 0 pixels")],
    "clip_percentile": [Interval(float, 0, 100, closed="right", description="in (0, 100]"), None],
    "contrast": [*CONTRASTS, None],
}


def condition_images(
    images: np.ndarray,
    *,
    denoise: str | None = None,
    denoise_size: float = 1.5,
    clip_percentile: float | None = None,
    contrast: str | None = "minmax",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Condition ion images before a pretrained network sees them.

    In order, per image: denoise (``"gaussian"``: Gaussian filter of standard deviation
    ``denoise_size`` px, the maximum-likelihood smoother of sparse Poisson counts; ``"median"``:
    ``denoise_size`` x ``denoise_size`` median filter, as METASPACE before its cosine
    co-localisation), clip at the ``clip_percentile``-th percentile of the tissue pixels (hot-spot
    removal, METASPACE: 99), then normalise the contrast over the tissue pixels (``"minmax"``: to
    [0, 1]; ``"rank"``: every tissue pixel replaced by its (mean) rank / n, which removes any monotone
    contrast difference such as a gamma). Background pixels (``~mask``) are 0 afterwards.

    Parameters
    ----------
    images
        float ``(n_images, H, W)``.
    denoise
        ``"gaussian"``, ``"median"`` or None.
    denoise_size
        Gaussian standard deviation or median window in pixels.
    clip_percentile
        Upper percentile in (0, 100] for hot-spot removal, or None.
    contrast
        ``"minmax"``, ``"rank"`` or None (intensities left as they are, background set to 0).
    mask
        bool ``(H, W)`` tissue mask (None: all pixels).

    Returns
    -------
    float32 ``(n_images, H, W)``, in [0, 1] with a contrast normalisation.
    """
    from scipy import ndimage, stats

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (n_images, height, width); received shape {images.shape}.")
    validate_params({"denoise": denoise, "denoise_size": denoise_size, "clip_percentile": clip_percentile,
                     "contrast": contrast}, CONDITIONING_CONSTRAINTS)
    mask = np.ones(images.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != images.shape[1:]:
        raise ValueError(f"`mask` must have the image shape {images.shape[1:]}; received shape {mask.shape}.")
    out = np.zeros_like(images)
    for i, image in enumerate(images):
        if denoise == "gaussian":
            image = ndimage.gaussian_filter(image, denoise_size)
        elif denoise == "median":
            image = ndimage.median_filter(image, size=max(1, int(round(denoise_size))))
        values = image[mask]
        if clip_percentile is not None and values.size:
            values = np.minimum(values, np.percentile(values, clip_percentile))
        if contrast == "rank":
            values = stats.rankdata(values) / max(values.size, 1)  # ties (e.g. the zeros) share their mean rank
        elif contrast == "minmax" and values.size:
            low, span = values.min(), np.ptp(values)
            values = (values - low) / span if span > 0 else np.zeros_like(values)
        out[i][mask] = values
    return out


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of a stack of images lie.

    Attributes
    ----------
    patch_size
        Patch side in pixels of the up-sampled image.
    patch_size_original
        Patch side in pixels of the original image (``patch_size / scale``).
    scale
        Up-sampling factor applied to the images before cutting patches (1.0 = none).
    source_shape
        ``(height, width)`` of the original images.
    image_shape
        ``(height, width)`` of the up-sampled image.
    origins
        int ``(n_patches, 2)``: top-left ``(row, col)`` of each kept patch in the up-sampled image.
    overlap
        Overlap between neighbouring patches (fraction of the side) from the rounded stride; the
        last row/column, aligned to the border, overlaps its neighbour at least as much.
    n_skipped
        Patches dropped because they contain no tissue pixel.
    """

    patch_size: int
    patch_size_original: float
    scale: float
    source_shape: tuple[int, int]
    image_shape: tuple[int, int]
    origins: np.ndarray
    overlap: float
    n_skipped: int

    @property
    def n_patches(self) -> int:
        """Number of kept patches."""
        return int(self.origins.shape[0])


def _axis_origins(length: int, patch: int, stride: int) -> np.ndarray:
    """Origins ``0, stride, 2*stride, ...`` plus a last patch aligned to the border (``length - patch``)."""
    origins = np.arange(0, length - patch + 1, stride, dtype=np.int64)
    if origins[-1] != length - patch:
        origins = np.append(origins, length - patch)
    return origins


def patch_grid(
    image_shape: tuple[int, int],
    *,
    patch_size: int | None = None,
    patch_size_um: float | None = None,
    pixel_size: float | None = None,
    overlap: float = 0.5,
    min_size: int = 1,
    max_upsample: float = MAX_UPSAMPLE,
    mask: np.ndarray | None = None,
) -> PatchGrid:
    """Compute the patch grid of images of shape ``image_shape``.

    Parameters
    ----------
    image_shape
        ``(height, width)`` of the images in pixels.
    patch_size
        Patch side in pixels of the original image. Give this or ``patch_size_um``; if neither,
        the shorter image side (one patch row/column across it).
    patch_size_um
        Patch side in µm (the paper found 1-2 mm to work well); needs ``pixel_size``.
    pixel_size
        Pixel size of the grid in µm.
    overlap
        Overlap between neighbouring patches as a fraction of the side, in [0, 1)
        (the paper used 0.4-0.5; default 0.5).
    min_size
        Minimum patch side accepted by the network (e.g. 71 for Xception); smaller patches are
        obtained by up-sampling the image by ``min_size / patch_px``.
    max_upsample
        Largest up-sampling factor allowed.
    mask
        bool ``(height, width)`` tissue mask; patches without any tissue pixel are skipped.

    Returns
    -------
    The :class:`PatchGrid`.
    """
    height, width = (int(v) for v in image_shape)
    if height < 1 or width < 1:
        raise ValueError(f"`image_shape` must be positive (height, width); received {image_shape}.")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"`overlap` must be a fraction in [0, 1) (the paper used 0.4-0.5); received {overlap!r}.")
    if not (isinstance(min_size, (int, np.integer)) and min_size >= 1):
        raise ValueError(f"`min_size` must be a positive integer; received {min_size!r}.")
    if not max_upsample >= 1.0:
        raise ValueError(f"`max_upsample` must be >= 1; received {max_upsample!r}.")
    if patch_size is not None and patch_size_um is not None:
        raise ValueError("Give either `patch_size` (pixels) or `patch_size_um` (µm), not both.")
    if patch_size_um is not None:
        if pixel_size is None:
            raise ValueError(
                "`patch_size_um` needs the pixel size of the grid (`pixel_size` in µm, uns['grid']['pixel_size']); "
                "it is unknown here, so give `patch_size` in pixels instead."
            )
        if not (np.isfinite(patch_size_um) and patch_size_um > 0):
            raise ValueError(f"`patch_size_um` must be a positive number of µm; received {patch_size_um!r}.")
        patch_px = float(patch_size_um) / float(pixel_size)
        given = f"`patch_size_um`={patch_size_um} µm ({patch_px:.1f} px at {pixel_size} µm/px)"
    elif patch_size is not None:
        if not (isinstance(patch_size, (int, np.integer)) and patch_size >= 1):
            raise ValueError(f"`patch_size` must be a positive integer number of pixels; received {patch_size!r}.")
        patch_px = float(patch_size)
        given = f"`patch_size`={patch_size} px"
    else:
        patch_px = float(min(height, width))
        given = f"the default patch size ({int(patch_px)} px, the shorter image side)"
    if patch_px > min(height, width) + 1e-6:
        raise ValueError(f"{given} is larger than the image ({height} x {width} px); use a smaller patch size.")
    if min(height, width) * max_upsample < min_size:
        raise ValueError(
            f"The image ({height} x {width} px) is smaller than the backbone's minimum input of {min_size} px "
            f"even after up-sampling by `max_upsample`={max_upsample}; use a backbone with a smaller minimum "
            "input or raise `max_upsample`."
        )
    scale = 1.0
    if patch_px < min_size:
        scale = min_size / patch_px
        if scale > max_upsample + 1e-9:
            raise ValueError(
                f"{given} is below the backbone's minimum input of {min_size} px even after up-sampling by "
                f"`max_upsample`={max_upsample}; use a larger patch size or raise `max_upsample`."
            )
    up_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    patch = min(max(min_size, round(patch_px * scale)), *up_shape)
    stride = max(1, round(patch * (1.0 - overlap)))
    rows = _axis_origins(up_shape[0], patch, stride)
    cols = _axis_origins(up_shape[1], patch, stride)
    origins = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    n_total = origins.shape[0]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"`mask` must have the image shape {(height, width)}; received shape {mask.shape}.")
        up_mask = _resize_mask(mask, up_shape)
        # summed-area table: tissue pixels inside each patch in O(1)
        sat = np.pad(up_mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        r, c = origins[:, 0], origins[:, 1]
        inside = sat[r + patch, c + patch] - sat[r, c + patch] - sat[r + patch, c] + sat[r, c]
        origins = origins[inside > 0]
        if origins.shape[0] == 0:
            raise ValueError("`mask` selects no pixel: every patch lies outside the tissue (all-background image).")
    return PatchGrid(
        patch_size=int(patch),
        patch_size_original=patch / scale,
        scale=float(scale),
        source_shape=(height, width),
        image_shape=(int(up_shape[0]), int(up_shape[1])),
        origins=origins.astype(np.int64),
        overlap=1.0 - stride / patch,
        n_skipped=int(n_total - origins.shape[0]),
    )


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask (pixel centres)."""
    if mask.shape == tuple(shape):
        return mask
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1).astype(np.int64)
    return mask[np.ix_(rows, cols)]


def upsample_images(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear up-sampling of ``images`` ``(n, H, W)`` to ``(n, *shape)`` (float32)."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] == tuple(shape):
        return images
    import torch

    with torch.inference_mode():
        out = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(images))[:, None], size=tuple(shape), mode="bilinear", align_corners=False
        )
    return out[:, 0].numpy()


def extract_patches(images: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """Cut the patches of ``grid`` out of ``images``.

    Parameters
    ----------
    images
        float ``(n_images, H, W)`` at the original resolution (up-sampled here if ``grid.scale > 1``).
    grid
        From :func:`patch_grid` for images of this shape.

    Returns
    -------
    float32 ``(n_images, n_patches, patch_size, patch_size)``.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (n_images, height, width); received shape {images.shape}.")
    if images.shape[1:] != grid.source_shape:
        raise ValueError(
            f"`images` of shape {images.shape[1:]} do not match the patch grid (computed for {grid.source_shape})."
        )
    up = upsample_images(images, grid.image_shape)
    p = grid.patch_size
    rows = grid.origins[:, 0][:, None] + np.arange(p)[None, :]
    cols = grid.origins[:, 1][:, None] + np.arange(p)[None, :]
    # (n_images, n_patches, p, p) by fancy indexing of rows x cols per patch
    return up[:, rows[:, :, None], cols[:, None, :]]
