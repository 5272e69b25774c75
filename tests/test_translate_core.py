"""ST -> MSI translation (seed 004): pairing, targets, folds, estimators, two-stage model, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

import spatialclust as sc
from spatialclust._keys import SECTION, SPATIAL
from spatialclust.translate import (
    LinearIntensityRegressor,
    LinearPresenceClassifier,
    TransformerIntensityRegressor,
    TwoStageTranslator,
)


@pytest.fixture(scope="module")
def paired():
    st, msi = sc.datasets.simulate_paired_st_msi(shape=(16, 16), seed=1)
    return st, msi


@pytest.fixture(scope="module")
def arrays(paired):
    st, msi = paired
    X = np.log1p(np.asarray(st.X, dtype=float))
    Y = np.log1p(np.asarray(msi.X, dtype=float))
    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    groups = st.obs[SECTION].astype(str).to_numpy()
    presence, _ = sc.translate.presence_targets(np.asarray(msi.X), coords=coords, groups=groups)
    return X, Y, presence, coords, groups


def test_simulator_is_seeded_and_plants_absent_regions():
    a, b = sc.datasets.simulate_paired_st_msi(shape=(8, 8), seed=3), sc.datasets.simulate_paired_st_msi(shape=(8, 8), seed=3)
    np.testing.assert_array_equal(a[1].X, b[1].X)
    sim = a[0].uns["simulation"]
    assert np.asarray(sim["absent"]).any() and not np.asarray(sim["absent"]).all(axis=1).any()
    assert (np.asarray(sim["gene_weights"]) > 0).sum(axis=1).tolist() == [2] * a[1].n_vars
    with pytest.raises(ValueError, match="n_signature_genes"):
        sc.datasets.simulate_paired_st_msi(n_genes=4, n_regions=4, n_signature_genes=2)


def test_pair_shared_nearest_footprint_and_landmarks(paired):
    st, msi = paired
    st_p, msi_p = sc.translate.pair(st, msi)
    assert st_p.uns["pairing"]["method"] == "shared" and msi_p.uns["pairing"]["distance_max"] == 0
    np.testing.assert_array_equal(msi_p.X, msi.X)
    shifted = msi.copy()
    shifted.obsm[SPATIAL] = msi.obsm[SPATIAL] + 0.3
    st_n, msi_n = sc.translate.pair(st, shifted)
    assert msi_n.uns["pairing"]["method"] == "nearest"
    np.testing.assert_allclose(msi_n.obs["match_distance"], np.hypot(0.3, 0.3))
    np.testing.assert_array_equal(msi_n.X, msi.X)
    _, msi_f = sc.translate.pair(st, shifted, method="footprint", radius=1.05)
    assert msi_f.obs["n_pixels"].min() >= 1 and msi_f.obs["n_pixels"].max() == 4
    spot = 20  # interior spot (4, 1) of section0: pixels shifted from (3..4, 0..1) are within the radius
    xy = np.asarray(msi.obsm[SPATIAL])
    inside = (msi.obs[SECTION] == "section0").to_numpy() & np.isin(xy[:, 0], [3, 4]) & np.isin(xy[:, 1], [0, 1])
    np.testing.assert_allclose(msi_f.X[spot], msi.X[inside].mean(0), rtol=1e-6)
    # affine registration: MSI frame = 2 x ST frame + (100, -50)
    moved = msi.copy()
    moved.obsm[SPATIAL] = msi.obsm[SPATIAL] * 2.0 + np.array([100.0, -50.0])
    st_pts = np.array([[0, 0], [10, 0], [0, 10], [7, 7]], dtype=float)
    _, msi_l = sc.translate.pair(st, moved, landmarks=(st_pts * 2 + [100, -50], st_pts))
    assert msi_l.uns["pairing"]["landmark_rms"] < 1e-8 and msi_l.uns["pairing"]["distance_max"] < 1e-6
    np.testing.assert_allclose(msi_l.X, msi.X)


def test_pair_bad_input(paired):
    st, msi = paired
    far = msi.copy()
    far.obsm[SPATIAL] = msi.obsm[SPATIAL] + 1000
    with pytest.raises(ValueError, match="no spatial overlap"):
        sc.translate.pair(st, far)
    nan = msi.copy()
    nan.X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN intensities"):
        sc.translate.pair(st, nan)
    _, msi_z = sc.translate.pair(st, nan, nan_policy="zero")
    assert msi_z.X[3, 1] == 0 and msi_z.uns["pairing"]["n_nan"] == 1
    with pytest.raises(ValueError, match="Invalid option `closest` for `method`"):
        sc.translate.pair(st, msi, method="closest")
    with pytest.raises(ValueError, match="collinear"):
        sc.translate.pair(st, msi, landmarks=(np.array([[0, 0], [1, 1], [2, 2]]), np.array([[0, 0], [1, 1], [2, 2]])))


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_pair_refuses_repeated_gene_or_metabolite_names(paired):
    """Repeated metabolites trained silently; repeated genes failed with "cannot convert the series to
    <class 'float'>"."""
    st, msi = paired
    repeated = lambda a: a[:, [0, *range(a.n_vars - 1)]]  # noqa: E731 -- the first name twice
    with pytest.raises(ValueError, match=rf"The genes of the ST data repeat 1 name\(s\) \(e.g. \['{st.var_names[0]}'\]\)"):
        sc.translate.pair(repeated(st), msi)
    with pytest.raises(ValueError, match=rf"The metabolites of the MSI data repeat 1 name\(s\) \(e.g. \['{msi.var_names[0]}'\]\)"):
        sc.translate.pair(st, repeated(msi))


