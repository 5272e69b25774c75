"""Benchmark of the ST -> MSI translator (seed 004): every stage-1 x stage-2 pair next to the
mean-predictor and unmasked-ridge baselines, on held-out spots of spatial folds, with ablations of the
stage combination (unmasked / the seed's mask / hurdle without and with calibration / per-metabolite
choice), of spatial context and of the number of genes, and the transformer's time against the
number of genes.

Datasets:
- ``simulated``: sc.datasets.simulate_paired_st_msi (linear regime, 2 sections), spatially blocked folds;
- ``gated``: the gated regime (4 sections x 40 x 40 spots x 300 genes, AND-gated presence, saturating
  intensity), leave-one-section-out;
- ``lung``: Godfrey et al. 2025 paired Visium + DESI (one section, same spots), spatially blocked folds;
- ``brain``: Vicari et al. 2024 paired Visium + MALDI (6 sections, nearest-pixel pairing),
  leave-one-section-out (``--brain-features 5feat`` or ``10feat``);
- ``defaults``: ridge, MLP and transformer at their package defaults on the brain and the lung, unmasked and
  behind the MLP stage 1, with seconds per fold;
- ``timing``: transformer seconds per epoch vs number of genes, module tokens vs one token per gene.

Prints Markdown and writes it to --output. The real datasets come from the ``sc.datasets`` loaders
``lung_godfrey`` and ``mouse_brain_vicari``: their cache, downloaded when absent, or the folder
``--data``; one that cannot be loaded is skipped with a note.

Example::

    python benchmarks/bench_translate.py --dataset gated --output gated.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import spatialclust as sc
from spatialclust._keys import SECTION, SPATIAL
from _public_data import load_public, subfolder

BRAIN_SECTIONS = ["V11L12-109_A1", "V11L12-109_B1", "V11L12-109_C1", "V11T16-085_A1", "V11T16-085_B1", "V11T16-085_C1"]
GATED = {"regime": "gated", "n_sections": 4, "shape": (40, 40), "n_genes": 300, "n_metabolites": 8}
row_name = sc.translate.row_name


def markdown(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A Markdown table (no extra dependency), floats with 3 decimals."""
    if index:
        frame = frame.reset_index()
    cells = [[f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v) for v in row] for row in frame.itertuples(index=False)]
    head = [str(c) for c in frame.columns]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in cells])


def load(name: str, args, **simulate):
    """``(st, msi, folds)`` paired, or None when the real data are not available."""
    if name in ("simulated", "gated"):
        kwargs = {**(GATED if name == "gated" else {}), **simulate}
        if name == "gated" and args.gated_side and "shape" not in simulate:
            kwargs["shape"] = (args.gated_side, args.gated_side)
        st, msi = sc.datasets.simulate_paired_st_msi(seed=args.seed, **kwargs)
        return (*sc.translate.pair(st, msi), "sections" if name == "gated" else "blocks")
    if name == "lung":
        loaded = load_public("lung_godfrey", path=subfolder(args.data, "lung_godfrey"))
        return None if loaded is None else (*sc.translate.pair(*loaded), "blocks")
    pairs = []
    for s in BRAIN_SECTIONS:
        loaded = load_public("mouse_brain_vicari", s, n_features=int(args.brain_features.removesuffix("feat")),
                             path=subfolder(args.data, "mouse_brain_vicari"))
        if loaded is None:
            return None
        pairs.append(sc.translate.pair(*loaded))
    return (*sc.translate.concatenate_sections(pairs, BRAIN_SECTIONS), "sections")


def arrays(st, msi, args):
    X = sc.translate.expression_matrix(st)
    Y = sc.translate.expression_matrix(msi)
    raw = sc.translate.expression_matrix(msi, transform="none")
    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    groups = st.obs[SECTION].astype(str).to_numpy() if SECTION in st.obs else None
    presence, _ = sc.translate.presence_targets(raw, coords=coords, groups=groups, snr=args.snr)
    return X, Y, presence, coords, groups


def neural_params(args) -> dict:
    neural = {"max_epochs": args.max_epochs, "patience": 10, "batch_size": 256, "device": "cpu"}
    return {"presence.mlp": neural, "intensity.mlp": neural,
            "intensity.transformer": {**neural, "d_model": 16, "n_heads": 2, "n_tokens": args.n_tokens}}


