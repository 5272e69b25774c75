"""Self-contained HTML reports.

:class:`Report` is a generic builder (parameters, tables, figures, thumbnail galleries) that every
command reuses; :func:`write_run_report` builds the report of a clustering run directory.
"""

from ._html import GalleryItem, Report, image_data_uri
from ._run import CLUSTERING_NAMES, clustering_title, write_run_report

__all__ = ["CLUSTERING_NAMES", "GalleryItem", "Report", "clustering_title", "image_data_uri", "write_run_report"]
