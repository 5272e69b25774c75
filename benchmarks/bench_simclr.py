"""Benchmark of the self-supervised clustering of seed 001 (Hu et al. 2022, Chem. Sci. 13, 90).

Four sub-benchmarks (run one, or ``all``):

``ablation``
    What each difference to the authors' implementation (LabLaskin/MSI-self-supervised-clustering)
    buys, on the realistic simulator (``simulate_msi(realism="real")``, 13 classes): the defaults
    (matched to the authors' code) against one setting at a time put back to the earlier value
    (augmentation probability and blur range, learning rate, batch size, projection width,
    self-labeling threshold and initialisation, class balancing), the input conditionings of the
    raw and neural ion images (also measured on the raw images), and on every trained model the
    clustered features (backbone vs projection, L2-normalised) and spectral label assignment
    (k-means vs discretize); ACC and NMI of SimCLR + SC and of + self-labeling next to the raw
    images and the pretrained encoder, with the wall time of every stage.

``simulated``
    Table 1 protocol on simulated MSI data with known patterns (``sc.datasets.simulate_msi``):
    accuracy of pretrained encoder + spectral clustering (the baseline), SimCLR + spectral, and
    SimCLR + spectral + self-labeling, at the true number of patterns and at 20 clusters, mean ± sd
    over seeds; isotopic recall of every stage; k-NN purity (k = 1, 10, 30) and linear evaluation of
    the pretrained and the SimCLR representations.
``bladder``
    The same three stages on the real mouse urinary bladder data (``sc.datasets.mouse_bladder``: its
    cache, downloaded when absent, or ``--data-path``; skipped with a note when it cannot be
    downloaded): isotopic recall and Relative Isotope Ratio (RIR) with the detected 13C pairs.
``ceiling``
    How far is 0.90 ACC attainable on the realistic simulator's 13-class case? Supervised ceilings of
    every representation (raw, conditioned, pretrained encoder, and with ``--simclr`` the SimCLR
    features): 5-fold cross-validated logistic regression and k-NN accuracy, k-means initialised at
    the true class means, the nearest true class mean; an oracle that matches every image to the
    simulator's noise-free pattern images; accuracy by the image's counts; the classes that merge
    (confusion matrix) and, with ``--figure``, the pattern images, the class mean images and the
    confusion matrix as one figure.
``timing``
    Wall time (and process CPU time) of the whole three-stage pipeline (SimCLR training,
    spectral clustering, self-labeling) on the ~390 ion images of 96 x 96 pixels of the realistic
    simulator, against the
    baseline of embedding the same images once with the pretrained encoder, measured in the same run.
    With the default ``--epochs auto --sl-epochs auto`` the CPU defaults are run; with fewer epochs
    the per-epoch cost is also scaled to the CPU defaults (``pipeline_total_at_cpu_defaults``).

Examples
--------
    python benchmarks/bench_simclr.py ablation --seeds 0 1 2 --size 64 --n-ions 100 --epochs 15 --json ablation.json
    python benchmarks/bench_simclr.py simulated --seeds 0 1 2 3 4 --json sim.json
    python benchmarks/bench_simclr.py bladder --json bladder.json
    python benchmarks/bench_simclr.py timing --threads 2 --json timing.json
    python benchmarks/bench_simclr.py ceiling --seeds 0 1 2 --size 96 --n-ions 0 --figure docs/images/ion_ceiling.png
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timer() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict[str, float]:
    return {"wall_s": round(time.perf_counter() - start[0], 2), "cpu_s": round(time.process_time() - start[1], 2)}


def _prepare(adata):
    import spatialclust as sc

    sc.pp.preprocess_ion_images(adata)
    images = sc.pp.feature_images(adata)
    mask = sc.pp.tissue_mask_image(adata)
    return images, mask


def three_stages(images, mask, n_clusters_list, *, args, workdir, truth=None, pairs=None, analysis=False, keep=None):
    """Pretrained + SC, SimCLR + SC, SimCLR + SC + self-labeling for every number of clusters."""
    import spatialclust as sc
    from spatialclust.models import create_backbone
    from spatialclust.models import encode
    from spatialclust.tl._simclr import SimCLREmbedder, resolve_image_size

    out: dict = {"n_images": int(images.shape[0]), "image_shape": list(images.shape[1:])}
    encoder = create_backbone(args.backbone)
    side = resolve_image_size(args.image_size, images.shape[1:], "cpu", min_size=encoder.config.min_size)
    start = _timer()
    pretrained = encode(encoder, images, image_size=side, device="cpu", mask=mask)
    out["pretrained_embed"] = _since(start)
    start = _timer()
    simclr = SimCLREmbedder(
        args.backbone, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        checkpoint=Path(workdir) / "simclr", seed=args.seed, resume=False,
    ).fit(images, mask=mask)
    learned = simclr.transform(images, mask=mask)
    out["simclr_train"] = _since(start)
    out["simclr_loss"] = [round(h["loss"], 4) for h in simclr.history_]

    def scores(labels):
        row = {"n_clusters": int(np.unique(labels).size)}
        if truth is not None:
            row["accuracy"] = sc.metrics.clustering_accuracy(truth, labels)
            row["purity"] = sc.metrics.purity(truth, labels)
        pair_sets = pairs if isinstance(pairs, dict) else {"": pairs}
        for name, found in pair_sets.items():
            if found is not None and len(found):
                suffix = f" ({name})" if name else ""
                row[f"isotopic_recall{suffix}"] = sc.metrics.isotopic_recall(labels, found)
                rir = sc.metrics.relative_isotope_ratio(labels, found, n_boot=200, random_state=args.seed)
                row[f"rir{suffix}"] = rir.value
        row["labels"] = [int(v) for v in labels]
        return row

    for k in n_clusters_list:
        res = {}
        spectral = sc.tl.create_clusterer("spectral", n_clusters=k, random_state=args.seed)
        res["pretrained+SC"] = scores(spectral.fit(pretrained).labels_)
        start = _timer()
        init = sc.tl.create_clusterer("spectral", n_clusters=k, random_state=args.seed).fit(learned).labels_
        res["SimCLR+SC"] = {**scores(init), **_since(start)}
        start = _timer()
        model = sc.tl.SelfLabelingClassifier(
            simclr, epochs=args.sl_epochs, batch_size=args.batch_size, seed=args.seed
        ).fit(images, init, mask=mask, true_labels=truth)
        res["SimCLR+SC+self-labeling"] = {
            **scores(model.labels_), **_since(start),
            "n_confident": [h["n_confident"] for h in model.history_],
            "stopped_early": bool(model.stopped_early_),
        }
        out[f"k={k}"] = res
        if keep is not None and k == n_clusters_list[0]:
            keep.update(pretrained=pretrained, simclr=learned, self_label=model.transform(images, mask=mask), model=model)
    if analysis and truth is not None:
        out["knn_purity"] = {
            name: {k: round(v, 4) for k, v in sc.metrics.knn_purity(X, truth, ks=[1, 5, 10, 20, 30]).items()}
            for name, X in (("pretrained", pretrained), ("SimCLR", learned))
        }
        out["linear_evaluation"] = {
            name: round(sc.metrics.linear_evaluation(X, truth, random_state=args.seed), 4)
            for name, X in (("pretrained", pretrained), ("SimCLR", learned))
        }
    return out


#: Input conditionings (``sc.pp.condition_images``) that helped raw and neural ion images
#: (docs/benchmarks.md, "Neural ion images on realistic data"); each is measured on the raw images
#: and as a SimCLR variant.
CONDITIONINGS: dict[str, dict] = {
    "Gaussian 3 px, clip 99, min-max": {"denoise": "gaussian", "denoise_size": 3.0, "clip_percentile": 99.0, "contrast": "minmax"},
    "median 3 px, clip 99, min-max": {"denoise": "median", "denoise_size": 3.0, "clip_percentile": 99.0, "contrast": "minmax"},
    "Gaussian 3 px, clip 99, rank": {"denoise": "gaussian", "denoise_size": 3.0, "clip_percentile": 99.0, "contrast": "rank"},
    "clip 99, min-max (no denoising)": {"clip_percentile": 99.0, "contrast": "minmax"},
}

#: Ablation variants: (SimCLR parameters, self-labeling parameters) changed from the defaults.
#: Variants that change only self-labeling reuse the SimCLR model of the defaults.
ABLATIONS: dict[str, tuple[dict, dict]] = {
    "defaults (authors' code + Gaussian conditioning)": ({}, {}),
    "no conditioning (the paper's input, before)": ({"denoise": None, "clip_percentile": None, "contrast": None}, {}),
    "augmentation p=0.8, blur sigma 0.1-2 (before)": ({"augmentation": {"p": 0.8, "blur_sigma": (0.1, 2.0)}}, {}),
    "lr 3e-4 (before)": ({"lr": 3e-4}, {}),
    "batch 64 (before)": ({"batch_size": 64}, {}),
    "projection 128 (before)": ({"projection_dim": 128}, {}),
    "threshold 0.9 + 200 init steps (before)": ({}, {"threshold": 0.9, "init_epochs": 200}),
    "no class balancing": ({}, {"class_balancing": False}),
    "+ count thinning 3-100 + gamma 0.5-2 (SimCLR view)": ({"augmentation": {"counts": (3.0, 100.0), "gamma": (0.5, 2.0)}}, {}),
    "+ count thinning + gamma (SimCLR and self-labeling views)": (
        {"augmentation": {"counts": (3.0, 100.0), "gamma": (0.5, 2.0)}},
        {"weak": {"intensity": 0.25, "counts": (10.0, 100.0), "gamma": (0.7, 1.4)},
         "strong": {"blur_sigma": (0.1, 2.0), "noise_sigma": (0.001, 0.4), "counts": (3.0, 100.0), "gamma": (0.5, 2.0)}},
    ),
}
ABLATIONS.update({f"conditioning: {name}": (params, {}) for name, params in CONDITIONINGS.items()})


def _scores(truth, labels) -> dict:
    import spatialclust as sc

    return {"acc": round(sc.metrics.clustering_accuracy(truth, labels), 4), "nmi": round(sc.metrics.nmi(truth, labels), 4)}


def _feature_variants(embedder, features, truth, k, seed) -> dict:
    """SC of the backbone features (k-means / discretize assignment), of the projection and of the
    L2-normalised features, and k-means of the features: no retraining needed."""
    import torch

    import spatialclust as sc

    with torch.no_grad():
        projection = embedder.model_.head(torch.from_numpy(features).to(embedder.device_)).float().cpu().numpy()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    spectral = lambda X, **kw: sc.tl.create_clusterer("spectral", n_clusters=k, random_state=seed, **kw).fit(X).labels_  # noqa: E731
    return {
        "SC features (k-means assign)": _scores(truth, spectral(features)),
        "SC features (discretize)": _scores(truth, spectral(features, assign_labels="discretize")),
        "SC projection (discretize)": _scores(truth, spectral(projection, assign_labels="discretize")),
        "SC L2 features (discretize)": _scores(truth, spectral(unit, assign_labels="discretize")),
        "k-means features": _scores(truth, sc.tl.create_clusterer("kmeans", n_clusters=k, random_state=seed).fit(features).labels_),
    }


def ablation(args) -> dict:
    import spatialclust as sc
    from spatialclust.models import create_backbone
    from spatialclust.models import encode
    from spatialclust.tl._simclr import SimCLREmbedder, resolve_image_size

    runs = []
    for seed in args.seeds:
        adata = sc.datasets.simulate_msi(realism="real", seed=seed, shape=(args.size, args.size), n_ions=args.n_ions)
        images, mask = _prepare(adata)
        truth = np.unique(adata.var["pattern"].to_numpy(), return_inverse=True)[1]
        k = int(np.unique(truth).size)
        run: dict = {"seed": seed, "n_images": int(images.shape[0]), "n_classes": k, "variants": {}}
        for conditioning, params in {"": None, **CONDITIONINGS}.items():
            conditioned = images if params is None else sc.pp.condition_images(images, mask=mask, **params)
            flat = conditioned.reshape(images.shape[0], -1)
            for name in ("kmeans", "spectral"):
                key = f"regular{f' ({conditioning})' if conditioning else ''} + {name}"
                run[key] = _scores(truth, sc.tl.create_clusterer(name, n_clusters=k, random_state=seed).fit(flat).labels_)
        encoder = create_backbone(args.backbone)
        side = resolve_image_size(args.image_size, images.shape[1:], "cpu", min_size=encoder.config.min_size)
        pretrained = encode(encoder, images, image_size=side, device="cpu", mask=mask)
        spectral = sc.tl.create_clusterer("spectral", n_clusters=k, random_state=seed, assign_labels="discretize")
        run["pretrained + SC"] = _scores(truth, spectral.fit(pretrained).labels_)
        print(json.dumps({k: v for k, v in run.items() if k != "variants"}), flush=True)
        trained: dict = {}
        for variant in args.variants:
            simclr_params, sl_params = ABLATIONS[variant]
            embedder = SimCLREmbedder(args.backbone, epochs=args.epochs, image_size=args.image_size, seed=seed, **simclr_params)
            cache = json.dumps(embedder.get_params(), sort_keys=True, default=str)  # a variant equal to the defaults is trained once
            row: dict = {}
            if cache not in trained:
                start = _timer()
                embedder.fit(images, mask=mask)
                features = embedder.transform(images, mask=mask)
                trained[cache] = (embedder, features, _since(start))
                row.update(_feature_variants(embedder, features, truth, k, seed))
            embedder, features, row["simclr_time"] = trained[cache]
            start = _timer()
            init = sc.tl.create_clusterer("spectral", n_clusters=k, random_state=seed, assign_labels="discretize").fit(features).labels_
            row["SimCLR + SC"] = _scores(truth, init)
            row["sc_time"] = _since(start)
            start = _timer()
            model = sc.tl.SelfLabelingClassifier(embedder, epochs=args.sl_epochs, seed=seed, **sl_params).fit(
                images, init, mask=mask, true_labels=truth)
            row["SimCLR + SC + self-labeling"] = _scores(truth, model.labels_)
            row["self_label_time"] = _since(start)
            row["threshold"] = round(model.threshold_, 4)
            row["n_confident"] = [h["n_confident"] for h in model.history_]
            run["variants"][variant] = row
            print(json.dumps({"seed": seed, "variant": variant, **row}), flush=True)
        runs.append(run)
    return {"runs": runs, "settings": {"size": args.size, "n_ions": args.n_ions, "epochs": args.epochs, "sl_epochs": args.sl_epochs}}


def _supervised(features, truth, seed) -> dict:
    """Cross-validated supervised accuracies and k-means from the true class means (a ceiling for
    clustering the same features), with the cross-validated predictions of the logistic regression."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import spatialclust as sc

    X = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    predicted = cross_val_predict(logistic, X, truth, cv=folds)
    knn = cross_val_predict(KNeighborsClassifier(5, metric="cosine"), X, truth, cv=folds)
    classes = np.unique(truth)
    means = np.stack([X[truth == c].mean(axis=0) for c in classes])
    nearest = np.argmax(X @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T, axis=1)
    from_means = KMeans(len(classes), init=means, n_init=1, random_state=seed).fit_predict(X)
    free = KMeans(len(classes), n_init=10, random_state=seed).fit_predict(X)
    return {
        "logistic (5-fold CV)": round(float(np.mean(predicted == truth)), 4),
        "5-NN cosine (5-fold CV)": round(float(np.mean(knn == truth)), 4),
        "nearest true class mean (cosine)": round(float(np.mean(classes[nearest] == truth)), 4),
        "k-means from the true class means": round(sc.metrics.clustering_accuracy(truth, from_means), 4),
        "k-means (n_init 10)": round(sc.metrics.clustering_accuracy(truth, free), 4),
    }, {"logistic": predicted, "k-means": _matched(truth, free)}


