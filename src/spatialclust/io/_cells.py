"""Reading multichannel single-cell images and instrument feature tables as AnnData (obs = cells).

Image-enabled cell sorters (ICS, e.g. BD FACSDiscover/FACSVulcan), imaging flow cytometers and
microscopy crops export one multipage TIFF (a "Z-stack" whose pages are the channels) per cell, with
a fixed width and a variable height (Palli 2023, sec. 3.1: 8 channels, 104 px wide, 40-90 px high).
Images of different sizes are zero-padded at the bottom/right to one common size; the true size of
each cell image is kept in ``obs``. Layout (see ``docs/data_model.md``, "Cell-image datasets"):

- ``obsm["images"]``: float32 ``(n_cells, C*H*W)``, the padded stack flattened per cell, so that the
  images follow every obs subset/concatenation and round-trip through h5ad;
- ``uns["cell_images"]``: ``{"shape": [C, H, W], "channels": [...]}``;
- ``obs["image_height"]``, ``obs["image_width"]``: true sizes; ``obs["label"]`` when labels are given.

:func:`cell_image_stack` gives the ``(n, C, H, W)`` view back (a reshape, no copy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger, progress

__all__ = [
    "cell_image_stack",
    "cell_images_to_adata",
    "match_cell_labels",
    "read_cell_features",
    "read_cell_images",
    "read_cell_labels",
    "read_fcs",
]

TIFF_SUFFIXES = (".tif", ".tiff")


def _channel_names(channels: Sequence[str] | None, n_channels: int) -> list[str]:
    if channels is None:
        return [f"ch{i}" for i in range(n_channels)]
    channels = [str(c) for c in channels]
    if len(channels) != n_channels:
        raise ValueError(f"`channels` has {len(channels)} names but the images have {n_channels} channels.")
    if len(set(channels)) != len(channels):
        raise ValueError(f"`channels` must be unique, got {channels}.")
    return channels


def cell_images_to_adata(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    channels: Sequence[str] | None = None,
    labels: Sequence | pd.Series | None = None,
    obs_names: Sequence[str] | None = None,
    sizes: np.ndarray | None = None,
    pad_value: float = 0.0,
) -> ad.AnnData:
    """Build a cell-image AnnData from an array ``(n, C, H, W)`` or a list of ``(C, h_i, w_i)`` images.

    Parameters
    ----------
    images
        One array ``(n, C, H, W)`` or a sequence of per-cell arrays ``(C, h, w)`` (``(h, w)`` for one
        channel) of possibly different heights and widths; all must have the same channel count.
    channels
        Channel names (default ``ch0``, ``ch1``, ...).
    labels
        One label per cell (``None``/NaN for unlabelled cells), stored as ``obs["label"]``.
    obs_names
        Cell ids (default ``"0"``, ``"1"``, ...).
    sizes
        ``(n, 2)`` true ``(height, width)`` of images that are already padded in ``images``.
    pad_value
        Value used to pad smaller images to the common size (zero, as in the paper).

    Returns
    -------
    AnnData with ``X`` of shape ``(n, 0)`` (features come from :func:`spatialclust.tl.cell_features`),
    ``obsm["images"]``, ``uns["cell_images"]``, ``obs["image_height"]``, ``obs["image_width"]`` and
    ``obs["label"]`` when ``labels`` is given.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        stack = images.astype(np.float32, copy=False)
        n = stack.shape[0]
        if sizes is None:
            sizes = np.tile(np.array(stack.shape[2:]), (n, 1))
    else:
        cells = [np.asarray(im) for im in images]
        if not cells:
            raise ValueError("`images` is empty: no cell images were given.")
        cells = [im[None] if im.ndim == 2 else im for im in cells]
        for i, im in enumerate(cells):
            if im.ndim != 3:
                raise ValueError(f"Cell image {i} must have shape (C, h, w) or (h, w), got shape {im.shape}.")
        counts = {im.shape[0] for im in cells}
        if len(counts) > 1:
            bad = next(i for i, im in enumerate(cells) if im.shape[0] != cells[0].shape[0])
            raise ValueError(
                f"All cell images must have the same number of channels; image 0 has {cells[0].shape[0]}, "
                f"image {bad} has {cells[bad].shape[0]}."
            )
        n = len(cells)
        height = max(im.shape[1] for im in cells)
        width = max(im.shape[2] for im in cells)
        stack = np.full((n, cells[0].shape[0], height, width), pad_value, dtype=np.float32)
        for i, im in enumerate(cells):
            stack[i, :, : im.shape[1], : im.shape[2]] = im
        if sizes is None:
            sizes = np.array([im.shape[1:] for im in cells])
    if stack.ndim != 4:
        raise ValueError(f"`images` must have shape (n, C, H, W), got shape {stack.shape}.")
    n, n_channels, height, width = stack.shape
    if n == 0 or height == 0 or width == 0 or n_channels == 0:
        raise ValueError(f"`images` is empty: shape {stack.shape}.")
    if not np.isfinite(stack).all():
        raise ValueError("`images` contains NaN or infinite pixel values.")
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.shape != (n, 2):
        raise ValueError(f"`sizes` must have shape ({n}, 2), got {sizes.shape}.")
    if (sizes < 1).any() or (sizes[:, 0] > height).any() or (sizes[:, 1] > width).any():
        raise ValueError(f"`sizes` must lie between 1 and the padded size ({height}, {width}).")
    names = [str(i) for i in range(n)] if obs_names is None else [str(s) for s in obs_names]
    if len(names) != n:
        raise ValueError(f"`obs_names` has {len(names)} entries for {n} cells.")
    obs = pd.DataFrame(
        {_keys.IMAGE_HEIGHT: sizes[:, 0], _keys.IMAGE_WIDTH: sizes[:, 1]}, index=pd.Index(names, dtype=str)
    )
    if labels is not None:
        labels = pd.Series(labels.values if isinstance(labels, pd.Series) else list(labels), dtype=object)
        if len(labels) != n:
            raise ValueError(f"`labels` has {len(labels)} entries but there are {n} cells.")
        obs[_keys.LABEL] = pd.Categorical(labels.where(labels.notna(), None).astype(object).values)
    adata = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs)
    adata.obsm[_keys.CELL_IMAGES] = stack.reshape(n, -1)
    adata.uns[_keys.CELL_IMAGE_INFO] = {
        "shape": [int(n_channels), int(height), int(width)],
        "channels": _channel_names(channels, n_channels),
    }
    return adata


