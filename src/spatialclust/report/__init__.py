"""Self-contained HTML reports: the one report builder of every pipeline.

:class:`Report` is a generic builder (parameters, tables, figures, thumbnail galleries); each
pipeline feeds its results to one writer here: :func:`write_run_report` (clustering),
:func:`write_cells_report` (cells), :func:`write_translate_train_report` and
:func:`write_translate_evaluate_report` (translation), :func:`write_leaderboard_report` (benchmark).
"""

from ._benchmark import leaderboard_figure, write_leaderboard_report
from ._cells import write_cells_report
from ._cluster import CLUSTERING_NAMES, clustering_title, write_run_report
from ._html import GalleryItem, Report, image_data_uri
from ._translate import write_translate_evaluate_report, write_translate_train_report

__all__ = [
    "CLUSTERING_NAMES",
    "GalleryItem",
    "Report",
    "clustering_title",
    "image_data_uri",
    "leaderboard_figure",
    "write_cells_report",
    "write_leaderboard_report",
    "write_run_report",
    "write_translate_evaluate_report",
    "write_translate_train_report",
]
