"""Public dataset loaders: download (file:// and a local HTTP server only), checksums, cache, converters."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import spatialclust as sc
from spatialclust.datasets import _public as P

from .conftest import shared_data


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(P.DATA_ENV, str(folder))
    return folder


def _serve_originals(monkeypatch, name: str, urls: dict[str, str], sha: dict[str, str]) -> None:
    """Point every original file of dataset ``name`` at a local URL (registry patched for this test)."""
    dataset = P._DATASETS[name]
    recipes = tuple(
        dataclasses.replace(r, inputs=tuple(RemoteFile(f.name, urls.get(f.name, f.url), sha.get(f.name, f.sha256)) for f in r.inputs))
        for r in dataset.recipes
    )
    monkeypatch.setitem(P._DATASETS, name, dataclasses.replace(dataset, recipes=recipes))


RemoteFile = P.RemoteFile


@pytest.fixture
def http_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (folder, base URL, hit log)."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join()


def test_data_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(P.DATA_ENV, str(tmp_path / "env"))
    assert sc.datasets.data_home() == tmp_path / "env"
    assert sc.datasets.data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(P.DATA_ENV)
    assert sc.datasets.data_home().name == "spatialclust"


def test_download_is_atomic_and_verified(tmp_path):
    src = tmp_path / "original.bin"
    src.write_bytes(b"spatial" * 1000)
    dest = tmp_path / "cache" / "copy.bin"
    sc.datasets.download(src.as_uri(), dest, sha256=_sha(src))
    assert dest.read_bytes() == src.read_bytes()

    bad = tmp_path / "cache" / "bad.bin"
    with pytest.raises(ValueError, match="Checksum mismatch.*expected SHA-256 0{64}"):
        sc.datasets.download(src.as_uri(), bad, sha256="0" * 64)
    assert not bad.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temporary left behind


def test_offline_error_names_url_and_where_to_put_the_file(cache, monkeypatch):
    url = "http://127.0.0.1:9/LC_170_subset.h5ad"  # the discard port: nothing listens, connection refused
    _serve_originals(monkeypatch, "lung_godfrey", {"LC_170_subset.h5ad": url}, {})
    with pytest.raises(sc.datasets.DatasetDownloadError) as err:
        sc.datasets.lung_godfrey()
    text = str(err.value)
    assert url in text and str(cache / "lung_godfrey" / "original" / "LC_170_subset.h5ad") in text and "path=" in text
    assert not (cache / "lung_godfrey" / "original" / "LC_170_subset.h5ad").exists()
    with pytest.raises(FileNotFoundError, match="download=False"):
        sc.datasets.lung_godfrey(download=False)


def _tiny_lung(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A file in the layout of sbivar's LC_170_subset.h5ad: genes in X, m/z intensities in uns."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(5, (6, 3)).astype(np.float32)
    msi = rng.random((6, 2)).astype(np.float32)
    mz = np.array(["255.23109612934098", "885.5489687812933"])
    src = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"spot{i}" for i in range(6)]), var=pd.DataFrame(index=["A", "B", "C"]))
    src.obsm["spatial"] = rng.random((6, 2)) * 100
    src.uns["msi"], src.uns["mz_features"] = msi, mz
    src.write_h5ad(path)
    return counts, msi, src.obsm["spatial"]


def test_lung_download_convert_cache_over_http(cache, http_server, monkeypatch):
    root, base, hits = http_server
    counts, msi_values, coords = _tiny_lung(root / "LC_170_subset.h5ad")
    _serve_originals(monkeypatch, "lung_godfrey", {"LC_170_subset.h5ad": f"{base}/LC_170_subset.h5ad"},
                     {"LC_170_subset.h5ad": _sha(root / "LC_170_subset.h5ad")})
    st, msi = sc.datasets.lung_godfrey()
    np.testing.assert_array_equal(st.X, counts)
    np.testing.assert_array_equal(msi.X, msi_values)
    np.testing.assert_array_equal(msi.obsm["spatial"], coords)
    assert list(msi.var_names) == ["255.2311", "885.5490"] and msi.var["mz"].iloc[1] == pytest.approx(885.5489687812933)
    assert (st.obs_names == msi.obs_names).all() and len(hits) == 1
    sc.datasets.lung_godfrey()  # cached: no second request
    assert len(hits) == 1
    assert sc.datasets.fetch("lung_godfrey") == cache / "lung_godfrey"
    st2, _ = sc.datasets.lung_godfrey(path=cache / "lung_godfrey")  # a folder of converted files: no download
    np.testing.assert_array_equal(st2.X, counts)


def test_checksum_of_a_file_put_by_hand_is_verified(cache, monkeypatch, tmp_path):
    by_hand = cache / "lung_godfrey" / "original" / "LC_170_subset.h5ad"
    by_hand.parent.mkdir(parents=True)
    by_hand.write_bytes(b"not the published file")
    with pytest.raises(ValueError, match="expected b49d4e48"):
        sc.datasets.lung_godfrey(download=False)


def test_legacy_st_conversion_from_the_stutility_tables(cache, tmp_path, monkeypatch):
    www = tmp_path / "files"
    www.mkdir()
    counts = pd.DataFrame([[3, 0, 1], [0, 2, 0], [5, 5, 5]], index=["10x10", "10x12", "11x11"],
                          columns=["ENSMUSG01.1", "ENSMUSG02.1", "ENSMUSG03.1"])
    counts.to_csv(www / "Hippo1.tsv.gz", sep="\t")
    pd.DataFrame({"x": [10, 10, 12], "y": [10, 12, 12], "new_x": [10.1, 9.9, 12.0], "new_y": [10.0, 12.1, 12.0],
                  "pixel_x": [100.0, 101.0, 120.0], "pixel_y": [100.0, 120.0, 120.0], "selected": [1, 0, 1]}
                 ).to_csv(www / "alignment_table_Hippo1.tsv.gz", sep="\t", index=False)
    pd.DataFrame({"gene_id": ["ENSMUSG01.1", "ENSMUSG02.1", "ENSMUSG03.1"], "gene_type": ["protein_coding"] * 3,
                  "gene_name": ["Fth1", "Sparc", "Pcp4"]}).to_csv(www / "mouse_genes.tsv.gz", sep="\t", index=False)
    names = ["Hippo1.tsv.gz", "alignment_table_Hippo1.tsv.gz", "mouse_genes.tsv.gz"]
    _serve_originals(monkeypatch, "legacy_st", {n: (www / n).as_uri() for n in names}, {n: _sha(www / n) for n in names})
    adata = sc.datasets.legacy_st("Hippo1")
    assert adata.n_obs == 3 and list(adata.var["gene_name"]) == ["Fth1", "Sparc", "Pcp4"]
    assert adata.obs.loc["10x10", "tissue"] and not adata.obs.loc["10x12", "tissue"]
    assert not adata.obs.loc["11x11", "tissue"]  # not in the spot detector table
    assert adata.X.toarray().sum() == counts.to_numpy().sum() and adata.uns["source"]["dataset"] == "legacy_st"
    assert sorted(p.name for p in (cache / "legacy_st" / "original").iterdir()) == sorted(names)  # only this section
    with pytest.raises(ValueError, match="Invalid option 'Hippo9' for `section`. Valid options are: Hippo1"):
        sc.datasets.legacy_st("Hippo9")


def _montage(rng, n_cells: int, tile: int = 4, grid: int = 30) -> np.ndarray:
    """A stitched montage as published: cells filled column by column, the rest padded by one repeated row."""
    tiles = np.repeat(np.arange(1, tile + 1, dtype=np.uint16)[None, None, :], grid * grid, axis=0).repeat(tile, axis=1)
    tiles[:n_cells] = rng.integers(100, 3000, size=(n_cells, tile, tile))
    return tiles.reshape(grid, grid, tile, tile).transpose(1, 2, 0, 3).reshape(grid * tile, grid * tile)


def test_jurkat_montages_are_cut_into_labelled_cells(cache, tmp_path, monkeypatch):
    import tifffile

    www = tmp_path / "montages"
    www.mkdir()
    rng = np.random.default_rng(0)
    counts = dict(zip(P.JURKAT_PHASES, (5, 4, 3, 2, 1, 1, 2)))
    montages = {}
    for folder, n in counts.items():
        for channel in P.JURKAT_CHANNELS:
            montages[folder, channel] = _montage(rng, n)
            tifffile.imwrite(www / P._jurkat_file(folder, channel), montages[folder, channel])
    names = [f.name for f in P._DATASETS["jurkat_cell_cycle"].recipes[0].inputs]
    assert len(names) == 21 and sorted(names) == sorted(p.name for p in www.iterdir())
    _serve_originals(monkeypatch, "jurkat_cell_cycle", {n: (www / n).as_uri() for n in names}, {n: _sha(www / n) for n in names})
    cells = sc.datasets.jurkat_cell_cycle()
    assert cells.n_obs == sum(counts.values()) and cells.uns["cell_images"] == {"shape": [3, 4, 4], "channels": ["brightfield", "dna", "darkfield"]}
    assert list(cells.obs["label"].cat.categories) == list(sc.datasets.CELL_CYCLE_PHASES)
    assert cells.obs["label"].value_counts()["G1"] == 5 and cells.obs_names[0] == "G1_0"
    second_s_cell = sc.io.cell_image_stack(cells)[list(cells.obs_names).index("S_1")]
    np.testing.assert_array_equal(second_s_cell[1], montages["S_phase", "Ch4"][4:8, :4])  # column-major filling, DNA channel
    again = sc.datasets.jurkat_cell_cycle(path=cache / "jurkat_cell_cycle")  # the converted file, no download
    np.testing.assert_array_equal(sc.io.cell_image_stack(again), sc.io.cell_image_stack(cells))
    with pytest.raises(ValueError, match="multiple of 30 tiles"):
        P.montage_tiles(np.zeros((100, 100)))


def _matrix(values, rows, cols):
    return xr.DataArray(np.asarray(values, dtype=float), coords={"dim_0": rows, "dim_1": cols}, dims=("dim_0", "dim_1"))


def test_vicari_converter_writes_every_section(cache, monkeypatch):
    sections = P.VICARI_SECTIONS
    spots, pixels = ["AAAC-1", "AAAG-1"], ["MSI_px_1", "MSI_px_2", "MSI_px_3"]
    data = {"Vicari": {
        "TranscriptCoords": {s: _matrix([[1, 2], [3, 4]], spots, ["x", "y"]) for s in sections},
        "TranscriptOutcomes": {s: _matrix([[i, 0], [1, 2]], spots, ["Fth1", "Pcp4"]) for i, s in enumerate(sections)},
        "MetaboliteCoords": {s: _matrix([[1, 1], [2, 2], [3, 3]], pixels, ["x", "y"]) for s in sections},
        "MetaboliteOutcomes": {s: _matrix([[0.5], [0], [2]], pixels, ["X288.1186"]) for s in sections},
    }}
    monkeypatch.setattr(P, "_read_r", lambda path: data)
    original = cache / "mouse_brain_vicari" / "original" / "Vicari_10feat.RData"
    original.parent.mkdir(parents=True)
    original.write_bytes(b"RDX3 stand-in: parsed by the patched reader")
    _serve_originals(monkeypatch, "mouse_brain_vicari", {}, {"Vicari_10feat.RData": _sha(original)})
    st, msi = sc.datasets.mouse_brain_vicari("V11T16-085_B1", n_features=10, download=False)
    assert st.uns["section"] == "V11T16-085_B1" and st.X[0, 0] == sections.index("V11T16-085_B1")
    assert list(st.obs_names) == spots and msi.var["mz"].iloc[0] == pytest.approx(288.1186)
    assert len(list((cache / "mouse_brain_vicari").glob("*_10feat.h5ad"))) == 12
    with pytest.raises(ValueError, match="Valid options are: 5, 10"):
        sc.datasets.mouse_brain_vicari(n_features=7)


def test_bladder_arrays_from_a_seurat_like_object():
    counts = SimpleNamespace(i=np.array([0, 1, 1]), p=np.array([0, 1, 2, 3]), x=np.array([1.0, 2.0, 3.0]),
                             Dim=np.array([2, 3]), Dimnames=[None, None])
    assay = SimpleNamespace(layers={"counts": counts}, cells=_matrix(np.ones((3, 1)), ["1_1", "2_1", "1_2"], ["counts"]),
                            **{"meta.data": pd.DataFrame({"raw_mz": [400.1, 401.1], "all_Formulas": ["C6H12O6", None]})})
    meta = pd.DataFrame({"x_coord": [1.0, 1.0, 2.0], "y_coord": [2.0, 1.0, 1.0], "ssc": pd.Categorical(["2", "1", "3"])},
                        index=["1_2", "1_1", "2_1"])  # another order than the matrix columns
    cube, mz, segments, notes = P.bladder_arrays(SimpleNamespace(assays={"Spatial": assay}, **{"meta.data": meta}))
    assert cube.shape == (2, 2, 2) and cube[0, 0, 0] == 1 and cube[1, 0, 1] == 2 and cube[1, 1, 0] == 3
    np.testing.assert_array_equal(segments, [[1, 3], [2, -1]])
    np.testing.assert_array_equal(mz, [400.1, 401.1]) and len(notes) == 2


def test_path_argument_errors_name_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="bladder_cube.npz"):
        sc.datasets.mouse_bladder(path=tmp_path)
    (tmp_path / "st.h5ad").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="does not hold 'msi.h5ad'"):  # one file cannot serve both modalities
        sc.datasets.lung_godfrey(path=tmp_path / "st.h5ad")
    with pytest.raises(ValueError, match="Invalid option 'nope' for `name`. Valid options are: mouse_bladder"):
        sc.datasets.fetch("nope")
    with pytest.raises(ValueError, match="Invalid option 'x.h5ad' for `file`"):
        sc.datasets.fetch("lung_godfrey", "x.h5ad")


def test_run_config_takes_a_dataset_name(tmp_path):
    from spatialclust._config import ConfigError
    from spatialclust.pipeline import load_config

    cfg = load_config({"input": {"dataset": "mouse_bladder", "path": str(tmp_path)}})
    assert cfg["input"]["dataset"] == "mouse_bladder"
    with pytest.raises(ConfigError, match="input.dataset"):
        load_config({"input": {"dataset": "lung_godfrey"}})


@pytest.mark.realdata
def test_loaders_read_the_converted_real_files():
    bladder = sc.datasets.mouse_bladder(path=shared_data("msi_mouse_bladder"))
    assert bladder.shape == (34732, 79) and bladder.uns["grid"]["shape"] == [134, 260]  # pixels with any signal
    assert bladder.uns["grid"]["pixel_size"] == 10.0 and "ssc_segments" in bladder.obs
    assert bladder.var["formula"].iloc[0] == "C15H18O2Br2" and bladder.var["adduct"].iloc[0] == "M+K"
    mob = sc.datasets.legacy_st("MOB1", path=shared_data("st_legacy_stutility"))
    assert mob.n_vars == 1000 and mob.obs["tissue"].any()
    st, msi = sc.datasets.lung_godfrey(path=shared_data("st_msi_lung_godfrey"))
    assert st.n_obs == msi.n_obs == 1027 and "mz" in msi.var
    st, msi = sc.datasets.mouse_brain_vicari("V11T16-085_C1", n_features=10, path=shared_data("st_msi_mouse_brain_vicari"))
    assert msi.n_vars == 10 and msi.var["mz"].between(100, 1000).all()
