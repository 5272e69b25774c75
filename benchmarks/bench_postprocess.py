"""Benchmark: post-processing of ion-image vectors (``postprocess=`` of regular, neural, SimCLR).

What PCA after the representation buys, measured on vectors computed once per seed and dataset:

(a) realistic simulator (``spatialclust benchmark``'s ``simulated:SEED``, 390 ion images of
    96 px, 13 classes): ACC of Leiden, UMAP-DBSCAN and k-means (at 13 clusters) on the
    conditioned regular images (Gaussian 3 px, clip 99, min-max) and on the neural ion images
    (the embedder's defaults), each with ``postprocess`` None / ``l2`` / ``pca_l2`` /
    ``pca_whiten`` and a few numbers of components;
(b) the same on random subsets of ``--subsets`` images of each seed, because whitening as many
    components as the images allow makes them nearly equidistant (what ``"auto"`` guards against);
(c) ``--regimes``: other realistic simulator regimes (7, 13 and 21 classes, 286 to 1,066 images,
    3 seeds each), to choose the ``"auto"`` number of whitened components without tuning it to the 13-class
    benchmark: ``"auto"`` (1.2 sqrt(n_images), at most 50) against one component per 8 images (the
    rule before 2026-12-03) and per 16 images (at most 50) and a fixed 20, on the conditioned
    regular images;
(d) the real mouse urinary bladder (``sc.datasets.mouse_bladder``: its cache, downloaded when
    absent, or ``--data-path``; skipped with a note otherwise): thinned-partner recall@1/@10 with
    partners at 10-50 % and at 2-10 % of the counts (``sc.metrics.thinned_partner_check``);
    ``--simclr P ...`` adds SimCLR at its CPU defaults with each ``abundance_views`` ``P`` (at
    ``--abundance-counts LOW HIGH``);
    ``--skip-bladder`` leaves it out;
(e) ``--partner-recall``: thinned-partner recall@1/@10 of every variant on the simulator seeds
    (``--recall-seeds``; the check's own partners at 10-50 % of the counts, the PCA fitted on the
    originals).

Example (the figures of docs/benchmarks.md, "Post-processing"; ~20 min on 2 cores)::

    python benchmarks/bench_postprocess.py --seeds 0 1 2 3 4 --data-path /path/to/msi_mouse_bladder
    python benchmarks/bench_postprocess.py --seeds --regimes   # (c), and (d) when its data are there; ~15 min
    python benchmarks/bench_postprocess.py --seeds --partner-recall --skip-bladder   # (e) only; ~10 min
    python benchmarks/bench_postprocess.py --seeds --subsets --simclr 0 0.5 --data-path ...   # (d) with SimCLR; ~12 min
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from _public_data import load_public

CONDITIONING = dict(denoise="gaussian", denoise_size=3.0, clip_percentile=99.0, contrast="minmax")
#: (label, postprocess, n_components) of every variant.
VARIANTS = [("none", None, None), ("l2", "l2", None), ("pca_l2 50", "pca_l2", 50),
            ("pca_whiten 20", "pca_whiten", 20), ("pca_whiten 50", "pca_whiten", 50), ("pca_whiten auto", "pca_whiten", "auto")]


#: (n_patterns, n_ions) of the ``--regimes`` simulations (the benchmark's own: 12 patterns, 240 ions).
REGIMES = [(6, 200), (6, 600), (12, 800), (20, 600)]
#: name -> number of whitened components for ``n`` images, compared in ``--regimes``.
COMPONENT_RULES = {"n / 8": lambda n: max(1, min(50, n // 8)), "n / 16": lambda n: max(1, min(50, n // 16)),
                   "auto (1.2 sqrt(n))": lambda n: "auto", "20": lambda n: 20}


def simulated(seed: int, **simulate):
    """Dataset ``simulated:seed`` of ``spatialclust benchmark`` (with ``simulate`` overriding
    simulator parameters), preprocessed as it does."""
    from spatialclust.pipeline._benchmark import _truth_classes, benchmark_plan
    from spatialclust.pipeline._cluster import load_input, preprocess

    cfg = benchmark_plan([f"simulated:{seed}"], embedders=["regular"], clusterers=["kmeans"], simulate=simulate)
    adata, _ = load_input(cfg["datasets"][0], seed=seed)
    preprocess(adata, cfg["preprocess"])
    return adata, _truth_classes(adata)


def vectors(adata) -> dict[str, np.ndarray]:
    """Conditioned regular and neural vectors before any post-processing."""
    import spatialclust as sc

    sc.tl.embed(adata, "regular", key_added="X_conditioned", **CONDITIONING)
    sc.tl.embed(adata, "neural", key_added="X_neural", postprocess=None)
    return {"conditioned regular": adata.varm["X_conditioned"], "neural": adata.varm["X_neural"]}


def accuracies(x: np.ndarray, truth: np.ndarray, seed: int, variants=VARIANTS) -> dict[tuple[str, str], float]:
    import spatialclust as sc

    k = int(np.unique(truth).size)
    out = {}
    for label, method, n in variants:
        z = sc.tl.postprocess_vectors(x, method, sc.tl.fit_postprocessing(x, method, n))
        for clusterer in ("leiden", "umap_dbscan", "kmeans"):
            params = {"n_clusters": k} if clusterer == "kmeans" else {}
            labels = sc.tl.create_clusterer(clusterer, random_state=seed, **params).fit(z).labels_
            out[label, clusterer] = sc.metrics.clustering_accuracy(truth, labels)
    return out


def regimes(seeds) -> None:
    """(c): the number of whitened components in other simulator regimes."""
    import spatialclust as sc

    results = defaultdict(lambda: defaultdict(list))
    for n_patterns, n_ions in REGIMES:
        for seed in seeds:
            adata, truth = simulated(seed, n_patterns=n_patterns, n_ions=n_ions)
            sc.tl.embed(adata, "regular", key_added="X_conditioned", **CONDITIONING)
            x = adata.varm["X_conditioned"]
            variants = [("none", None, None)] + [(f"pca_whiten, {name}", "pca_whiten", rule(x.shape[0]))
                                                 for name, rule in COMPONENT_RULES.items()]
            rep = f"{np.unique(truth).size} classes, {x.shape[0]} images"
            for key, acc in accuracies(x, truth, seed, variants).items():
                results[rep, key[0]][key[1]].append(acc)
        print(f"(regime {n_patterns} patterns, {n_ions} ions done)", flush=True)
    table(results, f"Conditioned regular images in other simulator regimes, seeds {list(seeds)}: ACC, mean ± sd",
          labels=["none", *(f"pca_whiten, {name}" for name in COMPONENT_RULES)])


def partner_vectors(adata, embedder, seed: int, fraction=(0.1, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the images and of their thinned partners (those of ``sc.metrics.thinned_partner_check``),
    before any post-processing (``embedder`` with ``postprocess=None``): ``embedder`` is fitted on the
    images and transforms the partners."""
    import spatialclust as sc

    mask, pixel_size, out = sc.pp.tissue_mask_image(adata), adata.uns["grid"].get("pixel_size"), []

    def embed(images):
        method = embedder.transform if out else embedder.fit_transform
        out.append(method(images, mask=mask, pixel_size=pixel_size))
        return out[-1]

    sc.metrics.thinned_partner_check(adata, embedder=embed, clusterer=None, fraction=fraction, seed=seed)
    return out[0], out[1]


