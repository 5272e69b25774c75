"""ST -> MSI translation: hurdle expectation, calibration, per-metabolite combination choice, spatial
context, Moran's I of residuals, the gated simulator and the module-token transformer."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust._keys import SECTION, SPATIAL
from spatialclust.translate import LinearIntensityRegressor, PrevalencePresence, TwoStageTranslator, combine_stages


def _grid(n_side: int, n_sections: int = 2):
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    coords = np.tile(np.column_stack([xx.ravel(), yy.ravel()]).astype(float), (n_sections, 1))
    groups = np.repeat([f"s{i}" for i in range(n_sections)], n_side * n_side)
    return coords, groups


def test_combine_stages_known_values():
    p = np.array([[0.25, 1.0], [0.5, 0.0]])
    present = np.array([[4.0, 2.0], [6.0, 3.0]])
    unmasked = np.full((2, 2), 9.0)
    label = (p >= 0.5).astype(int)
    absent = np.array([1.0, 0.5])
    hurdle = combine_stages(["hurdle", "hurdle"], probability=p, label=label, present=present, unmasked=None, absent_level=absent)
    np.testing.assert_allclose(hurdle, [[0.25 * 4 + 0.75 * 1, 2.0], [0.5 * 6 + 0.5 * 1, 0.5]])
    mixed = combine_stages(["none", "mask"], probability=p, label=label, present=present, unmasked=unmasked, absent_level=absent)
    np.testing.assert_allclose(mixed, [[9.0, 2.0], [9.0, 0.0]])
    with pytest.raises(ValueError, match="Invalid option `soft` for `combination`"):
        combine_stages(["soft", "none"], probability=p, label=label, present=present, unmasked=unmasked, absent_level=absent)
    with pytest.raises(ValueError, match="needs the unmasked"):
        combine_stages(["none", "none"], probability=p, label=label, present=present, unmasked=None, absent_level=absent)


def test_hurdle_translator_predicts_the_expectation():
    """Presence independent of X with prevalence 0.3, intensity 5 if present and 1 if absent: the
    hurdle prediction is 0.3 * 5 + 0.7 * 1 = 2.2 everywhere (the MSE-optimal constant), the seed's
    mask predicts 0 everywhere (absent is the majority) and the raw/calibrated probability is 0.3."""
    rng = np.random.default_rng(0)
    coords, groups = _grid(10)
    X = rng.normal(size=(len(coords), 3))
    presence = np.zeros((len(X), 1), dtype=int)
    presence[rng.permutation(len(X))[: int(0.3 * len(X))]] = 1
    Y = np.where(presence == 1, 5.0, 1.0)
    for calibration, tol in (("none", 1e-9), ("platt", 5e-3)):  # Platt: fitted on the inner folds' prevalences
        model = TwoStageTranslator(PrevalencePresence(), LinearIntensityRegressor("mean"), combine="hurdle", calibration=calibration,
                                   signature_mask=False).fit(X, Y, presence=presence, coords=coords, groups=groups)
        np.testing.assert_allclose(model.presence_probability(X), 0.3, atol=tol)
        np.testing.assert_allclose(model.predict(X), 2.2, atol=4 * tol)
        assert model.absent_level_ == pytest.approx([1.0])
    masked = TwoStageTranslator(PrevalencePresence(), LinearIntensityRegressor("mean"), combine="mask", calibration="none",
                                signature_mask=False).fit(X, Y, presence=presence, coords=coords, groups=groups)
    np.testing.assert_allclose(masked.predict(X), 0.0)


def test_platt_calibration_repairs_balanced_logistic_probabilities():
    """Class-weighted logistic regression over-predicts a rare class; Platt scaling on inner
    out-of-fold scores brings the mean probability back to the prevalence."""
    rng = np.random.default_rng(1)
    coords, groups = _grid(20, n_sections=3)
    X = rng.normal(size=(len(coords), 2))
    presence = (X[:, :1] + rng.normal(0, 1.0, (len(X), 1)) > 1.5).astype(int)  # ~9 % present
    Y = presence * 3.0
    kw = {"combine": "hurdle", "signature_mask": False}
    raw = TwoStageTranslator("logistic", "ridge", calibration="none", **kw).fit(X, Y, presence=presence, coords=coords, groups=groups)
    platt = TwoStageTranslator("logistic", "ridge", calibration="platt", **kw).fit(X, Y, presence=presence, coords=coords, groups=groups)
    prevalence = presence.mean()
    assert raw.presence_probability(X).mean() > prevalence + 0.2  # balanced weights: far too many "present"
    assert abs(platt.presence_probability(X).mean() - prevalence) < 0.03
    assert ((platt.predict(X) - Y) ** 2).mean() < ((raw.predict(X) - Y) ** 2).mean()


def test_per_metabolite_choice_masks_only_where_it_helps():
    """Metabolite 0: presence is a step in gene 0 (a linear model cannot fit it, the mask can);
    metabolite 1: presence labels are coin flips unrelated to the genes while the intensity is linear
    in gene 1 (masking destroys signal). ``auto`` masks metabolite 0 and not metabolite 1, and on new
    spots it is not worse than the unmasked stage 2 on either."""
    rng = np.random.default_rng(2)
    coords, groups = _grid(24, n_sections=3)
    n = len(coords)
    X = rng.normal(size=(n, 4))
    step = (X[:, 0] > 0.3).astype(int)
    coin = rng.integers(0, 2, n)
    presence = np.column_stack([step, coin])
    Y = np.column_stack([step * (3.0 + X[:, 2]) + rng.normal(0, 0.05, n), 2.0 + X[:, 1] + rng.normal(0, 0.05, n)])
    train, test = groups != "s2", groups == "s2"
    model = TwoStageTranslator("logistic", "ridge", signature_mask=False).fit(
        X[train], Y[train], presence=presence[train], coords=coords[train], groups=groups[train], metabolites=["step", "coin"]
    )
    assert model.combination_[0] in ("hurdle", "mask") and model.combination_[1] == "none"
    assert model.inner_mse_["none"][1] < model.inner_mse_["hurdle/platt"][1]
    assert model.inner_mse_["none"][0] > 2 * min(model.inner_mse_["hurdle/platt"][0], model.inner_mse_["mask"][0])
    ours = ((model.predict(X[test]) - Y[test]) ** 2).mean(0)
    unmasked = ((LinearIntensityRegressor("ridge").fit(X[train], Y[train]).predict(X[test]) - Y[test]) ** 2).mean(0)
    assert ours[0] < 0.5 * unmasked[0] and ours[1] <= unmasked[1] * 1.001
    # metabolite 1 comes from the unmasked model exactly
    np.testing.assert_allclose(model.predict(X[test])[:, 1], model.unmasked_model_.predict(X[test])[:, 1])
    chosen = TwoStageTranslator("logistic", "ridge", calibration="auto", signature_mask=False).fit(
        X[train], Y[train], presence=presence[train], coords=coords[train], groups=groups[train])
    assert chosen.combination_[0] in ("hurdle", "mask") and chosen.combination_[1] == "none"
    assert set(chosen.calibration_) <= set(sc.translate.CALIBRATIONS)


def test_choice_rule_sends_ties_and_near_ties_to_the_unmasked_model():
    """Per-fold inner errors: a gain within one standard error (or none at all) keeps ``none``; a
    consistent gain picks the candidate; the calibration is that of the best hurdle."""
    none = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    errors = {
        "none": none,
        "hurdle/platt": none - np.array([[0.5, 0.0, 0.3, 0.0], [0.5, 0.0, -0.25, 0.0], [0.5, 0.0, 0.1, 0.0]]),
        "hurdle/isotonic": none - np.array([[0.6, 0.0, 0.0, 0.0], [0.4, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]]),
        "hurdle/none": none + 0.1,
        "mask": none - np.array([[0.0, 0.0, 0.0, 0.2], [0.0, 0.0, 0.0, 0.21], [0.0, 0.0, 0.0, 0.19]]),
    }
    # metabolite 0: consistent gain 0.5 (platt: SE 0 wins over isotonic's noisier 0.5); 1: tie;
    # 2: mean gain 0.05 with SE 0.16 (a near-tie); 3: consistent gain of the mask
    combination, calibration = sc.translate.choose_combinations(errors)
    assert combination == ["hurdle", "none", "none", "mask"]
    assert calibration[0] in ("platt", "isotonic") and calibration[2] == "platt"
    assert sc.translate.choose_combinations(errors, tolerance=0.0)[0][2] == "hurdle"
    assert sc.translate.choose_combinations(errors, calibrations=["none"])[0] == ["none", "none", "none", "mask"]
    with pytest.raises(ValueError, match="Invalid option `sigmoid` for `calibration`"):
        sc.translate.choose_combinations(errors, calibrations=["sigmoid"])


@pytest.mark.parametrize("stage1", ["prevalence", "logistic"])
@pytest.mark.parametrize("calibration", ["platt", "auto"])
def test_auto_is_exactly_the_unmasked_stage_2_where_masking_cannot_help(stage1, calibration):
    """The guarantee: where presence carries nothing a mask could use, ``combine="auto"`` predicts
    exactly what the unmasked stage 2 (fitted on all training spots) predicts. Three cases: every
    metabolite present everywhere; presence labels that are coin flips independent of genes and
    intensities; and coin flips whose rate shifts between sections while the intensity carries an
    offset when present (the brain's failure mode for the prevalence stage 1: a calibration map
    fitted on the inner scores it was scored on learnt each inner section's prevalence)."""
    rng = np.random.default_rng(3)
    coords, groups = _grid(14, n_sections=4)
    n = len(coords)
    X = rng.normal(size=(n, 3))
    linear = 1.0 + X @ np.array([1.0, -0.5, 0.3])
    rate = np.repeat([0.2, 0.8, 0.35, 0.65], n // 4)
    shifted = (rng.random(n) < rate).astype(int)
    presence = np.column_stack([np.ones(n, dtype=int), rng.integers(0, 2, n), shifted])
    Y = np.column_stack([linear, linear + 0.5, linear + 1.5 * shifted]) + rng.normal(0, 0.1, (n, 3))
    train, test = groups != "s3", groups == "s3"
    model = TwoStageTranslator(stage1, "ridge", calibration=calibration, signature_mask=False).fit(
        X[train], Y[train], presence=presence[train], coords=coords[train], groups=groups[train])
    assert model.combination_ == ["none", "none", "none"], model.inner_mse_
    unmasked = LinearIntensityRegressor("ridge").fit(X[train], Y[train]).predict(X[test])
    np.testing.assert_allclose(model.predict(X[test]), unmasked, rtol=1e-10, atol=1e-10)


def test_isotonic_and_raw_calibration():
    """Isotonic: a monotone map onto the empirical frequencies; ``none``: the sigmoid of the raw score."""
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(2000, 2))
    labels = (rng.random((2000, 2)) < np.column_stack([(scores[:, 0] > 0) * 0.8 + 0.1, np.full(2000, 0.3)])).astype(int)
    fit = sc.translate.fit_calibration(scores, labels, ["isotonic", "none"])
    p = sc.translate.calibrated_probability(scores, fit["methods"], slope=fit["slope"], intercept=fit["intercept"], knots=fit["knots"])
    order = np.argsort(scores[:, 0])
    assert (np.diff(p[order, 0]) >= -1e-12).all() and p[:, 0].min() >= 0 and p[:, 0].max() <= 1
    assert abs(p[scores[:, 0] > 0.5, 0].mean() - 0.9) < 0.05 and abs(p[scores[:, 0] < -0.5, 0].mean() - 0.1) < 0.05
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-scores[:, 1])))
    assert fit["knots"][1] is None
    with pytest.raises(ValueError, match="Invalid option `beta` for `calibration`"):
        sc.translate.fit_calibration(scores, labels, ["beta", "none"])