def evaluate(X, Y, presence, coords, groups, folds, args, *, presence_models, intensity_models, names, spatial_context=0,
             spatial_coordinates=False):
    start = time.time()
    result = sc.translate.cross_validate(
        X, Y, presence, coords=coords, groups=groups, folds=folds, n_splits=5, model_params=neural_params(args),
        presence_models=presence_models, intensity_models=intensity_models, spatial_context=spatial_context,
        spatial_coordinates=spatial_coordinates, choice_tolerance=args.choice_tolerance, names=names, random_state=args.seed,
    )
    return result, time.time() - start


def pair_grid(summary: pd.DataFrame, presence_models, intensity_models, metric: str) -> pd.DataFrame:
    """Stage 1 (rows) x stage 2 (columns) of the per-metabolite-choice rows; plus unmasked stage 2."""
    s = summary.set_index("model")[metric]
    grid = pd.DataFrame({i: [s[row_name(p, i)] for p in presence_models] + [s[row_name(None, i, "none")]]
                         for i in intensity_models}, index=[*presence_models, "(unmasked)"])
    grid.index.name = f"{metric}: stage 1 \\ stage 2"
    return grid


def ablation(summary: pd.DataFrame, presence_model: str, intensity_models) -> pd.DataFrame:
    s = summary.set_index("model")
    rows = []
    for i in intensity_models:
        variants = {
            "unmasked": row_name(None, i, "none"),
            "mask (seed)": row_name(presence_model, i, "mask"),
            "hurdle, uncalibrated": row_name(presence_model, i, "hurdle", "none"),
            "hurdle, Platt": row_name(presence_model, i, "hurdle", "platt"),
            "hurdle, isotonic": row_name(presence_model, i, "hurdle", "isotonic"),
            "choice, Platt": row_name(presence_model, i, "auto", "platt"),
            "choice, uncalibrated": row_name(presence_model, i, "auto", "none"),
            "choice of both (default)": row_name(presence_model, i),
            "true presence x mask": f"true presence x {i} [mask]",
        }
        rows.append({"stage 2": i, **{k: f"{s.loc[v, 'r2_macro']:.3f} / {s.loc[v, 'pearson_macro']:.3f}" for k, v in variants.items()}})
    return pd.DataFrame(rows)


def guarantee(result, presence_models, intensity_models) -> pd.DataFrame:
    """``P x M`` vs ``M (unmasked)`` for every pair: pooled macro R² / Pearson and the worst metabolite."""
    rows = []
    for i in intensity_models:
        base = result["intensity"][row_name(None, i, "none")]
        for p in presence_models:
            ours = result["intensity"][row_name(p, i)]
            per = (ours["r2"] - base["r2"]).drop(["micro", "macro"])
            rows.append({"pair": row_name(p, i), "R² two-stage": ours.loc["macro", "r2"], "R² unmasked": base.loc["macro", "r2"],
                         "Pearson two-stage": ours.loc["macro", "pearson"], "Pearson unmasked": base.loc["macro", "pearson"],
                         "worst metabolite": per.idxmin(), "its R² difference": per.min(),
                         "metabolites worse": int((per < -1e-9).sum())})
    return pd.DataFrame(rows)


