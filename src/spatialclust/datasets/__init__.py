"""datasets."""

from ._paired import simulate_paired_st_msi

__all__: list[str] = ["simulate_paired_st_msi"]