def test_spatial_context_features_and_morans_i():
    coords, groups = _grid(6)
    X = np.arange(len(coords), dtype=float)[:, None]
    graph = sc.translate.spot_graph(coords, groups=groups, n_neighbors=4)
    np.testing.assert_allclose(np.asarray(graph.sum(1)).ravel(), 1.0)
    first, second = groups == "s0", groups == "s1"
    assert graph[np.ix_(np.flatnonzero(first), np.flatnonzero(second))].nnz == 0  # sections never linked
    F = sc.translate.spatial_features(X, coords, groups=groups, n_neighbors=4, coordinates=True)
    assert F.shape == (len(X), 4)
    interior = np.flatnonzero((coords[:, 0] == 2) & (coords[:, 1] == 2) & first)[0]
    neighbours = [interior - 1, interior + 1, interior - 6, interior + 6, interior]  # the 4-ring and the spot
    assert F[interior, 1] == pytest.approx(X[neighbours, 0].mean())
    np.testing.assert_allclose(F[first, 2:].mean(0), 0.0, atol=1e-12)
    smooth = coords[:, :1] + 0.0  # a gradient: strongly positive autocorrelation
    checker = ((coords[:, 0] + coords[:, 1]) % 2)[:, None] * 1.0  # alternating: negative on the 4-ring
    moran = sc.translate.morans_i(np.hstack([smooth, checker, np.ones_like(smooth)]), coords, groups=groups, n_neighbors=4)
    assert moran[0] > 0.5 and moran[1] < -0.5 and np.isnan(moran[2])
    table = sc.translate.intensity_scores(smooth, np.zeros_like(smooth), coords=coords, groups=groups, n_neighbors=4)
    assert table.loc["m0", "morans_i"] == pytest.approx(moran[0]) and table.loc["macro", "morans_i"] == pytest.approx(moran[0])
    with pytest.raises(ValueError, match="pass `coords`"):
        TwoStageTranslator("logistic", "ridge", spatial_context=4, signature_mask=False).fit(
            np.hstack([X, X]), X, presence=np.ones_like(X), coords=coords).predict(np.hstack([X, X]))
    with pytest.raises(ValueError, match="`spatial_context` must be an integer >= 0"):
        TwoStageTranslator(spatial_context=-1).fit(X, X, presence=np.ones_like(X), coords=coords)


