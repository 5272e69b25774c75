"""The clustering pipeline behind ``spatialclust run`` and ``spatialclust demo``.

read -> preprocess -> embed (each embedding) -> cluster (each embedding x each clusterer) ->
evaluate -> figures -> report, configured by a YAML file whose packaged, commented defaults are
``spatialclust/pipeline/config.yaml`` (:func:`default_config`).
"""

from ._benchmark import LEADERBOARD_HTML, benchmark_plan, parse_method_params, run_benchmark
from ._cells import default_cells_config, load_cells_config, run_cells, validate_cells_config
from ._config import default_config, load_config, validate_config
from ._plan import check_plan
from ._run import run_pipeline

__all__ = [
    "LEADERBOARD_HTML",
    "benchmark_plan",
    "check_plan",
    "default_cells_config",
    "default_config",
    "load_cells_config",
    "load_config",
    "parse_method_params",
    "run_benchmark",
    "run_cells",
    "run_pipeline",
    "validate_cells_config",
    "validate_config",
]
