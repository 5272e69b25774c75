"""Real public datasets: download the original public files, convert them with our own code, cache.

Each dataset is a list of *recipes*: original public files (URL pinned to a commit, SHA-256) and a
converter that turns them into plain open files (npz, csv, h5ad) in the dataset's cache folder.
The loaders read those converted files into the package's data model. The originals are R objects
or raw tables as their authors published them; the converted layout is documented per loader.

Cache: ``$SPATIALCLUST_DATA`` if set, else the platform cache directory
(``platformdirs.user_cache_dir("spatialclust")`` when platformdirs is installed, else
``$XDG_CACHE_HOME/spatialclust`` or ``~/.cache/spatialclust``). Layout::

    <cache>/<dataset>/original/<original files>     downloaded, checksum verified
    <cache>/<dataset>/<converted files>              written by the converters

Every download goes to a temporary file that is renamed into place only after its checksum
matched, so an interrupted or corrupted download never looks complete. Without network access,
the error names the URL and the path where the file can be put by hand; every loader also takes
``path=``, a folder holding the converted files (or the converted file itself).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._atomic import atomic_path
from .._compat import require
from .._logging import logger
from ..io import read_h5ad

__all__ = [
    "DATA_ENV",
    "DatasetDownloadError",
    "PublicDataset",
    "RemoteFile",
    "data_home",
    "download",
    "fetch",
    "jurkat_cell_cycle",
    "legacy_st",
    "load",
    "lung_godfrey",
    "mouse_bladder",
    "mouse_brain_vicari",
    "public_datasets",
]

#: Environment variable naming the dataset cache folder.
DATA_ENV = "SPATIALCLUST_DATA"

_CHUNK = 1 << 20


class DatasetDownloadError(OSError):
    """A public file could not be downloaded (offline, moved, server error)."""


@dataclass(frozen=True)
class RemoteFile:
    """One original public file: where it is published and its SHA-256."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class _Recipe:
    """Converted files built together from the same original files."""

    outputs: tuple[str, ...]
    inputs: tuple[RemoteFile, ...]
    convert: Callable[[Mapping[str, Path], Path], None]


