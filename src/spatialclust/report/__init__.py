"""Self-contained HTML reports.

:class:`Report` is a generic builder (parameters, tables, figures, thumbnail galleries) that every
command reuses; the clustering pipeline composes its run report from it.
"""

from ._html import GalleryItem, Report, image_data_uri

__all__ = ["GalleryItem", "Report", "image_data_uri"]
