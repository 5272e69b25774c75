"""Gene-family coherence (label-free check of gene-image clusterings)."""

import numpy as np
import pytest

import spatialclust as sc

NAMES = ["Rpl4", "Rps3", "Rplp0", "Rps4x", "mt-Nd1", "mt-Co1", "mt-Cytb", "Hba-a1", "Hbb-bs", "Hbb-bt",
         "Mrpl12", "Hbegf", "Rpl13-ps3", "Gapdh"]


def test_gene_families_mouse_and_human_symbols():
    fam = sc.metrics.gene_families(NAMES)
    assert list(fam[:10]) == ["ribosomal"] * 4 + ["mitochondrial"] * 3 + ["haemoglobin"] * 3
    assert list(fam[10:]) == [""] * 4  # mito-ribosomal, Hbegf, a pseudogene and others are no family
    human = sc.metrics.gene_families(["RPL10", "RPS27A", "RPS4Y1", "MT-ND4", "HBB", "HBA1", "HBEGF", "HBE1"])
    assert list(human) == ["ribosomal"] * 3 + ["mitochondrial", "haemoglobin", "haemoglobin", "", ""]


def test_coherence_perfect_and_mixed():
    fam = sc.metrics.gene_families(NAMES)
    codes = {"ribosomal": 0, "mitochondrial": 1, "haemoglobin": 2, "": 3}
    perfect = np.array([codes[f] for f in fam])
    out = sc.metrics.gene_family_coherence(perfect, NAMES)
    assert out["nmi"] == pytest.approx(1.0) and out["coherence"] == pytest.approx(1.0)
    assert out["n_genes"] == 10 and out["families"]["haemoglobin"]["n_genes"] == 3
    one_cluster = np.zeros(len(NAMES), dtype=int)
    lumped = sc.metrics.gene_family_coherence(one_cluster, NAMES)
    assert lumped["nmi"] == pytest.approx(0.0) and lumped["coherence"] == pytest.approx(1.0)
    # noise labels are singletons: leaving the family genes unclustered scores no coherence
    noise = sc.metrics.gene_family_coherence(np.full(len(NAMES), -1), NAMES)
    assert noise["coherence"] == 0.0


def test_coherence_min_genes_and_errors():
    labels = np.arange(len(NAMES))
    out = sc.metrics.gene_family_coherence(labels, NAMES, min_genes=4)
    assert set(out["families"]) == {"ribosomal"} and np.isnan(out["nmi"])
    with pytest.raises(ValueError, match="entries"):
        sc.metrics.gene_family_coherence(labels[:-1], NAMES)
    with pytest.raises(ValueError, match="matches the families"):
        sc.metrics.gene_families(["Rpl4"], {"a": "^Rp", "b": "^R"})


def test_marker_genes_of_the_olfactory_bulb_layers_are_families():
    layers = sc.metrics.MARKER_GENES["mouse_olfactory_bulb"]
    names = ["S100a5", "Fabp7", "Gng13", "Cdhr1", "Slc17a7", "Reln", "Penk", "Gad1", "Meis2", "Mbp", "Penk2", "Gad2"]
    fam = sc.metrics.gene_families(names, layers)
    assert list(fam) == ["olfactory nerve layer"] * 3 + ["mitral cell layer"] * 3 + ["granule cell layer"] * 3 + [""] * 3
    # a clustering that merges two layers keeps each layer together but loses NMI
    merged = sc.metrics.gene_family_coherence([0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2], names, families=layers)
    exact = sc.metrics.gene_family_coherence([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], names, families=layers)
    assert exact["nmi"] == pytest.approx(1.0) and merged["coherence"] == pytest.approx(1.0) and merged["nmi"] < 0.8


def test_olfactory_bulb_markers_hold_on_the_real_section():
    """Every marker gene of MOB1 is closest (Pearson, smoothed log image) to the mean image of its own layer."""
    from scipy.ndimage import gaussian_filter

    from .conftest import shared_data

    mob = sc.datasets.legacy_st("MOB1", path=shared_data("st_legacy_stutility"))
    layers = sc.metrics.MARKER_GENES["mouse_olfactory_bulb"]
    layer = sc.metrics.gene_families(mob.var["gene_name"].astype(str).to_numpy(), layers)
    markers = mob[:, layer != ""].copy()
    layer = layer[layer != ""]
    assert len(layer) == 15
    images = np.stack([gaussian_filter(np.log1p(image.astype(float)), 1.0) for image in sc.pp.feature_images(markers)])
    flat = images.reshape(len(layer), -1)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / flat.std(axis=1, keepdims=True)
    corr = flat @ flat.T / flat.shape[1]
    for i, own in enumerate(layer):
        mean = {name: corr[i, (layer == name) & (np.arange(len(layer)) != i)].mean() for name in layers}
        assert max(mean, key=mean.get) == own, (markers.var["gene_name"].iloc[i], mean)
