"""Reading and writing spatial datasets (imzML, image stacks, h5ad, ...) as AnnData."""

from ._cells import (
    cell_image_stack,
    cell_images_to_adata,
    match_cell_labels,
    read_cell_features,
    read_cell_images,
    read_cell_labels,
    read_fcs,
)
from ._h5ad import read_h5ad
from ._histology import read_histology
from ._images import images_to_adata, read_ion_images
from ._imzml import ImzMLError, NegativeIntensityWarning, read_imzml, write_imzml
from ._metaspace import colocalization_tables, cosine_colocalization, read_metaspace, write_metaspace_colocalization
from ._read import read
from ._spatialdata import read_spatialdata, write_spatialdata
from ._st import read_legacy_st, read_st_h5ad, read_visium
from ._zarr import is_imzml_store, read_imzml_store

__all__ = [
    "read_legacy_st", "read_st_h5ad", "read_visium",
    "cell_image_stack",
    "cell_images_to_adata",
    "match_cell_labels",
    "read_cell_features",
    "read_cell_images",
    "read_cell_labels",
    "read_fcs",
    "ImzMLError", "NegativeIntensityWarning", "images_to_adata", "read", "read_h5ad", "read_imzml", "read_ion_images", "write_imzml",
    "colocalization_tables", "cosine_colocalization", "read_metaspace", "write_metaspace_colocalization",
    "read_histology", "read_spatialdata", "write_spatialdata",
    "is_imzml_store", "read_imzml_store"]
