"""The translation pipeline (ST -> MSI, seed 004): train, evaluate (cross-validation), predict.

Used by ``spatialclust translate train|evaluate|predict``, configured by ``pipeline/translate.yaml``
(:func:`~spatialclust.pipeline.load_config` with ``pipeline="translate"``); every run writes a run
directory with the resolved ``config.yaml``, ``run.log``, tables (CSV), figures (PNG), model
checkpoint and ``report.html`` (built by :mod:`spatialclust.report`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import translate as tr
from .._keys import MZ, SECTION, SPATIAL
from .._logging import logger
from .._rundir import (
    COMBINATIONS_FILE, FOLDS_FILE, IMPORTANCE_FIGURE, IMPORTANCE_TABLE, INTENSITY_SUMMARY_FILE, MODEL_DIR, PAIRING_FILE,
    BEST_PARAMS_FILE, PREDICTED_FILE, PREDICTED_IMAGES_FIGURE, PREDICTED_IMZML_FILE, PRESENCE_SUMMARY_FILE, SEARCH_TABLE,
    SIGNATURES_FILE, STAGE_TABLE, TARGETS_FILE, TOP_GENES_FILE, run_directory,
)
from ..io import read_h5ad
from ._config import load_config

__all__ = ["DEFAULT_GRIDS", "load_paired", "run_translate_evaluate", "run_translate_predict", "run_translate_train"]

#: Hyperparameter grids used by ``search.enabled`` when ``search.grids`` is empty.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "presence.logistic": {"C": [0.1, 1.0, 10.0]},
    "presence.svm": {"C": [0.01, 0.1, 1.0]},
    "presence.mlp": {"weight_decay": [1e-3, 1e-2], "dropout": [0.1, 0.3]},
    "intensity.ridge": {"alpha": [0.1, 1.0, 10.0, 100.0]},
    "intensity.mlp": {"weight_decay": [1e-3, 1e-2], "dropout": [0.1, 0.3]},
    "intensity.transformer": {"d_model": [16, 32], "weight_decay": [1e-3, 1e-2]},
}


def _file_stem(model: str) -> str:
    """A model row name as a plain file-name part: "logistic x mean [hurdle, uncalibrated]" ->
    "logistic_x_mean_hurdle_uncalibrated" (letters, digits, '.', '+', '-' and '_' only)."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", model).strip("_")


def _as_list(value) -> list:
    return [value] if isinstance(value, (str, Path)) else list(value)


def _inputs(config: Mapping[str, Any]) -> list[str | Path]:
    """The files a train or evaluate run reads (an overwrite must not delete them)."""
    data = config["data"]
    return [*_as_list(data["st"] or []), *_as_list(data["msi"] or []), config["pairing"]["landmarks"]]


def load_paired(config: Mapping[str, Any]) -> tuple[ad.AnnData, ad.AnnData]:
    """Read (or simulate) ST + MSI per ``config["data"]`` and pair them per ``config["pairing"]``."""
    from .. import datasets

    data, pairing = config["data"], config["pairing"]
    landmarks = None
    if pairing["landmarks"]:
        table = pd.read_csv(pairing["landmarks"])
        missing = {"msi_x", "msi_y", "st_x", "st_y"} - set(table.columns)
        if missing:
            raise ValueError(f"Landmark file {pairing['landmarks']!r} lacks the columns {sorted(missing)}.")
        landmarks = (table[["msi_x", "msi_y"]].to_numpy(), table[["st_x", "st_y"]].to_numpy())
    kwargs = {"method": pairing["method"], "radius": pairing["radius"], "landmarks": landmarks, "nan_policy": pairing["nan_policy"]}
    if data["st"] is None and data["msi"] is None:
        st, msi = datasets.simulate_paired_st_msi(seed=int(config["seed"]), **dict(data["simulate"]))
        return tr.pair(st, msi, **kwargs)
    if data["st"] is None or data["msi"] is None:
        raise ValueError("`data.st` and `data.msi` must both be given (or both null for the simulator).")
    st_files, msi_files = _as_list(data["st"]), _as_list(data["msi"])
    if len(st_files) != len(msi_files):
        raise ValueError(f"`data.st` lists {len(st_files)} files but `data.msi` {len(msi_files)}; give one MSI file per ST file.")
    for f in st_files + msi_files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"Input file {str(f)!r} does not exist.")
    if len(st_files) == 1:
        return tr.pair(read_h5ad(st_files[0]), read_h5ad(msi_files[0]), **kwargs)
    sts = [read_h5ad(f) for f in st_files]
    names = data["sections"] or [str(a.uns.get(SECTION, Path(f).stem)) for a, f in zip(sts, st_files)]
    pairs = [tr.pair(s, read_h5ad(m), **kwargs) for s, m in zip(sts, msi_files)]
    return tr.concatenate_sections(pairs, names)


