"""The pipeline layer: one module per pipeline, each a ``run_*`` function behind one CLI command.

- clustering (``spatialclust run``, ``demo``): :func:`run_pipeline`, read -> preprocess -> embed
  (each embedding) -> cluster (each embedding x each clusterer) -> evaluate -> figures -> report;
- SimCLR training (``spatialclust train``): :func:`run_train`;
- cells (``spatialclust cells run``): :func:`run_cells`;
- translation (``spatialclust translate train|evaluate|predict``): :func:`run_translate_train`,
  :func:`run_translate_evaluate`, :func:`run_translate_predict`;
- the benchmark (``spatialclust benchmark``): :func:`run_benchmark`.

Every pipeline reads its configuration with the one loader :func:`load_config` (packaged, commented
defaults ``spatialclust/pipeline/*.yaml`` <- file <- ``--set``), writes one run directory
(:mod:`spatialclust._rundir`, whose constants name every file) and builds its report with
:mod:`spatialclust.report`.
"""

from ._benchmark import benchmark_plan, merge_benchmarks, parse_method_params, run_benchmark
from ._cells import run_cells
from ._cluster import run_pipeline
from ._config import PIPELINE_CONFIGS, default_config, load_config, validate_cells_config, validate_config
from ._plan import check_plan
from ._train import run_train
from ._translate import run_translate_evaluate, run_translate_predict, run_translate_train

__all__ = [
    "PIPELINE_CONFIGS",
    "benchmark_plan",
    "check_plan",
    "default_config",
    "load_config",
    "merge_benchmarks",
    "parse_method_params",
    "run_benchmark",
    "run_cells",
    "run_pipeline",
    "run_train",
    "run_translate_evaluate",
    "run_translate_predict",
    "run_translate_train",
    "validate_cells_config",
    "validate_config",
]
