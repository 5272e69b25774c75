"""Spatial transcriptomics input: Visium folders, legacy ST arrays, h5ad; rasterising; preprocessing."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialclust as sc

from .conftest import shared_data


def visium_folder(tmp_path, *, positions=True, header=True):
    """A tiny Space Ranger output: 3 hexagonal rows x 4 spots, 5 genes (one mitochondrial)."""
    rows, cols = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    array_row = rows.ravel()
    array_col = (2 * cols + (rows % 2)).ravel()  # Visium: col + row is even
    barcodes = [f"AAAC{i:04d}-1" for i in range(len(array_row))]
    rng = np.random.default_rng(0)
    counts = sp.csc_matrix(rng.poisson(3, (5, len(barcodes))).astype(np.int32))  # genes x spots
    out = tmp_path / "outs"
    (out / "spatial").mkdir(parents=True)
    with h5py.File(out / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = counts.data, counts.indices, counts.indptr
        m["shape"] = np.array(counts.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i}" for i in range(5)], dtype="S")
        feats["name"] = np.array(["Actb", "Gfap", "mt-Co1", "Snap25", "Mbp"], dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * 5, dtype="S")
        feats["genome"] = np.array(["mm10"] * 5, dtype="S")
    table = pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": array_row, "array_col": array_col,
                          "pxl_row_in_fullres": 100 + 86 * array_row, "pxl_col_in_fullres": 100 + 50 * array_col})
    if positions:
        name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
        table.to_csv(out / "spatial" / name, index=False, header=header)
    (out / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 89.4}))
    return out, counts


@pytest.mark.parametrize("header", [True, False])
def test_read_visium_rasterises_hexagonal_rows(tmp_path, header):
    folder, counts = visium_folder(tmp_path, header=header)
    adata = sc.io.read_visium(folder)
    assert adata.shape == (12, 5)
    assert adata.uns["grid"]["shape"] == [3, 4] and adata.uns["grid"]["layout"] == "hexagonal"
    assert adata.uns["grid"]["pixel_size"] == 100.0
    assert len({tuple(c) for c in adata.obsm["spatial"]}) == 12  # one spot per grid cell
    images = sc.pp.feature_images(adata)
    assert images.shape == (5, 3, 4)
    np.testing.assert_allclose(images.sum(axis=(1, 2)), np.asarray(counts.sum(axis=1)).ravel())
    assert adata.obs["tissue"].all() and "spatial_px" in adata.obsm
    assert adata.uns["spatial_scalefactors"]["spot_diameter_fullres"] == 89.4


def test_read_visium_missing_positions_file(tmp_path):
    folder, _ = visium_folder(tmp_path, positions=False)
    with pytest.raises(FileNotFoundError, match="positions file"):
        sc.io.read_visium(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sc.io.read_visium(tmp_path / "nowhere")


def test_read_legacy_st_tsv(tmp_path):
    spots = [f"{x}x{y}" for y in range(2, 5) for x in range(3, 7)]
    table = pd.DataFrame(np.arange(len(spots) * 3).reshape(-1, 3) % 5, index=spots, columns=["A", "B", "C"])
    path = tmp_path / "counts.tsv"
    table.to_csv(path, sep="\t")
    adata = sc.io.read_legacy_st(path)
    assert adata.uns["grid"]["shape"] == [3, 4] and adata.uns["grid"]["layout"] == "square"
    assert adata.uns["grid"]["pixel_size"] == 200.0
    images = sc.pp.feature_images(adata)
    assert images[1, 0, 0] == table.loc["3x2", "B"] and images[2, 2, 3] == table.loc["6x4", "C"]
    bad = tmp_path / "bad.tsv"
    table.rename(index={"3x2": "spot1"}).to_csv(bad, sep="\t")
    with pytest.raises(ValueError, match="spot1"):
        sc.io.read_legacy_st(bad)


def test_rasterize_spots_without_coordinates_or_duplicated():
    adata = ad.AnnData(np.ones((3, 2), np.float32))
    adata.obsm["spatial_array"] = np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="no coordinates"):
        sc.pp.rasterize_spots(adata)
    adata.obsm["spatial_array"] = np.array([[0, 0], [1, 1], [1, 1]])
    with pytest.raises(ValueError, match="duplicated coordinates"):
        sc.pp.rasterize_spots(adata)
    with pytest.raises(ValueError, match="layout"):
        sc.pp.rasterize_spots(adata, layout="triangular")


def test_rasterize_snaps_rotated_hexagonal_pixel_positions():
    """Visium-like pixel positions whose lattice rows run along y (as in some h5ad files)."""
    rows, cols = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    x = 50.0 + 86.6 * rows.ravel()  # rows stacked along x
    y = 20.0 + 100.0 * cols.ravel() + 50.0 * (rows.ravel() % 2)
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.ones((30, 1), np.float32))
    adata.obsm["spatial_px"] = np.stack([x, y], axis=1) + rng.normal(0, 2, (30, 2))
    sc.pp.rasterize_spots(adata, from_key="spatial_px")
    assert adata.uns["grid"]["layout"] == "hexagonal" and adata.uns["grid"]["shape"] == [5, 6]
    assert len({tuple(c) for c in adata.obsm["spatial"]}) == 30


def test_read_st_h5ad_with_pixel_positions(tmp_path):
    rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    pos = np.stack([1000 + 137.0 * (2 * cols + rows % 2).ravel() / 2, 500 + 118.6 * rows.ravel()], axis=1)
    adata = ad.AnnData(sp.csr_matrix(np.ones((20, 2), np.float32)))
    adata.obsm["spatial"] = pos
    adata.write_h5ad(tmp_path / "st.h5ad")
    out = sc.io.read_st_h5ad(tmp_path / "st.h5ad")
    assert out.uns["grid"]["shape"] == [4, 5] and out.uns["grid"]["layout"] == "hexagonal"
    np.testing.assert_allclose(out.obsm["spatial_px"], pos)
    bare = ad.AnnData(np.ones((2, 2), np.float32))
    bare.write_h5ad(tmp_path / "bare.h5ad")
    with pytest.raises(ValueError, match="no coordinates"):
        sc.io.read_st_h5ad(tmp_path / "bare.h5ad")


def test_preprocess_st_filters_and_normalises(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, (40, 6)).astype(np.float32)
    X[:, 3] = 0  # zero counts everywhere
    X[:, 4] = 0
    X[:5, 4] = 1  # detected in 5 spots only
    X[0] = 0  # an empty spot is kept
    var = pd.DataFrame(index=["Actb", "mt-Nd1", "ERCC-00002", "Zero", "Rare", "Gfap"])
    adata = ad.AnnData(sp.csr_matrix(X), var=var)
    sc.pp.preprocess_st(adata)
    assert list(adata.var_names) == ["Actb", "Gfap"]
    assert adata.n_obs == 40
    libs = np.expm1(adata.X.toarray()).sum(axis=1)
    np.testing.assert_allclose(libs[1:], libs[1], rtol=1e-5)
    assert libs[0] == 0
    assert sc.pp._matrix.preprocessing_steps(adata)[-1]["step"] == "preprocess_st"
    adata.write_h5ad(tmp_path / "pp.h5ad")  # the recorded steps are storable
    with pytest.raises(ValueError, match="raw counts"):
        sc.pp.preprocess_st(ad.AnnData(-np.ones((3, 2), np.float32)))
    with pytest.raises(ValueError, match="min_spots"):
        sc.pp.preprocess_st(ad.AnnData(np.ones((3, 2), np.float32)), min_spots=0)


@pytest.mark.realdata
def test_real_legacy_st_hippocampus():
    adata = sc.io.read_legacy_st(shared_data("st_legacy_stutility", "Hippo1.h5ad"))
    assert adata.uns["grid"]["layout"] == "hexagonal" and adata.uns["grid"]["shape"] == [61, 32]
    assert adata.obs["tissue"].sum() == 1098
    sc.pp.preprocess_st(adata, n_top_genes=200)
    assert adata.n_vars == 200 and not adata.var["gene_name"].str.startswith("mt-").any()
    images = sc.pp.feature_images(adata)
    mask = sc.pp.tissue_mask_image(adata)
    assert images.shape == (200, 61, 32) and mask.sum() == 1098


@pytest.mark.realdata
def test_real_visium_h5ad_pixel_positions():
    adata = sc.io.read_st_h5ad(shared_data("st_msi_lung_godfrey", "st.h5ad"))
    assert adata.uns["grid"]["layout"] == "hexagonal" and adata.n_obs == 1027
