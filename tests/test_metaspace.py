"""METASPACE interop: metaspace-converter AnnData in, METASPACE-style colocalization tables out."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialclust as sc

HEIGHT, WIDTH = 6, 7


def _images() -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    left = (xx < 4).astype(np.float32) * 5
    right = (xx >= 4).astype(np.float32) * 2
    hot = ((yy == 3) & (xx == 5)).astype(np.float32) * 10  # one hot pixel
    images = np.stack([left, left * 0.5, right, right + hot])
    images[:, :, 6] = 0  # the last column was not acquired
    return images


def _metaspace_h5ad(path, images):
    """A file in metaspace-converter's layout (metaspace_to_anndata, then .write_h5ad)."""
    n_ions = len(images)
    ys, xs = np.indices((HEIGHT, WIDTH)).reshape(2, -1)
    obs = pd.DataFrame({"ion_image_pixel_x": xs, "ion_image_pixel_y": ys, "ion_image_shape_y": HEIGHT, "ion_image_shape_x": WIDTH},
                       index=pd.RangeIndex(HEIGHT * WIDTH, name="ion_image_pixel").astype(str))
    formulas, adducts = ["C6H12O6", "C6H12O6", "C16H32O2", "C18H36O2"], ["+K", "+Na", "-H", "-H"]
    var = pd.DataFrame({"formula": formulas, "adduct": adducts, "chemMod": "", "neutralLoss": "",
                        "mz": [219.0265, 203.0526, 255.2330, 283.2643], "fdr": 0.05, "msm": 0.9,
                        "moleculeNames": [json.dumps(["Glucose", "Fructose"]), json.dumps(["Galactose"]),
                                          json.dumps(["Palmitic acid"]), json.dumps(["Stearic acid"])]},
                       index=pd.Index([f + a for f, a in zip(formulas, adducts)], name="formula_adduct"))
    src = ad.AnnData(X=images.reshape(n_ions, -1).T.copy(), obs=obs, var=var)
    src.obsm["spatial"] = np.column_stack([xs, ys]) * 12.5 + 100.0  # as if on the optical image
    src.uns["metaspace"] = {"id": "2024-01-01_00h00m00s", "name": "tiny", "polarity": "POSITIVE",
                            "image_size": {"x": WIDTH, "y": HEIGHT},
                            "metadata": json.dumps({"MS_Analysis": {"Pixel_Size": {"Xaxis": 20, "Yaxis": 20}}})}
    src.write_h5ad(path)
    return src


def test_read_metaspace_through_the_one_entry_point(tmp_path):
    images = _images()
    _metaspace_h5ad(tmp_path / "ds.h5ad", images)
    adata = sc.io.read(tmp_path / "ds.h5ad")
    assert adata.uns["source"]["reader"] == "read_metaspace" and adata.uns["metaspace"]["id"] == "2024-01-01_00h00m00s"
    assert adata.n_obs == HEIGHT * (WIDTH - 1)  # the unacquired column is dropped ("nonzero")
    assert adata.uns["grid"] == {"shape": [HEIGHT, WIDTH], "pixel_size": 20.0}
    assert adata.obsm["spatial"].dtype == np.int64 and adata.obsm["spatial"][:, 0].max() == WIDTH - 2
    np.testing.assert_array_equal(sc.pp.feature_images(adata), images)
    assert list(adata.var_names) == ["C6H12O6+K", "C6H12O6+Na", "C16H32O2-H", "C18H36O2-H"]
    assert adata.var["molecule_names"].iloc[0] == "Glucose; Fructose" and adata.var["mz"].iloc[2] == pytest.approx(255.2330)
    assert sc.io.read(tmp_path / "ds.h5ad", mask="all").n_obs == HEIGHT * WIDTH
    adata.write_h5ad(tmp_path / "ours.h5ad")  # our data model round-trips through h5ad
    assert sc.io.read(tmp_path / "ours.h5ad").n_vars == 4


