"""SpatialData in and out: round trip of a run, thyra-style MSI stores, Visium stores."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialclust as sc

sd = pytest.importorskip("spatialdata", reason="SpatialData interop needs `pip install spatialclust[spatialdata]`")
from spatialdata.models import Image2DModel, ShapesModel, TableModel  # noqa: E402
from spatialdata.transformations import Identity, get_transformation  # noqa: E402


def _write(sdata, path):
    """Write a fixture store, without the notices zarr/ome-zarr give about their own future defaults."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        warnings.filterwarnings("ignore", message="Call to deprecated class Scaler", category=DeprecationWarning)
        sdata.write(path)


@pytest.fixture
def clustered():
    adata = sc.datasets.simulate_msi(shape=(20, 24), n_patterns=3, ions_per_pattern=4, n_matrix_ions=1, seed=0)
    adata.uns["grid"]["pixel_size"] = 10.0
    sc.pp.preprocess_ion_images(adata)
    sc.tl.embed(adata, method="regular")
    sc.tl.cluster(adata, method="kmeans", use_rep="X_regular", n_clusters=3)
    return adata


def test_round_trip_keeps_clusters_images_and_histology(clustered, tmp_path):
    he = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    path = sc.io.write_spatialdata(clustered, tmp_path / "run.zarr", histology=he)
    back = sc.io.read(path)
    assert back.uns["source"]["reader"] == "read_spatialdata"
    np.testing.assert_array_equal(back.var["cluster"], clustered.var["cluster"])
    np.testing.assert_array_equal(back.obsm["spatial"], clustered.obsm["spatial"])
    np.testing.assert_allclose(sc.pp.feature_images(back), sc.pp.feature_images(clustered))
    np.testing.assert_allclose(back.varm["X_regular"], clustered.varm["X_regular"])
    assert back.uns["grid"]["pixel_size"] == 10.0 and back.uns["cluster"]["method"] == "kmeans"

    sdata = sd.read_zarr(path)
    assert set(sdata.images) == {"feature_images", "cluster_means", "histology"} and set(sdata.labels) == {"pixels"}
    means = sdata.images["cluster_means"].values
    images, labels = sc.pp.feature_images(clustered), clustered.var["cluster"].to_numpy()
    np.testing.assert_allclose(means[1], images[labels == 1].mean(axis=0), rtol=1e-6)
    # the H&E is stretched onto the ion-image extent, in µm: its far corner lands at (24 * 10, 20 * 10)
    corner = get_transformation(sdata.images["histology"], "global").to_affine_matrix(("x", "y"), ("x", "y")) @ [60, 40, 1]
    np.testing.assert_allclose(corner[:2], [240.0, 200.0])
    label_image = sdata.labels["pixels"].values
    x, y = clustered.obsm["spatial"][5]
    assert label_image[y, x] == 6 and sdata.tables["table"].obs["instance_id"].iloc[5] == 6  # the table annotates the labels
    with pytest.raises(FileExistsError):
        sc.io.write_spatialdata(clustered, path)


def _thyra_like_store(path, *, pixel_size=20.0):
    """A store laid out as thyra writes imzML: obs x, y over the whole rectangle, var mz, a TIC image."""
    height, width, n_mz = 5, 6, 4
    rng = np.random.default_rng(1)
    values = rng.random((height * width, n_mz)).astype(np.float32)
    values[:width] = 0  # the first row was not acquired
    ys, xs = np.indices((height, width)).reshape(2, -1)
    obs = pd.DataFrame({"y": ys, "x": xs, "spatial_x": xs * pixel_size, "spatial_y": ys * pixel_size,
                        "region": pd.Categorical(["msi_z0_pixels"] * len(xs))}, index=np.arange(len(xs)).astype(str))
    obs["instance_key"] = obs.index.astype(str)
    table = ad.AnnData(X=values, obs=obs, var=pd.DataFrame({"mz": [100.0, 200.0, 300.0, 400.0]}, index=[f"mz_{i}" for i in range(n_mz)]))
    tables = {"msi_z0": TableModel.parse(table, region="msi_z0_pixels", region_key="region", instance_key="instance_key"),
              "average_spectrum": ad.AnnData(X=values.mean(axis=0, keepdims=True))}
    tic = Image2DModel.parse(values.sum(axis=1).reshape(1, height, width), dims=("c", "y", "x"), transformations={"global": Identity()})
    pixels = ShapesModel.parse(np.column_stack([xs, ys]).astype(float), geometry=0, radius=np.full(len(xs), 0.5),
                               index=obs.index, transformations={"global": Identity()})  # thyra: one square per pixel
    _write(sd.SpatialData(images={"msi_z0_tic": tic}, shapes={"msi_z0_pixels": pixels}, tables=tables), path)
    return values.reshape(height, width, n_mz)


def test_read_thyra_style_msi(tmp_path):
    cube = _thyra_like_store(tmp_path / "msi.zarr")
    adata = sc.io.read(tmp_path / "msi.zarr")
    assert adata.n_obs == 4 * 6 and adata.uns["grid"] == {"shape": [5, 6], "pixel_size": 20.0}
    np.testing.assert_allclose(sc.pp.feature_images(adata), np.moveaxis(cube, 2, 0))
    assert list(adata.var["mz"]) == [100.0, 200.0, 300.0, 400.0] and "x" not in adata.obs
    assert sc.io.read_spatialdata(tmp_path / "msi.zarr", mask="all").n_obs == 30
    with pytest.raises(ValueError, match="Invalid option 'nope' for `table`"):
        sc.io.read_spatialdata(tmp_path / "msi.zarr", table="nope")


def test_read_visium_table_and_errors(tmp_path):
    rows, cols = np.array([0, 0, 1, 1, 2]), np.array([0, 2, 1, 3, 0])
    obs = pd.DataFrame({"array_row": rows, "array_col": cols, "in_tissue": [1, 1, 0, 1, 1],
                        "region": pd.Categorical(["spots"] * 5), "spot_id": np.arange(5)}, index=[f"BC{i}-1" for i in range(5)])
    table = ad.AnnData(X=np.arange(10, dtype=np.float32).reshape(5, 2), obs=obs, var=pd.DataFrame(index=["Fth1", "Pcp4"]))
    table.obsm["spatial"] = np.column_stack([cols * 100.0, rows * 170.0])
    spots = ShapesModel.parse(table.obsm["spatial"], geometry=0, radius=np.full(5, 27.5), index=np.arange(5),
                              transformations={"global": Identity()})  # spatialdata-io: one circle per spot
    _write(sd.SpatialData(shapes={"spots": spots},
                          tables={"table": TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")}),
           tmp_path / "visium.zarr")
    adata = sc.io.read(tmp_path / "visium.zarr")
    assert adata.uns["grid"]["layout"] == "hexagonal" and adata.obs["tissue"].sum() == 4
    np.testing.assert_array_equal(adata.obsm["spatial_array"], np.column_stack([cols, rows]))

    bad = ad.AnnData(X=np.ones((2, 1), dtype=np.float32))
    _write(sd.SpatialData(tables={"a": bad, "b": bad.copy()}), tmp_path / "two.zarr")
    with pytest.raises(ValueError, match="holds the tables \\['a', 'b'\\]; choose one"):
        sc.io.read(tmp_path / "two.zarr")
    with pytest.raises(ValueError, match="has no pixel positions"):
        sc.io.read_spatialdata(tmp_path / "two.zarr", table="a")
