"""Reading and writing spatial datasets (imzML, image stacks, h5ad, ...) as AnnData."""

from ._images import images_to_adata, read_ion_images
from ._imzml import ImzMLError, read_imzml, write_imzml
from ._read import read

__all__ = ["ImzMLError", "images_to_adata", "read", "read_imzml", "read_ion_images", "write_imzml"]