def test_read_metaspace_rejects_other_layouts(tmp_path):
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(tmp_path / "plain.h5ad")
    with pytest.raises(ValueError, match="not in metaspace-converter's layout.*ion_image_pixel_x"):
        sc.io.read_metaspace(tmp_path / "plain.h5ad")
    with pytest.raises(ValueError, match="Invalid option 'some' for `mask`"):
        sc.io.read_metaspace(tmp_path / "plain.h5ad", mask="some")


def test_cosine_colocalization_matches_the_definition():
    adata = sc.io.images_to_adata(_images(), mz=[1.0, 2.0, 3.0, 4.0])
    plain = sc.io.cosine_colocalization(adata, preprocessing="none")
    flat = _images().reshape(4, -1).astype(float)
    expected = flat @ flat.T / np.outer(np.linalg.norm(flat, axis=1), np.linalg.norm(flat, axis=1))
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    assert plain[0, 1] == pytest.approx(1.0) and plain[0, 2] == pytest.approx(0.0)
    colocml = sc.io.cosine_colocalization(adata)  # the 3x3 median filter removes the hot pixel
    assert colocml[2, 3] > plain[2, 3] and colocml[2, 3] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="Valid options are: colocml, none"):
        sc.io.cosine_colocalization(adata, preprocessing="zscore")


def test_colocalization_tables_and_files(tmp_path):
    src = _metaspace_h5ad(tmp_path / "ds.h5ad", _images())
    adata = sc.io.read(tmp_path / "ds.h5ad")
    adata.var["cluster"] = [0, 0, 1, -1]
    ions, pairs = sc.io.colocalization_tables(adata, n_top=2)
    assert list(ions["ion"]) == list(src.var_names) and list(ions["formula"]) == list(src.var["formula"])
    first = ions.iloc[0]
    assert first["cluster_size"] == 2 and first["cosine_to_cluster"] == pytest.approx(1.0)
    assert first["top_colocalized"].startswith("C6H12O6+Na (1.00)")
    assert np.isnan(ions.iloc[2]["cosine_to_cluster"]) and np.isnan(ions.iloc[3]["cosine_to_cluster"])  # single / noise
    top = pairs[(pairs["ion"] == "C6H12O6+K") & (pairs["rank"] == 1)].iloc[0]
    assert top["partner"] == "C6H12O6+Na" and top["same_cluster"] and len(pairs) == 4 * 2
    paths = sc.io.write_metaspace_colocalization(adata, tmp_path / "out", n_top=2)
    assert pd.read_csv(paths["ions"])["mz"].tolist() == pytest.approx(list(src.var["mz"]))
    assert len(pd.read_csv(paths["pairs"])) == 8
    with pytest.raises(KeyError, match="run sc.tl.cluster first"):
        sc.io.colocalization_tables(adata, key="leiden")


def test_ion_names_from_m_prefixed_adducts():
    adata = sc.io.images_to_adata(_images()[:3], mz=[1.0, 2.0, 3.0])
    adata.var["formula"] = ["C15H18O2Br2", "", "C39H79N2O6P; C40H79O7P"]
    adata.var["adduct"], adata.var["cluster"] = ["M+K", "", "M+K"], [0, 0, 1]
    ions, _ = sc.io.colocalization_tables(adata, preprocessing="none", n_top=1)
    assert list(ions["ion"]) == ["C15H18O2Br2+K", "mz-2.0000", "C39H79N2O6P+K; C40H79O7P+K"]


@pytest.mark.realdata
def test_bladder_isotopes_are_colocalised():
    """On the real bladder MSI, an ion's 13C isotope is far more co-localised than an average ion."""
    from .conftest import shared_data

    adata = sc.datasets.mouse_bladder(path=shared_data("msi_mouse_bladder"))
    mz = adata.var["mz"].to_numpy()
    pairs = [(i, j) for i in range(len(mz)) for j in range(len(mz)) if abs(mz[j] - mz[i] - 1.00336) < 0.005]
    assert len(pairs) == 11
    for preprocessing in ("colocml", "none"):
        cosine = sc.io.cosine_colocalization(adata, preprocessing=preprocessing).astype(float)
        isotopes = np.mean([cosine[i, j] for i, j in pairs])
        everyone = cosine[~np.eye(len(mz), dtype=bool)].mean()
        assert isotopes > everyone + 0.2, (preprocessing, isotopes, everyone)
