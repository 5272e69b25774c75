"""Benchmark of the ST -> MSI translator (seed 004): every stage-1 and stage-2 model next to the
mean-predictor and ridge baselines, on held-out spots of spatial folds.

Datasets:
- ``simulated``: sc.datasets.simulate_paired_st_msi (2 sections), spatially blocked folds;
- ``lung``: Godfrey et al. 2025 paired Visium + DESI (one section, same spots), spatially blocked folds;
- ``brain``: Vicari et al. 2024 paired Visium + MALDI (6 sections, different point sets, nearest-pixel
  pairing), leave-one-section-out.

Prints Markdown tables (presence, intensity with ratios to the baselines, top genes per metabolite
from transformer attention and ridge coefficients, wall-clock time) and writes them to --output.

Example::

    python benchmarks/bench_translate.py --dataset all --output bench_translate.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import spatialclust as sc
from spatialclust._keys import SECTION, SPATIAL

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BRAIN_SECTIONS = ["V11L12-109_A1", "V11L12-109_B1", "V11L12-109_C1", "V11T16-085_A1", "V11T16-085_B1", "V11T16-085_C1"]


def markdown(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A Markdown table (no extra dependency), floats with 3 decimals."""
    if index:
        frame = frame.reset_index()
    cells = [[f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v) for v in row] for row in frame.itertuples(index=False)]
    head = [str(c) for c in frame.columns]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in cells])


def load(name: str, data: Path, features: str):
    if name == "simulated":
        st, msi = sc.datasets.simulate_paired_st_msi(seed=0)
        return (*sc.translate.pair(st, msi), "blocks")
    if name == "lung":
        folder = data / "st_msi_lung_godfrey"
        return (*sc.translate.pair(ad.read_h5ad(folder / "st.h5ad"), ad.read_h5ad(folder / "msi.h5ad")), "blocks")
    folder = data / "st_msi_mouse_brain_vicari"
    pairs = [
        sc.translate.pair(ad.read_h5ad(folder / f"st_{s}_{features}.h5ad"), ad.read_h5ad(folder / f"msi_{s}_{features}.h5ad"))
        for s in BRAIN_SECTIONS
    ]
    return (*sc.translate.concatenate_sections(pairs, BRAIN_SECTIONS), "sections")


def run(name: str, args) -> str:
    st, msi, folds = load(name, Path(args.data), args.brain_features)
    X = sc.translate.expression_matrix(st)
    Y = sc.translate.expression_matrix(msi)
    raw = sc.translate.expression_matrix(msi, transform="none")
    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    groups = st.obs[SECTION].astype(str).to_numpy() if SECTION in st.obs else None
    presence, thresholds = sc.translate.presence_targets(raw, coords=coords, groups=groups, snr=args.snr)
    neural = {"max_epochs": args.max_epochs, "patience": 10, "batch_size": 256, "device": "cpu"}
    params = {"presence.mlp": neural, "intensity.mlp": neural, "intensity.transformer": {**neural, "d_model": 16, "n_heads": 2}}
    start = time.time()
    result = sc.translate.cross_validate(
        X, Y, presence, coords=coords, groups=groups, folds=folds, n_splits=5, model_params=params,
        names=list(msi.var_names), random_state=args.seed,
    )
    seconds = time.time() - start
    pairing = st.uns["pairing"]
    if name == "brain":
        d = np.concatenate([np.atleast_1d(v["distance_median"]) for v in pairing.values()])
        pairing_text = f"nearest MSI pixel per spot, median match distance per section {np.round(d).astype(int).tolist()} units"
    else:
        pairing_text = f"{pairing['method']}, median match distance {pairing['distance_median']:.3g}"
    lines = [f"### {name}: {st.n_obs} spots x {st.n_vars} genes -> {msi.n_vars} metabolites", ""]
    lines.append(f"Pairing: {pairing_text}. Folds: {'leave-one-section-out' if folds == 'sections' else '5 spatially blocked folds'}. "
                 f"Presence prevalence per metabolite: {', '.join(f'{m} {p:.2f}' for m, p in zip(msi.var_names, presence.mean(0)))}.")
    lines.append("")
    p = result["presence_summary"][["model", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "roc_auc_macro_per_fold", "f1_micro", "roc_auc_micro"]]
    lines += ["Stage 1 (presence), pooled held-out spots:", "", markdown(p), ""]
    s = result["intensity_summary"][["model", "mse_macro", "r2_macro", "pearson_macro", "r2_micro"]].copy()
    mean_mse = s.set_index("model").loc["mean (baseline)", "mse_macro"]
    ridge_mse = s.set_index("model").loc["ridge (baseline)", "mse_macro"]
    s["mse / mean"] = s["mse_macro"] / mean_mse
    s["mse / ridge"] = s["mse_macro"] / ridge_mse
    lines += ["Stage 2 (log1p intensity), pooled held-out spots (`logistic x M`: M masked by predicted presence; "
              "`true presence x M`: masked by the measured presence, an upper bound for stage 1):", "",
              markdown(s), ""]
    per = result["intensity"]["logistic x transformer"][["r2", "pearson"]].rename(columns=lambda c: f"transformer {c}")
    per = per.join(result["intensity"]["ridge (baseline)"][["r2", "pearson"]].rename(columns=lambda c: f"ridge {c}"))
    lines += ["Per metabolite (two-stage transformer vs ridge baseline):", "", markdown(per, index=True), ""]
    # interpretation: fit on all spots
    model = sc.translate.TwoStageTranslator("logistic", "transformer", intensity_params=params["intensity.transformer"],
                                            random_state=args.seed)
    model.fit(X, Y, presence=presence, coords=coords, groups=groups, genes=list(st.var_names), metabolites=list(msi.var_names))
    attention = sc.translate.top_genes(sc.translate.gene_importance(model, X, source="attention"), n=3)
    ridge = sc.translate.LinearIntensityRegressor("ridge").fit(X, Y, presence=presence)
    coef = sc.translate.top_genes(sc.translate.gene_importance(ridge, genes=list(st.var_names), metabolites=list(msi.var_names),
                                                               source="coefficients"), n=3, absolute=True)
    tops = pd.DataFrame({
        "attention top 3": attention.groupby("metabolite", sort=False).gene.apply(", ".join),
        "ridge top 3 (|coef|, sign)": coef.assign(g=coef.gene + np.where(coef.importance > 0, " (+)", " (-)"))
        .groupby("metabolite", sort=False).g.apply(", ".join),
    })
    if name == "simulated":
        weights = np.asarray(st.uns["simulation"]["gene_weights"])
        tops["planted program"] = [", ".join(st.var_names[np.flatnonzero(w)]) for w in weights]
    lines += ["Top genes per metabolite (model fitted on all spots):", "", markdown(tops, index=True), ""]
    lines += [f"Cross-validation wall time: {seconds:.0f} s (all models, all folds).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["simulated", "lung", "brain", "all"], default="simulated")
    parser.add_argument("--data", default=str(DATA), help="folder with st_msi_lung_godfrey/ and st_msi_mouse_brain_vicari/")
    parser.add_argument("--brain-features", choices=["5feat", "10feat"], default="5feat")
    parser.add_argument("--max-epochs", type=int, default=100, help="epochs of the neural models (early stopping)")
    parser.add_argument("--snr", type=float, default=3.0, help="detection threshold = snr x noise level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", default=None, help="write the Markdown here too")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    names = ["simulated", "lung", "brain"] if args.dataset == "all" else [args.dataset]
    text = "\n".join(run(n, args) for n in names)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