def test_presence_targets_recover_planted_absence(paired, arrays):
    st, msi = paired
    _, _, presence, _, _ = arrays
    sim = st.uns["simulation"]
    regions = st.obs["region"].astype(int).to_numpy()
    planted = ~np.asarray(sim["absent"])[:, regions].T
    assert (presence == planted).mean() > 0.99
    fixed, thr = sc.translate.presence_targets(np.asarray(msi.X), detection=0.5)
    assert (thr == 0.5).all() and (fixed == (msi.X > 0.5)).all()
    with pytest.raises(ValueError, match="NaN"):
        sc.translate.presence_targets(np.array([[np.nan, 1.0], [0.0, 1.0]]), detection=0.1)
    with pytest.raises(ValueError, match="needs `coords`"):
        sc.translate.presence_targets(np.asarray(msi.X))


def test_spatial_folds_are_disjoint_and_buffered(arrays):
    _, _, _, coords, groups = arrays
    folds = sc.translate.spatial_folds(coords, groups=groups, n_splits=4, buffer=1.5)
    tested = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(coords)))  # every spot held out exactly once
    for train, test in folds:
        assert not set(train) & set(test)
        assert sc.translate.min_train_test_distance(coords, train, test, groups=groups) > 1.5
    sections = sc.translate.spatial_folds(coords, method="sections", groups=groups)
    assert len(sections) == 2
    for train, test in sections:
        assert len(np.unique(groups[test])) == 1 and not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="at least 2 sections"):
        sc.translate.spatial_folds(coords[groups == "section0"], method="sections", groups=groups[groups == "section0"])


def test_constant_metabolites_are_predicted_constant(arrays):
    X, _, presence, _, _ = arrays
    varying = int(np.flatnonzero((presence.mean(0) > 0.1) & (presence.mean(0) < 0.9))[0])
    Y = np.column_stack([np.ones(len(X)), np.zeros(len(X)), presence[:, varying]]).astype(int)  # always, never, varies
    for model in (LinearPresenceClassifier(), LinearPresenceClassifier(kind="svm"),
                  sc.translate.MLPPresenceClassifier(max_epochs=3, hidden_sizes=(8,), device="cpu")):
        pred = model.fit(X, Y).predict(X)
        assert pred[:, 0].all() and not pred[:, 1].any()
        if not isinstance(model, sc.translate.MLPPresenceClassifier):  # the 3-epoch MLP only checks the constants
            assert (pred[:, 2] == Y[:, 2]).mean() > 0.9
    scores = sc.translate.presence_scores(Y, Y, Y.astype(float))
    assert np.isnan(scores.loc["m0", "roc_auc"]) and scores.loc["macro", "n_defined"] == 1


def test_presence_scores_of_a_single_metabolite():
    """One metabolite is one (n, 1) column, which scikit-learn would read as a two-class target."""
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 2, (40, 3)), rng.integers(0, 2, (40, 3))
    both = sc.translate.presence_scores(truth, pred, rng.random((40, 3)))
    one = sc.translate.presence_scores(truth[:, :1], pred[:, :1])
    assert list(one.index) == ["m0", "micro", "macro"]
    np.testing.assert_allclose(one.loc["m0", ["precision", "recall", "f1"]], both.loc["m0", ["precision", "recall", "f1"]])
    np.testing.assert_allclose(one.loc["micro", ["precision", "f1"]], one.loc["m0", ["precision", "f1"]])