def cell_image_stack(adata: ad.AnnData) -> np.ndarray:
    """The padded images ``(n_cells, C, H, W)`` of a cell-image AnnData (a view of ``obsm["images"]``)."""
    if _keys.CELL_IMAGES not in adata.obsm or _keys.CELL_IMAGE_INFO not in adata.uns:
        raise KeyError(
            f"`adata` holds no cell images (expected obsm[{_keys.CELL_IMAGES!r}] and uns[{_keys.CELL_IMAGE_INFO!r}]); "
            "read them with spatialclust.io.read_cell_images or simulate them with spatialclust.datasets.simulate_cells."
        )
    shape = tuple(int(s) for s in adata.uns[_keys.CELL_IMAGE_INFO]["shape"])
    flat = np.asarray(adata.obsm[_keys.CELL_IMAGES])
    if flat.shape[1] != int(np.prod(shape)):
        raise ValueError(f"obsm[{_keys.CELL_IMAGES!r}] has {flat.shape[1]} columns, expected C*H*W for shape {shape}.")
    return flat.reshape((flat.shape[0], *shape))


def _read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV (comma) or TSV (``.tsv``/``.txt``, tab) table; an empty or malformed file is a ValueError naming it."""
    try:
        return pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable CSV/TSV table: {err}") from err


def read_cell_labels(path: str | os.PathLike, *, id_column: str | None = None, label_column: str = _keys.LABEL) -> pd.Series:
    """Read cell labels from a CSV/TSV file with a cell-id column and a label column.

    Parameters
    ----------
    path
        CSV (comma) or TSV (``.tsv``/``.txt``, tab) file.
    id_column
        Column with the cell ids (file stems for TIFF input); default the first column.
    label_column
        Column with the labels.

    Returns
    -------
    Series of labels indexed by cell id (as strings).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label file {str(path)!r} does not exist.")
    table = _read_table(path, "Label file")
    id_column = id_column or table.columns[0]
    for column, name in ((id_column, "id_column"), (label_column, "label_column")):
        if column not in table.columns:
            raise ValueError(f"Label file {str(path)!r} has no column {column!r} (`{name}`); columns: {list(table.columns)}.")
    ids = table[id_column].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"Label file {str(path)!r} lists cell id {ids[ids.duplicated()].iloc[0]!r} more than once.")
    return pd.Series(table[label_column].values, index=pd.Index(ids.values, dtype=str), name=label_column)


def match_cell_labels(labels: pd.Series, cell_ids: Sequence[str], *, source: str) -> pd.Series:
    """Labels in the order of ``cell_ids``; ids of the label file that match no cell are an error."""
    unknown = labels.index.difference(pd.Index(cell_ids))
    if len(unknown):
        raise ValueError(
            f"Labels in {source} do not match the cells: {len(unknown)} label id(s) name no cell, e.g. "
            f"{list(unknown[:3])}; cell ids are e.g. {list(cell_ids[:3])}."
        )
    matched = labels.reindex(pd.Index(cell_ids, dtype=str))
    if matched.isna().all():
        raise ValueError(f"Labels in {source} do not match the cells: no cell has a label.")
    return matched


