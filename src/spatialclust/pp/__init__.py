"""Preprocessing: feature-image view, normalisation, winsorising, scaling, tissue mask."""

from ._batches import FeatureImageBatches, GridLayout, conditioned_tissue_pixels, grid_layout
from ._images import CHUNK_ENTRIES, feature_images, intensity_matrix, pixel_coordinates, tissue_mask_image, tissue_pixels
from ._matrix import DENSE_MAX_ENTRIES, GROUP_CHUNK_ENTRIES, chunk_spans, is_dask, preprocessing_steps
from ._normalize import normalize_rms, normalize_tic
from ._patches import CONDITIONING_CONSTRAINTS, CONTRASTS, DENOISERS, MAX_UPSAMPLE, PatchGrid, condition_images, extract_patches, patch_grid
from ._preprocess import preprocess_ion_images
from ._rasterize import rasterize_spots
from ._st import preprocess_st
from ._standardize import remove_empty_features, scale_images, winsorize
from ._tissue import otsu_threshold, tissue_mask

__all__: list[str] = [
    "CHUNK_ENTRIES",
    "DENSE_MAX_ENTRIES",
    "GROUP_CHUNK_ENTRIES",
    "CONDITIONING_CONSTRAINTS",
    "CONTRASTS",
    "FeatureImageBatches",
    "GridLayout",
    "DENOISERS",
    "MAX_UPSAMPLE",
    "PatchGrid",
    "chunk_spans",
    "condition_images",
    "conditioned_tissue_pixels",
    "extract_patches",
    "feature_images",
    "grid_layout",
    "intensity_matrix",
    "is_dask",
    "normalize_rms",
    "normalize_tic",
    "otsu_threshold",
    "patch_grid",
    "pixel_coordinates",
    "preprocess_ion_images",
    "preprocess_st",
    "preprocessing_steps",
    "rasterize_spots",
    "remove_empty_features",
    "scale_images",
    "tissue_mask",
    "tissue_mask_image",
    "tissue_pixels",
    "winsorize",
]
