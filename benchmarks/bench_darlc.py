"""Benchmark DARLC (seed 003) against k-means on raw images and the neural / SimCLR embedders.

For every dataset the feature images are clustered by

- ``kmeans_raw``: k-means on the flattened preprocessed images (the baseline, measured in the same run);
- ``kmeans_raw_pearson``: k-means on the images centred and scaled to unit norm (Pearson
  geometry; the stronger baseline on sparse gene images);
- ``neural+kmeans`` / ``simclr+kmeans``: k-means on the neural (pretrained EfficientNet-Lite0) and
  SimCLR embeddings (optional, ``--methods``);
- ``darlc``: DARLC's own Student's t mixture clusters (Module II);
- ``darlc+leiden``: Leiden on DARLC's encoder embeddings (the seed's downstream check);
- ``darlc+kmeans``: k-means on DARLC's encoder embeddings, centred and scaled to unit norm;

The legacy ST datasets are named by their section (``hippo1``-``hippo8``, ``mob1``-``mob4``,
``bc1``-``bc4``: the section's ``--n-genes`` highly variable genes). ``<section>_families`` (e.g.
``hippo1_families``) keeps only the ribosomal, mitochondrial and haemoglobin genes of the section
(a label-free truth: :func:`spatialclust.metrics.gene_families`) and clusters them into one cluster
per family, so NMI/ARI/ACC measure how well each method keeps these co-expressed families
together. ``mob<k>_markers`` does the same with the marker genes of the three main layers of the
olfactory bulb (:data:`spatialclust.metrics.MARKER_GENES`, known anatomy), clustered among the
section's ``--n-genes`` highly variable genes with the usual number of clusters and scored on the
marker genes only (do the markers of one layer share a cluster, apart from the other layers?).
The breast-cancer sections carry only the ribosomal family, so they have no ``_families`` set.

with the same number of clusters for every method (paper heuristic: ~30 images per cluster, or
``--n-clusters``). Reported: DBI with Euclidean and Pearson distance computed on the images
themselves (so all methods are scored in one space; lower is better), NMI/ARI/accuracy where a
truth exists (simulated data), the number of high/medium-quality clusters by spectral angle
mapper, and wall time. ``--ablations`` adds the Table 4 switches on the first dataset.

The real datasets come from the ``sc.datasets`` loaders: ``legacy_st`` (the sections) and
``mouse_bladder`` (bladder), downloaded into their cache when absent, or read from ``--data-path``;
one that cannot be downloaded is skipped with a note.

Example (the figures in docs/benchmarks.md)::

    python benchmarks/bench_darlc.py --datasets simulated hippo1 mob1 bladder --ablations \
        --json /tmp/bench_darlc.json --figures /tmp/bench_darlc_figs
    python benchmarks/bench_darlc.py --datasets hippo1_families mob1_families --methods --threads 1 \
        --seed 0 --ablations
    python benchmarks/bench_darlc.py --datasets hippo1 mob1 --n-genes 150 --threads 1 --dbi-ablation \
        --json /tmp/dbi_ablation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import spatialclust as sc
from spatialclust.datasets._public import STUTILITY_SECTIONS
from spatialclust.tl._darlc import DARLCEmbedder, scale_images, seeding_similarity
from _public_data import bladder_grid, load_public, subfolder

ABLATIONS = {
    "DARLC-full": {},
    "w/o CLR": {"contrastive": False},
    "GAT -> GKS": {"augmentation": "gaussian"},
    "w/o Module II": {"joint_clustering": False},
    "SMM -> GMM": {"mixture": "gaussian"},
    "w/o pre-training": {"pretrain_epochs": 0},
    "max scaling (paper)": {"input_scaling": "max"},
    "tissue patches as tokens": {"tissue_tokens": True},
}
SECTIONS = {section.lower(): section for section in STUTILITY_SECTIONS}
#: Gene sets with a known truth, ``{dataset: (families, clustered among the --n-genes highly variable
#: genes)}``: the co-expressed families alone (families None: ``GENE_FAMILIES``; not on the breast-cancer
#: sections, which have only the ribosomal family), and the olfactory bulb's layer markers among the
#: other genes of the section (alone, the three layers are too easy: k-means on the raw images is exact).
TRUTHS = {**{f"{name}_families": (None, False) for name in SECTIONS if not name.startswith("bc")},
          **{f"{name}_markers": (sc.metrics.MARKER_GENES["mouse_olfactory_bulb"], True)
             for name in SECTIONS if name.startswith("mob")}}


def load(name: str, n_genes: int, seed: int, data_path: Path | None):
    """Preprocessed AnnData of one benchmark dataset (None: a real dataset that is not available)."""
    if name == "simulated":
        adata = sc.datasets.simulate_st(shape=(32, 32), n_patterns=5, genes_per_pattern=30, seed=seed)
        sc.pp.preprocess_st(adata, min_spots=10)
        return adata
    section, _, truth = name.partition("_")
    if section in SECTIONS:
        adata = load_public("legacy_st", SECTIONS[section], path=subfolder(data_path, "legacy_st"))
        if adata is None:
            return None
        if not truth:
            sc.pp.preprocess_st(adata, n_top_genes=n_genes)
            return adata
        families, among_hvgs = TRUTHS[name]
        hvgs = set()
        if among_hvgs:  # the truth genes are clustered among the section's highly variable genes
            hvg = adata.copy()
            sc.pp.preprocess_st(hvg, n_top_genes=n_genes)
            hvgs = set(hvg.var_names)
        sc.pp.preprocess_st(adata, drop_mito=False)
        family = sc.metrics.gene_families(adata.var["gene_name"].astype(str).to_numpy(), families)
        keep = (family != "") | adata.var_names.isin(hvgs)
        adata = adata[:, keep].copy()
        adata.var[sc._keys.PATTERN] = family[keep]  # "" for the highly variable genes without a truth
        return adata
    if name == "bladder":
        adata = bladder_grid(subfolder(data_path, "mouse_bladder"))
        if adata is not None:
            sc.pp.preprocess_ion_images(adata, normalize="tic")
        return adata
    raise ValueError(f"unknown dataset {name!r}")


def image_matrix(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The images DBI and SAM are computed on: scaled to [0, 1] per image, on-tissue pixels."""
    return scale_images(images, mask)[:, mask].astype(np.float64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (squared Euclidean distance = 2 - 2 Pearson r)."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def score(flat: np.ndarray, labels: np.ndarray, truth: np.ndarray | None) -> dict[str, float]:
    n_clusters = int(len(np.unique(labels)))
    out = {  # DBI is undefined for a single cluster (a collapsed clustering): reported as NaN
        "DBI-E": sc.metrics.davies_bouldin(flat, labels, metric="euclidean") if n_clusters > 1 else float("nan"),
        "DBI-P": sc.metrics.davies_bouldin(flat, labels, metric="pearson") if n_clusters > 1 else float("nan"),
        "n_clusters": n_clusters,
    }
    groups = sc.metrics.cluster_quality_groups(sc.metrics.spectral_angle_mapper(flat, labels))
    out["high_quality_clusters"] = sum(v == "high" for v in groups.values())
    if truth is not None:  # on the images with a truth ("" = none: the other genes of a marker set)
        known = truth != ""
        truth, labels = truth[known], labels[known]
        out.update(NMI=sc.metrics.nmi(truth, labels), ARI=sc.metrics.ari(truth, labels),
                   ACC=sc.metrics.clustering_accuracy(truth, labels))
    return out


def darlc_params(args) -> dict:
    return dict(patch_size=args.patch_size, embed_dim=args.embed_dim, depth=4, num_heads=4, head_dim=32,
                pretrain_epochs=args.pretrain_epochs, cluster_epochs=args.cluster_epochs, gat_epochs=args.gat_epochs,
                tissue_tokens=args.tissue_tokens, batch_size=64, device="cpu", random_state=args.seed)


def member_figure(images: np.ndarray, labels: np.ndarray, flat: np.ndarray, path: Path, n_show: int = 5) -> None:
    """Example member images of the best and worst cluster by SAM (DARLC Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sam = sc.metrics.spectral_angle_mapper(flat, labels)
    order = sorted(sam, key=sam.get)
    picks = [("high", order[0]), ("medium", order[-1])]
    fig, axes = plt.subplots(2, n_show, figsize=(2 * n_show, 4.4), squeeze=False)
    rng = np.random.default_rng(0)
    for row, (quality, k) in enumerate(picks):
        members = np.flatnonzero(labels == k)
        chosen = rng.choice(members, size=min(n_show, len(members)), replace=False)
        for col in range(n_show):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap="viridis")
        axes[row, 0].set_title(f"{quality} quality cluster {k} (SAM {sam[k]:.2f})", loc="left", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def run_dataset(name: str, args) -> dict | None:
    import torch

    torch.set_num_threads(args.threads)
    adata = load(name, args.n_genes, args.seed, args.data_path)
    if adata is None:
        return None
    images = sc.pp.feature_images(adata)
    mask = sc.pp.tissue_mask_image(adata)
    truth = adata.var[sc._keys.PATTERN].to_numpy() if sc._keys.PATTERN in adata.var else None
    flat = image_matrix(images, mask)
    truth_k = len(np.unique(truth)) if name in TRUTHS and not TRUTHS[name][1] else None
    k = args.n_clusters or truth_k or max(2, round(len(images) / 30))
    results: dict[str, dict] = {}
    info = {"n_images": int(len(images)), "grid": list(images.shape[1:]), "n_clusters": k}
    print(f"== {name}: {len(images)} images of {images.shape[1:]}, {k} clusters", flush=True)

    t0 = time.perf_counter()
    raw = sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(flat).labels_
    results["kmeans_raw"] = {**score(flat, raw, truth), "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    pearson = sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(unit_rows(flat)).labels_
    results["kmeans_raw_pearson"] = {**score(flat, pearson, truth), "seconds": time.perf_counter() - t0}

    for method in args.methods:
        params = {"neural": dict(device="cpu", num_threads=args.threads),
                  "simclr": dict(device="cpu", epochs=args.simclr_epochs, seed=args.seed, pretrained=True)}[method]
        t0 = time.perf_counter()
        emb = sc.tl.create_embedder(method, **params).fit_transform(images, mask=mask, pixel_size=adata.uns["grid"].get("pixel_size"))
        labels = sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(emb).labels_
        results[f"{method}+kmeans"] = {**score(flat, labels, truth), "seconds": time.perf_counter() - t0}

    t0 = time.perf_counter()
    model = DARLCEmbedder(n_clusters=k, **darlc_params(args))
    emb = model.fit_transform(images, mask=mask)
    results["darlc"] = {**score(flat, model.labels_, truth), "seconds": time.perf_counter() - t0}
    info["darlc_stage_seconds"] = model.timings_
    leiden = sc.tl.create_clusterer("leiden", random_state=args.seed).fit(emb).labels_
    results["darlc+leiden"] = score(flat, leiden, truth)
    cosine = sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(unit_rows(emb)).labels_
    results["darlc+kmeans"] = score(flat, cosine, truth)
    similarity = seeding_similarity(model.smoothed_, mask)
    info["eigengap_n_clusters"] = sc.tl.estimate_n_clusters(similarity, affinity="precomputed", max_clusters=max(2 * k, 10))
    if args.figures:
        member_figure(images, model.labels_, flat, Path(args.figures) / f"{name}_darlc_members.png")

    ablation: dict[str, dict] = {}
    if args.ablations and name == args.datasets[0]:
        for case, switch in ABLATIONS.items():
            if case == "DARLC-full":
                ablation[case] = results["darlc"]
                continue
            t0 = time.perf_counter()
            m = DARLCEmbedder(n_clusters=k, **{**darlc_params(args), **switch})
            e = m.fit_transform(images, mask=mask)
            ablation[case] = {**score(flat, m.labels_, truth), "seconds": time.perf_counter() - t0}
            cosine = sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(unit_rows(e)).labels_
            ablation[case]["kmeans"] = score(flat, cosine, truth)
            print(f"   ablation {case}: {ablation[case]}", flush=True)
    for method, r in results.items():
        print(f"   {method:15s} " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                                         for key, value in r.items()), flush=True)
    return {"info": info, "results": results, "ablation": ablation}


DBI_TRAININGS = {  # input scaling x augmentation: the two switches that change the geometry of the embedding
    "zscore + GAT (default)": {},
    "max + GAT (paper)": {"input_scaling": "max"},
    "zscore + Gaussian": {"augmentation": "gaussian"},
    "max + Gaussian": {"input_scaling": "max", "augmentation": "gaussian"},
}
DBI_DOFS = (1.0, 3.0, 10.0, float("inf"))  # fixed Student's t degrees of freedom (inf: Gaussian mixture)


def dbi_ablation(name: str, args) -> list[dict] | None:
    """Why DARLC loses DBI-E to k-means on the raw images: every trained embedding clustered several ways.

    For each training in :data:`DBI_TRAININGS`, the encoder embedding is clustered by k-means
    (unit rows, and on its first 2 / 8 principal components) and the projection-head embedding by
    Student's t mixtures with fixed degrees of freedom :data:`DBI_DOFS`, at ``--dbi-clusters``
    clusters, next to k-means on the raw images (both geometries) at the same numbers of clusters.
    DBI-E / DBI-P are computed on the images, as in :func:`run_dataset`.
    """
    import torch
    from sklearn.decomposition import PCA

    from spatialclust.models import StudentMixture

    torch.set_num_threads(args.threads)
    adata = load(name, args.n_genes, args.seed, args.data_path)
    if adata is None:
        return None
    images, mask = sc.pp.feature_images(adata), sc.pp.tissue_mask_image(adata)
    truth = adata.var[sc._keys.PATTERN].to_numpy() if sc._keys.PATTERN in adata.var else None  # the gene families
    flat = image_matrix(images, mask)
    rows: list[dict] = []

    def add(training: str, clustering: str, k: int, labels: np.ndarray, seconds: float | None = None) -> None:
        rows.append({"training": training, "clustering": clustering, "k": k, **score(flat, labels, truth), "seconds": seconds})
        r = rows[-1]
        print(f"   {training:24s} {clustering:28s} k={k} DBI-E={r['DBI-E']:.2f} DBI-P={r['DBI-P']:.2f} "
              f"clusters={r['n_clusters']}" + (f" NMI={r['NMI']:.3f}" if truth is not None else ""), flush=True)

    def kmeans(x: np.ndarray, k: int) -> np.ndarray:
        return sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=args.seed).fit(x).labels_

    print(f"== DBI ablation on {name}: {len(images)} images of {images.shape[1:]}", flush=True)
    for k in args.dbi_clusters:
        add("raw images", "k-means", k, kmeans(flat, k))
        add("raw images", "k-means, Pearson geometry", k, kmeans(unit_rows(flat), k))
    for training in args.dbi_trainings:
        switch = DBI_TRAININGS[training]
        t0 = time.perf_counter()
        model = DARLCEmbedder(n_clusters=args.dbi_clusters[0], **{**darlc_params(args), **switch})
        emb = model.fit_transform(images, mask=mask)
        seconds = time.perf_counter() - t0
        model.output = "projection"
        projection = model.transform(images, mask=mask).astype(np.float64)
        add(training, "DARLC SMM (own)", args.dbi_clusters[0], model.labels_, seconds)
        for k in args.dbi_clusters:
            add(training, "k-means, unit rows", k, kmeans(unit_rows(emb), k))
            for d in (2, 8):
                add(training, f"k-means on PCA {d}", k, kmeans(PCA(d, random_state=args.seed).fit_transform(emb), k))
            for dof in DBI_DOFS:
                mixture = StudentMixture(k, distribution="gaussian" if np.isinf(dof) else "t", dof_init=10.0 if np.isinf(dof) else dof,
                                         fix_dof=True, random_state=args.seed).fit(projection)
                add(training, f"SMM on head, dof {dof:g}", k, mixture.labels_)
    return rows


def int_or_auto(value: str) -> int | str:
    return value if value == "auto" else int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["simulated", "hippo1", "mob1", "bladder"],
                        choices=["simulated", *SECTIONS, "bladder", *TRUTHS], metavar="DATASET",
                        help="simulated, bladder, a legacy ST section (hippo1-8, mob1-4, bc1-4), <section>_families "
                             "(not bc), mob<k>_markers")
    parser.add_argument("--methods", nargs="*", default=["neural", "simclr"], choices=["neural", "simclr"],
                        help="embedders compared besides k-means on raw images and DARLC")
    parser.add_argument("--n-genes", type=int, default=300, help="highly variable genes kept for the ST sections")
    parser.add_argument("--n-clusters", type=int, default=None, help="default: n_images / 30 (the paper's heuristic)")
    parser.add_argument("--patch-size", type=int_or_auto, default="auto", help="'auto' = the embedder's default (4)")
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int_or_auto, default="auto", help="paper: 50; 'auto' = the embedder's default (10)")
    parser.add_argument("--cluster-epochs", type=int_or_auto, default="auto", help="paper: 50; 'auto' = the embedder's default (10)")
    parser.add_argument("--gat-epochs", type=int, default=100, help="the embedder's default")
    parser.add_argument("--tissue-tokens", action="store_true",
                        help="only the patches on the tissue are ViT tokens (tissue_tokens=True; default: every patch)")
    parser.add_argument("--simclr-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablations", action="store_true", help="run the Table 4 switches on the first dataset")
    parser.add_argument("--dbi-ablation", action="store_true",
                        help="only the DBI ablation (dbi_ablation) on --datasets, written to --json")
    parser.add_argument("--dbi-trainings", nargs="+", default=list(DBI_TRAININGS), choices=list(DBI_TRAININGS),
                        help="trainings of the DBI ablation")
    parser.add_argument("--dbi-clusters", type=int, nargs="+", default=[5, 3, 8], help="numbers of clusters of the DBI ablation")
    parser.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                        help="folder with the converted public data in subfolders st_legacy_stutility/ (Hippo1.h5ad, "
                             "MOB1.h5ad, ...) and msi_mouse_bladder/ (bladder_cube.npz); default: the sc.datasets cache "
                             "($SPATIALCLUST_DATA), downloading what is missing")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--figures", type=Path, default=None, help="folder for example member images per cluster")
    args = parser.parse_args()
    sc._logging.settings["show_progress_bar"] = False
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    for name in args.datasets:
        out[name] = dbi_ablation(name, args) if args.dbi_ablation else run_dataset(name, args)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
