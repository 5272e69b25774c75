"""How hard is the simulated MSI dataset, and what does the shared preprocessing buy?

For each seed: simulate the default dataset (``sc.datasets.simulate_msi``), run the seed-000 shared
preprocessing (``sc.pp.preprocess_ion_images``) and cluster the flattened ion images with k-means
(k = number of patterns + 1 for the matrix ions). Reported against the ground truth
``var["pattern"]`` (ARI), with two baselines measured in the same run:

- ``raw``: k-means on the raw count images, each divided by its maximum (no TIC normalisation, no
  winsorising): what the preprocessing adds;
- ``pure``: the same pipeline on a dataset simulated without the pattern mixing and on-tissue
  baseline terms: how much of the difficulty those terms create.

Also the planted isotope pairs that ``sc.metrics.isotope_pairs`` finds (Δm/z ± 0.005 Da, Pearson
≥ 0.85), and the time of ``sc.pp.feature_images`` on sparse and dask matrices relative to dense.

    python benchmarks/bench_simulate_msi.py --seeds 0 1 2

``--part realism``: the two regimes of ``simulate_msi`` (``realism="ideal"`` and ``"real"``, 13
classes, ~390 ions of 96 px) against the measured mouse urinary bladder data
(``sc.datasets.mouse_bladder``: its cache, downloaded when absent, or ``--data-path``; skipped with a
note when it cannot be downloaded): per-image statistics of the raw images (zero fraction,
neighbour correlation as an SNR proxy, coefficient of variation as contrast, max / 99th percentile
for hot pixels, spread of the mean intensities in decades) and the raw baseline (k-means on the
regular images, ACC / NMI against the classes; thinned-partner recall@10 of the regular images).

    python benchmarks/bench_simulate_msi.py --part realism --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import spatialclust as sc
from _public_data import load_public


def kmeans_ari(images: np.ndarray, truth, k: int) -> float:
    labels = KMeans(k, n_init=10, random_state=0).fit_predict(images.reshape(len(images), -1))
    return adjusted_rand_score(truth, labels)


STATISTICS = ("zero fraction", "neighbour r", "CV", "max / p99")


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of raw ion images ``(n, H, W)`` over all pixels of the grid."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    left, right = images[:, :, :-1].reshape(len(images), -1), images[:, :, 1:].reshape(len(images), -1)
    neighbour = np.array([np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0 for a, b in zip(left, right)])
    p99 = np.percentile(flat, 99, axis=1)
    mean = flat.mean(axis=1)
    return {
        "zero fraction": (flat == 0).mean(axis=1),
        "neighbour r": neighbour,
        "CV": flat.std(axis=1) / np.maximum(mean, 1e-12),
        "max / p99": flat.max(axis=1) / np.maximum(p99, 1e-12),
        "log10 mean": np.log10(np.maximum(mean, 1e-12)),
    }


def statistics_row(name: str, images: np.ndarray) -> str:
    stats = image_statistics(images)
    cells = [f"{np.median(stats[k]):.2f} ({np.percentile(stats[k], 10):.2f}-{np.percentile(stats[k], 90):.2f})" for k in STATISTICS]
    decades = np.percentile(stats["log10 mean"], 95) - np.percentile(stats["log10 mean"], 5)
    return f"| {name} | {len(images)} | " + " | ".join(cells) + f" | {decades:.2f} |"


def realism(seeds: list[int], data_path: Path | None) -> None:
    from sklearn.cluster import KMeans

    print("| data | images | " + " | ".join(f"{k}, median (10-90 %)" for k in STATISTICS) + " | mean intensity 5-95 % (decades) |")
    print("|---" * (len(STATISTICS) + 3) + "|")
    bladder = load_public("mouse_bladder", path=data_path)
    if bladder is not None:
        print(statistics_row("mouse urinary bladder (measured)", sc.pp.feature_images(bladder)), flush=True)
    baseline = []
    for regime in ("ideal", "real"):
        for seed in seeds:
            adata = sc.datasets.simulate_msi(realism=regime, seed=seed)
            if seed == seeds[0]:
                print(statistics_row(f"simulate_msi(realism={regime!r}, seed={seed})", sc.pp.feature_images(adata)), flush=True)
            start = time.perf_counter()
            partners = sc.metrics.thinned_partner_check(adata, layer=None, clusterer=None, seed=seed)
            t_check = time.perf_counter() - start
            sc.pp.preprocess_ion_images(adata)
            truth = adata.var["pattern"].to_numpy()
            k = len(set(truth))
            images = sc.pp.feature_images(adata)
            labels = KMeans(k, n_init=10, random_state=0).fit_predict(images.reshape(len(images), -1))
            baseline.append(
                f"| {regime} | {seed} | {adata.n_vars} | {k} | {sc.metrics.clustering_accuracy(truth, labels):.3f} | "
                f"{sc.metrics.nmi(truth, labels):.3f} | {partners.recall[10]:.3f} | {t_check:.1f} |"
            )
    print("\n| regime | seed | images | classes | k-means ACC (regular) | NMI | thinned-partner recall@10 (regular) | check (s) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(baseline))


def timed(func, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="simulation seeds")
    parser.add_argument("--part", choices=["preprocessing", "realism"], default="preprocessing")
    parser.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                        help="realism: folder holding the bladder's converted bladder_cube.npz (default: the sc.datasets "
                             "cache, $SPATIALCLUST_DATA, downloading it when missing)")
    args = parser.parse_args()
    if args.part == "realism":
        realism(args.seeds, args.data_path)
        return

    print("seed  n_images  simulate_s  preprocess_s  ARI_regular  ARI_raw  ARI_pure  isotopes_found/planted")
    for seed in args.seeds:
        start = time.perf_counter()
        adata = sc.datasets.simulate_msi(seed=seed)
        t_sim = time.perf_counter() - start
        k = adata.uns["simulation"]["params"]["n_patterns"] + 1
        truth = adata.var["pattern"].to_numpy()
        raw = sc.pp.feature_images(adata)
        ari_raw = kmeans_ari(raw / raw.reshape(len(raw), -1).max(axis=1)[:, None, None], truth, k)
        start = time.perf_counter()
        sc.pp.preprocess_ion_images(adata)
        t_pp = time.perf_counter() - start
        regular = sc.pp.feature_images(adata)
        ari = kmeans_ari(regular, adata.var["pattern"].to_numpy(), k)
        pairs = sc.metrics.isotope_pairs(adata.var["mz"].to_numpy(), regular)
        planted = {tuple(p) for p in adata.uns["simulation"]["isotope_pairs"]}
        found = sum((adata.var_names[i], adata.var_names[j]) in planted for i, j in pairs)
        pure = sc.datasets.simulate_msi(seed=seed, mixing=0.0, max_baseline=0.0)
        sc.pp.preprocess_ion_images(pure)
        ari_pure = kmeans_ari(sc.pp.feature_images(pure), pure.var["pattern"].to_numpy(), k)
        print(
            f"{seed:>4}  {adata.n_vars:>8}  {t_sim:>10.2f}  {t_pp:>12.2f}  {ari:>11.3f}  {ari_raw:>7.3f}  "
            f"{ari_pure:>8.3f}  {found}/{len(planted)} (false: {len(pairs) - found})"
        )

    import dask.array as da
    import scipy.sparse as sp

    adata = sc.datasets.simulate_msi(seed=args.seeds[0])
    dense = timed(lambda: sc.pp.feature_images(adata))
    sparse, chunked = adata.copy(), adata.copy()
    sparse.X = sp.csr_matrix(adata.X)
    chunked.X = da.from_array(adata.X, chunks=(1024, 32))
    print(
        f"feature_images ({adata.n_vars} x {adata.uns['grid']['shape']}): dense {dense * 1e3:.1f} ms; "
        f"sparse / dense = {timed(lambda: sc.pp.feature_images(sparse)) / dense:.1f}x; "
        f"dask / dense = {timed(lambda: sc.pp.feature_images(chunked)) / dense:.1f}x"
    )


if __name__ == "__main__":
    main()
