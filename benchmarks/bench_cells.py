"""Benchmark: Tables 1 and 3 of Palli (2023) on simulated cell phenotypes.

Table 1: Leiden purity of the (scaled, PCA-reduced) classical image features without and with each
distance metric learner (NCA, LMNN, MLKR, LFDA; learned on half of the labelled cells, applied to
all). Table 3: purity of image embeddings (channel-wise pretrained backbones, DINO trained on the
cells) before and after NCA. The three "datasets" of the paper are replaced by three phenotypes of
the same simulated cells (``sc.datasets.simulate_cells``): number of intracellular objects 1/2/many
(Salmonella-like), round/elongated shape, small/large nucleus (cell-cycle-like).

Every learned row is also scored on the held-out cells (not used to learn the metric) and reported
as a ratio to the no-metric-learning baseline of the same run.

Examples
--------
python benchmarks/bench_cells.py --n-cells 300 --embeddings efficientnet_lite0 dino --output cells_bench.md
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

PHENOTYPES = ("objects", "shape", "nucleus")
LEARNERS = ("nca", "lmnn", "mlkr", "lfda")


def _purity(adata, rep: str, label: str, args, *, subset=None) -> dict[str, float]:
    key = f"leiden_{rep}"
    if key not in adata.obs:
        sc.tl.leiden_cells(adata, use_rep=rep, resolution=args.resolution, random_state=args.seed, key_added=key,
                           neighbors_method=args.neighbors_method)
    scores = sc.tl.evaluate_cells(adata, cluster_key=key, label_key=label, subset=subset)
    return scores


def _learn(adata, base: str, method: str, label: str, args) -> str:
    key = f"{base}_{method}_{label}"
    params = {"learn_rate": 1e-4} if method == "lmnn" else None  # metric-learn's 1e-7 barely moves in max_iter steps
    sc.tl.metric_learning(adata, method, use_rep=base, label_key=label, train_fraction=args.train_fraction,
                          random_state=args.seed, key_added=key, max_iter=args.max_iter.get(method), params=params)
    return key


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats with 3 decimals, missing values as ``/``)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "/"
        return f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-comps", type=int, default=10, help="PCs of the classical features")
    parser.add_argument("--embedding-comps", type=int, default=20, help="PCs of every embedding before clustering/NCA")
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--resolution", type=float, default=1.0, help="fixed Leiden resolution (the paper's protocol)")
    parser.add_argument("--neighbors-method", default="umap", choices=["umap", "gauss"])
    parser.add_argument("--embeddings", nargs="*", default=["efficientnet_lite0", "dino"],
                        help="backbones (channel-wise, concatenated) and/or `dino` (trained on the cells)")
    parser.add_argument("--image-size", type=int, default=None, help="backbone input side (default: its own, 224)")
    parser.add_argument("--dino-epochs", type=int, default=30)
    parser.add_argument("--dino-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--output", type=Path, default=None, help="write the tables as Markdown (+ .json)")
    args = parser.parse_args()
    if args.quick:
        args.n_cells, args.dino_epochs, args.embeddings, args.image_size = 60, 1, ["test_tiny", "dino"], 32
    args.max_iter = {"lmnn": 200, "mlkr": 200} if not args.quick else {"nca": 10, "lmnn": 10, "mlkr": 10}
    settings["show_progress_bar"] = False

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cells = sc.datasets.simulate_cells(args.n_cells, seed=args.seed)
    adata = sc.tl.cell_features(cells)
    sc.tl.cell_pca(adata, n_comps=args.n_comps, umap=False, random_state=args.seed)
    timings = {"features+pca": time.perf_counter() - start}

    table1 = []
    for label in PHENOTYPES:
        base = _purity(adata, "X_pca", label, args)
        table1.append({"phenotype": label, "metric_learning": "none", "purity": base["purity"], "purity_held_out": None,
                       "ratio_to_none": 1.0, "nmi": base["nmi"], "knn_accuracy": base["knn_accuracy"], "seconds": None})
        for method in LEARNERS:
            t = time.perf_counter()
            key = _learn(adata, "X_pca", method, label, args)
            seconds = time.perf_counter() - t
            scores = _purity(adata, key, label, args)
            held = _purity(adata, key, label, args, subset=~adata.obs[f"{key}_train"].to_numpy())
            table1.append({"phenotype": label, "metric_learning": method, "purity": scores["purity"],
                           "purity_held_out": held["purity"], "ratio_to_none": scores["purity"] / base["purity"],
                           "nmi": scores["nmi"], "knn_accuracy": held["knn_accuracy"], "seconds": seconds})
            print(f"[table 1] {label:8s} {method:5s} purity {scores['purity']:.3f} (held out {held['purity']:.3f}) {seconds:.1f}s", flush=True)

    table3 = []
    for name in args.embeddings:
        t = time.perf_counter()
        if name == "dino":
            sc.tl.embed_cells(adata, "dino", key_added="X_dino", epochs=args.dino_epochs, image_size=args.dino_size,
                              seed=args.seed, device="cpu")
            key = "X_dino"
        else:
            key = f"X_{name}"
            sc.tl.embed_cells(adata, "pretrained", key_added=key, backbone=name, image_size=args.image_size, device="cpu")
        from sklearn.decomposition import PCA

        X = adata.obsm[key]
        n = min(args.embedding_comps, X.shape[1], X.shape[0] - 1)
        adata.obsm[f"{key}_pca"] = PCA(n, random_state=args.seed).fit_transform(X).astype(np.float32)
        timings[name] = time.perf_counter() - t
        for label in PHENOTYPES:
            before = _purity(adata, f"{key}_pca", label, args)
            learned = _learn(adata, f"{key}_pca", "nca", label, args)
            after = _purity(adata, learned, label, args)
            held = _purity(adata, learned, label, args, subset=~adata.obs[f"{learned}_train"].to_numpy())
            table3.append({"embedding": name, "phenotype": label, "before_nca": before["purity"], "after_nca": after["purity"],
                           "after_nca_held_out": held["purity"], "ratio": after["purity"] / before["purity"],
                           "dim": int(X.shape[1]), "seconds": timings[name]})
            print(f"[table 3] {name:18s} {label:8s} before {before['purity']:.3f} after NCA {after['purity']:.3f}", flush=True)

    t1, t3 = pd.DataFrame(table1), pd.DataFrame(table3)
    print(t1.to_string(index=False, float_format="%.3f"))
    print(t3.to_string(index=False, float_format="%.3f"))
    if args.output is not None:
        text = (f"n_cells={args.n_cells}, seed={args.seed}, resolution={args.resolution}, neighbors={args.neighbors_method}, "
                f"train_fraction={args.train_fraction}, total {time.perf_counter() - start:.0f} s\n\n"
                + markdown(t1) + "\n\n" + markdown(t3) + "\n")
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps({"table1": table1, "table3": table3, "timings": timings}, indent=2))


if __name__ == "__main__":
    main()