def _arrays(config, st, msi):
    pre, tg = config["preprocessing"], config["targets"]
    X = tr.expression_matrix(st, transform=pre["expression_transform"])
    raw = tr.expression_matrix(msi, transform="none")
    Y = tr.expression_matrix(msi, transform=pre["intensity_transform"])
    coords = np.asarray(st.obsm[SPATIAL], dtype=float)
    groups = st.obs[SECTION].astype(str).to_numpy() if SECTION in st.obs else None
    detection = tg["detection"]
    presence, thresholds = tr.presence_targets(raw, coords=coords, groups=groups, detection=detection, snr=tg["snr"], quantile=tg["quantile"])
    clusters = None
    key = config["signatures"]["cluster_key"]
    if key is not None:
        if key not in st.obs:
            raise KeyError(f"`signatures.cluster_key`={key!r} is not a column of the ST obs ({list(st.obs.columns)}).")
        clusters = st.obs[key].astype(str).to_numpy()
    return X, Y, presence, thresholds, coords, groups, clusters


def _targets_table(msi, presence, thresholds) -> pd.DataFrame:
    table = pd.DataFrame({"threshold": thresholds, "prevalence": presence.mean(0)}, index=msi.var_names)
    table["status"] = np.where(table.prevalence == 0, "never present", np.where(table.prevalence == 1, "always present", "varies"))
    return table


def _grids(config) -> dict[str, Any]:
    if not config["search"]["enabled"]:
        return {}
    return dict(config["search"]["grids"]) or DEFAULT_GRIDS


def _model_params(config) -> dict[str, dict[str, Any]]:
    params = {k: dict(v) for k, v in dict(config["model"]["params"]).items()}
    for name in ("presence.mlp", "intensity.mlp", "intensity.transformer"):
        params.setdefault(name, {}).setdefault("device", config["device"])
    return params


def _combination_params(config) -> dict[str, Any]:
    """Translator parameters of the ``model`` section beyond the two stage names."""
    model = config["model"]
    return {k: model[k] for k in ("combine", "calibration", "inner_splits", "choice_tolerance", "spatial_context", "spatial_coordinates")}