def run(name: str, args) -> str:
    loaded = load(name, args)
    if loaded is None:
        return f"### {name}: skipped (public data not available)\n"
    st, msi, folds = loaded
    X, Y, presence, coords, groups = arrays(st, msi, args)
    names = list(msi.var_names)
    presence_models = args.presence_models.split(",")
    intensity_models = args.intensity_models.split(",")
    result, seconds = evaluate(X, Y, presence, coords, groups, folds, args, presence_models=presence_models,
                               intensity_models=intensity_models, names=names)
    lines = [f"### {name}: {st.n_obs} spots x {st.n_vars} genes -> {msi.n_vars} metabolites", ""]
    lines.append(f"Folds: {'leave-one-section-out' if folds == 'sections' else '5 spatially blocked folds'}; inner folds: 3. "
                 f"Presence prevalence per metabolite: {', '.join(f'{m} {p:.2f}' for m, p in zip(names, presence.mean(0)))}.")
    lines.append("")
    p = result["presence_summary"][["model", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "roc_auc_macro_per_fold"]]
    lines += ["Stage 1 (presence), pooled held-out spots:", "", markdown(p), ""]
    summary = result["intensity_summary"]
    base = summary.set_index("model")
    lines.append(f"Baselines: mean predictor R² {base.loc['mean (baseline)', 'r2_macro']:.3f} / Pearson "
                 f"{base.loc['mean (baseline)', 'pearson_macro']:.3f}; **unmasked ridge R² {base.loc['ridge (baseline)', 'r2_macro']:.3f}"
                 f" / Pearson {base.loc['ridge (baseline)', 'pearson_macro']:.3f}** (macro over metabolites).")
    lines.append("")
    for metric in ("r2_macro", "pearson_macro"):
        lines += [markdown(pair_grid(summary, presence_models, intensity_models, metric), index=True), ""]
    lines += [f"Ablation of the combination, stage 1 = {args.default_presence} (macro R² / Pearson):", "",
              markdown(ablation(summary, args.default_presence, intensity_models)), ""]
    lines += ["Guarantee: every pair's per-metabolite choice (`P x M`) against its own unmasked stage 2 (`M (unmasked)`), "
              "pooled macro R² / Pearson and the worst metabolite (R² difference):", "",
              markdown(guarantee(result, presence_models, intensity_models)), ""]
    default = row_name(args.default_presence, args.default_intensity)
    if default in result["intensity"]:
        per = result["intensity"][default][["r2", "pearson", "morans_i"]].rename(columns=lambda c: f"two-stage {c}")
        per = per.join(result["intensity"]["ridge (baseline)"][["r2", "pearson", "morans_i"]].rename(columns=lambda c: f"unmasked ridge {c}"))
        lines += [f"Per metabolite, `{default}` (default) vs unmasked ridge (Moran's I of the residuals):", "",
                  markdown(per, index=True), ""]
        chosen = result["combinations"]
        chosen = chosen[chosen.model == default]
        chosen = pd.crosstab(chosen.metabolite, chosen.combination + " / " + chosen.calibration)
        lines += [f"Combination / calibration chosen by inner CV for `{default}` (number of outer folds):", "", markdown(chosen, index=True), ""]
    lines += [f"Cross-validation wall time: {seconds:.0f} s (all pairs, all folds, inner folds included; shared 2-core machine).", ""]
    if args.context:
        cheap_p, cheap_i = [m for m in presence_models if m in ("logistic", "mlp")], [m for m in intensity_models if m in ("ridge", "mlp")]
        ctx, ctx_seconds = evaluate(X, Y, presence, coords, groups, folds, args, presence_models=cheap_p,
                                    intensity_models=cheap_i, names=names, spatial_context=args.context)
        xy, xy_seconds = evaluate(X, Y, presence, coords, groups, folds, args, presence_models=cheap_p, intensity_models=cheap_i,
                                  names=names, spatial_context=args.context, spatial_coordinates=True)
        s0, s1, s2 = (r["intensity_summary"].set_index("model") for r in (result, ctx, xy))
        rows = [{"model": r, **{f"{metric} {label}": s.loc[r, key] for metric, key in (("R²", "r2_macro"), ("Pearson", "pearson_macro"))
                                for label, s in (("without", s0), (f"with {args.context}-NN context", s1), ("with context + coordinates", s2))}}
                for r in [row_name(p_, i_) for p_ in cheap_p for i_ in cheap_i] + [row_name(None, i_, "none") for i_ in cheap_i]]
        lines += [f"Spatial context (expression + mean over the spot and its {args.context} nearest spots, both stages; then "
                  "also the per-section standardised coordinates, `spatial_coordinates=True`):", "",
                  markdown(pd.DataFrame(rows)), "", f"(context runs: {ctx_seconds:.0f} s, {xy_seconds:.0f} s with coordinates)", ""]
    return "\n".join(lines)


def run_genes(args) -> str:
    """Number of genes on the gated simulator (same programs and metabolites, more noisy readouts)."""
    rows = []
    for n_genes in (30, 100, 300):
        st, msi, folds = load("gated", args, n_genes=n_genes)
        X, Y, presence, coords, groups = arrays(st, msi, args)
        result, seconds = evaluate(X, Y, presence, coords, groups, folds, args, presence_models=["logistic", "mlp"],
                                   intensity_models=["ridge", "mlp"], names=list(msi.var_names))
        s = result["intensity_summary"].set_index("model")
        rows.append({"genes": n_genes, **{r: f"{s.loc[r, 'r2_macro']:.3f} / {s.loc[r, 'pearson_macro']:.3f}"
                                          for r in ["ridge (baseline)", "logistic x ridge", "mlp x mlp", "mlp (unmasked)"]},
                     "seconds": round(seconds)})
    return "\n".join(["### gated simulator: number of genes (macro R² / Pearson, leave-one-section-out)", "",
                      markdown(pd.DataFrame(rows)), ""])


