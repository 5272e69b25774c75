"""Benchmark: clustering 10^5 feature images (k-means, Leiden, spectral) without an ``(n, n)`` matrix.

Data (written once to a temporary folder, the same for every method): ``--n`` ion images of
``--side`` x ``--side`` pixels drawn from ``--classes`` smooth random spatial patterns (Gaussian-
filtered noise scaled to [0, 1]; class sizes from a Dirichlet(3) draw). Every image follows its
class pattern with an image-specific contrast exponent ``g ~ U(0.5, 2.5)``, a share
``m ~ U(0, 0.4)`` of another, random pattern (molecules present in two structures) and a
log-normal abundance (median ``--counts`` counts at the maximum, sigma 1), with Poisson counting
noise; each image is scaled to its maximum and all are reduced by randomised PCA to ``--dims``
features. Neighbouring images share their class 97 % of the time, k-means reaches NMI ~0.6 and
Leiden ~0.9: a structure a graph method can find but centroids cannot quite.

Every measurement runs in a fresh process (``python bench_cluster_scale.py --child ...``) that loads
the features, then times one clustering: wall time, and peak RSS above the RSS with the data
loaded (sampled every 10 ms with psutil). A fresh process includes one-off costs a pipeline pays once
(compiling NN-descent's numba kernels, ~30 s). Configurations, on the small ``--n-small`` set and
the large ``--n`` set (``approx``/``exact`` force the kNN path by setting the threshold
``spatialclust._neighbors.EXACT_KNN_MAX_IMAGES``; ``minibatch`` forces mini-batch k-means):

* ``kmeans`` (the default path by size) and ``kmeans_minibatch`` (k = ``--classes``);
* ``leiden`` (default path: exact kNN up to 50k images, NN-descent above) and the other path
  (``leiden_approx`` on the small set, ``leiden_exact`` on the large one): same-run time ratios and
  the agreement (ARI) of the two;
* ``spectral`` (k = ``--classes``; LOBPCG on the sparse graph above 1,000 images);
* ``eigengap_dense`` vs ``eigengap_sparse`` on ``--n-eigen`` images: the eigengap estimate of the
  number of clusters with the old dense ``(n, n)`` Laplacian vs the sparse Lanczos path.

A dense ``(n, n)`` float64 matrix of 10^5 images would take 80 GB; none is formed.

    python benchmarks/bench_cluster_scale.py                        # 10^4 and 10^5 images, ~10 min
    python benchmarks/bench_cluster_scale.py --n 20000 --n-small 5000 --n-eigen 2000   # quick
    python benchmarks/bench_cluster_scale.py --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def simulate_features(n: int, *, classes: int, side: int, dims: int, counts: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dims)`` PCA features of simulated ion images and their pattern classes (module docstring)."""
    from scipy.ndimage import gaussian_filter
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    patterns = np.stack([gaussian_filter(rng.standard_normal((side, side)), 3.0) for _ in range(classes)])
    patterns -= patterns.min(axis=(1, 2), keepdims=True)
    patterns = (patterns / patterns.max(axis=(1, 2), keepdims=True)).reshape(classes, -1)
    y = rng.choice(classes, n, p=rng.dirichlet(np.full(classes, 3.0)))
    images = np.empty((n, side * side), np.float32)
    for start in range(0, n, 10_000):  # in blocks: the Poisson draws are int64
        cls = y[start : start + 10_000]
        m = cls.size
        contrast = rng.uniform(0.5, 2.5, (m, 1))
        share = rng.uniform(0.0, 0.4, (m, 1))
        expected = rng.lognormal(np.log(counts), 1.0, (m, 1)) * (
            (1 - share) * patterns[cls] ** contrast + share * patterns[rng.integers(0, classes, m)])
        block = rng.poisson(expected).astype(np.float32)
        images[start : start + m] = block / np.maximum(block.max(axis=1, keepdims=True), 1.0)
    features = PCA(dims, svd_solver="randomized", random_state=seed).fit_transform(images).astype(np.float32)
    return features, y