def _matched(truth, labels):
    """Clusters renamed to the classes of the Hungarian matching (unmatched clusters: -1)."""
    from scipy.optimize import linear_sum_assignment

    clusters = np.unique(labels)
    table = np.array([[np.sum((labels == c) & (truth == t)) for t in range(truth.max() + 1)] for c in clusters])
    rows, cols = linear_sum_assignment(-table)
    mapping = dict(zip(clusters[rows], cols))
    return np.array([mapping.get(c, -1) for c in labels])


def _oracle(images, mask, patterns, tissue, truth) -> float:
    """Accuracy of matching every image to the simulator's noise-free pattern images (matrix class:
    the off-tissue indicator) by correlation: what one image tells with the answer key in hand."""
    templates = np.concatenate([patterns, (~tissue)[None].astype(np.float32)]).reshape(len(patterns) + 1, -1)
    flat = images.reshape(images.shape[0], -1)
    z = lambda a: (a - a.mean(axis=1, keepdims=True)) / a.std(axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    return round(float(np.mean(np.argmax(z(flat) @ z(templates).T, axis=1) == truth)), 4)


def ceiling(args) -> dict:
    import spatialclust as sc
    from spatialclust.models import create_backbone, encode
    from spatialclust.tl._simclr import SimCLREmbedder, resolve_image_size

    condition = CONDITIONINGS["Gaussian 3 px, clip 99, min-max"]
    runs = []
    for seed in args.seeds:
        sim = {"shape": (args.size, args.size), **({"n_ions": args.n_ions} if args.n_ions else {})}
        adata = sc.datasets.simulate_msi(realism="real", seed=seed, **sim)
        names = adata.uns["simulation"]["pattern_names"]
        patterns = adata.uns["simulation"]["pattern_images"]
        tissue = sc.pp.tissue_mask_image(adata)
        images, mask = _prepare(adata)
        order = [*names, "matrix"]  # class index = pattern index; matrix last, as the oracle's templates
        truth = np.array([order.index(p) for p in adata.var["pattern"]])
        counts = np.asarray(sc.pp.feature_images(adata, layer="raw").reshape(adata.n_vars, -1).sum(axis=1))
        conditioned = sc.pp.condition_images(images, mask=mask, **condition)
        regular = sc.tl.create_embedder("regular")
        reps = {"raw images": regular.fit_transform(images, mask=mask),
                "conditioned images": regular.fit_transform(conditioned, mask=mask)}
        encoder = create_backbone(args.backbone)
        side = resolve_image_size(args.image_size, images.shape[1:], "cpu", min_size=encoder.config.min_size)
        reps["pretrained EfficientNet-Lite0"] = encode(encoder, conditioned, image_size=side, device="cpu", mask=mask)
        if args.simclr:
            start = _timer()
            embedder = SimCLREmbedder(args.backbone, epochs=args.epochs, image_size=args.image_size, seed=seed)
            reps["SimCLR (defaults)"] = embedder.fit(images, mask=mask).transform(images, mask=mask)
            print(json.dumps({"seed": seed, "simclr_time": _since(start)}), flush=True)
        run: dict = {"seed": seed, "n_images": int(images.shape[0]), "n_classes": len(order),
                     "class_sizes": {c: int((truth == i).sum()) for i, c in enumerate(order)},
                     "oracle: correlation with the noise-free patterns (raw / conditioned)":
                         [_oracle(images, mask, patterns, tissue, truth), _oracle(conditioned, mask, patterns, tissue, truth)]}
        predicted = {}
        for name, features in reps.items():
            run[name], predicted[name] = _supervised(np.asarray(features, dtype=np.float64), truth, seed)
        best = predicted["conditioned images"]["logistic"]
        confusions = {}
        for method, labels in predicted["conditioned images"].items():
            confusion = np.zeros((len(order), len(order) + 1), dtype=int)  # last column: unmatched clusters
            np.add.at(confusion, (truth, labels), 1)
            confusions[method] = confusion
            pairs = [(int(confusion[a, b] + confusion[b, a]), order[a], order[b])
                     for a in range(len(order)) for b in range(a + 1, len(order))]
            run[f"most confused class pairs ({method}, conditioned)"] = [f"{x} / {y}: {n}" for n, x, y in sorted(pairs)[::-1][:6]]
        quartiles = np.quantile(counts, [0.25, 0.5, 0.75])
        bins = np.digitize(counts, quartiles)
        run["logistic accuracy by count quartile (conditioned)"] = [
            {"counts": f"{counts[bins == q].min():.0f}-{counts[bins == q].max():.0f}",
             "accuracy": round(float(np.mean(best[bins == q] == truth[bins == q])), 3)} for q in range(4)]
        run["pattern correlations > 0.5"] = [
            f"{order[a]} / {order[b]}: {np.corrcoef(patterns[a].ravel(), patterns[b].ravel())[0, 1]:.2f}"
            for a in range(len(names)) for b in range(a + 1, len(names))
            if np.corrcoef(patterns[a].ravel(), patterns[b].ravel())[0, 1] > 0.5]
        print(json.dumps(run), flush=True)
        if args.figure and not runs:
            _ceiling_figure(args.figure, patterns, conditioned, truth, order, confusions, tissue)
        runs.append(run)
    return {"runs": runs, "settings": {"size": args.size, "n_ions": args.n_ions, "simclr": args.simclr}}


def _ceiling_figure(path, patterns, conditioned, truth, order, confusions, tissue) -> None:
    import matplotlib.pyplot as plt

    n = len(order)
    fig = plt.figure(figsize=(n * 1.1, 2.6 + 0.45 * n))
    grid = fig.add_gridspec(3, 2 * n, height_ratios=[1, 1, 0.42 * n])
    templates = [*patterns, (~tissue).astype(np.float32)]
    for i, name in enumerate(order):
        for row, image, label in ((0, templates[i], "pattern"), (1, conditioned[truth == i].mean(axis=0), "class mean")):
            ax = fig.add_subplot(grid[row, 2 * i : 2 * i + 2])
            ax.imshow(image, cmap="viridis")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{name}\n(n={int((truth == i).sum())})", fontsize=7)
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    titles = {"logistic": "logistic regression, 5-fold CV", "k-means": "k-means (13), clusters matched to classes"}
    for panel, (method, confusion) in enumerate(confusions.items()):
        ax = fig.add_subplot(grid[2, panel * n + 1 : panel * n + n - 1])
        shown = confusion / confusion.sum(axis=1, keepdims=True).clip(1)
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        for a in range(n):
            for b in range(n + 1):
                if confusion[a, b]:
                    ax.text(b, a, str(confusion[a, b]), ha="center", va="center", fontsize=6,
                            color="white" if shown[a, b] > 0.5 else "black")
        ax.set_xticks(range(n + 1), [*order, "unmatched"], rotation=90, fontsize=7)
        ax.set_yticks(range(n), order, fontsize=7)
        ax.set_xlabel(f"predicted: {titles[method]} (conditioned images)", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def simulated(args) -> dict:
    import spatialclust as sc

    runs = []
    for seed in args.seeds:
        adata = sc.datasets.simulate_msi(seed=seed, shape=(args.size, args.size), ions_per_pattern=args.ions_per_pattern)
        images, mask = _prepare(adata)
        truth = np.unique(adata.var["pattern"].to_numpy(), return_inverse=True)[1]
        names = list(adata.var_names)
        iso = adata.var["isotope_of"].to_numpy()
        pairs = np.array([[names.index(m), i] for i, m in enumerate(iso) if m], dtype=np.int64)
        n_true = int(np.unique(truth).size)
        args.seed = seed
        keep: dict | None = {} if (args.report and seed == args.seeds[0]) else None
        with tempfile.TemporaryDirectory() as tmp:
            start = _timer()
            result = three_stages(images, mask, [n_true, 20], args=args, workdir=tmp, truth=truth, pairs=pairs,
                                  analysis=True, keep=keep)
            result["total"] = _since(start)
        if keep is not None:
            analysis_report(adata, keep, result, args.report, seed=seed)
        result["seed"] = seed
        result["n_true"] = n_true
        runs.append(result)
        print(json.dumps(result), flush=True)
    return {"runs": runs, "summary": summarise(runs)}


def analysis_report(adata, keep: dict, result: dict, path: Path, *, seed: int) -> None:
    """HTML report of the seed 001 analysis figures for one simulated dataset (Figs. 2c-e, 2g, 4b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import spatialclust as sc
    from spatialclust.report import Report

    adata.varm["X_regular"] = adata.X.T.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X).T
    adata.varm["X_pretrained"] = keep["pretrained"]
    adata.varm["X_simclr"] = keep["simclr"]
    adata.varm["X_self_label"] = keep["self_label"]
    history = keep["model"].history_
    adata.uns["self_label"] = {"history": {k: np.asarray([h[k] for h in history]) for k in ("epoch", "n_confident", "loss", "accuracy")}}
    reps = ["X_regular", "X_pretrained", "X_simclr", "X_self_label"]
    report = Report("Self-supervised clustering (seed 001) on simulated MSI data", subtitle=f"seed {seed}, {adata.n_vars} ion images")
    report.add_figure("k-NN purity (Fig. 2e)", sc.pl.knn_purity_curve(adata, reps))
    report.add_figure("Representations before and after training, t-SNE (Fig. 2c-d)", sc.pl.representations(adata, reps[1:]))
    # a monoisotopic ion, its 13C isotope (same pattern) and an ion of another pattern (Fig. 4b)
    names = list(adata.var_names)
    iso = adata.var["isotope_of"].to_numpy()
    j = next(i for i, m in enumerate(iso) if m)
    ref = names.index(iso[j])
    pattern = adata.var["pattern"].to_numpy()
    other = next(i for i in range(adata.n_vars) if pattern[i] != pattern[ref])
    fig = sc.pl.ion_pair_similarity(adata, [(ref, j), (ref, other)], ["X_regular", "X_pretrained", "X_simclr"])
    report.add_figure("Cosine similarity of ion pairs (Fig. 4b): isotope pair vs. different patterns", fig)
    report.add_table("Cosine similarity", fig.similarity.reset_index(names="pair"))
    report.add_figure("Self-labeling (Fig. 2g)", sc.pl.self_labeling_history(adata))
    report.add_table("Linear evaluation (5-fold logistic regression accuracy)", result["linear_evaluation"])
    report.write(path)
    plt.close("all")
    print(f"analysis report: {path}", flush=True)


def summarise(runs: list[dict]) -> dict:
    """Mean ± sd over seeds of every metric of every stage."""
    summary: dict = {}
    for key in [k for k in runs[0] if k.startswith("k=")]:
        label = "k=true" if key == f"k={runs[0]['n_true']}" else key
        for stage in runs[0][key]:
            for metric in ("accuracy", "purity", "isotopic_recall", "rir"):
                values = [r[key][stage].get(metric) for r in runs if r[key][stage].get(metric) is not None]
                if values:
                    summary[f"{label} | {stage} | {metric}"] = f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"
    for name in ("pretrained", "SimCLR"):
        for k in ("1", "10", "30"):
            vals = [r["knn_purity"][name][int(k)] for r in runs]
            summary[f"knn_purity@{k} | {name}"] = f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}"
        vals = [r["linear_evaluation"][name] for r in runs]
        summary[f"linear_evaluation | {name}"] = f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}"
    return summary


def bladder(args) -> dict | None:
    import spatialclust as sc
    from _public_data import load_public

    adata = load_public("mouse_bladder", path=args.data_path)
    if adata is None:
        return None
    images, mask = _prepare(adata)
    mz = adata.var["mz"].to_numpy()
    # 13C pairs by m/z shift and image correlation >= 0.85 (seed 000), and by m/z shift alone
    pairs = {
        "m/z + r>=0.85": sc.metrics.isotope_pairs(mz, images, mask=mask),
        "m/z only": sc.metrics.isotope_pairs(mz, images, mask=mask, min_corr=-1.0),
    }
    print(f"bladder: {images.shape[0]} images {images.shape[1:]}, isotope pairs: { {k: len(v) for k, v in pairs.items()} }", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = _timer()
        result = three_stages(images, mask, args.n_clusters, args=args, workdir=tmp, pairs=pairs)
        result["total"] = _since(start)
    result["n_pairs"] = {k: int(len(v)) for k, v in pairs.items()}
    print(json.dumps(result), flush=True)
    return result


def timing(args) -> dict:
    import spatialclust as sc
    from spatialclust.models import create_backbone
    from spatialclust.models import encode
    from spatialclust.tl._simclr import SimCLREmbedder, resolve_image_size

    adata = sc.datasets.simulate_msi(realism="real", seed=args.seed)  # ~390 ion images of 96 x 96 px
    images, mask = _prepare(adata)
    images = images[: args.n_images]
    print(f"timing: {images.shape[0]} images of {images.shape[1:]} on {args.threads} thread(s)", flush=True)
    result: dict = {"n_images": int(images.shape[0]), "threads": args.threads, "load_before": os.getloadavg()}
    start = _timer()
    encoder = create_backbone(args.backbone)
    side = resolve_image_size("auto", images.shape[1:], "cpu", min_size=encoder.config.min_size)
    encode(encoder, images, image_size=side, device="cpu", mask=mask)
    result["baseline_pretrained_embedding"] = _since(start)
    with tempfile.TemporaryDirectory() as tmp:
        start = _timer()
        simclr = SimCLREmbedder(
            args.backbone, epochs=args.epochs, checkpoint=Path(tmp) / "simclr", seed=args.seed
        ).fit(images, mask=mask)
        result["stage1_simclr"] = {**_since(start), "epochs": simclr.epochs_}
        start = _timer()
        learned = simclr.transform(images, mask=mask)
        k = int(adata.var["pattern"].nunique())
        init = sc.tl.create_clusterer("spectral", n_clusters=k, random_state=args.seed, assign_labels="discretize").fit(learned).labels_
        result["stage2_spectral"] = {**_since(start), "epochs": 1}
        start = _timer()
        model = sc.tl.SelfLabelingClassifier(simclr, epochs=args.sl_epochs, seed=args.seed).fit(images, init, mask=mask)
        result["stage3_self_labeling"] = {**_since(start), "epochs": model.epochs_}
    stages = ("stage1_simclr", "stage2_spectral", "stage3_self_labeling")
    total = {k: round(sum(result[s][k] for s in stages), 2) for k in ("wall_s", "cpu_s")}
    result["pipeline_total"] = total
    result["ratio_to_baseline_wall"] = round(total["wall_s"] / result["baseline_pretrained_embedding"]["wall_s"], 1)
    # the CPU defaults (epochs="auto"): scale the measured per-epoch cost when fewer epochs were run
    from spatialclust.tl import _self_label, _simclr

    default_epochs = {"stage1_simclr": _simclr.CPU_EPOCHS, "stage2_spectral": 1, "stage3_self_labeling": _self_label.CPU_EPOCHS}
    result["pipeline_total_at_cpu_defaults"] = {
        k: round(sum(result[s][k] / result[s]["epochs"] * default_epochs[s] for s in stages), 1) for k in ("wall_s", "cpu_s")
    }
    result["load_after"] = os.getloadavg()
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["ablation", "simulated", "bladder", "timing", "ceiling", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="simulation/training seeds (simulated)")
    parser.add_argument("--seed", type=int, default=0, help="seed (bladder, timing)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", default="auto", help="SimCLR epochs (simulated, bladder)")
    parser.add_argument("--sl-epochs", default="auto", help="self-labeling epochs (simulated, bladder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", default="auto")
    parser.add_argument("--size", type=int, default=64, help="side of the simulated images (simulated)")
    parser.add_argument("--ions-per-pattern", type=int, default=12, help="simulated ions per pattern (simulated)")
    parser.add_argument("--n-clusters", type=int, nargs="+", default=[10, 20], help="numbers of clusters (bladder)")
    parser.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                        help="folder holding the bladder's converted bladder_cube.npz (bladder; default: the "
                             "sc.datasets cache, $SPATIALCLUST_DATA, downloading it when missing)")
    parser.add_argument("--n-images", type=int, default=400, help="images in the timing run")
    parser.add_argument("--n-ions", type=int, default=100, help="monoisotopic on-tissue ions of the realistic simulation (ablation)")
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS), metavar="VARIANT",
                        help="ablation variants (default all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--report", type=Path, help="simulated: HTML report of the analysis figures of the first seed")
    parser.add_argument("--simclr", action="store_true", help="ceiling: also train SimCLR (defaults) and score its features")
    parser.add_argument("--figure", type=Path, help="ceiling: patterns, class means and confusion matrix of the first seed")
    args = parser.parse_args()
    for name in ("epochs", "sl_epochs", "image_size"):
        value = getattr(args, name)
        setattr(args, name, value if value == "auto" else int(value))

    import torch

    torch.set_num_threads(args.threads)
    results = {}
    for name, fn in (("ablation", ablation), ("simulated", simulated), ("bladder", bladder), ("timing", timing),
                     ("ceiling", ceiling)):
        if args.benchmark in (name, "all"):
            results[name] = fn(args)
    results["load_average"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
