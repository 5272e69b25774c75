"""Preprocessing: feature-image view, normalisation, winsorising, scaling, tissue mask."""

from ._images import feature_images, tissue_mask_image

__all__: list[str] = ["feature_images", "tissue_mask_image"]
