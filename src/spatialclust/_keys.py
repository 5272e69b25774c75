"""Every AnnData key the package reads or writes, in one place.

See ``docs/data_model.md`` for what each key holds. Import these constants instead of
spelling key names as string literals, so the data model stays consistent.
"""

from __future__ import annotations

import re
from typing import Any

# --- pixels / spots (obs axis) -------------------------------------------------------
SPATIAL = "spatial"
"""``obsm[SPATIAL]``: integer grid coordinates ``(x, y)`` of every pixel/spot, shape (n_obs, 2)."""
SPATIAL_ARRAY = "spatial_array"
"""``obsm[SPATIAL_ARRAY]``: ST spot array position (column, row) as read; ``obsm[SPATIAL]`` is derived from it."""
SPATIAL_PX = "spatial_px"
"""``obsm[SPATIAL_PX]``: ST spot (x, y) position on the full-resolution tissue image."""
TISSUE = "tissue"
"""``obs[TISSUE]``: bool, True for on-tissue pixels."""
TIC = "tic"
"""``obs[TIC]``: total ion count of the raw spectrum of each pixel (written by the readers)."""
SECTION = "section"
"""``obs[SECTION]``: section/sample name when several sections are concatenated."""

# --- features: m/z or genes (var axis) -------------------------------------------------
MZ = "mz"
"""``var[MZ]``: float m/z of each ion image (MSI)."""
PATTERN = "pattern"
"""``var[PATTERN]``: ground-truth spatial pattern class of each feature (simulators)."""
ISOTOPE_OF = "isotope_of"
"""``var[ISOTOPE_OF]``: for a simulated M+1 13C isotope, the var name of its monoisotopic ion, else ""."""
N_CARBON = "n_carbon"
"""``var[N_CARBON]``: carbon number of the (simulated) molecule."""
ON_TISSUE = "on_tissue"
"""``var[ON_TISSUE]``: bool, False for simulated matrix/background ions."""
FORMULA = "formula"
"""``var[FORMULA]``: molecular formula of an annotated ion (METASPACE, annotated public data), "" if none."""
ADDUCT = "adduct"
"""``var[ADDUCT]``: adduct of an annotated ion (e.g. ``"+K"``, ``"M+K"``), "" if none."""
MOLECULE_NAMES = "molecule_names"
"""``var[MOLECULE_NAMES]``: candidate molecule names of an annotated ion, ``"; "``-separated."""

# --- unstructured -----------------------------------------------------------------------
GRID = "grid"
"""``uns[GRID]``: dict with ``shape`` = [height, width] (pixels) and ``pixel_size`` (µm or None)."""
SOURCE = "source"
"""``uns[SOURCE]``: dict describing where the data came from (file, reader parameters)."""
SIMULATION = "simulation"
"""``uns[SIMULATION]``: parameters and ground truth of a simulated dataset."""
PREPROCESSING = "preprocessing"
"""``uns[PREPROCESSING]``: preprocessing steps applied, ``{"00": {"step": ..., "params": {...}}, "01": ...}``
(read them in order with ``sc.pp.preprocessing_steps``)."""

# --- cell images (obs = cells) -------------------------------------------------------------
CELL_IMAGES = "images"
"""``obsm[CELL_IMAGES]``: float32 (n_cells, C*H*W), the zero-padded image stack flattened per cell."""
CELL_IMAGE_INFO = "cell_images"
"""``uns[CELL_IMAGE_INFO]``: dict with ``shape`` = [C, H, W] and ``channels`` = channel names."""
IMAGE_HEIGHT = "image_height"
"""``obs[IMAGE_HEIGHT]``: true (unpadded) height of each cell image in pixels."""
IMAGE_WIDTH = "image_width"
"""``obs[IMAGE_WIDTH]``: true (unpadded) width of each cell image in pixels."""
LABEL = "label"
"""``obs[LABEL]``: class/phenotype label of each cell (categorical; NaN = unlabelled)."""
LEIDEN = "leiden"
"""``obs[LEIDEN]``: Leiden cluster of each cell (categorical)."""

# --- layers -------------------------------------------------------------------------------
RAW = "raw"
"""``layers[RAW]``: intensities before preprocessing (kept when a pipeline normalises X)."""

# --- results (defaults of key_added) ------------------------------------------------------
def embedding_key(method: str) -> str:
    """``varm`` key of an embedding of feature images, e.g. ``X_regular``, ``X_neural``."""
    return f"X_{method}"


CLUSTER = "cluster"
"""Default ``var`` column of a clustering of feature images (``var[key]``, int, -1 = noise)."""
PARAMS = "params"
"""``uns[key][PARAMS]``: parameters a tool was run with."""
SELF_LABEL = "self_label"
"""Default ``key_added`` of ``sc.tl.self_label`` (seed 001): ``var[SELF_LABEL]`` final clusters,
``var[SELF_LABEL + "_confidence"]``, ``var[SELF_LABEL + "_init"]``, ``varm["X_" + SELF_LABEL]``, ``uns[SELF_LABEL]``."""


# --- keys that become file or folder names -------------------------------------------------
#: Longest key accepted as (part of) a file name; leaves room for suffixes within the usual 255 bytes.
MAX_NAME_LENGTH = 128
_PLAIN_NAME = re.compile(r"\w[\w.+=-]*")


def check_name(name: Any, *, what: str) -> str:
    """Return ``name`` if it is a plain file name, else raise a ValueError naming ``what``.

    Embedding and cluster keys (and every other user string) become file and folder names in a
    run directory (``figures/<key>_<figure>.png``, ``checkpoints/<key>/``). A plain name starts
    with a letter, digit or underscore and holds only those and ``. + = -``: no path separator,
    no ``..``, not absolute, not hidden, so it can only name an entry inside its folder.

    Parameters
    ----------
    name
        The key or file name to check.
    what
        What ``name`` is, for the error message (e.g. ```embedding[0].key```).
    """
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        shown = name if not isinstance(name, str) or len(name) <= MAX_NAME_LENGTH else f"{name[:40]}... ({len(name)} characters)"
        raise ValueError(
            f"{what} must be a plain name (it becomes a file or folder name): letters, digits and `_`, then also "
            f"`. + = -`, at most {MAX_NAME_LENGTH} characters, no path separator; got {shown!r}."
        )
    return name
