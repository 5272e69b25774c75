"""datasets."""

from ._cells import CELL_CYCLE_PHASES, simulate_cells
from ._msi import pattern_names, simulate_msi
from ._paired import simulate_paired_st_msi
from ._st import simulate_st

__all__: list[str] = ["CELL_CYCLE_PHASES", "pattern_names", "simulate_cells", "simulate_msi", "simulate_paired_st_msi", "simulate_st"]