def test_gated_simulator_is_not_linear():
    """On the gated regime ridge is clearly not exact: an MLP on the true programs beats it widely."""
    st, msi = sc.datasets.simulate_paired_st_msi(regime="gated", n_sections=2, shape=(20, 20), n_genes=40, n_metabolites=4, seed=0)
    assert st.obsm["programs"].shape == (800, 4) and msi.layers["present"].shape == (800, 4)
    present = msi.layers["present"].astype(bool)
    assert 0.1 < present.mean() < 0.8 and (np.asarray(msi.X)[~present] < 0.5).all()
    X, Y = np.log1p(np.asarray(st.X, dtype=float)), np.log1p(np.asarray(msi.X, dtype=float))
    train, test = (st.obs[SECTION] == "section0").to_numpy(), (st.obs[SECTION] == "section1").to_numpy()
    ridge = LinearIntensityRegressor("ridge").fit(X[train], Y[train]).predict(X[test])
    r2 = sc.translate.intensity_scores(Y[test], ridge).loc["macro", "r2"]
    truth = sc.translate.intensity_scores(Y[test], np.log1p(np.asarray(msi.X, dtype=float))[test]).loc["macro", "r2"]
    assert truth == 1.0 and r2 < 0.75
    with pytest.raises(ValueError, match="Invalid option `cubic` for `regime`"):
        sc.datasets.simulate_paired_st_msi(regime="cubic")


