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

# --- classical cell features (``sc.tl.cell_features``: var = features) ---------------------
FEATURE = "feature"
"""``var[FEATURE]``: the feature a classical cell-feature column measures (e.g. ``"mean_intensity"``)."""
CHANNEL = "channel"
"""``var[CHANNEL]``: the channel(s) a classical cell-feature column is computed on."""
CELL_FEATURES = "cell_features"
"""``uns[CELL_FEATURES]``: parameters of the classical cell features."""

# --- layers -------------------------------------------------------------------------------
RAW = "raw"
"""``layers[RAW]``: intensities before preprocessing (kept when a pipeline normalises X)."""

# --- ST -> MSI translation (paired data, predicted MSI) -------------------------------------
PAIRING = "pairing"
"""``uns[PAIRING]`` of both paired AnnData objects: method, parameters, match-distance summary."""
MATCH_PIXEL = "msi_pixel"
"""``msi.obs[MATCH_PIXEL]``: obs name of the matched MSI pixel (nearest / shared), "" for footprint."""
MATCH_DISTANCE = "match_distance"
"""``msi.obs[MATCH_DISTANCE]``: distance from the spot to its matched pixel (mean distance for footprint)."""
MATCH_COUNT = "n_pixels"
"""``msi.obs[MATCH_COUNT]``: number of MSI pixels averaged into the spot."""
TRANSLATION = "translation"
"""``uns[TRANSLATION]`` of a predicted MSI-like AnnData: model, parameters, missing genes, transforms."""
PRESENCE_LAYER = "presence"
"""``layers[PRESENCE_LAYER]``: stage-1 predicted presence (0/1) of every metabolite."""
SPATIAL_INPUT = "spatial_input"
"""``obsm[SPATIAL_INPUT]``: the (float) coordinates of the input ST spots, before rasterising."""
REGION = "region"
"""``obs[REGION]``: ground-truth region of each spot of the simulated paired ST / MSI."""
PROGRAMS = "programs"
"""``obsm[PROGRAMS]`` (simulated ST, ``"gated"`` regime): the true latent program values of every spot."""
PRESENT = "present"
"""``layers[PRESENT]`` (simulated MSI, ``"gated"`` regime): true presence (0/1) of every metabolite."""

# --- results (defaults of key_added) ------------------------------------------------------
def embedding_key(method: str) -> str:
    """``varm`` key of an embedding of feature images, e.g. ``X_regular``, ``X_neural`` (and ``obsm`` key of
    an embedding of cells, e.g. ``X_dino``)."""
    return f"X_{method}"


CLUSTER = "cluster"
"""Default ``var`` column of a clustering of feature images (``var[key]``, int, -1 = noise)."""
PARAMS = "params"
"""``uns[key][PARAMS]``: parameters a tool was run with."""
SELF_LABEL = "self_label"
"""Default ``key_added`` of ``sc.tl.self_label`` (seed 001): ``var[SELF_LABEL]`` final clusters,
``var[confidence_key(SELF_LABEL)]``, ``var[initial_labels_key(SELF_LABEL)]``, ``varm["X_" + SELF_LABEL]``, ``uns[SELF_LABEL]``."""


def confidence_key(key: str) -> str:
    """``var`` column with the confidence of the clusters in ``var[key]``, e.g. ``self_label_confidence``."""
    return f"{key}_confidence"


def initial_labels_key(key: str) -> str:
    """``var`` column with the initial labels that ``var[key]`` started from, e.g. ``self_label_init``."""
    return f"{key}_init"


def training_cells_key(key: str) -> str:
    """``obs`` column (bool) marking the cells a metric-learning embedding ``obsm[key]`` was trained on."""
    return f"{key}_train"


def pseudo_labels_key(key: str) -> str:
    """``obs`` column (categorical) with the pseudo-labels a self-labelled metric ``obsm[key]`` was learned from."""
    return f"{key}_pseudo_labels"


def umap_key(key: str) -> str:
    """``varm`` key of the 3-D UMAP coordinates a ``umap_dbscan`` clustering ``key`` computed."""
    return f"{key}_umap"


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