def run_translate_train(config: str | Path | Mapping[str, Any] | None, output: str | Path, *, overwrite: bool = False) -> Path:
    """Fit the two-stage translator on all paired spots; save it with its report (``spatialclust translate train``).

    ``config``: a YAML file, a (partial) mapping or None (the defaults, ``pipeline/translate.yaml``).
    Returns the run directory (``model/``, ``targets.csv``, ``pairing.json``, ``combinations.csv``,
    ``top_genes.csv``, ``importance_*.csv|png``, ``signatures.csv``, ``maps.png``, ``report.html``).
    """
    from ..report import write_translate_train_report

    config = load_config(config, pipeline="translate")
    with run_directory(output, config, command="translate train", overwrite=overwrite, inputs=_inputs(config)) as out:
        st, msi = load_paired(config)
        X, Y, presence, thresholds, coords, groups, clusters = _arrays(config, st, msi)
        params = _model_params(config)
        names = {"presence": config["model"]["presence"], "intensity": config["model"]["intensity"]}
        searched = {}
        grids = _grids(config)
        for stage, name in names.items():
            grid = grids.get(f"{stage}.{name}")
            if not grid:
                continue
            factory = tr.create_presence_model if stage == "presence" else tr.create_intensity_model
            model_in = X
            if stage == "presence" and config["signatures"]["use"]:
                sig = config["signatures"]
                masker = tr.SignatureMask(n_genes=sig["n_genes"], resolution=sig["resolution"], random_state=config["seed"])
                model_in = np.hstack([X, masker.fit_transform(X, clusters=clusters)])
            best, results = tr.grid_search(
                factory(name, **params.get(f"{stage}.{name}", {})), model_in, presence if stage == "presence" else Y,
                param_grid=grid, stage=stage, presence=presence, coords=coords, groups=groups,
                n_splits=config["search"]["n_splits"], random_state=config["seed"],
            )
            searched[f"{stage}.{name}"] = best
            params.setdefault(f"{stage}.{name}", {}).update(best)
            results.to_csv(out / SEARCH_TABLE.format(stage=stage, model=name), index=False)
        sig = config["signatures"]
        model = tr.TwoStageTranslator(
            names["presence"], names["intensity"],
            presence_params=params.get(f"presence.{names['presence']}"),
            intensity_params=params.get(f"intensity.{names['intensity']}"),
            signature_mask=sig["use"], n_signature_genes=sig["n_genes"], resolution=sig["resolution"],
            random_state=config["seed"], **_combination_params(config),
        ).fit(X, Y, presence=presence, coords=coords, groups=groups, clusters=clusters,
              genes=list(st.var_names), metabolites=list(msi.var_names))
        metadata = {
            "expression_transform": config["preprocessing"]["expression_transform"],
            "intensity_transform": config["preprocessing"]["intensity_transform"],
            "mz": msi.var[MZ].tolist() if MZ in msi.var else None,
            "gene_means": X.mean(0).tolist(),
            "thresholds": thresholds.tolist(),
            "search": searched,
        }
        tr.save_translator(model, out / MODEL_DIR, metadata=metadata)
        targets = _targets_table(msi, presence, thresholds)
        targets.to_csv(out / TARGETS_FILE)
        (out / PAIRING_FILE).write_text(json.dumps(st.uns.get("pairing", {}), indent=2, default=str))
        pd.DataFrame({"metabolite": model.metabolites_, "combination": model.combination_,
                      "calibration": model.calibration_}).to_csv(out / COMBINATIONS_FILE, index=False)
        tops, importance_figures = _interpretation(model, X, Y, presence, out, n=config["report"]["top_genes"], coords=coords, groups=groups)
        fitted = model.predict(X, coords=coords, groups=groups)
        signatures = _signature_table(model)
        if signatures is not None:
            signatures.to_csv(out / SIGNATURES_FILE, index=False)
        write_translate_train_report(
            out, config, st=st, msi=msi, measured=Y, fitted=fitted, targets=targets, top_genes=tops, signatures=signatures,
            fit_scores=tr.intensity_scores(Y, fitted, names=list(msi.var_names)), figures=importance_figures,
        )
    logger.info("translate train: model saved to %s", Path(output) / MODEL_DIR)
    return Path(output)


