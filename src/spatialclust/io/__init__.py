"""Reading and writing spatial datasets (imzML, image stacks, h5ad, ...) as AnnData."""

from ._images import images_to_adata, read_ion_images

__all__ = ["images_to_adata", "read_ion_images"]
