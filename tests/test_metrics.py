"""Metrics against hand-computed cases, RIR on random clusterings, evaluate_clustering, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import spatialclust as sc
from spatialclust import metrics as M

from .conftest import shared_data

# ---- isotope pairs ---------------------------------------------------------------------------


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 6, 6))


def test_isotope_pairs_mass_shift_and_correlation():
    imgs = _images(7)
    mz = np.array([100.0, 101.00336, 101.5, 200.0, 201.0040, 300.0, 301.0034])
    imgs[1] = 2.0 * imgs[0] + 0.1  # r = 1 with image 0
    imgs[4] = imgs[3] + 0.01 * _images(1, 5)[0]  # r ~ 1 with image 3, Δm = 1.0040 (0.64 mDa off)
    # image 6 sits at the right m/z from image 5 but its image is unrelated (r ~ 0)
    pairs = M.isotope_pairs(mz, imgs)
    np.testing.assert_array_equal(pairs, [[0, 1], [3, 4]])
    # a tighter tolerance drops the pair that is 0.64 mDa off
    np.testing.assert_array_equal(M.isotope_pairs(mz, imgs, delta=0.0005), [[0, 1]])
    # lowering the correlation threshold to -1 keeps every pair at the right mass shift
    assert len(M.isotope_pairs(mz, imgs, min_corr=-1.0)) == 3


def test_isotope_pairs_ppm_and_order():
    imgs = _images(4)
    imgs[[1, 3]] = imgs[[0, 2]]
    # 5 ppm is 5.0 mDa at m/z ~1001 and 10.0 mDa at ~2001: 4 and 9 mDa off pass; 3 ppm fails both
    mz = np.array([1000.0, 1000.0 + 1.00336 + 0.004, 2000.0, 2000.0 + 1.00336 + 0.009])
    np.testing.assert_array_equal(M.isotope_pairs(mz, imgs, delta=5, unit="ppm"), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(M.isotope_pairs(mz, imgs, delta=3, unit="ppm"), np.zeros((0, 2)))
    # unsorted m/z: pairs are still (lighter, heavier) indices
    perm = np.array([3, 1, 2, 0])
    np.testing.assert_array_equal(M.isotope_pairs(mz[perm], imgs[perm], delta=5, unit="ppm"), [[2, 0], [3, 1]])


def test_isotope_pairs_constant_images_never_pair():
    imgs = np.ones((2, 4, 4))  # all images identical and constant: correlation undefined
    assert M.isotope_pairs([500.0, 501.00336], imgs).shape == (0, 2)


@pytest.mark.realdata
def test_isotope_pairs_real_bladder():
    """SOURCE.md: 11 ion pairs are spaced by one 13C (± 0.005); a few have strongly correlated images."""
    data = np.load(shared_data("msi_mouse_bladder", "bladder_cube.npz"))
    cube, mz, mask = data["cube"], data["mz"], data["ssc_segments"] >= 0
    assert len(M.isotope_pairs(mz, cube, min_corr=-1.0, mask=mask)) == 11
    pairs = M.isotope_pairs(mz, cube, mask=mask)
    np.testing.assert_allclose(mz[pairs], [[741.5306, 742.5338], [772.5253, 773.5289]], atol=1e-3)


def test_isotope_pairs_bad_input():
    with pytest.raises(ValueError, match="Invalid option `mDa` for `unit`"):
        M.isotope_pairs([1.0, 2.0], _images(2), unit="mDa")
    with pytest.raises(ValueError, match=r"`images` must have shape \(3, H, W\)"):
        M.isotope_pairs([1.0, 2.0, 3.0], _images(2))
    with pytest.raises(ValueError, match="`delta` must be a positive"):
        M.isotope_pairs([1.0, 2.0], _images(2), delta=0)


# ---- Relative Isotope Ratio --------------------------------------------------------------------


def test_rir_hand_case():
    labels = [0, 0, 1, 1, 2, 2]
    pairs = [[0, 1], [2, 3], [4, 5]]
    res = M.relative_isotope_ratio(labels, pairs, n_boot=4000, random_state=0)
    # every pair co-clustered: F_clust = 1; random: P(same) = sum n_k(n_k-1) / n(n-1) = 3*2/30
    assert res.defined and res.reason == ""
    assert res.f_cluster == 1.0 and res.n_pairs == 3
    assert res.f_random_expected == pytest.approx(0.2)
    assert res.f_random == pytest.approx(0.2, abs=0.02)
    assert res.value == pytest.approx(5.0, rel=0.1)
    # seeded
    assert M.relative_isotope_ratio(labels, pairs, n_boot=4000, random_state=0) == res


def test_rir_noise_never_co_clustered():
    # images 0 and 1 are both noise: their pair does not count as grouped
    res = M.relative_isotope_ratio([-1, -1, 0, 0], [[0, 1], [2, 3]], n_boot=4000)
    assert res.f_cluster == 0.5
    assert res.f_random_expected == pytest.approx(2 / 12)  # only cluster 0 (2 images) can group a pair
    assert res.value == pytest.approx(3.0, rel=0.1)


def test_rir_is_one_on_average_for_random_clusterings():
    rng = np.random.default_rng(42)
    n = 300
    pairs = np.stack([np.arange(0, n, 2), np.arange(1, n, 2)], axis=1)
    values = [
        M.relative_isotope_ratio(rng.integers(0, 6, n), pairs, n_boot=200, random_state=int(seed)).value
        for seed in range(200)
    ]
    assert np.mean(values) == pytest.approx(1.0, abs=0.05)


def test_rir_undefined_cases():
    no_pairs = M.relative_isotope_ratio([0, 0, 1], np.zeros((0, 2)))
    assert not no_pairs.defined and no_pairs.value is None and "no isotope pairs found" in no_pairs.reason
    all_noise = M.relative_isotope_ratio([-1, -1, -1], [[0, 1]])
    assert not all_noise.defined and all_noise.value is None and "all images are noise" in all_noise.reason
    singletons = M.relative_isotope_ratio([0, 1, 2], [[0, 1]])
    assert not singletons.defined and "single image" in singletons.reason
    json.dumps(no_pairs.to_dict())


def test_rir_bad_input():
    with pytest.raises(ValueError, match="outside"):
        M.relative_isotope_ratio([0, 1], [[0, 5]])
    with pytest.raises(ValueError, match="`n_boot` must be a positive integer"):
        M.relative_isotope_ratio([0, 1], [[0, 1]], n_boot=0)
    with pytest.raises(ValueError, match="negative labels other than -1"):
        M.relative_isotope_ratio([0, -2], [[0, 1]])


# ---- isotopic recall ----------------------------------------------------------------------------


def test_isotope_groups_and_isotopic_recall_hand_case():
    # envelopes: {0,1,2} (chained), {3,4}, {5,6}; image 7 has no isotope partner
    pairs = [[0, 1], [1, 2], [3, 4], [5, 6]]
    np.testing.assert_array_equal(M.isotope_groups(pairs, 8), [0, 0, 0, 1, 1, 2, 2, -1])
    labels = [0, 0, 1, 2, 3, -1, -1, 0]
    # {0,1,2}: 2 together (image 2 falsely classified); {3,4}: split -> 0; {5,6}: noise -> 0
    assert M.isotopic_recall(labels, pairs) == pytest.approx(2 / 7)
    assert M.isotopic_recall([0, 0, 0, 1, 1, 2, 2, 5], pairs) == 1.0
    with pytest.raises(ValueError, match="no isotope pairs"):
        M.isotopic_recall([0, 1, 2], np.zeros((0, 2)))


# ---- against ground truth ------------------------------------------------------------------------


def test_accuracy_and_purity_hand_cases():
    truth = [0, 0, 0, 1, 1, 1]
    labels = [1, 1, 0, 0, 0, 0]
    # cluster 1 -> class 0 (2 right), cluster 0 -> class 1 (3 right)
    assert M.clustering_accuracy(truth, labels) == pytest.approx(5 / 6)
    assert M.purity(truth, labels) == pytest.approx(5 / 6)
    # over-clustering: purity is 1, the one-to-one Hungarian matching only maps 2 clusters
    assert M.purity([0, 0, 1, 1], [0, 1, 2, 3]) == 1.0
    assert M.clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5
    # string classes, permuted cluster ids
    assert M.clustering_accuracy(["a", "a", "b"], [7, 7, 3]) == 1.0
    # noise counts as wrongly assigned
    assert M.clustering_accuracy([0, 0, 1, 1], [0, 0, -1, -1]) == 0.5
    assert M.purity([0, 0, 1, 1], [0, 0, -1, -1]) == 0.5
    assert M.purity([0, 1], [-1, -1]) == 0.0


def test_nmi_ari_hand_cases():
    truth, labels = [0, 0, 1, 1], [0, 0, 0, 1]
    # contingency [[2, 0], [1, 1]]: index 1, expected index 2*3/6 = 1 -> ARI 0
    assert M.ari(truth, labels) == pytest.approx(0.0)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_truth, h_labels = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert M.nmi(truth, labels) == pytest.approx(mi / ((h_truth + h_labels) / 2))
    assert M.nmi([0, 0, 1, 1], [5, 5, 2, 2]) == pytest.approx(1.0)
    # noise: singletons by default ([0,0,1,2]: ARI = (1 - 1/3) / (3/2 - 1/3) = 4/7), or one cluster
    assert M.ari([0, 0, 1, 1], [0, 0, -1, -1]) == pytest.approx(4 / 7)
    assert M.ari([0, 0, 1, 1], [0, 0, -1, -1], noise="cluster") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Invalid option `drop` for `noise`"):
        M.nmi(truth, labels, noise="drop")
    with pytest.raises(ValueError, match="`truth` has 3 entries; expected 4"):
        M.ari([0, 0, 1], labels)


# ---- internal metrics ------------------------------------------------------------------------------


def _line(*xs: float) -> np.ndarray:
    return np.column_stack([xs, np.zeros(len(xs))])


def test_davies_bouldin_euclidean_hand_case():
    X = _line(0, 2, 10, 12)
    # s = 1 for both clusters, centroids 1 and 11: DBI = (1 + 1) / 10
    assert M.davies_bouldin(X, [0, 0, 1, 1]) == pytest.approx(0.2)
    # noise is left out
    assert M.davies_bouldin(_line(0, 2, 10, 12, 100), [0, 0, 1, 1, -1]) == pytest.approx(0.2)
    from sklearn.metrics import davies_bouldin_score

    rng = np.random.default_rng(0)
    Y, lab = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    assert M.davies_bouldin(Y, lab) == pytest.approx(davies_bouldin_score(Y, lab))


def test_davies_bouldin_pearson_hand_case():
    a1, a2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    b1, b2 = np.array([4.0, 3.0, 2.0, 1.0]), np.array([4.0, 2.0, 3.0, 1.0])
    X = np.stack([a1, a2, b1, b2])
    ca, cb = (a1 + a2) / 2, (b1 + b2) / 2  # [1, 2.5, 2.5, 4] and [4, 2.5, 2.5, 1]

    def d(x, y):
        return 1 - np.corrcoef(x, y)[0, 1]

    # r(a1, ca) = r(a2, ca) = 0.9487 (by symmetry), r(ca, cb) = -1
    s = d(a1, ca)
    assert s == pytest.approx(1 - 4.5 / math.sqrt(5 * 4.5))
    assert d(ca, cb) == pytest.approx(2.0)
    assert M.davies_bouldin(X, [0, 0, 1, 1], metric="pearson") == pytest.approx((s + s) / 2.0)


def test_silhouette_hand_case():
    # a = 1 for every point; b = 5.5 for the outer, 4.5 for the inner points
    expected = ((5.5 - 1) / 5.5 + (4.5 - 1) / 4.5) / 2
    assert M.silhouette(_line(0, 1, 5, 6), [0, 0, 1, 1]) == pytest.approx(expected)
    assert M.silhouette(_line(0, 1, 5, 6, 50), [0, 0, 1, 1, -1]) == pytest.approx(expected)


def test_knn_purity_hand_case():
    X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labels = [0, 0, 0, 1, 1]
    out = M.knn_purity(X, labels, ks=[1, 2, 3], metric="euclidean")
    # k=2: the two class-1 anchors each get one class-0 neighbour -> 8/10; k=3: 8/15
    assert out == {1: pytest.approx(1.0), 2: pytest.approx(0.8), 3: pytest.approx(8 / 15)}
    # default k = 1..30 needs 31 images
    rng = np.random.default_rng(0)
    assert list(M.knn_purity(rng.normal(size=(31, 3)), rng.integers(0, 2, 31))) == list(range(1, 31))


def test_cluster_counts():
    labels = [-1, -1, 0, 0, 1, 2, 2, 2]
    assert M.n_meaningful_clusters(labels) == 2  # cluster 1 holds one image; noise excluded
    assert M.noise_size(labels) == 2
    assert M.n_clusters(labels) == 3
    assert M.n_meaningful_clusters([-1, -1]) == 0


# ---- bad input ---------------------------------------------------------------------------------


def test_k_larger_than_number_of_images():
    with pytest.raises(ValueError, match=r"`ks` must lie in \[1, n_images - 1\] = \[1, 4\]; received \[5, 30\]"):
        M.knn_purity(_line(0, 1, 2, 3, 4), [0, 0, 1, 1, 1], ks=[1, 5, 30])


def test_fewer_than_three_images():
    with pytest.raises(ValueError, match="has 2 images"):
        M.davies_bouldin(_line(0, 1), [0, 1])
    with pytest.raises(ValueError, match="has 2 images"):
        M.knn_purity(_line(0, 1), [0, 1], ks=[1])


def test_all_images_identical():
    with pytest.raises(ValueError, match="All 4 images in `X` are identical"):
        M.davies_bouldin(np.ones((4, 3)), [0, 0, 1, 1], metric="pearson")
    with pytest.raises(ValueError, match="are identical"):
        M.silhouette(np.ones((4, 3)), [0, 0, 1, 1])


def test_internal_metrics_need_two_clusters():
    with pytest.raises(ValueError, match="needs at least 2 clusters .* has 1"):
        M.davies_bouldin(_line(0, 1, 2), [0, 0, -1])
    with pytest.raises(ValueError, match="needs at least 2 clusters .* has 0"):
        M.silhouette(_line(0, 1, 2), [-1, -1, -1])
    with pytest.raises(ValueError, match="constant"):
        M.davies_bouldin(np.array([[1.0, 1.0], [0.0, 1.0], [3.0, 2.0]]), [0, 1, 1], metric="pearson")


# ---- AnnData level --------------------------------------------------------------------------------


@pytest.fixture
def msi():
    """24 ion images in 3 spatial patterns; 4 monoisotopic ions with an M+1 isotope image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12]
    patterns = np.stack([(xx < 6), (yy < 6), ((xx - 6) ** 2 + (yy - 6) ** 2 < 12)]).astype(float)
    pattern_of = np.repeat([0, 1, 2], 8)
    images = patterns[pattern_of] + 0.1 * rng.random((24, 12, 12))
    mz = 300.0 + 7.1 * np.arange(24)
    for mono, iso in ((0, 1), (8, 9), (16, 17), (2, 3)):
        mz[iso] = mz[mono] + 1.00336
    adata = sc.io.images_to_adata(images.astype(np.float32), mz=mz)
    adata.var["pattern"] = np.array(["left", "top", "disc"])[pattern_of]
    adata.varm["X_regular"] = images.reshape(24, -1).astype(np.float32)
    return adata