def _interpretation(model, X, Y, presence, out: Path, *, n: int, coords=None, groups=None) -> tuple[pd.DataFrame, list[Path]]:
    """Top genes per metabolite from attention (transformer) and from ridge coefficients, and the
    heat maps written."""
    import matplotlib.pyplot as plt

    from .. import pl

    tables, figures = [], []
    sources = []
    if hasattr(model.intensity_model_ or model.unmasked_model_, "attention"):
        sources.append(("attention", tr.gene_importance(model, X, source="attention", coords=coords, groups=groups)))
    ridge = tr.create_intensity_model("ridge").fit(X, Y, presence=presence)
    sources.append(("ridge", tr.gene_importance(ridge, genes=model.genes_, metabolites=model.metabolites_, source="coefficients")))
    for source, importance in sources:
        importance.to_csv(out / IMPORTANCE_TABLE.format(source=source))
        table = tr.top_genes(importance, n=n, absolute=source != "attention")
        table.insert(0, "source", source)
        tables.append(table)
        fig = pl.importance_heatmap(importance, title=f"gene importance ({source})")
        figures.append(out / IMPORTANCE_FIGURE.format(source=source))
        fig.savefig(figures[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    result = pd.concat(tables, ignore_index=True)
    result.to_csv(out / TOP_GENES_FILE, index=False)
    return result, figures


def _signature_table(model) -> pd.DataFrame | None:
    """Cluster -> signature genes of the fitted model, with how they were obtained."""
    masker = model.signatures_
    if masker is None:
        return None
    counts = pd.Series(masker.clusters_).value_counts()
    return pd.DataFrame([
        {"cluster": c, "n_spots": int(counts.get(c, 0)), "signature_genes": ", ".join(model.genes_[g] for g in masker.signatures_.get(c, [])),
         "source": masker.source_}
        for c in masker.cluster_names_
    ])


def run_translate_evaluate(config: str | Path | Mapping[str, Any] | None, output: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Cross-validate all stage-1/stage-2 models and baselines on spatial folds; write tables and
    report (``spatialclust translate evaluate``); returns the result of :func:`spatialclust.translate.cross_validate`."""
    from ..report import write_translate_evaluate_report

    config = load_config(config, pipeline="translate")
    with run_directory(output, config, command="translate evaluate", overwrite=overwrite, inputs=_inputs(config)) as out:
        st, msi = load_paired(config)
        X, Y, presence, thresholds, coords, groups, clusters = _arrays(config, st, msi)
        cv, sig = config["cv"], config["signatures"]
        result = tr.cross_validate(
            X, Y, presence, coords=coords, groups=groups, folds=cv["folds"], n_splits=cv["n_splits"],
            block_size=cv["block_size"], buffer=cv["buffer"], presence_models=cv["presence_models"],
            intensity_models=cv["intensity_models"], inner_splits=config["model"]["inner_splits"],
            choice_tolerance=config["model"]["choice_tolerance"],
            spatial_context=config["model"]["spatial_context"], spatial_coordinates=config["model"]["spatial_coordinates"],
            model_params=_model_params(config), search=_grids(config), signature_mask=sig["use"], clusters=clusters,
            n_signature_genes=sig["n_genes"], resolution=sig["resolution"], names=list(msi.var_names),
            random_state=config["seed"],
        )
        gaps = [tr.min_train_test_distance(coords, train, test, groups=groups) for train, test in result["folds"]]
        folds = pd.DataFrame({"fold": range(len(gaps)), "n_train": [len(t) for t, _ in result["folds"]],
                              "n_test": [len(t) for _, t in result["folds"]], "min_train_test_distance": gaps})
        folds.to_csv(out / FOLDS_FILE, index=False)
        result["presence_summary"].to_csv(out / PRESENCE_SUMMARY_FILE, index=False)
        result["intensity_summary"].to_csv(out / INTENSITY_SUMMARY_FILE, index=False)
        result["combinations"].to_csv(out / COMBINATIONS_FILE, index=False)
        for stage in ("presence", "intensity"):
            for name, table in result[stage].items():
                table.to_csv(out / STAGE_TABLE.format(stage=stage, model=_file_stem(name)))
        targets = _targets_table(msi, presence, thresholds)
        targets.to_csv(out / TARGETS_FILE)
        (out / BEST_PARAMS_FILE).write_text(json.dumps(result["best_params"], indent=2))
        model = config["model"]
        write_translate_evaluate_report(
            out, config, st=st, msi=msi, measured=Y, targets=targets, folds=folds, result=result,
            best_row=tr.row_name(model["presence"], model["intensity"], model["combine"], model["calibration"]),
        )
    return result


def run_translate_predict(model_path: str | Path, st_path: str | Path, output: str | Path, *,
                          config: str | Path | Mapping[str, Any] | None = None, overwrite: bool = False) -> ad.AnnData:
    """Predict synthetic MSI for a new ST dataset (``spatialclust translate predict``): ``predicted.h5ad``,
    ``images.png`` and ``predicted.imzML``; returns the predicted AnnData."""
    import matplotlib.pyplot as plt

    from .. import io, pl

    config = load_config(config, pipeline="translate")
    if not Path(st_path).is_file():
        raise FileNotFoundError(f"ST file {str(st_path)!r} does not exist.")
    with run_directory(output, config, command="translate predict", overwrite=overwrite, inputs=(model_path, st_path)) as out:
        model, metadata = tr.load_translator(model_path)
        st = read_h5ad(st_path)
        result = tr.predict_msi(model, st, metadata=metadata, missing_genes=config["predict"]["missing_genes"])
        result.write_h5ad(out / PREDICTED_FILE)
        fig = pl.metabolite_images(result)
        fig.savefig(out / PREDICTED_IMAGES_FIGURE, dpi=90, bbox_inches="tight")
        plt.close(fig)
        if config["predict"]["imzml"]:
            if MZ in result.var:
                io.write_imzml(result, out / PREDICTED_IMZML_FILE)
            else:
                logger.warning("predict: the training MSI had no var['mz']; %s is not written.", PREDICTED_IMZML_FILE)
    return result