def run_split(args) -> str:
    """One leave-one-section-out split of the gated simulator (train sections 0-2, test section 3),
    fixed hurdle combination (no inner CV): stage-2 models incl. the transformer, spatial context and
    the number of genes, at a cost that fits a loaded machine."""
    import torch

    rows = []
    for n_genes, context in ((300, 0), (300, 6), (30, 0)):
        st, msi, _ = load("gated", args, n_genes=n_genes)
        X, Y, presence, coords, groups = arrays(st, msi, args)
        F = sc.translate.spatial_features(X, coords, groups=groups, n_neighbors=context) if context else X
        train, test = groups != "section3", groups == "section3"
        params = neural_params(args)
        stage1 = sc.translate.create_presence_model("mlp", **params["presence.mlp"])
        stage1.fit(F[train], presence[train], coords=coords[train], groups=groups[train])
        probability, label = stage1.predict_proba(F[test]), stage1.predict(F[test])
        absent = sc.translate.absent_levels(Y[train], presence[train])
        for name in ("ridge", "mlp", "transformer") if (n_genes, context) == (300, 0) else ("ridge", "mlp"):
            start = time.time()
            kw = {k: v for k, v in params.get(f"intensity.{name}", {}).items()}
            fit_kw = {"coords": coords[train], "groups": groups[train]}
            present = sc.translate.create_intensity_model(name, **kw).fit(F[train], Y[train], presence=presence[train], **fit_kw).predict(F[test])
            unmasked = sc.translate.create_intensity_model(name, **kw).fit(F[train], Y[train], **fit_kw).predict(F[test])
            hurdle = sc.translate.combine_stages(["hurdle"] * Y.shape[1], probability=probability, label=label, present=present,
                                                 unmasked=None, absent_level=absent)
            for variant, pred in (("unmasked", unmasked), ("mlp x M [hurdle, uncalibrated]", hurdle)):
                t = sc.translate.intensity_scores(Y[test], pred).loc["macro"]
                rows.append({"genes": n_genes, "context": context, "stage 2": name, "variant": variant,
                             "R2": t["r2"], "Pearson": t["pearson"], "fit seconds (both)": round(time.time() - start)})
    return "\n".join([f"### gated simulator, one split (sections 0-2 -> 3), side {args.gated_side or 40}, torch threads "
                      f"{torch.get_num_threads()}", "", markdown(pd.DataFrame(rows)), ""])


def run_defaults(args) -> str:
    """Stage-2 models at their package defaults on the real data (leave-one-section-out on the brain,
    5 spatially blocked folds on the lung), with the pipeline's input (``--context`` neighbours):
    unmasked, and (unless ``--unmasked-only``) behind the MLP stage 1 (package defaults) as the
    uncalibrated hurdle; seconds per fold of each stage-2 model's unmasked fit."""
    import torch

    parts = []
    for name in args.real.split(","):
        loaded = load(name, args)
        if loaded is None:
            parts.append(f"### {name}: skipped (public data not available)\n")
            continue
        st, msi, folds = loaded
        X, Y, presence, coords, groups = arrays(st, msi, args)
        F = sc.translate.spatial_features(X, coords, groups=groups, n_neighbors=args.context) if args.context else X
        fold_list = sc.translate.spatial_folds(coords, method=folds, groups=groups, n_splits=5, random_state=args.seed)
        models = ("ridge", "mlp", "transformer")
        oof = {f"{m} {v}": np.zeros(Y.shape) for m in models for v in ("unmasked",) + (() if args.unmasked_only else ("hurdle",))}
        oof["ridge (baseline, no context)"] = np.zeros(Y.shape)
        seconds = {m: [] for m in models}
        for train, test in fold_list:
            fit_kw = {"coords": coords[train], "groups": groups[train] if groups is not None else None}
            oof["ridge (baseline, no context)"][test] = sc.translate.create_intensity_model("ridge").fit(X[train], Y[train]).predict(X[test])
            if not args.unmasked_only:
                stage1 = sc.translate.create_presence_model("mlp", device="cpu", random_state=args.seed).fit(F[train], presence[train], **fit_kw)
                probability, label = stage1.predict_proba(F[test]), stage1.predict(F[test])
                absent = sc.translate.absent_levels(Y[train], presence[train])
            for m in models:
                kw = {"device": "cpu", "random_state": args.seed} if m != "ridge" else {}
                start = time.time()
                oof[f"{m} unmasked"][test] = sc.translate.create_intensity_model(m, **kw).fit(F[train], Y[train], **fit_kw).predict(F[test])
                seconds[m].append(time.time() - start)
                if args.unmasked_only:
                    continue
                present = sc.translate.create_intensity_model(m, **kw).fit(F[train], Y[train], presence=presence[train], **fit_kw).predict(F[test])
                oof[f"{m} hurdle"][test] = sc.translate.combine_stages(["hurdle"] * Y.shape[1], probability=probability, label=label,
                                                                       present=present, unmasked=None, absent_level=absent)
        rows = []
        for row, pred in oof.items():
            t = sc.translate.intensity_scores(Y, pred).loc["macro"]
            model, variant = row.split(" ", 1)
            rows.append({"stage 2": model, "variant": "mlp x M [hurdle, uncalibrated]" if variant == "hurdle" else variant,
                         "R²": t["r2"], "Pearson": t["pearson"],
                         "seconds per fold (unmasked fit)": np.mean(seconds[model]) if variant != "(baseline, no context)" else np.nan})
        parts.append("\n".join([f"### {name}: stage 2 at package defaults, {len(fold_list)} folds, {args.context}-NN context, "
                                 f"torch threads {torch.get_num_threads()}", "", markdown(pd.DataFrame(rows)), ""]))
    return "\n".join(parts)