def test_evaluate_clustering(msi):
    sc.tl.cluster(msi, "kmeans", n_clusters=3)
    out = M.evaluate_clustering(msi, n_boot=200)
    json.dumps(out)
    assert out["n_images"] == 24 and out["n_clusters"] == 3 and out["n_meaningful_clusters"] == 3
    assert out["noise_size"] == 0
    assert out["n_isotope_pairs"] == 4
    assert out["rir"] == pytest.approx(1 / out["rir_f_random"]) and out["rir"] > 2
    assert out["isotopic_recall"] == 1.0
    assert out["accuracy"] == out["purity"] == out["nmi"] == out["ari"] == 1.0
    assert out["knn_purity"]["1"] == 1.0 and len(out["knn_purity"]) == 23  # k <= n_images - 1
    assert out["dbi_euclidean"] > 0 and out["dbi_pearson"] > 0 and 0 < out["silhouette"] <= 1
    assert set(out["sam"]) == set(out["cluster_quality"]) == {"0", "1", "2"}
    assert all(0 <= v <= np.pi / 2 for v in out["sam"].values())
    assert out["n_high_quality_clusters"] == sum(v == "high" for v in out["cluster_quality"].values()) >= 1
    assert out["undefined"] == {}


def test_evaluate_clustering_all_noise_and_no_mz(msi):
    msi.var["cluster"] = -1
    out = M.evaluate_clustering(msi, n_boot=50, truth=None)
    assert out["n_clusters"] == 0 and out["noise_size"] == 24
    assert out["rir"] is None and "all images are noise" in out["undefined"]["rir"]
    assert out["dbi_euclidean"] is None and "at least 2 clusters" in out["undefined"]["dbi_euclidean"]
    assert out["sam"] == {} and out["n_high_quality_clusters"] == 0
    assert out["accuracy"] == 0.0
    del msi.var["mz"]
    msi.var["cluster"] = np.repeat([0, 1, 2], 8)
    out = M.evaluate_clustering(msi, n_boot=50)
    assert out["rir"] is None and "no m/z" in out["undefined"]["rir"]


def test_evaluate_clustering_no_isotope_pairs(msi):
    msi.var["mz"] = 300.0 + 7.1 * np.arange(24)
    msi.var["cluster"] = np.repeat([0, 1, 2], 8)
    out = M.evaluate_clustering(msi, n_boot=50)
    assert out["rir"] is None and out["n_isotope_pairs"] == 0
    assert "no isotope pairs found" in out["undefined"]["rir"]
    assert out["isotopic_recall"] is None and "no isotope pairs" in out["undefined"]["isotopic_recall"]


def test_evaluate_clustering_missing_keys(msi):
    with pytest.raises(KeyError, match="run `sc.tl.cluster"):
        M.evaluate_clustering(msi, key="leiden")
    msi.var["cluster"] = np.repeat([0, 1, 2], 8)
    with pytest.raises(KeyError, match=r"`use_rep`='X_simclr' is not in `adata.varm`"):
        M.evaluate_clustering(msi, use_rep="X_simclr")