def _read_tiff(path: Path, n_channels: int | None) -> np.ndarray:
    import logging
    from logging.handlers import BufferingHandler

    import tifffile

    # tifffile logs what it finds wrong in a damaged file and may return an empty array; its
    # messages go into the error instead of the console
    handler = BufferingHandler(capacity=1000)
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(handler)
    propagate, tiff_logger.propagate = tiff_logger.propagate, False
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises several exception types for corrupt files
        raise ValueError(f"Cell image {str(path)!r} could not be read as TIFF: {err}") from err
    finally:
        tiff_logger.removeHandler(handler)
        tiff_logger.propagate = propagate
    image = np.asarray(image, dtype=np.float32)
    if image.size == 0:
        detail = f": {handler.buffer[0].getMessage()}" if handler.buffer else ""
        raise ValueError(f"Cell image {str(path)!r} holds no image data (a truncated or corrupt TIFF?){detail}.")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"Cell image {str(path)!r} must be a (channels, height, width) stack, got shape {image.shape}.")
    if n_channels is not None and image.shape[0] != n_channels:
        raise ValueError(
            f"Cell image {str(path)!r} has {image.shape[0]} channels, but the other images have {n_channels}; "
            "all cells must be imaged with the same channels."
        )
    return image


def read_cell_images(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    channels: Sequence[str] | None = None,
    labels: str | os.PathLike | pd.Series | None = None,
    id_column: str | None = None,
    label_column: str = _keys.LABEL,
    pad_value: float = 0.0,
) -> ad.AnnData:
    """Read one multipage TIFF per cell (pages = channels), a folder of them, or a list of files.

    Parameters
    ----------
    path
        A TIFF file, a folder of ``*.tif``/``*.tiff`` files (sorted by name), or a list of files.
        The cell id (obs name) is the file stem.
    channels
        Channel names (default ``ch0``, ``ch1``, ...).
    labels
        A CSV/TSV of labels (see :func:`read_cell_labels`) or a Series indexed by cell id. Cells
        without a row are unlabelled (NaN); ids that name no cell raise an error.
    id_column, label_column
        Columns of the label file.
    pad_value
        Padding value for images smaller than the largest one.

    Returns
    -------
    Cell-image AnnData, see :func:`cell_images_to_adata`; ``uns["source"]`` records the input.
    """
    if isinstance(path, (str, os.PathLike)):
        root = Path(path)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"Folder {str(root)!r} holds no .tif/.tiff cell images.")
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(f"Cell image path {str(root)!r} does not exist.")
    else:
        files = [Path(p) for p in path]
        if not files:
            raise ValueError("`path` is an empty list of cell image files.")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"Cell image file {missing[0]!r} does not exist.")
    ids = [p.stem for p in files]
    if len(set(ids)) != len(ids):
        raise ValueError("Cell image files must have unique names (the file stem is the cell id).")
    images: list[np.ndarray] = []
    n_channels = None
    for file in progress(files, desc="reading cell images"):
        image = _read_tiff(file, n_channels)
        n_channels = image.shape[0]
        images.append(image)
    label_values = None
    if labels is not None:
        source = repr(str(labels)) if isinstance(labels, (str, os.PathLike)) else "`labels`"
        table = labels if isinstance(labels, pd.Series) else read_cell_labels(labels, id_column=id_column, label_column=label_column)
        table.index = table.index.astype(str)
        label_values = match_cell_labels(table, ids, source=source)
    adata = cell_images_to_adata(images, channels=channels, labels=label_values, obs_names=ids, pad_value=pad_value)
    adata.uns[_keys.SOURCE] = {
        "reader": "read_cell_images",
        "path": [str(p) for p in files] if len(files) <= 20 else str(Path(files[0]).parent),
        "labels": None if labels is None or isinstance(labels, pd.Series) else str(labels),
    }
    logger.info("read %d cell images with %d channels, padded to %s", len(files), n_channels, adata.uns[_keys.CELL_IMAGE_INFO]["shape"][1:])
    return adata


