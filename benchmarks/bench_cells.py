"""Benchmark: label-free cell phenotyping against the raw-pixel baseline (Palli 2023, issue 17).

On simulated cells (``sc.datasets.simulate_cells``; by default the realistic ``cell_cycle`` regime:
7 phases that differ in DNA content, chromatin texture and morphology, with realistic nuisance
variation) or on the real Jurkat cell-cycle images (``--dataset jurkat``:
``sc.datasets.jurkat_cell_cycle``, 7 phases, brightfield / DNA / darkfield), every representation is clustered without labels and scored against the phase:

- ``pixels``: the raw images, flattened, PCA (``--pixel-comps``) -- the baseline;
- ``features_ics``: the sorter's real-time features (6 per channel + correlations), scaled, PCA;
- ``features_cellprofiler``: + CellProfiler-like intensity distribution, radial distribution, GLCM
  texture and object shape per channel (scikit-image), scaled, PCA;
- ``efficientnet_lite0@<px>``: channel-wise ImageNet EfficientNet-Lite0 at each ``--image-sizes``;
- ``dino``: a tiny multichannel ViT trained with DINO on the cells themselves (scDINO style);
- ``dino_separate``: scDINO's channel-wise mode, one single-channel ViT per channel trained with DINO,
  CLS tokens concatenated;
- ``dino_untrained``: the same ViT at its initial weights (one epoch at learning rate 1e-30; the
  random-features baseline that tells what DINO's training adds);
- ``features_<set>+self_lfda``: LFDA learned on the feature PCA from pseudo-labels, the Leiden
  clusters (stability scan, the ``cells run`` default) of the pixel PCA, confident half of each cluster
  (``sc.tl.self_labelled_metric``; label-free, every cell scored).

Scores per representation: k-means with k = number of classes (the same k for all), Leiden at the
fixed ``--resolution`` (the paper's procedure and the ``cells run`` default, 1.0), at the resolutions
chosen by the stability and the silhouette scans (label-free), and at the resolution that gives k
clusters (``leiden_cells(n_clusters=k)``: the representations compared at the same count), and the
leave-one-out 5-NN accuracy. Semi-supervised step: NCA and LFDA learned on a stratified half of
the labels of the CellProfiler features (and of DINO), scored on the held-out half only. Reference:
supervised logistic regression on the pixel PCA (3-fold CV), as for the real Jurkat data.

Examples
--------
python benchmarks/bench_cells.py --n-cells 700 --seeds 0 1 2 --output cells_bench.md
python benchmarks/bench_cells.py --dataset jurkat --max-per-class 300 --seeds 0 --embeddings efficientnet_lite0 dino \
    --image-sizes 64
python benchmarks/bench_cells.py --quick        # tiny settings, a smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import spatialclust as sc
from spatialclust._logging import settings

LEARNERS = ("nca", "lfda")


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats with 3 decimals, missing values as ``/``)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "/"
        return f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _pca(X: np.ndarray, n_comps: int, seed: int, *, scale: bool) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    if scale:
        X = np.clip(np.nan_to_num(StandardScaler().fit_transform(X)), -10, 10)  # as sc.pp.scale(max_value=10)
    return PCA(min(n_comps, X.shape[1], X.shape[0] - 1), random_state=seed).fit_transform(X).astype(np.float32)


def _score(adata, rep: str, truth: np.ndarray, args, *, subset=None) -> dict[str, float]:
    from sklearn.cluster import KMeans

    from spatialclust.metrics import ari, knn_accuracy, nmi, purity

    out: dict[str, float] = {}
    mask = np.ones(adata.n_obs, dtype=bool) if subset is None else subset
    X = np.asarray(adata.obsm[rep], dtype=np.float64)
    k = len(np.unique(truth))
    codes = KMeans(k, n_init=10, random_state=args.seed_now).fit_predict(X)
    out["kmeans_purity"], out["kmeans_nmi"] = purity(truth[mask], codes[mask]), nmi(truth[mask], codes[mask])
    out["kmeans_ari"] = ari(truth[mask], codes[mask])
    # label-free scans, and the resolution giving k clusters (the k of k-means: scores at a matched count)
    leiden = {"fixed": {"resolution": args.resolution}, "stability": {"resolution": "scan", "criterion": "stability"},
              "silhouette": {"resolution": "scan", "criterion": "silhouette"}, "k": {"n_clusters": k}}
    for name, params in leiden.items():
        key = f"leiden_{rep}_{name}"
        sc.tl.leiden_cells(adata, use_rep=rep, neighbors_method=args.neighbors_method, random_state=args.seed_now,
                           key_added=key, **params)
        codes = adata.obs[key].cat.codes.to_numpy()
        out[f"leiden_{name}_purity"] = purity(truth[mask], codes[mask])
        out[f"leiden_{name}_nmi"] = nmi(truth[mask], codes[mask])
        out[f"leiden_{name}_ari"] = ari(truth[mask], codes[mask])
        out[f"leiden_{name}_clusters"] = int(adata.uns[key]["n_clusters"])
        out[f"leiden_{name}_resolution"] = float(adata.uns[key]["resolution"])
    out["knn_accuracy"] = knn_accuracy(X[mask], truth[mask], k=5)
    return out


def load_cells(seed: int, args):
    """The cells of one run: simulated (``--n-cells``), or the real Jurkat set capped per phase."""
    if args.dataset == "simulated":
        return sc.datasets.simulate_cells(args.n_cells, regime=args.regime, seed=seed)
    cells = sc.datasets.jurkat_cell_cycle(path=args.data_path)
    if args.channels:
        stack = sc.io.cell_image_stack(cells)
        index = [list(cells.uns["cell_images"]["channels"]).index(c) for c in args.channels]
        cells = sc.io.cell_images_to_adata(stack[:, index].copy(), channels=args.channels, labels=cells.obs["label"],
                                           obs_names=cells.obs_names)
    if args.max_per_class:
        rng = np.random.default_rng(seed)
        labels = cells.obs["label"].to_numpy()
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: args.max_per_class] for c in np.unique(labels)])
        cells = cells[np.sort(keep)].copy()
    return cells


def run_seed(seed: int, args) -> tuple[list[dict], dict]:
    """All representations and learners on one data set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    args.seed_now = seed
    cells = load_cells(seed, args)
    truth = cells.obs["label"].astype(str).to_numpy()
    rows: list[dict] = []
    timings: dict[str, float] = {}

    def record(name: str, rep: str, seconds: float, **extra) -> None:
        scores = _score(cells, rep, truth, args)
        rows.append({"seed": seed, "representation": name, "seconds": seconds, **extra, **scores})
        print(f"[seed {seed}] {name:28s} kmeans {scores['kmeans_purity']:.3f}  leiden({args.resolution:g}) "
              f"{scores['leiden_fixed_purity']:.3f} ({scores['leiden_fixed_clusters']} cl)  "
              f"knn {scores['knn_accuracy']:.3f}  {seconds:.1f}s", flush=True)

    start = time.perf_counter()
    pixels = sc.io.cell_image_stack(cells).reshape(cells.n_obs, -1)
    cells.obsm["X_pixels"] = _pca(pixels, args.pixel_comps, seed, scale=False)
    record("pixels (baseline)", "X_pixels", time.perf_counter() - start)
    reference = float(cross_val_score(LogisticRegression(max_iter=3000), cells.obsm["X_pixels"], truth, cv=3).mean())
    for feature_set in ("ics", "cellprofiler"):
        start = time.perf_counter()
        table = sc.tl.cell_features(cells, feature_set=feature_set, background=args.background)
        key = f"X_features_{feature_set}"
        cells.obsm[key] = _pca(table.X, args.n_comps, seed, scale=True)
        record(f"features_{feature_set}", key, time.perf_counter() - start, dim=int(table.n_vars))
        start = time.perf_counter()
        sc.tl.self_labelled_metric(cells, "lfda", use_rep=key, label_rep="X_pixels", neighbors_method=args.neighbors_method,
                                   random_state=seed, key_added=f"{key}_self_lfda")
        record(f"features_{feature_set}+self_lfda", f"{key}_self_lfda", time.perf_counter() - start)
    for name in args.embeddings:
        if name in ("dino", "dino_separate", "dino_untrained"):
            start = time.perf_counter()
            params = dict(epochs=args.dino_epochs, image_size=args.dino_size, patch_size=args.dino_patch, scaling=args.dino_scaling,
                          intensity_jitter=args.dino_jitter, seed=seed, device="cpu")
            if name == "dino_separate":
                params["channels"] = "separate"
            if name == "dino_untrained":  # at lr 1e-30 AdamW moves nothing (its weight decay scales with lr), nor the EMA
                params.update(epochs=1, lr=1e-30)
            sc.tl.embed_cells(cells, "dino", key_added=f"X_{name}_raw", **params)
            cells.obsm[f"X_{name}"] = _pca(cells.obsm[f"X_{name}_raw"], args.embedding_comps, seed, scale=False)
            record(name, f"X_{name}", time.perf_counter() - start, dim=int(cells.obsm[f"X_{name}_raw"].shape[1]))
            continue
        for size in args.image_sizes:
            start = time.perf_counter()
            raw = f"X_{name}_{size}_raw"
            sc.tl.embed_cells(cells, "pretrained", key_added=raw, backbone=name, image_size=size, device="cpu")
            key = f"X_{name}_{size}"
            cells.obsm[key] = _pca(cells.obsm[raw], args.embedding_comps, seed, scale=False)
            record(f"{name}@{size}px", key, time.perf_counter() - start, dim=int(cells.obsm[raw].shape[1]))
    cells.obs["truth"] = truth
    for base in ["X_features_cellprofiler"] + (["X_dino"] if "dino" in args.embeddings else []):
        for method in LEARNERS:
            start = time.perf_counter()
            key = f"{base}_{method}"
            sc.tl.metric_learning(cells, method, use_rep=base, label_key="truth", train_fraction=args.train_fraction,
                                  random_state=seed, key_added=key)
            held_out = ~cells.obs[f"{key}_train"].to_numpy(dtype=bool)
            scores = _score(cells, key, truth, args, subset=held_out)
            rows.append({"seed": seed, "representation": f"{base[2:]}+{method} (held out)", "seconds": time.perf_counter() - start,
                         **scores})
            print(f"[seed {seed}] {base[2:]}+{method} held out: leiden {scores['leiden_fixed_purity']:.3f} "
                  f"knn {scores['knn_accuracy']:.3f}", flush=True)
    return rows, {"logistic_regression_on_pixel_pca": reference, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="simulated", choices=["simulated", "jurkat"],
                        help="`jurkat`: the real Jurkat cell-cycle images (sc.datasets.jurkat_cell_cycle)")
    parser.add_argument("--data-path", type=Path, default=None, help="folder with jurkat_cell_cycle.npz (default: the cache)")
    parser.add_argument("--max-per-class", type=int, default=None, help="jurkat: at most this many cells per phase")
    parser.add_argument("--channels", nargs="+", default=None, choices=["brightfield", "dna", "darkfield"],
                        help="jurkat: keep only these channels (default: all three)")
    parser.add_argument("--background", default="none", choices=list(sc.tl.BACKGROUNDS),
                        help="background handling of the classical features (sc.tl.cell_features)")
    parser.add_argument("--n-cells", type=int, default=700)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--regime", default="cell_cycle", choices=["cell_cycle", "phenotypes"])
    parser.add_argument("--n-comps", type=int, default=20, help="PCs of the classical features")
    parser.add_argument("--pixel-comps", type=int, default=50, help="PCs of the raw pixels")
    parser.add_argument("--embedding-comps", type=int, default=20, help="PCs of every embedding")
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--resolution", type=float, default=1.0,
                        help="fixed Leiden resolution (the paper's procedure; the cells run default is 1.0)")
    parser.add_argument("--neighbors-method", default="gauss", choices=["umap", "gauss"])
    parser.add_argument("--embeddings", nargs="*", default=["efficientnet_lite0", "dino"],
                        help="backbones (channel-wise, concatenated), `dino` (trained on the cells), `dino_separate` "
                             "(one ViT per channel) and/or `dino_untrained` (its ViT at the initial weights)")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224, 64], help="backbone input sides")
    parser.add_argument("--dino-epochs", type=int, default=20)
    parser.add_argument("--dino-size", type=int, default=32)
    parser.add_argument("--dino-patch", type=int, default=8)
    parser.add_argument("--dino-scaling", default="dataset", choices=["cell", "dataset"],
                        help="the DINOTrainer default (dataset); cell = scDINO's per-cell min-max")
    parser.add_argument("--dino-jitter", type=float, default=0.4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--output", type=Path, default=None, help="write the tables as Markdown (+ .json)")
    args = parser.parse_args()
    if args.quick:
        args.n_cells, args.dino_epochs, args.embeddings, args.image_sizes = 70, 1, ["test_tiny", "dino"], [32]
    settings["show_progress_bar"] = False

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows, extras = [], {}
    for seed in args.seeds:
        seed_rows, extra = run_seed(seed, args)
        rows += seed_rows
        extras[seed] = extra
        print(f"[seed {seed}] logistic regression on the pixel PCA (supervised, 3-fold CV): "
              f"{extra['logistic_regression_on_pixel_pca']:.3f}", flush=True)
    frame = pd.DataFrame(rows)
    columns = ["kmeans_purity", "kmeans_nmi", "kmeans_ari", "leiden_fixed_purity", "leiden_fixed_nmi", "leiden_fixed_ari",
               "leiden_fixed_clusters", "leiden_stability_purity", "leiden_stability_nmi", "leiden_stability_ari",
               "leiden_stability_clusters",
               "leiden_silhouette_purity", "leiden_silhouette_clusters", "leiden_k_purity", "leiden_k_nmi", "leiden_k_ari",
               "leiden_k_clusters", "knn_accuracy", "seconds"]
    summary = frame.groupby("representation", sort=False)[columns].agg(["mean", "std"])
    table = pd.DataFrame({"representation": summary.index})
    for column in columns:
        mean, std = summary[(column, "mean")].to_numpy(), summary[(column, "std")].to_numpy()
        table[column] = [f"{m:.3f} ± {s:.3f}" if len(args.seeds) > 1 and column != "seconds" else f"{m:.3f}" if column != "seconds" else f"{m:.0f}"
                         for m, s in zip(mean, np.nan_to_num(std))]
    print(table.to_string(index=False))
    logistic = np.mean([e["logistic_regression_on_pixel_pca"] for e in extras.values()])
    print(f"logistic regression on the pixel PCA (supervised reference): {logistic:.3f}")
    if args.output is not None:
        data = (f"dataset=jurkat, max_per_class={args.max_per_class}, channels={args.channels or 'all'}" if args.dataset == "jurkat"
                else f"n_cells={args.n_cells}, regime={args.regime}")
        text = (f"{data}, background={args.background}, seeds={args.seeds}, neighbors={args.neighbors_method}, "
                f"train_fraction={args.train_fraction}, total {time.perf_counter() - start:.0f} s; supervised logistic "
                f"regression on the pixel PCA: {logistic:.3f}\n\n" + markdown(table) + "\n")
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps({"rows": rows, "extras": extras}, indent=2, default=float))


if __name__ == "__main__":
    main()