def variant_recalls(a: np.ndarray, b: np.ndarray) -> dict[str, tuple[float, float]]:
    """Partner recall@1/@10 of images ``a`` and partners ``b`` under every variant, its PCA fitted on ``a``
    (what the check gives an embedder with that ``postprocess``)."""
    import spatialclust as sc

    out = {}
    for label, method, n in VARIANTS:
        pca = sc.tl.fit_postprocessing(a, method, n)
        recall, _ = sc.metrics.partner_recall(sc.tl.postprocess_vectors(a, method, pca), sc.tl.postprocess_vectors(b, method, pca))
        out[label] = recall[1], recall[10]
    return out


def unprocessed_embedders(simclr=(), counts=None) -> dict[str, object]:
    """The representations of the recall checks, without post-processing (embedded once per check),
    with SimCLR at its CPU defaults for every ``abundance_views`` in ``simclr`` (at ``counts``; None:
    SimCLR's default ``abundance_counts``)."""
    import spatialclust as sc

    counts = tuple(counts) if counts is not None else sc.tl.SimCLREmbedder().abundance_counts

    out = {"raw regular": sc.tl.create_embedder("regular"), "conditioned regular": sc.tl.create_embedder("regular", **CONDITIONING),
           "neural": sc.tl.NeuralEmbedder(postprocess=None)}
    out.update({f"SimCLR, abundance views {p:g}" + (f", counts {counts[0]:g}-{counts[1]:g}" if p else ""):
                sc.tl.SimCLREmbedder(postprocess=None, abundance_views=p, abundance_counts=counts) for p in simclr})
    return out