def read_fcs(path: str | os.PathLike) -> pd.DataFrame:
    """Read the event table of a Flow Cytometry Standard file (FCS 2.0/3.0/3.1, list mode).

    Supports ``$DATATYPE`` F (float32), D (float64) and I (unsigned integers of 8/16/32/64 bits,
    ``$PnB``) in either byte order (``$BYTEORD``); the data offsets are taken from the header or,
    for large files, from ``$BEGINDATA``/``$ENDDATA``. Column names are ``$PnN``.

    Returns
    -------
    DataFrame with one row per event (cell) and one column per parameter.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 58 or not raw[:3] == b"FCS":
        raise ValueError(f"{str(path)!r} is not an FCS file (it does not start with an FCS header).")
    try:
        offsets = [int(raw[i : i + 8].strip() or 0) for i in range(10, 42, 8)]
        text_start, text_end, data_start, data_end = offsets
        text = raw[text_start : text_end + 1].decode("latin-1")
        delimiter = text[0]
        placeholder = "\x00"
        fields = text[1:].replace(delimiter * 2, placeholder).split(delimiter)
        keywords = {
            fields[i].strip().upper(): fields[i + 1].replace(placeholder, delimiter).strip()
            for i in range(0, len(fields) - 1, 2)
        }
        if data_start == 0 or data_end == 0:
            data_start, data_end = int(keywords["$BEGINDATA"]), int(keywords["$ENDDATA"])
        n_params, n_events = int(keywords["$PAR"]), int(keywords["$TOT"])
        datatype = keywords["$DATATYPE"].upper()
        order = "<" if keywords.get("$BYTEORD", "1,2,3,4").startswith("1") else ">"
        names = [keywords.get(f"$P{i}N", f"P{i}") for i in range(1, n_params + 1)]
        if keywords.get("$MODE", "L").upper() != "L":
            raise ValueError(f"FCS file {str(path)!r} is not in list mode ($MODE={keywords['$MODE']}).")
        if datatype in ("F", "D"):
            dtype = np.dtype(f"{order}{'f4' if datatype == 'F' else 'f8'}")
            values = np.frombuffer(raw, dtype=dtype, count=n_events * n_params, offset=data_start)
        elif datatype == "I":
            bits = {int(keywords[f"$P{i}B"]) for i in range(1, n_params + 1)}
            if len(bits) != 1 or bits.pop() not in (8, 16, 32, 64):
                raise ValueError(f"FCS file {str(path)!r}: integer data with mixed or unusual $PnB is not supported.")
            width = int(keywords["$P1B"]) // 8
            values = np.frombuffer(raw, dtype=np.dtype(f"{order}u{width}"), count=n_events * n_params, offset=data_start)
        else:
            raise ValueError(f"FCS file {str(path)!r}: $DATATYPE {datatype!r} is not supported (F, D or I).")
    except (KeyError, ValueError, IndexError) as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise
        raise ValueError(f"FCS file {str(path)!r} is corrupt or incomplete: {err!r}") from err
    return pd.DataFrame(values.reshape(n_events, n_params).astype(np.float64), columns=names)


def read_cell_features(
    path: str | os.PathLike,
    *,
    id_column: str | None = None,
    label_column: str | None = _keys.LABEL,
    features: Sequence[str] | None = None,
) -> ad.AnnData:
    """Read a table of instrument features (one row per cell): an FCS file, or a CSV/TSV export.

    Parameters
    ----------
    path
        ``.fcs`` (see :func:`read_fcs`), CSV (comma) or TSV (``.tsv``/``.txt``, tab), one row per cell.
    id_column
        Column of cell ids (default: the row number).
    label_column
        Column of labels moved to ``obs["label"]`` when present (None: no labels).
    features
        Feature columns to use (default: every numeric column except id and label).

    Returns
    -------
    AnnData with ``X`` = float32 features, ``var`` = feature names, ``obs`` = cells (+ ``label``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Feature table {str(path)!r} does not exist.")
    if path.suffix.lower() == ".fcs":
        table = read_fcs(path)
    else:
        table = _read_table(path, "Feature table")
    if table.empty:
        raise ValueError(f"Feature table {str(path)!r} has no rows.")
    if id_column is not None:
        if id_column not in table.columns:
            raise ValueError(f"Feature table {str(path)!r} has no column {id_column!r} (`id_column`).")
        index = pd.Index(table.pop(id_column).astype(str).values, dtype=str)
    else:
        index = pd.Index([str(i) for i in range(len(table))], dtype=str)
    obs = pd.DataFrame(index=index)
    if label_column is not None and label_column in table.columns:
        obs[_keys.LABEL] = pd.Categorical(table.pop(label_column).values)
    if features is None:
        features = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise ValueError(f"Feature table {str(path)!r} has no column(s) {missing} (`features`).")
    if not features:
        raise ValueError(f"Feature table {str(path)!r} has no numeric feature columns.")
    values = table[list(features)].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        bad = [f for f, ok in zip(features, np.isfinite(values).all(axis=0)) if not ok]
        raise ValueError(f"Feature table {str(path)!r} has missing or infinite values in column(s) {bad[:5]}.")
    adata = ad.AnnData(X=values, obs=obs, var=pd.DataFrame(index=pd.Index([str(f) for f in features], dtype=str)))
    adata.uns[_keys.SOURCE] = {"reader": "read_cell_features", "path": str(path)}
    return adata
