"""ST -> MSI translation: checkpoints, synthetic MSI from new ST, imzML export, CLI, real paired data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust._keys import GRID, MZ, SECTION, SPATIAL
from spatialclust.cli import app
from spatialclust.translate import TwoStageTranslator, load_translator, predict_msi, save_translator

from .conftest import shared_data


@pytest.fixture(scope="module")
def fitted():
    st, msi = sc.datasets.simulate_paired_st_msi(n_sections=1, shape=(12, 12), n_genes=12, n_metabolites=4, seed=2)
    X = np.log1p(np.asarray(st.X, dtype=float))
    Y = np.log1p(np.asarray(msi.X, dtype=float))
    model = TwoStageTranslator(
        "logistic", "transformer", intensity_params={"d_model": 8, "n_heads": 2, "max_epochs": 5, "device": "cpu"}
    ).fit(X, Y, coords=np.asarray(st.obsm[SPATIAL], dtype=float), genes=list(st.var_names), metabolites=list(msi.var_names))
    return st, msi, X, model


def test_checkpoint_round_trip(fitted, tmp_path):
    st, msi, X, model = fitted
    save_translator(model, tmp_path / "model", metadata={"mz": msi.var[MZ].tolist()})
    loaded, metadata = load_translator(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.intensity_model_.attention(X[:3]), model.intensity_model_.attention(X[:3]), atol=1e-6)
    assert metadata["mz"] == msi.var[MZ].tolist() and loaded.genes_ == model.genes_
    assert loaded.combination_ == model.combination_ and np.array_equal(loaded.calibration_slope_, model.calibration_slope_)
    assert not list(tmp_path.glob("model/*.pkl"))


def test_predict_msi_images_imzml_and_missing_genes(fitted, tmp_path):
    st, msi, X, model = fitted
    new = st.copy()
    new.obsm[SPATIAL] = np.asarray(st.obsm[SPATIAL], dtype=float) * 55.5 + 1000.0  # float µm coordinates
    out = predict_msi(model, new, metadata={"mz": msi.var[MZ].tolist()})
    assert out.shape == (st.n_obs, msi.n_vars) and out.obsm[SPATIAL].dtype == np.int64
    assert out.uns[GRID]["shape"] == [12, 12]
    np.testing.assert_allclose(out.X, np.expm1(np.clip(model.predict(X), 0, None)), rtol=1e-5, atol=1e-6)
    assert set(out.layers["presence"].ravel()) <= {0, 1}
    assert list(out.uns["translation"]["combination"].values()) == model.combination_
    images = sc.pp.feature_images(out)
    assert images.shape == (4, 12, 12)
    path = sc.io.write_imzml(out, tmp_path / "pred.imzML")
    back = sc.io.read_imzml(path)
    assert back.n_obs == out.n_obs
    missing = new[:, 2:].copy()
    with pytest.raises(ValueError, match=r"2 of the 12 genes .* missing.*Gene"):
        predict_msi(model, missing)
    filled = predict_msi(model, missing, missing_genes="zero")
    assert filled.uns["translation"]["missing_genes"] == list(st.var_names[:2])


def test_cli_train_evaluate_predict(tmp_path):
    runner = CliRunner()
    sim = ["--set", "data.simulate={shape: [10, 10], n_genes: 12, n_metabolites: 4}", "--set", "model.intensity=ridge"]
    res = runner.invoke(app, ["translate", "train", "-o", str(tmp_path / "train"), "-q", *sim, "--set", "model.spatial_context=4"])
    assert res.exit_code == 0, res.output
    chosen = __import__("pandas").read_csv(tmp_path / "train" / "combinations.csv")
    assert len(chosen) == 4 and set(chosen.combination) <= {"none", "hurdle", "mask"}
    assert (tmp_path / "train" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "train" / "top_genes.csv").is_file() and (tmp_path / "train" / "report.html").is_file()
    assert "leiden+wilcoxon" in (tmp_path / "train" / "signatures.csv").read_text()
    res = runner.invoke(app, ["translate", "evaluate", "-o", str(tmp_path / "eval"), "-q", *sim,
                              "--set", "cv.presence_models=[prevalence, logistic]", "--set", "cv.intensity_models=[ridge]",
                              "--set", "model.presence=logistic", "--set", "cv.n_splits=3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "combinations.csv").is_file()
    summary = __import__("pandas").read_csv(tmp_path / "eval" / "intensity_summary.csv")
    assert {"logistic x ridge", "logistic x ridge [hurdle]", "ridge (unmasked)"} <= set(summary.model) and "morans_i_macro" in summary
    folds = __import__("pandas").read_csv(tmp_path / "eval" / "folds.csv")
    assert (folds.min_train_test_distance > 0).all()
    st, _ = sc.datasets.simulate_paired_st_msi(shape=(10, 10), n_genes=12, n_metabolites=4, seed=5)
    st.write_h5ad(tmp_path / "new_st.h5ad")
    res = runner.invoke(app, ["translate", "predict", str(tmp_path / "train" / "model"), str(tmp_path / "new_st.h5ad"),
                              "-o", str(tmp_path / "pred"), "-q"])
    assert res.exit_code == 0, res.output
    pred = ad.read_h5ad(tmp_path / "pred" / "predicted.h5ad")
    assert pred.n_vars == 4 and (tmp_path / "pred" / "predicted.imzML").is_file()
    # a single section cannot be left out
    res = runner.invoke(app, ["translate", "evaluate", "-o", str(tmp_path / "bad"), "-q", "--set",
                              "data.simulate={shape: [10, 10], n_genes: 12, n_metabolites: 4, n_sections: 1}",
                              "--set", "model.intensity=ridge", "--set", "cv.folds=sections"])
    assert res.exit_code == 1 and "at least 2 sections" in res.output
    res = runner.invoke(app, ["translate", "train", "-o", str(tmp_path / "bad2"), "--set", "model.nonsense=1"])
    assert res.exit_code == 1 and "Unknown configuration key `model.nonsense`" in res.output


@pytest.mark.realdata
def test_real_pairing_modes():
    lung = shared_data("st_msi_lung_godfrey")
    st, msi = sc.translate.pair(ad.read_h5ad(lung / "st.h5ad"), ad.read_h5ad(lung / "msi.h5ad"))
    assert st.uns["pairing"]["method"] == "shared" and st.n_obs == 1027
    brain = shared_data("st_msi_mouse_brain_vicari")
    st, msi = sc.translate.pair(ad.read_h5ad(brain / "st_V11L12-109_A1_5feat.h5ad"), ad.read_h5ad(brain / "msi_V11L12-109_A1_5feat.h5ad"))
    record = st.uns["pairing"]
    assert record["method"] == "nearest" and 200 < record["distance_median"] < 260 and record["n_matched"] > 0.95 * record["n_spots"]
    assert SECTION not in msi.obs or msi.obs[SECTION].nunique() == 1
