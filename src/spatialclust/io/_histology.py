"""Histology images (H&E) as float RGB arrays, for overlays and SpatialData stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_histology"]


def read_histology(histology: str | Path | np.ndarray) -> np.ndarray:
    """A histology image as float RGB ``(H, W, 3)`` in [0, 1] from an array or a tiff/png/jpg file."""
    if isinstance(histology, (str, Path)):
        path = Path(histology)
        if not path.is_file():
            raise FileNotFoundError(f"Histology image {str(path)!r} does not exist.")
        from PIL import Image

        try:  # Pillow decodes the usual (LZW/deflate/JPEG-compressed) RGB tiffs, png and jpg
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"))
        except (OSError, ValueError) as pil_error:  # e.g. float or multi-channel tiff
            if path.suffix.lower() not in {".tif", ".tiff"}:
                raise ValueError(f"Cannot read histology image {str(path)!r}: {pil_error}") from pil_error
            import tifffile

            try:
                image = tifffile.imread(path)
            except ValueError as err:
                raise ValueError(f"Cannot read histology image {str(path)!r}: {err}") from err
    else:
        image = histology
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
        image = np.moveaxis(image, 0, -1)  # channels-first tiff
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"`histology` must be a grey or RGB(A) image; received shape {image.shape}.")
    integer = np.issubdtype(image.dtype, np.integer)
    image = image[..., :3].astype(np.float64)
    top = float(image.max()) if image.size else 1.0
    if integer or top > 1:  # 8-bit images to [0, 1]; other ranges by their maximum
        image = image / (255.0 if integer and top <= 255 else max(top, 1e-12))
    return np.clip(image, 0, 1)
