"""Cell-image input: TIFF per cell / folder / array, padding with true sizes, labels, feature tables, simulator."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import tifffile

import spatialclust as sc
from spatialclust import _keys


def _write_cells(folder, shapes, *, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    images = {}
    for i, shape in enumerate(shapes):
        image = rng.random(shape).astype(np.float32)
        tifffile.imwrite(folder / f"cell{i}.tif", image, photometric="minisblack")  # pages = channels
        images[f"cell{i}"] = image
    return images


def test_read_folder_pads_and_keeps_true_sizes(tmp_path):
    images = _write_cells(tmp_path / "cells", [(3, 20, 16), (3, 14, 16), (3, 18, 12)])
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"cell": ["cell0", "cell2"], "label": ["a", "b"]}).to_csv(labels, index=False)
    adata = sc.io.read_cell_images(tmp_path / "cells", channels=["bf", "dna", "gfp"], labels=labels)
    assert adata.n_obs == 3 and list(adata.obs_names) == ["cell0", "cell1", "cell2"]
    assert adata.uns[_keys.CELL_IMAGE_INFO] == {"shape": [3, 20, 16], "channels": ["bf", "dna", "gfp"]}
    assert adata.obs[_keys.IMAGE_HEIGHT].tolist() == [20, 14, 18]
    assert adata.obs[_keys.IMAGE_WIDTH].tolist() == [16, 16, 12]
    stack = sc.io.cell_image_stack(adata)
    assert stack.shape == (3, 3, 20, 16)
    np.testing.assert_array_equal(stack[1, :, :14, :], images["cell1"])
    assert (stack[1, :, 14:, :] == 0).all() and (stack[2, :, :, 12:] == 0).all()
    assert adata.obs[_keys.LABEL].tolist()[0] == "a" and pd.isna(adata.obs[_keys.LABEL].iloc[1])
    # the flattened layout follows obs subsets and round-trips through h5ad
    sub = adata[[2, 0]].copy()
    np.testing.assert_array_equal(sc.io.cell_image_stack(sub)[0], stack[2])
    adata.write_h5ad(tmp_path / "cells.h5ad")
    back = anndata.read_h5ad(tmp_path / "cells.h5ad")
    np.testing.assert_array_equal(sc.io.cell_image_stack(back), stack)


def test_single_tiff_and_array_input(tmp_path):
    _write_cells(tmp_path / "c", [(2, 8, 8)])
    one = sc.io.read_cell_images(tmp_path / "c" / "cell0.tif")
    assert one.n_obs == 1 and one.uns[_keys.CELL_IMAGE_INFO]["channels"] == ["ch0", "ch1"]
    arr = np.ones((4, 2, 6, 5), dtype=np.float32)
    adata = sc.io.cell_images_to_adata(arr, labels=["x", "y", None, "x"])
    assert adata.obs[_keys.IMAGE_HEIGHT].tolist() == [6] * 4 and adata.X.shape == (4, 0)
    assert adata.obs[_keys.LABEL].isna().sum() == 1


def test_read_cell_features_table(tmp_path):
    path = tmp_path / "features.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "FSC-A": [1.0, 2.0, 3.0], "SSC-A": [3.0, 2.0, 1.0], "label": ["p", "q", "p"]}).to_csv(path, index=False)
    adata = sc.io.read_cell_features(path, id_column="id")
    assert list(adata.var_names) == ["FSC-A", "SSC-A"] and list(adata.obs_names) == ["a", "b", "c"]
    assert adata.obs[_keys.LABEL].tolist() == ["p", "q", "p"]
    pd.DataFrame({"FSC-A": [1.0, np.nan]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing or infinite"):
        sc.io.read_cell_features(tmp_path / "bad.csv")


def test_bad_input_different_channel_counts(tmp_path):
    with pytest.raises(ValueError, match="same number of channels"):
        sc.io.cell_images_to_adata([np.zeros((2, 5, 5)), np.zeros((3, 5, 5))])
    _write_cells(tmp_path / "cells", [(3, 10, 10), (2, 10, 10)])
    with pytest.raises(ValueError, match="has 2 channels, but the other images have 3"):
        sc.io.read_cell_images(tmp_path / "cells")


def test_bad_input_truncated_or_corrupt_tiff(tmp_path, capsys):
    _write_cells(tmp_path / "cells", [(2, 10, 10), (2, 10, 10)])
    first = sorted((tmp_path / "cells").glob("*.tif"))[0]
    first.write_bytes(first.read_bytes()[:8])  # the header survives, the image directory does not
    with pytest.raises(ValueError, match=r"holds no image data \(a truncated or corrupt TIFF\?\)"):
        sc.io.read_cell_images(tmp_path / "cells")
    (tmp_path / "cells" / "junk.tif").write_bytes(b"not a tiff at all")
    first.unlink()
    with pytest.raises(ValueError, match="could not be read as TIFF"):
        sc.io.read_cell_images(tmp_path / "cells")
    assert "invalid offset" not in capsys.readouterr().err  # tifffile's complaint is in the error, not the console


@pytest.mark.parametrize("content", [b"", b'a,b\n1,2,3,4\n"x\n', bytes(range(128, 256))])
def test_bad_input_unreadable_label_and_feature_tables(tmp_path, content):
    (tmp_path / "table.csv").write_bytes(content)
    with pytest.raises(ValueError, match="Label file '.*table.csv' is not a readable CSV/TSV table"):
        sc.io.read_cell_labels(tmp_path / "table.csv")
    with pytest.raises(ValueError, match="Feature table '.*table.csv' is not a readable CSV/TSV table"):
        sc.io.read_cell_features(tmp_path / "table.csv")


def test_bad_input_empty_images(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        sc.io.cell_images_to_adata([])
    with pytest.raises(ValueError, match="empty"):
        sc.io.cell_images_to_adata(np.zeros((3, 2, 0, 5), dtype=np.float32))
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tif"):
        sc.io.read_cell_images(tmp_path / "none")


def test_bad_input_labels_do_not_match_cells(tmp_path):
    _write_cells(tmp_path / "cells", [(1, 6, 6), (1, 6, 6)])
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"cell": ["cell0", "cell7"], "label": ["a", "b"]}).to_csv(labels, index=False)
    with pytest.raises(ValueError, match="do not match the cells.*cell7"):
        sc.io.read_cell_images(tmp_path / "cells", labels=labels)
    pd.DataFrame({"cell": ["cell0"], "phenotype": ["a"]}).to_csv(labels, index=False)
    with pytest.raises(ValueError, match="no column 'label'"):
        sc.io.read_cell_images(tmp_path / "cells", labels=labels)
    with pytest.raises(ValueError, match="`labels` has 3 entries but there are 2 cells"):
        sc.io.cell_images_to_adata(np.zeros((2, 1, 4, 4)), labels=["a", "b", "c"])


def test_simulator_is_seeded_and_has_known_phenotypes():
    a = sc.datasets.simulate_cells(24, seed=3, labelled_fraction=0.5)
    b = sc.datasets.simulate_cells(24, seed=3, labelled_fraction=0.5)
    np.testing.assert_array_equal(a.obsm[_keys.CELL_IMAGES], b.obsm[_keys.CELL_IMAGES])
    assert a.uns[_keys.CELL_IMAGE_INFO]["channels"] == ["membrane", "nucleus", "objects"]
    assert set(a.obs["objects"]) <= {"1", "2", "many"} and set(a.obs["shape"]) <= {"round", "elongated"}
    assert 0 < a.obs[_keys.LABEL].isna().sum() < 24
    labelled = a.obs[_keys.LABEL].notna()
    assert (a.obs.loc[labelled, _keys.LABEL].astype(str) == a.obs.loc[labelled, "objects"].astype(str)).all()
    heights = a.obs[_keys.IMAGE_HEIGHT]
    assert heights.min() >= 34 and heights.max() <= 48
    c = sc.datasets.simulate_cells(24, seed=4)
    assert not np.array_equal(a.obsm[_keys.CELL_IMAGES], c.obsm[_keys.CELL_IMAGES])
    with pytest.raises(ValueError, match="Invalid option `size` for `label`"):
        sc.datasets.simulate_cells(5, label="size")


def _write_fcs(path, table: pd.DataFrame, *, datatype="F", byteord="1,2,3,4"):
    """A minimal FCS 3.0 list-mode file (what cytometers export next to the ICS images)."""
    order = "<" if byteord.startswith("1") else ">"
    dtype = {"F": f"{order}f4", "D": f"{order}f8", "I": f"{order}u2"}[datatype]
    data = table.to_numpy().astype(dtype).tobytes()
    bits = {"F": 32, "D": 64, "I": 16}[datatype]
    keys = {"$BYTEORD": byteord, "$DATATYPE": datatype, "$MODE": "L", "$PAR": str(table.shape[1]),
            "$TOT": str(table.shape[0]), "$NEXTDATA": "0"}
    for i, name in enumerate(table.columns, 1):
        keys.update({f"$P{i}N": name, f"$P{i}B": str(bits), f"$P{i}E": "0,0", f"$P{i}R": "1024"})
    text = "/" + "/".join(f"{k}/{v.replace('/', '//')}" for k, v in keys.items()) + "/"
    text_start = 58
    data_start = text_start + len(text)
    header = b"FCS3.0    " + b"".join(str(v).rjust(8).encode() for v in (text_start, data_start - 1, data_start, data_start + len(data) - 1, 0, 0))
    path.write_bytes(header + text.encode("latin-1") + data)


@pytest.mark.parametrize(("datatype", "byteord"), [("F", "1,2,3,4"), ("D", "4,3,2,1"), ("I", "1,2")])
def test_read_fcs_instrument_features(tmp_path, datatype, byteord):
    table = pd.DataFrame({"FSC-A": [10.0, 20.0, 30.0], "SSC/H": [3.0, 2.0, 1.0]})
    _write_fcs(tmp_path / "events.fcs", table, datatype=datatype, byteord=byteord)
    pd.testing.assert_frame_equal(sc.io.read_fcs(tmp_path / "events.fcs"), table)
    adata = sc.io.read_cell_features(tmp_path / "events.fcs")
    assert list(adata.var_names) == ["FSC-A", "SSC/H"] and adata.shape == (3, 2)
    (tmp_path / "broken.fcs").write_bytes(b"FCS3.0    " + b"x" * 60)
    with pytest.raises(ValueError, match="broken.fcs"):
        sc.io.read_fcs(tmp_path / "broken.fcs")


def test_cell_cycle_regime_phases_dna_content_and_nuisance():
    a = sc.datasets.simulate_cells(70, regime="cell_cycle", width=32, height_range=(28, 32), seed=5)
    b = sc.datasets.simulate_cells(70, regime="cell_cycle", width=32, height_range=(28, 32), seed=5)
    np.testing.assert_array_equal(a.obsm[_keys.CELL_IMAGES], b.obsm[_keys.CELL_IMAGES])
    assert a.uns[_keys.CELL_IMAGE_INFO]["channels"] == ["dna", "cytoplasm", "darkfield"]
    assert a.uns[_keys.SIMULATION]["regime"] == "cell_cycle"
    phases = a.obs["phase"].astype(str)
    assert (phases.value_counts() == 10).all() and set(phases) == set(sc.datasets.CELL_CYCLE_PHASES)
    assert (a.obs[_keys.LABEL].astype(str) == phases).all()
    content = a.obs["dna_content"].groupby(phases).agg(["min", "max"])
    assert 0.85 < content.loc["G1", "min"] and content.loc["G1", "max"] < 1.15
    assert content.loc["S", "min"] > 1.0 and content.loc["S", "max"] < 2.0
    assert content.loc["G2", "min"] > 1.7 and content.loc["telophase", "min"] > 1.7
    # the DNA content is in the image: integrated DNA signal above background doubles from G1 to G2
    stack = sc.io.cell_image_stack(a)
    dna = stack[:, 0].reshape(70, -1)
    signal = pd.Series(dna.sum(axis=1) - np.median(dna, axis=1) * dna.shape[1], index=phases.index).groupby(phases).median()
    assert 1.6 < signal["G2"] / signal["G1"] < 2.4
    # nuisance: the per-cell brightness of the cytoplasm varies a lot within a phase
    cytoplasm = pd.Series(stack[:, 1].reshape(70, -1).sum(axis=1), index=phases.index)
    assert (cytoplasm.groupby(phases).std() / cytoplasm.groupby(phases).mean()).median() > 0.15
    with pytest.raises(ValueError, match="Invalid option `objects` for `label`"):
        sc.datasets.simulate_cells(5, regime="cell_cycle", label="objects")
    with pytest.raises(ValueError, match="Invalid option `real` for `regime`"):
        sc.datasets.simulate_cells(5, regime="real")