def test_two_stage_recovers_programs_far_better_than_mean(paired, arrays):
    st, msi = paired
    X, Y, presence, coords, groups = arrays
    train, test = groups == "section0", groups == "section1"
    genes, mets = list(st.var_names), list(msi.var_names)
    model = TwoStageTranslator("logistic", "ridge").fit(
        X[train], Y[train], presence=presence[train], coords=coords[train], genes=genes, metabolites=mets
    )
    pred = model.predict(X[test])
    ours = sc.translate.intensity_scores(Y[test], pred)
    mean = sc.translate.intensity_scores(Y[test], LinearIntensityRegressor("mean").fit(X[train], Y[train]).predict(X[test]))
    assert ours.loc["macro", "r2"] > 0.6 and ours.loc["macro", "r2"] > mean.loc["macro", "r2"] + 0.5
    p1 = sc.translate.presence_scores(presence[test], model.predict_presence(X[test]), model.presence_scores(X[test]))
    assert p1.loc["macro", "f1"] > 0.95
    # the seed's hard mask: metabolites predicted absent are exactly zero, present ones are not
    masked = TwoStageTranslator("logistic", "ridge", combine="mask").fit(X[train], Y[train], presence=presence[train], coords=coords[train])
    present = masked.predict_presence(X[test]).astype(bool)
    pred_mask = masked.predict(X[test])
    assert (pred_mask[~present] == 0).all() and (pred_mask[present] != 0).all() and (~present).any()
    # per-metabolite choice: not worse than the unmasked stage 2 on held-out spots (pooled)
    unmasked = LinearIntensityRegressor("ridge").fit(X[train], Y[train]).predict(X[test])
    assert ((pred - Y[test]) ** 2).mean() <= ((unmasked - Y[test]) ** 2).mean()
    # the planted program genes are the top ridge genes of each metabolite
    weights = np.asarray(st.uns["simulation"]["gene_weights"])
    importance = sc.translate.gene_importance(model, source="coefficients")
    top = sc.translate.top_genes(importance, n=3)
    hits = [
        bool(set(top[top.metabolite == m].gene) & {genes[g] for g in np.flatnonzero(weights[j])})
        for j, m in enumerate(mets)
    ]
    assert np.mean(hits) >= 0.75


def test_transformer_beats_mean_and_exposes_attention(arrays):
    X, Y, presence, coords, groups = arrays
    train, test = groups == "section0", groups == "section1"
    reg = TransformerIntensityRegressor(d_model=16, n_heads=2, max_epochs=25, patience=5, device="cpu")
    reg.fit(X[train], Y[train], presence=presence[train], coords=coords[train])
    r2 = sc.translate.intensity_scores(Y[test], reg.predict(X[test]) * presence[test]).loc["macro", "r2"]
    mean = LinearIntensityRegressor("mean").fit(X[train], Y[train], presence=presence[train])
    r2_mean = sc.translate.intensity_scores(Y[test], mean.predict(X[test]) * presence[test]).loc["macro", "r2"]
    assert r2 > r2_mean + 0.1
    attention = reg.attention(X[test][:5])
    assert attention.shape == (5, Y.shape[1], X.shape[1])
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    assert reg.best_epoch_ <= reg.n_epochs_ <= 25


def test_estimators_follow_sklearn_api():
    for est in (LinearPresenceClassifier(C=0.5), TransformerIntensityRegressor(d_model=8),
                TwoStageTranslator("svm", "mlp", intensity_params={"hidden_sizes": (8,)})):
        cloned = clone(est)
        assert cloned.get_params() == est.get_params() and cloned is not est
    with pytest.raises(ValueError, match="Invalid option `forest` for `presence_model`"):
        TwoStageTranslator("forest").fit(np.zeros((4, 2)), np.ones((4, 1)), presence=np.ones((4, 1)))
    with pytest.raises(ValueError, match="`C` must be > 0"):
        LinearPresenceClassifier(C=0).fit(np.zeros((4, 2)), np.array([[0], [1], [0], [1]]))


def test_signature_mask_given_and_computed(arrays):
    X = arrays[0]
    given = sc.translate.SignatureMask().fit(X[:40], clusters=["a"] * 20 + ["b"] * 20, signatures={"a": [0, 1], "b": [2]})
    mask = given.transform(X[:40], clusters=["a"] * 20 + ["b"] * 20)
    assert mask[0].tolist()[:3] == [1, 1, 0] and mask[-1].tolist()[:3] == [0, 0, 1] and given.source_ == "given"
    computed = sc.translate.SignatureMask(n_genes=2).fit(X)
    assert computed.source_ == "leiden+wilcoxon" and len(computed.cluster_names_) >= 2
    assert computed.transform(X).sum(1).max() <= 2


def test_cross_validate_reports_models_next_to_baselines(arrays):
    X, Y, presence, coords, groups = arrays
    result = sc.translate.cross_validate(
        X, Y, presence, coords=coords, groups=groups, folds="sections",
        presence_models=("prevalence", "logistic"), intensity_models=("ridge",),
        search={"intensity.ridge": {"alpha": [1.0, 10.0]}},
    )
    summary = result["intensity_summary"].set_index("model")
    assert {"mean (baseline)", "ridge (baseline)", "logistic x ridge"} <= set(summary.index)
    assert summary.loc["logistic x ridge", "r2_macro"] > summary.loc["mean (baseline)", "r2_macro"] + 0.4
    p = result["presence_summary"].set_index("model")
    assert p.loc["logistic", "roc_auc_macro"] > 0.95 and p.loc["prevalence", "roc_auc_macro"] < 0.75
    assert p.loc["prevalence", "roc_auc_macro_per_fold"] == pytest.approx(0.5)
    assert len(result["best_params"]) == 2 and "intensity.ridge" in result["best_params"][0]
