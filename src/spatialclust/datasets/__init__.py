"""datasets: simulators and real public datasets (downloaded, checksum-verified, cached)."""

from ._cells import CELL_CYCLE_PHASES, simulate_cells
from ._msi import pattern_names, simulate_msi
from ._paired import simulate_paired_st_msi
from ._public import (
    DATA_ENV,
    DatasetDownloadError,
    PublicDataset,
    RemoteFile,
    data_home,
    download,
    fetch,
    jurkat_cell_cycle,
    legacy_st,
    load,
    lung_godfrey,
    mouse_bladder,
    mouse_brain_vicari,
    public_datasets,
)
from ._st import simulate_st

__all__: list[str] = [
    "CELL_CYCLE_PHASES", "DATA_ENV", "DatasetDownloadError", "PublicDataset", "RemoteFile", "data_home", "download", "fetch", "jurkat_cell_cycle", "legacy_st",
    "load", "lung_godfrey", "mouse_bladder", "mouse_brain_vicari", "public_datasets",
    "pattern_names", "simulate_cells", "simulate_msi", "simulate_paired_st_msi", "simulate_st",
]