def _child(path: Path, config: str, classes: int) -> dict:
    """Run one configuration on the features in ``path`` (in this fresh process)."""
    import psutil

    import spatialclust as sc
    from spatialclust import _neighbors
    from spatialclust.tl import _cluster

    data = np.load(path)
    X, y = data["X"], data["y"]
    n = X.shape[0]
    if config.endswith("_approx"):
        _neighbors.EXACT_KNN_MAX_IMAGES = 0
    if config.endswith("_exact"):
        _neighbors.EXACT_KNN_MAX_IMAGES = n
    if config == "kmeans_minibatch":
        _cluster.MINIBATCH_KMEANS_MIN_IMAGES = 0
    result: dict = {"config": config, "n": n}
    # imports and NN-descent's one-off numba compilation (when this configuration uses it) are
    # paid before the clock starts and reported as `warmup_seconds`
    import igraph  # noqa: F401
    import leidenalg  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    t0 = time.perf_counter()
    if n > _neighbors.EXACT_KNN_MAX_IMAGES and not config.startswith("kmeans"):
        limit, _neighbors.EXACT_KNN_MAX_IMAGES = _neighbors.EXACT_KNN_MAX_IMAGES, 0
        _neighbors.nearest_neighbors(X[:500], 10)
        _neighbors.EXACT_KNN_MAX_IMAGES = limit
    result["warmup_seconds"] = time.perf_counter() - t0
    process = psutil.Process()
    rss0 = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:  # RSS every 10 ms while the clustering runs (C libraries included)
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if config.startswith("eigengap"):
        _cluster.DENSE_EIGEN_MAX_IMAGES = n if config == "eigengap_dense" else 0
        eig = _cluster.laplacian_eigenvalues(_cluster.knn_affinity(X, n_neighbors=10), n_eigenvalues=31)
        result["n_clusters"] = int(np.argmax(np.diff(eig)) + 1)  # estimate_n_clusters' eigengap
        np.save(path.with_name(f"{path.stem}_{config}.npy"), eig)
        labels = None
    else:
        method, params = {"kmeans": ("kmeans", {"n_clusters": classes}),
                          "leiden": ("leiden", {}), "spectral": ("spectral", {"n_clusters": classes})}[config.split("_")[0]]
        labels = sc.tl.create_clusterer(method, random_state=0, **params).fit(X).labels_
    result["seconds"] = time.perf_counter() - t0
    done.set()
    sampler.join()
    result["peak_extra_mb"] = (max(peak, process.memory_info().rss) - rss0) / 2**20
    if labels is not None:
        result.update(n_clusters=int(np.unique(labels).size), acc=sc.metrics.clustering_accuracy(y, labels),
                      nmi=sc.metrics.nmi(y, labels))
        np.save(path.with_name(f"{path.stem}_{config}.npy"), labels)
    return result


def _run(path: Path, config: str, classes: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               OMP_WAIT_POLICY="PASSIVE")  # no spinning OpenMP threads on a shared machine
    out = subprocess.run([sys.executable, __file__, "--child", str(path), config, str(classes)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{config} on {path.name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {config:18s} n={result['n']:>7d}  {result['seconds']:7.1f} s (+{result['warmup_seconds']:4.1f} s warm-up)"
          f"  +{result['peak_extra_mb']:7.0f} MB"
          + (f"  k={result['n_clusters']:3d}  ACC {result['acc']:.3f}  NMI {result['nmi']:.3f}" if "acc" in result
             else f"  eigengap k={result['n_clusters']}"), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in the large set")
    parser.add_argument("--n-small", type=int, default=10_000, help="images in the small set")
    parser.add_argument("--n-eigen", type=int, default=5_000, help="images for the dense vs sparse eigengap")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--counts", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-spectral", action="store_true", help="skip spectral clustering")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("NPZ", "CONFIG", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(Path(args.child[0]), args.child[1], int(args.child[2]))))
        return

    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"eigen": args.n_eigen, "small": args.n_small, "large": args.n}
        for name, n in sets.items():
            t0 = time.perf_counter()
            X, y = simulate_features(n, classes=args.classes, side=args.side, dims=args.dims, counts=args.counts,
                                     seed=args.seed)
            path = Path(tmp) / f"{name}.npz"
            np.savez(path, X=X, y=y)
            print(f"{name}: {n} images x {args.dims} features simulated in {time.perf_counter() - t0:.1f} s", flush=True)
            if name == "eigen":
                configs = ["eigengap_sparse", "eigengap_dense"]
            else:
                other = "leiden_approx" if name == "small" else "leiden_exact"
                configs = ["kmeans", "kmeans_minibatch", "leiden", other] + ([] if args.no_spectral else ["spectral"])
            rows = [dict(_run(path, c, args.classes, args.threads), set=name) for c in configs]
            if name == "eigen":
                eig = [np.load(path.with_name(f"{path.stem}_{c}.npy")) for c in configs]
                rows[1]["max_eigenvalue_difference"] = float(np.abs(eig[0] - eig[1]).max())
                print(f"  max |eigenvalue difference| = {rows[1]['max_eigenvalue_difference']:.2e}", flush=True)
            else:
                from spatialclust.metrics import ari

                pair = [r["config"] for r in rows if r["config"].startswith("leiden")]
                agree = ari(*(np.load(path.with_name(f"{path.stem}_{c}.npy")) for c in pair))
                rows[configs.index(pair[1])]["ari_vs_leiden"] = agree
                print(f"  ARI({pair[0]}, {pair[1]}) = {agree:.3f}", flush=True)
            results += rows
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("json", "child")},
                                         "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
