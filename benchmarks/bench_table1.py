"""Seed 000 Table 1: regular vs neural ion images, k-means vs UMAP+DBSCAN.

For each dataset the four pipelines of Zhang et al. (seed 000) are run on the same preprocessed
ion images (TIC normalisation, winsorising above the 95th percentile, scaling to [0, 1]):

    regular k-means, neural k-means, regular UMAP+DBSCAN, neural UMAP+DBSCAN

and scored with the paper's columns (clusters, meaningful clusters, RIR, noise images) plus, on
the simulated data with its known pattern classes, the clustering accuracy (Hungarian matching).

Datasets: ``simulated`` (``sc.datasets.simulate_msi(seed=0)``, 140 ion images, 6 patterns + matrix,
known 13C isotope pairs) and ``bladder`` (mouse urinary bladder, 79 ion images, 10 µm pixels,
``sc.datasets.mouse_bladder``: its cache, downloaded when absent, or the folder ``--data-path``;
skipped with a note when it cannot be downloaded).

Example::

    python benchmarks/bench_table1.py --datasets simulated bladder --cache-dir .cache/neural
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: Per dataset: k of k-means and the neural patch side (µm).
DEFAULTS = {
    "simulated": {"k": 7, "patch_size_um": 640.0},  # 32 px of 20 µm (image 64 x 64 px = 1.3 mm)
    "bladder": {"k": 8, "patch_size_um": 1000.0},  # 100 px of 10 µm (image 134 x 260 px), paper: 1-2 mm
}


def load(name: str, data_path: str | None):
    """The preprocessed dataset, or None when the bladder data are not available."""
    import spatialclust as sc
    from _public_data import load_public

    if name == "simulated":
        adata = sc.datasets.simulate_msi(seed=0)
    elif name == "bladder":
        adata = load_public("mouse_bladder", path=data_path)
        if adata is None:
            return None
    else:
        raise SystemExit(f"unknown dataset {name!r}; use simulated or bladder")
    sc.pp.preprocess_ion_images(adata)
    return adata


def run(name: str, args: argparse.Namespace) -> list[dict]:
    import spatialclust as sc

    adata = load(name, args.data_path)
    if adata is None:
        return []
    settings = DEFAULTS[name]
    k = args.k or settings["k"]
    timings = {}
    start = time.perf_counter()
    sc.tl.embed(adata, method="regular")
    timings["regular"] = time.perf_counter() - start
    start = time.perf_counter()
    sc.tl.embed(
        adata,
        method="neural",
        backbone=args.backbone,
        patch_size_um=args.patch_size_um or settings["patch_size_um"],
        overlap=args.overlap,
        pooling=args.pooling,
        input_size=args.input_size,
        num_threads=args.threads,
        cache_dir=args.cache_dir,
    )
    timings["neural"] = time.perf_counter() - start
    rows = []
    for clusterer, params in [("kmeans", {"n_clusters": k}), ("umap_dbscan", {})]:
        for rep in ("regular", "neural"):
            key = f"{clusterer}_{rep}"
            sc.tl.cluster(adata, clusterer, use_rep=f"X_{rep}", key_added=key, random_state=0, **params)
            m = sc.metrics.evaluate_clustering(adata, key, n_boot=args.n_boot)
            rows.append(
                {
                    "dataset": name,
                    "clustering": "k-means" if clusterer == "kmeans" else "UMAP-DBSCAN",
                    "ion images": rep,
                    "clusters": m["n_clusters"],
                    "meaningful": m["n_meaningful_clusters"],
                    "rir": m["rir"],
                    "isotope pairs": m["n_isotope_pairs"],
                    "noise images": m["noise_size"] if clusterer == "umap_dbscan" else None,
                    "accuracy": m.get("accuracy"),
                    "embed s": round(timings[rep], 1),
                }
            )
    neural = adata.uns["X_neural"]["params"]
    print(
        f"[{name}] neural: backbone={neural['backbone']} patch_size_um={neural['patch_size_um']} "
        f"overlap={neural['overlap']} pooling={neural['pooling']} input_size={neural['input_size']}"
    )
    if args.figures:
        figures(adata, name, Path(args.figures))
    return rows


def figures(adata, name: str, out: Path) -> None:
    """The paper's figures for both UMAP-DBSCAN pipelines: 3-D UMAP scatter, cluster mean images,
    mean spectrum coloured by cluster (regular and neural side by side as file pairs)."""
    import matplotlib.pyplot as plt

    import spatialclust as sc

    out.mkdir(parents=True, exist_ok=True)
    for rep in ("regular", "neural"):
        key = f"umap_dbscan_{rep}"
        for plot, suffix in [(sc.pl.embedding, "umap3d"), (sc.pl.cluster_mean_images, "means"), (sc.pl.spectrum, "spectrum")]:
            plot(adata, key, title=f"{name}: {rep} UMAP-DBSCAN", save=out / f"{name}_{rep}_{suffix}.png", dpi=80)
            plt.close("all")


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append("/" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["simulated", "bladder"], help="simulated and/or bladder")
    parser.add_argument("--data-path", default=None, metavar="PATH",
                        help="folder holding the bladder's converted bladder_cube.npz (default: the sc.datasets cache, "
                             "$SPATIALCLUST_DATA, downloading it when missing)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="neural backbone (default: %(default)s)")
    parser.add_argument("--patch-size-um", type=float, default=None, help="neural patch side in µm (default: per dataset)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--pooling", default="max")
    parser.add_argument("--input-size", type=int, default=None, help="resize patches to this side (default: their own size)")
    parser.add_argument("--k", type=int, default=None, help="k of k-means (default: per dataset)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap samples of the RIR")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="on-disk cache of neural ion images")
    parser.add_argument("--figures", default=None, help="folder for the 3-D UMAP and spectrum figures")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from spatialclust._logging import settings

    settings["show_progress_bar"] = False
    rows = [row for name in args.datasets for row in run(name, args)]
    if rows:
        print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