def partner_recalls(seeds) -> None:
    """(e): partner recall of every variant on the simulator."""
    results = defaultdict(list)
    for seed in seeds:
        adata, _ = simulated(seed)
        for rep, embedder in unprocessed_embedders().items():
            for label, recall in variant_recalls(*partner_vectors(adata, embedder, seed)).items():
                results[rep, label].append(recall)
        print(f"(partner recall, seed {seed} done)", flush=True)
    print(f"\nThinned-partner recall on the simulator, seeds {list(seeds)} (partners at 10-50 %)\n"
          "| representation | post-processing | recall@1 | recall@10 |\n|---|---|---|---|")
    for (rep, label), values in results.items():
        values = np.asarray(values)
        print(f"| {rep} | {label} | {values[:, 0].mean():.3f} | {values[:, 1].mean():.3f} |")


def table(results: dict, title: str, labels=None) -> None:
    print(f"\n{title}\n| representation | post-processing | Leiden | UMAP-DBSCAN | k-means |\n|---|---|---|---|---|")
    for rep in sorted({r for r, _ in results}):
        for label in labels or [v[0] for v in VARIANTS]:
            cells = []
            for clusterer in ("leiden", "umap_dbscan", "kmeans"):
                values = np.asarray(results[rep, label][clusterer])
                cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if values.size > 1 else 0:.3f}")
            print(f"| {rep} | {label} | " + " | ".join(cells) + " |")


def bladder(path, simclr=(), counts=None) -> None:
    """(d): partner recall of every variant on the real bladder, partners at 10-50 % and 2-10 %
    (SimCLR trained once per partner fraction for every ``abundance_views`` in ``simclr``)."""
    import spatialclust as sc

    adata = load_public("mouse_bladder", path=path)
    if adata is None:
        return
    sc.pp.preprocess_ion_images(adata)
    print("\n| bladder representation | post-processing | R@1 / R@10 (10-50 %) | R@1 / R@10 (2-10 %) |\n|---|---|---|---|")
    for rep, embedder in unprocessed_embedders(simclr, counts).items():
        recalls = [variant_recalls(*partner_vectors(adata, embedder, 0, fraction)) for fraction in ((0.1, 0.5), (0.02, 0.1))]
        for label, _, _ in VARIANTS:
            print(f"| {rep} | {label} | " + " | ".join(f"{r[label][0]:.3f} / {r[label][1]:.3f}" for r in recalls) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="none: skip (a) and (b)")
    parser.add_argument("--subsets", type=int, nargs="*", default=[80, 160], help="sizes of the random image subsets")
    parser.add_argument("--regimes", action="store_true", help="(c): component rules in other simulator regimes")
    parser.add_argument("--regime-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--partner-recall", action="store_true", help="(e): partner recall of every variant, --recall-seeds")
    parser.add_argument("--recall-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-path", default=None, help="folder of the converted mouse bladder files")
    parser.add_argument("--skip-bladder", action="store_true", help="leave out (d)")
    parser.add_argument("--simclr", type=float, nargs="*", default=[], metavar="P",
                        help="(d): also SimCLR (CPU defaults) with each of these `abundance_views`; ~2.5 min per value and fraction")
    parser.add_argument("--abundance-counts", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="(d): `abundance_counts` of the --simclr runs (default: the SimCLR default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    full, subsets = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    for seed in args.seeds:
        adata, truth = simulated(seed)
        for rep, x in vectors(adata).items():
            for key, acc in accuracies(x, truth, seed).items():
                full[rep, key[0]][key[1]].append(acc)
            if rep != "conditioned regular":
                continue
            for size in args.subsets:
                idx = np.random.default_rng(seed).choice(x.shape[0], size, replace=False)
                for key, acc in accuracies(x[idx], truth[idx], seed).items():
                    subsets[f"{size} images", key[0]][key[1]].append(acc)
        print(f"(seed {seed} done)", flush=True)
    if args.seeds:
        table(full, f"Realistic simulator, 390 images, seeds {args.seeds}: ACC, mean ± sd")
    if args.seeds and args.subsets:
        table(subsets, "Conditioned regular images on random subsets of each seed: ACC, mean ± sd")
    if args.regimes:
        regimes(args.regime_seeds)
    if args.partner_recall:
        partner_recalls(args.recall_seeds)
    if not args.skip_bladder:
        bladder(args.data_path, args.simclr, args.abundance_counts)


if __name__ == "__main__":
    main()