def run_timing(args) -> str:
    """Transformer seconds per training epoch vs genes: module tokens (n_tokens) vs one token per gene."""
    import torch

    rows = []
    warm = sc.translate.TransformerIntensityRegressor(n_tokens=4, d_model=16, n_heads=2, max_epochs=1, device="cpu")
    warm.fit(np.random.default_rng(0).normal(size=(64, 8)), np.zeros((64, 1)))  # torch start-up is not timed
    for n_genes in (100, 300, 1000, 3000):
        st, msi, _ = load("gated", args, n_genes=n_genes, n_sections=1)
        X, Y, presence, coords, groups = arrays(st, msi, args)
        for tokens in (args.n_tokens, n_genes):
            if tokens == n_genes and n_genes > 300:
                continue  # one token per gene: quadratic, skipped above 300 genes to bound CPU time
            reg = sc.translate.TransformerIntensityRegressor(n_tokens=tokens, d_model=16, n_heads=2, max_epochs=2, patience=5,
                                                             batch_size=256, device="cpu")
            start = time.time()
            reg.fit(X, Y, presence=presence, coords=coords)
            rows.append({"genes": n_genes, "tokens": tokens, "spots": len(X), "seconds per epoch": (time.time() - start) / reg.n_epochs_,
                         "threads": torch.get_num_threads()})
    return "\n".join(["### transformer time vs number of genes (1,600 spots, d_model 16, 2 heads, 1 layer)", "",
                      markdown(pd.DataFrame(rows)), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["simulated", "gated", "lung", "brain", "genes", "split", "defaults", "timing", "all"], default="gated")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="folder with the converted public data in subfolders st_msi_lung_godfrey/ (st.h5ad, msi.h5ad) "
                             "and st_msi_mouse_brain_vicari/ (st_<section>_<n>feat.h5ad, msi_<section>_<n>feat.h5ad); "
                             "default: the sc.datasets cache ($SPATIALCLUST_DATA), downloading what is missing")
    parser.add_argument("--real", default="brain,lung", help="real datasets of --dataset defaults")
    parser.add_argument("--unmasked-only", action="store_true", help="--dataset defaults: stage 2 on all spots only")
    parser.add_argument("--gated-side", type=int, default=None, help="side of the gated sections (default 40)")
    parser.add_argument("--brain-features", choices=["5feat", "10feat"], default="5feat")
    parser.add_argument("--presence-models", default="prevalence,logistic,svm,mlp")
    parser.add_argument("--intensity-models", default="mean,ridge,mlp,transformer")
    parser.add_argument("--default-presence", default="logistic", help="stage 1 of the ablation and per-metabolite tables")
    parser.add_argument("--default-intensity", default="ridge", help="stage 2 of the per-metabolite table")
    parser.add_argument("--context", type=int, default=6, help="spatial-context ablation: neighbours (0: skip)")
    parser.add_argument("--max-epochs", type=int, default=60, help="epochs of the neural models (early stopping)")
    parser.add_argument("--n-tokens", type=int, default=32, help="gene-module tokens of the transformer")
    parser.add_argument("--choice-tolerance", type=float, default=1.0, help="standard errors a mask must gain to be chosen")
    parser.add_argument("--snr", type=float, default=3.0, help="detection threshold = snr x noise level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", default=None, help="write the Markdown here too")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    names = ["simulated", "gated", "lung", "brain", "genes", "timing"] if args.dataset == "all" else [args.dataset]
    parts = []
    for n in names:
        runner = {"genes": run_genes, "split": run_split, "defaults": run_defaults, "timing": run_timing}.get(n)
        parts.append(runner(args) if runner else run(n, args))
        print(parts[-1], flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(parts))


if __name__ == "__main__":
    main()