def test_transformer_module_tokens_scale_with_genes():
    st, msi = sc.datasets.simulate_paired_st_msi(regime="gated", n_sections=1, shape=(12, 12), n_genes=200, n_metabolites=3, seed=1)
    X, Y = np.log1p(np.asarray(st.X, dtype=float)), np.log1p(np.asarray(msi.X, dtype=float))
    reg = sc.translate.TransformerIntensityRegressor(n_tokens=8, d_model=8, n_heads=2, max_epochs=2, device="cpu")
    reg.fit(X, Y, coords=np.asarray(st.obsm[SPATIAL], dtype=float))
    assert reg.loadings_.shape == (200, 8) and reg.module_.gene_embedding.shape == (8, 8)  # tokens, not genes
    np.testing.assert_allclose(reg.loadings_.T @ reg.loadings_, np.eye(8), atol=1e-8)
    attention = reg.attention(X[:4])
    assert attention.shape == (4, 3, 200)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    assert reg.predict(X).shape == Y.shape


@pytest.mark.parametrize("calibration", ["platt", "auto"])
def test_prevalence_stage_1_across_batches_keeps_the_unmasked_model(calibration):
    """The mouse brain's failure, in small: two batches of sections, metabolites absent in one and
    present in the other, and a gene that shifts with the batch. The prevalence stage 1 gives one
    constant score per inner fold; a calibration map fitted on those same scores read each inner
    fold's prevalence off them, so the inner CV chose the hurdle, which doubled the held-out MSE
    (unmasked ridge reads the batch from the gene). Cross-fitted, the choice keeps the unmasked model."""
    rng = np.random.default_rng(0)
    coords, groups = _grid(10, n_sections=6)
    n = len(coords)
    batch = np.repeat([0, 0, 0, 1, 1, 1], n // 6)
    X = rng.normal(size=(n, 3))
    X[:, 0] += 2 * batch
    presence = (rng.random((n, 2)) < np.where(batch == 1, 0.95, 0.05)[:, None]).astype(int)
    Y = 1 + 10 * presence + 0.5 * X[:, 1:] + rng.normal(0, 0.3, (n, 2))
    train, test = groups != "s5", groups == "s5"
    model = TwoStageTranslator("prevalence", "ridge", calibration=calibration, signature_mask=False).fit(
        X[train], Y[train], presence=presence[train], coords=coords[train], groups=groups[train])
    assert model.combination_ == ["none", "none"], model.inner_mse_
    np.testing.assert_allclose(model.predict(X[test]), LinearIntensityRegressor("ridge").fit(X[train], Y[train]).predict(X[test]))


def test_isotonic_and_auto_calibration_survive_a_checkpoint(tmp_path):
    st, msi = sc.datasets.simulate_paired_st_msi(n_sections=1, shape=(12, 12), n_genes=12, n_metabolites=3, seed=5)
    X, Y = np.log1p(np.asarray(st.X, dtype=float)), np.log1p(np.asarray(msi.X, dtype=float))
    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    for calibration in ("isotonic", "auto"):
        model = TwoStageTranslator("logistic", "ridge", combine="hurdle", calibration=calibration, signature_mask=False).fit(X, Y, coords=coords)
        assert len(model.calibration_) == 3 and (calibration == "auto" or model.calibration_ == ["isotonic"] * 3)
        sc.translate.save_translator(model, tmp_path / calibration)
        loaded, _ = sc.translate.load_translator(tmp_path / calibration)
        np.testing.assert_allclose(loaded.presence_probability(X), model.presence_probability(X))
        np.testing.assert_allclose(loaded.predict(X), model.predict(X))
        assert loaded.calibration_ == model.calibration_