@dataclass(frozen=True)
class PublicDataset:
    """A public dataset: what it is, where it comes from, and how its files are built."""

    name: str
    title: str
    source: str
    license: str
    recipes: tuple[_Recipe, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """Names of the converted files (the layout the loaders read)."""
        return tuple(f for r in self.recipes for f in r.outputs)

    def recipe_for(self, file: str) -> _Recipe:
        """The recipe building converted file ``file``."""
        for recipe in self.recipes:
            if file in recipe.outputs:
                return recipe
        raise ValueError(f"Invalid option {file!r} for `file` of dataset {self.name!r}. Valid options are: {', '.join(self.files)}.")


# --- cache and download ------------------------------------------------------------------------


def data_home(data_dir: str | os.PathLike | None = None) -> Path:
    """The dataset cache folder: ``data_dir``, else ``$SPATIALCLUST_DATA``, else the platform cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    try:
        import platformdirs
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "spatialclust"
    return Path(platformdirs.user_cache_dir("spatialclust"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, *, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its SHA-256.

    The bytes go to a temporary file next to ``dest``, which is renamed onto ``dest`` only when the
    checksum matches; on any error nothing is left at ``dest``.

    Parameters
    ----------
    url
        ``https://``, ``http://`` or ``file://`` URL.
    dest
        Destination file.
    sha256
        Expected SHA-256 (hex) of the file.
    timeout
        Seconds to wait for the server.

    Returns
    -------
    ``dest`` as a Path.

    Raises
    ------
    DatasetDownloadError
        When the URL cannot be read (the message names the URL and where to put the file by hand).
    ValueError
        When the downloaded bytes do not have the expected checksum.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    logger.info("Downloading %s to %s.", url, dest)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    fh.write(chunk)
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise DatasetDownloadError(
                f"Could not download {url} ({reason}). Without internet access, download that file on another "
                f"machine and save it as {dest} (its SHA-256 must be {sha256})."
            ) from err
        found = digest.hexdigest()
        if found != sha256:
            raise ValueError(
                f"Checksum mismatch for {url}: expected SHA-256 {sha256}, got {found}. The file was not saved; "
                "the server may have changed it, or the download was corrupted."
            )
    return dest


def _original(file: RemoteFile, folder: Path, *, allow_download: bool) -> Path:
    """The verified local copy of an original file, downloading it when absent."""
    path = folder / file.name
    if path.is_file():
        found = _sha256(path)
        if found != file.sha256:
            raise ValueError(
                f"{path} has SHA-256 {found}, expected {file.sha256} (the original published at {file.url}). "
                "Delete it to download it again, or replace it by the published file."
            )
        return path
    if not allow_download:
        raise FileNotFoundError(
            f"{path} is missing and download=False. Download {file.url} and save it there "
            f"(SHA-256 {file.sha256}), or call again with download=True."
        )
    return download(file.url, path, sha256=file.sha256)


def fetch(
    name: str,
    file: str | Sequence[str] | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Make the converted files of a public dataset available in the cache and return its folder.

    Only the original files needed for the requested converted files are downloaded (verified by
    SHA-256), then converted once; later calls only check that the converted files exist.

    Parameters
    ----------
    name
        Dataset name, see :func:`public_datasets`.
    file
        Converted file name(s) to build (default: all files of the dataset).
    data_dir
        Cache folder (default: :func:`data_home`).
    download
        Download missing originals (False: only use originals already in ``<folder>/original``).

    Returns
    -------
    The folder ``<cache>/<name>`` holding the converted files.
    """
    dataset = _dataset(name)
    folder = data_home(data_dir) / dataset.name
    wanted = dataset.files if file is None else ((file,) if isinstance(file, str) else tuple(file))
    recipes = list(dict.fromkeys(dataset.recipe_for(f) for f in wanted))
    for recipe in recipes:
        if all((folder / out).is_file() for out in recipe.outputs):
            continue
        try:
            inputs = {f.name: _original(f, folder / "original", allow_download=download) for f in recipe.inputs}
        except DatasetDownloadError as err:
            raise DatasetDownloadError(
                f"{err} Or give the loader `path=`, a folder holding the converted files {list(recipe.outputs)}."
            ) from err
        logger.info("Converting %s -> %s in %s.", ", ".join(inputs), ", ".join(recipe.outputs), folder)
        recipe.convert(inputs, folder)
        missing = [out for out in recipe.outputs if not (folder / out).is_file()]
        if missing:  # a converter bug, not a user error
            raise RuntimeError(f"Converting {name!r} did not write {missing} in {folder}.")
    return folder


def _converted(name: str, file: str, path: str | os.PathLike | None, data_dir, download: bool) -> Path:
    """Path of converted file ``file``: inside ``path`` (a folder, or the file itself), else the cache."""
    dataset = _dataset(name)
    dataset.recipe_for(file)
    if path is None:
        return fetch(name, file, data_dir=data_dir, download=download) / file
    path = Path(path)
    candidate = path / file if path.is_dir() else path
    if not candidate.is_file() or candidate.name != file:
        raise FileNotFoundError(
            f"`path`={str(path)!r} does not hold {file!r} of dataset {name!r} ({dataset.title}); expected a folder "
            f"with the converted files {list(dataset.files)} or that file itself."
        )
    return candidate


# --- converters ------------------------------------------------------------------------------------


def _read_r(path: Path) -> Any:
    """Parse an R data file (RDS or RData) into Python objects with ``rdata``."""
    rdata = require("rdata", purpose="converting the public R data files of this dataset")
    with warnings.catch_warnings():
        # rdata announces every R class it has no Python constructor for (Seurat, dgCMatrix, ...);
        # those come back as plain namespaces, which is what the converters read
        warnings.simplefilter("ignore", UserWarning)
        return rdata.conversion.convert(rdata.parser.parse_file(path))


def _write_h5ad(adata: ad.AnnData, path: Path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def bladder_arrays(seurat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Ion-image cube, m/z, segmentation and ion annotations of the SpaMTP bladder Seurat object.

    ``seurat`` is the object read by ``rdata`` from ``bladder_annotated.RDS``: assay ``Spatial``
    holds the (ions x pixels) counts as a ``dgCMatrix`` (slots ``i``, ``p``, ``x``, ``Dim``,
    ``Dimnames``; Seurat v5 assays keep the pixel names in ``cells``) and the ion annotations in its ``meta.data``; the object's ``meta.data`` holds the
    1-based pixel positions ``x_coord``, ``y_coord`` and the tissue segments ``ssc``.

    Returns
    -------
    cube
        float32 ``(n_ions, height, width)``, 0 where there is no pixel.
    mz
        float64 ``(n_ions,)``.
    segments
        int16 ``(height, width)``, -1 where there is no pixel.
    annotations
        One row per ion, in cube order.
    """
    assay = seurat.assays["Spatial"]
    counts = assay.layers["counts"]
    n_ions, n_pixels = (int(v) for v in counts.Dim)
    matrix = sp.csc_matrix((np.asarray(counts.x, np.float32), np.asarray(counts.i), np.asarray(counts.p)), shape=(n_ions, n_pixels))
    names = counts.Dimnames[1] if counts.Dimnames[1] is not None else assay.cells.coords["dim_0"].values  # Seurat v5 keeps them in `cells`
    pixels = [str(p) for p in names]
    meta = getattr(seurat, "meta.data").loc[pixels]
    xs = meta["x_coord"].to_numpy(np.int64) - 1
    ys = meta["y_coord"].to_numpy(np.int64) - 1
    height, width = int(ys.max()) + 1, int(xs.max()) + 1
    cube = np.zeros((n_ions, height, width), dtype=np.float32)
    cube[:, ys, xs] = matrix.toarray()
    segments = np.full((height, width), -1, dtype=np.int16)
    segments[ys, xs] = meta["ssc"].astype(int).to_numpy()
    annotations = getattr(assay, "meta.data").reset_index(drop=True)
    mz = annotations["raw_mz"].to_numpy(np.float64)
    return cube, mz, segments, annotations


def _convert_bladder(inputs: Mapping[str, Path], folder: Path) -> None:
    cube, mz, segments, annotations = bladder_arrays(_read_r(inputs["bladder_annotated.RDS"]))
    with atomic_path(folder / "bladder_cube.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, cube=cube, mz=mz, ssc_segments=segments)
    _write_csv(annotations, folder / "feature_annotations.csv")


def _copy_original(inputs: Mapping[str, Path], folder: Path) -> None:
    """The published file is already in an open format: the converted file is a copy."""
    for name, src in inputs.items():
        with atomic_path(folder / name) as tmp:
            shutil.copyfile(src, tmp)


def _convert_lung(inputs: Mapping[str, Path], folder: Path) -> None:
    """sbivar's ``LC_170_subset.h5ad``: genes in X, the same spots' m/z intensities in ``uns``."""
    src = read_h5ad(inputs["LC_170_subset.h5ad"])
    coords = np.asarray(src.obsm[K.SPATIAL], dtype=np.float64)
    st = ad.AnnData(X=np.asarray(src.X, dtype=np.float32), obs=pd.DataFrame(index=src.obs_names.copy()), var=pd.DataFrame(index=src.var_names.copy()))
    st.obsm[K.SPATIAL] = coords
    mz = np.asarray(src.uns["mz_features"], dtype=np.float64)
    msi = ad.AnnData(X=np.asarray(src.uns["msi"], dtype=np.float32), obs=pd.DataFrame(index=src.obs_names.copy()),
                     var=pd.DataFrame({K.MZ: mz}, index=pd.Index([f"{m:.4f}" for m in mz])))
    msi.obsm[K.SPATIAL] = coords.copy()
    _write_h5ad(st, folder / "st.h5ad")
    _write_h5ad(msi, folder / "msi.h5ad")


VICARI_SECTIONS = ("V11L12-109_A1", "V11L12-109_B1", "V11L12-109_C1", "V11T16-085_A1", "V11T16-085_B1", "V11T16-085_C1")
_VICARI_MZ = re.compile(r"^X(\d+(?:\.\d+)?)$")


def _vicari_modality(coords: Any, values: Any, *, section: str) -> ad.AnnData:
    names = [str(n) for n in values.coords["dim_1"].values]
    adata = ad.AnnData(X=np.asarray(values.values, dtype=np.float32),
                       obs=pd.DataFrame(index=pd.Index([str(n) for n in values.coords["dim_0"].values])),
                       var=pd.DataFrame(index=pd.Index(names)))
    adata.obsm[K.SPATIAL] = np.asarray(coords.values, dtype=np.float64)
    adata.uns[K.SECTION] = section
    return adata


def _vicari_converter(features: str) -> Callable[[Mapping[str, Path], Path], None]:
    def convert(inputs: Mapping[str, Path], folder: Path) -> None:
        data = _read_r(inputs[f"Vicari_{features}.RData"])["Vicari"]
        for section in VICARI_SECTIONS:
            st = _vicari_modality(data["TranscriptCoords"][section], data["TranscriptOutcomes"][section], section=section)
            msi = _vicari_modality(data["MetaboliteCoords"][section], data["MetaboliteOutcomes"][section], section=section)
            _write_h5ad(st, folder / f"st_{section}_{features}.h5ad")
            _write_h5ad(msi, folder / f"msi_{section}_{features}.h5ad")

    return convert


def stutility_adata(counts: pd.DataFrame, alignment: pd.DataFrame | None, genes: pd.DataFrame | None) -> ad.AnnData:
    """One STUtility example section as AnnData (the converted layout of :func:`legacy_st`).

    Parameters
    ----------
    counts
        Spots x genes counts, spots named ``"XxY"`` by their array position.
    alignment
        The ST spot detector table (``x y new_x new_y pixel_x pixel_y selected``): ``selected``
        marks spots under tissue, ``pixel_x, pixel_y`` their H&E position. None: every spot is
        tissue and the array position doubles as the spatial position (the breast cancer sections).
    genes
        ``gene_id``, ``gene_name`` table (Ensembl id -> symbol) or None.
    """
    names = counts.index.astype(str)
    xy = np.array([[float(v) for v in n.split("x")] for n in names])
    obs = pd.DataFrame(index=pd.Index(names))
    if alignment is None:
        obs["array_x"], obs["array_y"] = xy[:, 0], xy[:, 1]
        spatial = xy.astype(np.float64)
    else:
        obs["array_x"], obs["array_y"] = xy[:, 0].astype(np.int64), xy[:, 1].astype(np.int64)
        table = alignment.set_index(alignment["x"].astype(str) + "x" + alignment["y"].astype(str))
        table = table[~table.index.duplicated()].reindex(names)
        obs["in_tissue"] = table["selected"].fillna(0).to_numpy(np.int64)
        spatial = table[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    var = pd.DataFrame(index=pd.Index(counts.columns.astype(str)))
    if genes is not None:
        var["gene_name"] = genes.drop_duplicates("gene_id").set_index("gene_id")["gene_name"].reindex(var.index).to_numpy()
    adata = ad.AnnData(X=sp.csr_matrix(counts.to_numpy(np.float32)), obs=obs, var=var)
    adata.obsm[K.SPATIAL] = spatial
    return adata


def _stutility_converter(section: str, counts_file: str, alignment_file: str | None) -> Callable[[Mapping[str, Path], Path], None]:
    def convert(inputs: Mapping[str, Path], folder: Path) -> None:
        if counts_file.endswith(".csv"):  # breast cancer: genes x spots
            counts = pd.read_csv(inputs[counts_file], index_col=0).T
        else:
            counts = pd.read_csv(inputs[counts_file], sep="\t", index_col=0)
        alignment = pd.read_csv(inputs[alignment_file], sep="\t") if alignment_file else None
        genes = pd.read_csv(inputs["mouse_genes.tsv.gz"], sep="\t") if "mouse_genes.tsv.gz" in inputs else None
        _write_h5ad(stutility_adata(counts, alignment, genes), folder / f"{section}.h5ad")

    return convert


# The Jurkat cell-cycle images of Blasi et al. (2016) as 30 x 30 montages of 40 x 40 px cells, one
# montage per phase and channel (CellProfiler/stitching); folder -> phase, file prefix -> channel.
JURKAT_PHASES = {"G1": "G1", "S_phase": "S", "G2": "G2", "Prophase": "prophase", "Metaphase": "metaphase",
                 "Anaphase": "anaphase", "Telophase": "telophase"}
JURKAT_CHANNELS = {"Ch3": "brightfield", "Ch4": "dna", "Ch6": "darkfield"}
_JURKAT_GRID = 30


def montage_tiles(montage: np.ndarray, *, grid: int = _JURKAT_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``grid`` x ``grid`` montage of equal square tiles into tiles, in filling order.

    The stitching script fills the montage column by column and pads the unused tiles by
    repeating one row, so an empty tile has no variation along its rows.

    Returns
    -------
    tiles
        ``(grid * grid, tile, tile)`` in column-major (filling) order.
    filled
        Boolean ``(grid * grid,)``: False for the padding tiles.
    """
    side = montage.shape[0]
    if montage.ndim != 2 or montage.shape[1] != side or side % grid:
        raise ValueError(f"Expected a square montage whose side is a multiple of {grid} tiles, got shape {montage.shape}.")
    tile = side // grid
    tiles = montage.reshape(grid, tile, grid, tile).transpose(2, 0, 1, 3).reshape(grid * grid, tile, tile)
    filled = np.ptp(tiles, axis=1).max(axis=1) > 0
    return tiles, filled


def _convert_jurkat(inputs: Mapping[str, Path], folder: Path) -> None:
    tifffile = require("tifffile", purpose="reading the Jurkat cell-cycle montages")
    images, labels, names = [], [], []
    for phase_folder, phase in JURKAT_PHASES.items():
        stacks = [montage_tiles(tifffile.imread(inputs[_jurkat_file(phase_folder, ch)])) for ch in JURKAT_CHANNELS]
        filled = stacks[0][1]  # the brightfield padding decides; the other channels are padded the same way
        cells = np.stack([tiles[filled] for tiles, _ in stacks], axis=1)
        images.append(cells.astype(np.uint16))
        labels += [phase] * len(cells)
        names += [f"{phase}_{i}" for i in np.flatnonzero(filled)]
    with atomic_path(folder / "jurkat_cell_cycle.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=np.concatenate(images), label=np.array(labels), obs_names=np.array(names),
                                channels=np.array(list(JURKAT_CHANNELS.values())))


# --- the registry -----------------------------------------------------------------------------------

_SPAMTP = "https://raw.githubusercontent.com/GenomicsMachineLearning/SpaMTP/594d62e1b59a7aa83dc158f3306aaddc15d517b8/vignettes/vignette_data_files/Mouse_Urinary_Bladder"
_SBIVAR = "https://raw.githubusercontent.com/sthawinke/sbivar"
_SBIVAR_COMMIT = "6b7748a2a84284d85cb09178bdd174f2675b71ff"
_SBIVAR_10FEAT_COMMIT = "3e5f36712a6519074ddb58e4df6b9de3b448b475"  # the last commit with the 10-feature Vicari data
_STUTILITY = "https://raw.githubusercontent.com/jbergenstrahle/STUtility/9a8f421499e58b13340ee386db07b0eba923c88c/inst/extdata"

_STUTILITY_FILES = {  # file -> SHA-256, at the commit above
    "BC1.csv": "0ca21237595f356280d2f008b91ab7bfbb14096064d843079c1a1c9607ef2758",
    "BC2.csv": "3efc1db9f0c34cd17877cd4173ee1f80272d47e764401f614810ce3fad801e18",
    "BC3.csv": "a826719ed0b83f8dd1514905d1ab042489591620c2897f2694ae90111f4e4bc9",
    "BC4.csv": "a05b45bd47121598899ccb851e28a94ab0e9b37cf3d29d6a7cd8f2c40bd5c759",
    "Hippo1.tsv.gz": "fd8c5924f437e515085b31b347658238df02323d31551741f67e195ab9345fe5",
    "Hippo2.tsv.gz": "4c924d620f1632180ef832a3ecd984814d39d6732783cb86cd464c9a420b3cdf",
    "Hippo3.tsv.gz": "103ce1600ff4e19b0e7ba93092afa4828785070bc330b3a7640acd80ee31c45f",
    "Hippo4.tsv.gz": "4a6fa993954fb7183c8d5c57d01f0b11df7974e0c6646788f1a926aae38fea3f",
    "Hippo5.tsv.gz": "4619147463d9941fa10376fa997352cc08604181d9d661cfc0aada50ae1255a7",
    "Hippo6.tsv.gz": "ceac19f057167a490948cf98936c568c7fc8d3304552d9b25c82f7ca48d1b3ea",
    "Hippo7.tsv.gz": "3de2963daef14dcaa61bc41f19f840f86843a68c68f678b0d2349991df98299f",
    "Hippo8.tsv.gz": "838db3c94c854367455a7b87afc530d8aab17f0ed6a3648ca01e8a9cd8ab630d",
    "MOB1.tsv": "82c0691f800355369fd8a72ff44ba1e3112d4e44a790f490a9fa267876a9352e",
    "MOB2.tsv": "449dcc351ede5c63f9afe313479dbb830ba32c6e86b56b258276304102d1f7e9",
    "MOB3.tsv": "f0b9601a10d627d372c412cad4a4dde2a1dee9f2433e51f07ca26d534be015ea",
    "MOB4.tsv": "bc782caf3e990468d579715139db4e9c1f682b7c625978f1073720458f98a509",
    "alignment_table_Hippo1.tsv.gz": "b0ff535e7060b102372790d2625bb5d5dc22b13bd9f706011f8df25c2444bcf3",
    "alignment_table_Hippo2.tsv.gz": "30c9ab552f7937d00cbdb1214b7d1913130d3fe6c6baa0d379ca3d176a16d010",
    "alignment_table_Hippo3.tsv.gz": "d4709fe7453d98c379df764b16664714690ce0bcb10ae79e1f863ee67559db9f",
    "alignment_table_Hippo4.tsv.gz": "b01f87859820052a08cf3e2230d3afd19d264e3e568b6d6f96aad1efdd8c853a",
    "alignment_table_Hippo5.tsv.gz": "5c461727956e040c8863ee6729059c295ab1cc8f06fe6931a36d37f16d153af4",
    "alignment_table_Hippo6.tsv.gz": "341c35c406f3f63d1ddf8f1d13ac646b3a244ff695eafdfae3d8880faf04374e",
    "alignment_table_Hippo7.tsv.gz": "1b1945f7f60da81c407f5b94b0c93f914c1300c29c2672f1d73c92c9d2e797c7",
    "alignment_table_Hippo8.tsv.gz": "9817c2f1bceedadf85fd9c56a04ea813abf7f0c075c2662430b8b1c2e28dd291",
    "alignment_table_MOB1.tsv": "91ade06cf93bc0b3cd728846c34e310a8365200d1ad33498e6a0eb6951a92164",
    "alignment_table_MOB2.tsv": "6d86b226386b0a08f825b3bff4b5c359f00fd52d3f53d77db0376b0f7e0ec30d",
    "alignment_table_MOB3.tsv": "da0ce26ad12b94b6d0784ddc1c0c76e998d3bbd2579bad6aa8c4ac2c4f7f2e33",
    "alignment_table_MOB4.tsv": "243fa0518132fbc750cbf05ae17946d66c94be32b48803b27c70fde3d76fd5ff",
}
_MOUSE_GENES = RemoteFile("mouse_genes.tsv.gz", f"{_STUTILITY}/mouse_genes.tsv.gz",
                          "914e92c5d3f57770ed89a1db9ba64a95dfcbe2f0592027551eaa3e05b47495d9")
STUTILITY_SECTIONS = tuple(f"{s}{i}" for s, n in (("Hippo", 8), ("MOB", 4), ("BC", 4)) for i in range(1, n + 1))


def _stutility_recipe(section: str) -> _Recipe:
    counts = next(f for f in _STUTILITY_FILES if f.split(".")[0] == section)
    alignment = next((f for f in _STUTILITY_FILES if f.startswith(f"alignment_table_{section}.")), None)
    names = [counts] + ([alignment] if alignment else [])
    inputs = tuple(RemoteFile(f, f"{_STUTILITY}/counts/{f}", _STUTILITY_FILES[f]) for f in names)
    if not section.startswith("BC"):
        inputs += (_MOUSE_GENES,)
    return _Recipe((f"{section}.h5ad",), inputs, _stutility_converter(section, counts, alignment))


_MLCP = "https://raw.githubusercontent.com/minh-doan/MLCP/4b4d93606e6b88654fc0a0697515d63102f60ee7/images/Experiment_1"
_JURKAT_FILES = {  # <phase folder>/<channel>_<montage>.tif -> SHA-256, at the commit above
    "Anaphase/Ch3_CP0001.tif": "7787d8f0cd533398a18756f79a4f69cfb7b21e8ab6bfd814601b85503cf25a98",
    "Anaphase/Ch4_CP0001.tif": "6b53d036937ce353c4769f2867e8fbdb5a5dd08c323d2beb92c85468a2551a97",
    "Anaphase/Ch6_CP0001.tif": "231ee02a0b25b854380bc94a38a0d363e75aa54b8ced6cf8d3107c2bd374403e",
    "G1/Ch3_CP0008.tif": "373d146c82ce923b953c64165c243bfee48562793cb8bfe170cfca96e3d05f26",
    "G1/Ch4_CP0008.tif": "1d3c32de96b4ebbbeeae98688f1025d81e29b248f30d3b1cc8147fa10b36f519",
    "G1/Ch6_CP0008.tif": "94054f1682116c6cbf4864b577f5dd8e6d3c35c9760e9623c2b2e7828b2f9e6b",
    "G2/Ch3_CP0008.tif": "b4040fdbf5049c2fbd37058e5eddb5472257fc6c90045ec4f840c707a934ab22",
    "G2/Ch4_CP0008.tif": "5fb64b41126ae95028c64b5e0b4b12029fb842d55ddf5042338c2c32515c1be4",
    "G2/Ch6_CP0008.tif": "5519c06824fdaa6e0bed054ee4b93a7a53b4ccd0761ef6d7da1d60974f97a6f1",
    "Metaphase/Ch3_CP0001.tif": "f3929672e88443e41053383a18aa87164f472a75c107e8c7309d81a148335aa6",
    "Metaphase/Ch4_CP0001.tif": "df1f5d922c54ff593434f2ec518ca36b719686538368de23dc2fa505e3488ef4",
    "Metaphase/Ch6_CP0001.tif": "51acc1daff25785a16605aba9cf48048b714a12dd4e41aba8c461fd81457ee3a",
    "Prophase/Ch3_CP0001.tif": "502b80326fa58cc11169b447fd633946493dd7c8368263bd67d6b1ecae1445cd",
    "Prophase/Ch4_CP0001.tif": "667bd7b1e0af933535d78ee3d908981489ae83ab47c214ee7ac813ecf1778a6e",
    "Prophase/Ch6_CP0001.tif": "a7807c2727ce0d6b345ee5a402530e324129c810550274d576b29646dfe00e21",
    "S_phase/Ch3_CP0009.tif": "0e9b52c6bbf4f9e6e90340112b9eacb56cac63f909cd8f4b97e91911a764d73f",
    "S_phase/Ch4_CP0009.tif": "8d8649e779e944f8d40c6e4a0d739952799a410b4242f5f47719d8b91f020178",
    "S_phase/Ch6_CP0009.tif": "66374337c59d451fca4f089fb95b4cd3d667c3adafd964c91ed442d9ad45ec42",
    "Telophase/Ch3_CP0001.tif": "48a09ef683702b48931b0a6c241b85da71ec833e4361c18865ef3ea4ee343787",
    "Telophase/Ch4_CP0001.tif": "97fc175c7cb2253a33bedcea6fdfc7d5fbf67272a0bb11b378e3e901c54e0bfc",
    "Telophase/Ch6_CP0001.tif": "1b25f04ddae9be6139803fe64261b02665d77cb8e1e9ab9b2d87bf2c80286e50",
}


def _jurkat_file(phase_folder: str, channel: str) -> str:
    """Local name of the montage of one phase and channel (``G1_Ch3.tif``)."""
    return f"{phase_folder}_{channel}.tif"


def _jurkat_input(published: str, sha256: str) -> RemoteFile:
    phase_folder, name = published.split("/")
    return RemoteFile(_jurkat_file(phase_folder, name.split("_")[0]), f"{_MLCP}/{published}", sha256)


_JURKAT_INPUTS = tuple(_jurkat_input(f, sha) for f, sha in _JURKAT_FILES.items())


_DATASETS = {
    d.name: d
    for d in (
        PublicDataset(
            name="mouse_bladder",
            title="Mouse urinary bladder, AP-SMALDI Orbitrap MSI (79 annotated ion images, 134 x 260 pixels of 10 µm)",
            source="Römpp et al. 2010, Angew. Chem. (PRIDE PXD001283, HR2MSI mouse urinary bladder S096); the 79 "
                   "annotated, TIC-normalised peaks of the SpaMTP vignette (GenomicsMachineLearning/SpaMTP, commit 594d62e)",
            license="MIT (SpaMTP)",
            recipes=(
                _Recipe(("bladder_cube.npz", "feature_annotations.csv"),
                        (RemoteFile("bladder_annotated.RDS", f"{_SPAMTP}/bladder_annotated.RDS",
                                    "4fc9c8967a12b23ef04f58d777d922454f84c935b61cb6162da0bd2f48f7b9c3"),),
                        _convert_bladder),
                _Recipe(("mouse_urinary_bladder_HE.tif",),
                        (RemoteFile("mouse_urinary_bladder_HE.tif", f"{_SPAMTP}/mouse_urinary_bladder_HE.tif",
                                    "f0b7ad629caf3f9233925b681c8f8882c001a8911bf2baa822905e720699a2fe"),),
                        _copy_original),
            ),
        ),
        PublicDataset(
            name="legacy_st",
            title="Legacy Spatial Transcriptomics (100 µm spots): mouse hippocampus Hippo1-8, olfactory bulb MOB1-4, "
                  "human breast cancer BC1-4",
            source="STUtility example data (jbergenstrahle/STUtility, commit 9a8f421, inst/extdata)",
            license="MIT (STUtility)",
            recipes=tuple(_stutility_recipe(s) for s in STUTILITY_SECTIONS),
        ),
        PublicDataset(
            name="lung_godfrey",
            title="Paired Visium + DESI MSI on the same spots, human lung cancer (1027 spots, 10 genes, 10 m/z)",
            source="Godfrey et al. 2025, Angew. Chem. (Harvard Dataverse doi:10.7910/DVN/GZFCWC); subset shipped in "
                   "sthawinke/sbivar (inst/h5adData/LC_170_subset.h5ad, commit 6b7748a)",
            license="GPL-2 (sbivar)",
            recipes=(
                _Recipe(("st.h5ad", "msi.h5ad"),
                        (RemoteFile("LC_170_subset.h5ad", f"{_SBIVAR}/{_SBIVAR_COMMIT}/inst/h5adData/LC_170_subset.h5ad",
                                    "b49d4e4862db2a4eab0490372c4b9e9ba62259d179d857243e232c764e46524c"),),
                        _convert_lung),
            ),
        ),
        PublicDataset(
            name="mouse_brain_vicari",
            title="Paired Visium + MALDI MSI on the same section, mouse brain (six sections, 5 or 10 genes and metabolites)",
            source="Vicari et al. 2024, Nat. Biotechnol.; subset shipped in sthawinke/sbivar (data/Vicari.RData: "
                   "5 features at commit 6b7748a, 10 features at commit 3e5f367)",
            license="GPL-2 (sbivar)",
            recipes=tuple(
                _Recipe(tuple(f"{m}_{s}_{features}.h5ad" for s in VICARI_SECTIONS for m in ("st", "msi")),
                        (RemoteFile(f"Vicari_{features}.RData", f"{_SBIVAR}/{commit}/data/Vicari.RData", sha),),
                        _vicari_converter(features))
                for features, commit, sha in (
                    ("5feat", _SBIVAR_COMMIT, "94ffe1e43d80813ba14208c26f5187b19ee699ab9b56d31081054c8487c21924"),
                    ("10feat", _SBIVAR_10FEAT_COMMIT, "e8ca49c305d40012e989b30a0ec32c2d7be310fc610444f87005909cff4870ec"),
                )
            ),
        ),
        PublicDataset(
            name="jurkat_cell_cycle",
            title="Jurkat cells in 7 cell-cycle phases, imaging flow cytometry (3,419 cells; brightfield, DNA, darkfield; 40 x 40 px)",
            source="Blasi et al. 2016, Nat. Commun. 7:10256 (ImageStream, Jurkat cells, phases annotated from the DNA stain); "
                   "the ground-truth experiment shipped as 30 x 30 montages in minh-doan/MLCP (commit 4b4d936, images/Experiment_1)",
            license="BSD-3-Clause (MLCP)",
            recipes=(_Recipe(("jurkat_cell_cycle.npz",), _JURKAT_INPUTS, _convert_jurkat),),
        ),
    )
}


def _dataset(name: str) -> PublicDataset:
    if name not in _DATASETS:
        raise ValueError(f"Invalid option {name!r} for `name`. Valid options are: {', '.join(_DATASETS)}.")
    return _DATASETS[name]


def public_datasets() -> dict[str, PublicDataset]:
    """The public datasets by name (title, source, license, converted files)."""
    return dict(_DATASETS)


# --- loaders ---------------------------------------------------------------------------------------

_Path = str | os.PathLike | None


def mouse_bladder(*, path: _Path = None, data_dir: _Path = None, download: bool = True) -> ad.AnnData:
    """The mouse urinary bladder MSI dataset (79 annotated ion images, 134 x 260 pixels of 10 µm).

    AP-SMALDI Orbitrap MSI of Römpp et al. (2010), 79 annotated, TIC-normalised peaks as
    published in the SpaMTP vignette. Downloads SpaMTP's Seurat object (``bladder_annotated.RDS``)
    and converts it to ``bladder_cube.npz`` (``cube`` (79, 134, 260), ``mz``, ``ssc_segments``) and
    ``feature_annotations.csv``. The H&E image (not registered to the MSI grid) is the file
    ``mouse_urinary_bladder_HE.tif`` of ``fetch("mouse_bladder")``.

    Parameters
    ----------
    path
        Folder holding the converted files (or ``bladder_cube.npz`` itself); no download.
    data_dir
        Cache folder (default: :func:`data_home`).
    download
        Download the original when it is not cached.

    Returns
    -------
    AnnData as from :func:`spatialclust.io.read_ion_images` (``pixel_size`` 10 µm) with
    ``obs["ssc_segments"]`` (SpaMTP's tissue segments), ``var["formula"]``, ``var["adduct"]`` and
    ``var["molecule_names"]`` (first candidate annotation of each ion).
    """
    from ..io import read_ion_images

    cube = _converted("mouse_bladder", "bladder_cube.npz", path, data_dir, download)
    adata = read_ion_images(cube, pixel_size=10.0)
    table = cube.with_name("feature_annotations.csv")
    if table.is_file():
        notes = pd.read_csv(table)
        if len(notes) != adata.n_vars or not np.allclose(notes["raw_mz"].to_numpy(float), adata.var[K.MZ].to_numpy()):
            raise ValueError(f"{table} does not list the {adata.n_vars} ions of {cube} in the same order.")
        for key, column in ((K.FORMULA, "all_Formulas"), (K.ADDUCT, "all_Adducts"), (K.MOLECULE_NAMES, "all_IsomerNames")):
            adata.var[key] = notes[column].fillna("").astype(str).to_numpy()
    adata.uns[K.SOURCE] = {**adata.uns[K.SOURCE], "dataset": "mouse_bladder"}
    return adata


def legacy_st(section: str = "Hippo1", *, path: _Path = None, data_dir: _Path = None, download: bool = True) -> ad.AnnData:
    """One section of the legacy Spatial Transcriptomics example data of STUtility.

    Mouse hippocampus ``Hippo1``-``Hippo8`` (all 1,933 array spots x 10,000 genes, ~1,000 under
    tissue), olfactory bulb ``MOB1``-``MOB4`` (1,000 genes), human breast cancer ``BC1``-``BC4``
    (~255 spots x 500 genes). Downloads the section's count table and spot-detector table and
    converts them to ``<section>.h5ad`` (``obs["array_x"]``, ``obs["array_y"]``, ``obs["in_tissue"]``,
    ``obsm["spatial"]`` = H&E pixel position, ``var["gene_name"]``, raw counts).

    Parameters
    ----------
    section
        One of ``Hippo1``-``Hippo8``, ``MOB1``-``MOB4``, ``BC1``-``BC4``.
    path
        Folder holding the converted files (or the section's h5ad); no download.
    data_dir, download
        As for :func:`mouse_bladder`.

    Returns
    -------
    AnnData as from :func:`spatialclust.io.read_legacy_st` (spots rasterised on the array grid).
    """
    from ..io import read_legacy_st

    if section not in STUTILITY_SECTIONS:
        raise ValueError(f"Invalid option {section!r} for `section`. Valid options are: {', '.join(STUTILITY_SECTIONS)}.")
    adata = read_legacy_st(_converted("legacy_st", f"{section}.h5ad", path, data_dir, download))
    adata.uns[K.SOURCE] = {**adata.uns[K.SOURCE], "dataset": "legacy_st", "section": section}
    return adata


def lung_godfrey(*, path: _Path = None, data_dir: _Path = None, download: bool = True) -> tuple[ad.AnnData, ad.AnnData]:
    """Paired Visium + DESI MSI of human lung cancer on the same 1027 spots (Godfrey et al. 2025).

    Downloads sbivar's ``LC_170_subset.h5ad`` (genes in X, the spots' m/z intensities in ``uns``)
    and splits it into ``st.h5ad`` and ``msi.h5ad`` (``var["mz"]``).

    Parameters
    ----------
    path
        Folder holding ``st.h5ad`` and ``msi.h5ad``; no download.
    data_dir, download
        As for :func:`mouse_bladder`.

    Returns
    -------
    ``(st, msi)``: counts and intensities of the same spots, float ``obsm["spatial"]`` on the Visium
    grid (the paired ST + MSI data model; pair them with ``sc.translate.pair``).
    """
    files = [_converted("lung_godfrey", f, path, data_dir, download) for f in ("st.h5ad", "msi.h5ad")]
    return tuple(read_h5ad(f) for f in files)


def mouse_brain_vicari(
    section: str = "V11L12-109_A1",
    *,
    n_features: int = 5,
    path: _Path = None,
    data_dir: _Path = None,
    download: bool = True,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Paired Visium + MALDI MSI of one mouse brain section (Vicari et al. 2024).

    Downloads sbivar's ``Vicari.RData`` and converts every section to ``st_<section>_<n>feat.h5ad``
    and ``msi_<section>_<n>feat.h5ad``. ST spots and MSI pixels are different point sets in one
    aligned frame: match them with ``sc.translate.pair`` (nearest pixel or footprint).

    Parameters
    ----------
    section
        One of ``V11L12-109_{A1,B1,C1}``, ``V11T16-085_{A1,B1,C1}``.
    n_features
        5 (genes Fth1, mt.Atp6, Sparc, Gnas, Pcp4; metabolites GABA, Taurine, Histidine, Dopamine,
        Tocopherol) or 10 (10 genes, 10 m/z features named ``"X<m/z>"``, with ``var["mz"]``).
    path
        Folder holding the converted files; no download.
    data_dir, download
        As for :func:`mouse_bladder`.

    Returns
    -------
    ``(st, msi)`` with float ``obsm["spatial"]`` and ``uns["section"]``.
    """
    if section not in VICARI_SECTIONS:
        raise ValueError(f"Invalid option {section!r} for `section`. Valid options are: {', '.join(VICARI_SECTIONS)}.")
    if n_features not in (5, 10):
        raise ValueError(f"Invalid option {n_features!r} for `n_features`. Valid options are: 5, 10.")
    files = [_converted("mouse_brain_vicari", f"{m}_{section}_{n_features}feat.h5ad", path, data_dir, download) for m in ("st", "msi")]
    st, msi = (read_h5ad(f) for f in files)
    mz = [_VICARI_MZ.match(n) for n in msi.var_names]
    if K.MZ not in msi.var and all(mz):  # the 10-feature data name its m/z features "X288.1186"
        msi.var[K.MZ] = [float(m.group(1)) for m in mz]
    return st, msi


def jurkat_cell_cycle(*, path: _Path = None, data_dir: _Path = None, download: bool = True) -> ad.AnnData:
    """Real labelled imaging-flow-cytometry cell images: Jurkat cells in 7 cell-cycle phases.

    The ground-truth experiment of Blasi et al. (2016) (ImageStream; phases G1, S, G2 from the DNA
    content, prophase-telophase by inspection of the DNA stain), as published for CellProfiler in
    MLCP (Hennig et al. 2017): one 30 x 30 montage of 40 x 40 px cells per phase and channel. The
    21 montages are downloaded and cut into cells; the padding tiles are dropped, which leaves 900
    G1, 900 S, 900 G2, 606 prophase, 69 metaphase, 16 anaphase and 28 telophase cells (the
    mitotic phases are rare, as in any asynchronous culture). Converted file:
    ``jurkat_cell_cycle.npz`` (``images`` uint16 ``(n, 3, 40, 40)``, ``label``, ``obs_names``,
    ``channels``).

    Parameters
    ----------
    path
        Folder holding ``jurkat_cell_cycle.npz`` (or the file itself); no download.
    data_dir, download
        As for :func:`mouse_bladder`.

    Returns
    -------
    Cell-image AnnData as from :func:`spatialclust.io.cell_images_to_adata`: channels
    ``brightfield``, ``dna``, ``darkfield`` (raw camera counts), ``obs["label"]`` the phase
    (the names of ``sc.datasets.CELL_CYCLE_PHASES``).
    """
    from ..io import cell_images_to_adata

    with np.load(_converted("jurkat_cell_cycle", "jurkat_cell_cycle.npz", path, data_dir, download)) as data:
        images, labels, names, channels = data["images"], data["label"], data["obs_names"], data["channels"]
    adata = cell_images_to_adata(images.astype(np.float32), channels=[str(c) for c in channels], labels=[str(v) for v in labels],
                                 obs_names=[str(n) for n in names])
    order = [p for p in JURKAT_PHASES.values() if p in set(adata.obs[K.LABEL])]
    adata.obs[K.LABEL] = adata.obs[K.LABEL].cat.reorder_categories(order)
    adata.uns[K.SOURCE] = {"dataset": "jurkat_cell_cycle"}
    return adata


_LOADERS: dict[str, Callable[..., Any]] = {
    "mouse_bladder": mouse_bladder,
    "legacy_st": legacy_st,
    "lung_godfrey": lung_godfrey,
    "mouse_brain_vicari": mouse_brain_vicari,
    "jurkat_cell_cycle": jurkat_cell_cycle,
}


def load(name: str, **kwargs: Any) -> ad.AnnData | tuple[ad.AnnData, ad.AnnData]:
    """Load public dataset ``name`` with its loader (``kwargs``: the loader's arguments)."""
    _dataset(name)
    return _LOADERS[name](**kwargs)
