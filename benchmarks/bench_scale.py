"""Benchmark: the clustering pipeline in memory vs chunked (dask over a Zarr store), and at whole-slide size.

Every measurement is one ``spatialclust`` command in its own process, timed by ``/usr/bin/time -v``
(wall time and peak resident memory, RSS, of the whole process: interpreter, libraries and data).
The input is the simulated processed (centroid) imzML file of ``benchmarks/_whole_slide.py`` (written
chunk by chunk), binned onto its target m/z.

``compare`` (the same mid-size file both ways, same configuration):

* in memory: ``spatialclust run FILE.imzML`` (the reader bins into a numpy matrix);
* chunked: ``spatialclust convert FILE.imzML FILE.zarr`` once (timed separately), then
  ``spatialclust run FILE.zarr`` (X a dask array over the store; every step streams);

both with the regular embedding reduced to ``--components`` randomized-SVD components and k-means,
and the clusters of the two runs compared (adjusted Rand index; 1.0 = identical). The same
configuration with the full flattened regular images (today's default, in memory only) gives the
clusters the reduction is measured against.

``slide`` (the chunked path at growing size): for every ``--pixels`` value, write the file, convert
it and run it (``--reuse``: on the store a ``--keep`` run left in ``--workdir``); peak RSS should stay
flat as the data grow.

    python benchmarks/bench_scale.py compare --pixels 40000 --bins 2000
    python benchmarks/bench_scale.py slide --pixels 50000 100000 200000 --bins 8000
    python benchmarks/bench_scale.py slide --pixels 500000 --bins 8000      # the whole slide
    python benchmarks/bench_scale.py slide --pixels 500000 --bins 1000 --continuous
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _whole_slide import write_whole_slide  # noqa: E402

CLUSTERS = 20
#: The CLI of the spatialclust this interpreter imports (not whichever `spatialclust` is on PATH).
SPATIALCLUST = [sys.executable, "-m", "spatialclust.cli"]


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command`` under ``/usr/bin/time -v``; its wall time (s) and peak RSS (GB)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(["/usr/bin/time", "-v", *command], stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    text = log.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); see {log}:\n{text[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"seconds": round(wall, 1), "peak_rss_gb": round(rss_kb / 2**20, 3)}


def slide_folder(workdir: Path, n_pixels: int, n_bins: int, continuous: bool) -> Path:
    """Where the files of this size (and mode) lie."""
    return workdir / f"slide_{n_pixels}x{n_bins}{'_continuous' if continuous else ''}"


def slide_file(workdir: Path, n_pixels: int, n_bins: int, seed: int, *, continuous: bool = False):
    """The simulated file of this size (processed, or ``continuous``) and its peak list for ``--peaks``."""
    folder = slide_folder(workdir, n_pixels, n_bins, continuous)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    slide = write_whole_slide(folder / "slide.imzML", n_pixels=n_pixels, n_bins=n_bins, continuous=continuous,
                              seed=seed)
    write_seconds = time.perf_counter() - started
    np.savetxt(folder / "peaks.txt", slide.mz, fmt="%.6f")
    return slide, folder, write_seconds


def reused_store(workdir: Path, n_pixels: int, n_bins: int, continuous: bool) -> tuple[Path, Path] | None:
    """The folder and Zarr store of an earlier ``slide`` run of this size (``--reuse``), or None."""
    folder = slide_folder(workdir, n_pixels, n_bins, continuous)
    store = folder / "slide.zarr"
    return (folder, store) if (store / "X").is_dir() else None


def config(path: Path, input_path: Path, *, read: dict, components: int | None, seed: int) -> Path:
    """Regular embedding (``components`` randomized-SVD components, None: the flattened images) + k-means."""
    params = {} if components is None else {"n_components": components}
    cfg = {
        "seed": seed,
        "input": {"path": str(input_path), "read": read},
        "embedding": [{"method": "regular", "params": params}],
        "cluster": [{"method": "kmeans", "params": {"n_clusters": CLUSTERS}}],
        "report": {"embedding_figures": []},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def convert(slide, folder: Path) -> tuple[Path, dict[str, float]]:
    store = folder / "slide.zarr"
    shutil.rmtree(store, ignore_errors=True)
    command = [*SPATIALCLUST, "convert", str(slide.imzml), str(store), "--peaks", str(folder / "peaks.txt"),
               "--tolerance", str(slide.tolerance), "-q"]
    return store, timed(command, folder / "convert.log")


def run(cfg: Path, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    return timed([*SPATIALCLUST, "run", str(cfg), "--output", str(out), "-q"], out.with_suffix(".log"))


def clusters(out: Path) -> np.ndarray:
    return pd.read_csv(out / "clusters.csv")["cluster_regular_kmeans"].to_numpy()


def svd_agreement(results: Path, components: int, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, float]:
    """k-means (the pipeline's clusterer) on the full flattened regular images vs on their randomized-SVD
    reduction, for several seeds: mean ARI reduced-vs-full next to the seed-to-seed ARI of the full images
    (k-means itself is not unique: the reduction is fine when it agrees with the full images as much as
    two seeds on the full images agree with each other)."""
    import anndata as ad
    import dask.array as da
    from sklearn.metrics import adjusted_rand_score

    import spatialclust as sc
    from spatialclust.tl._embed import RegularEmbedder

    full = np.asarray(ad.read_h5ad(results).varm["X_regular"])
    reduced = RegularEmbedder(n_components=components).fit_transform_pixels(da.from_array(full.T, chunks=(4096, -1)),
                                                                           keep_basis=False)

    def kmeans(X: np.ndarray, seed: int) -> np.ndarray:
        return sc.tl.create_clusterer("kmeans", n_clusters=CLUSTERS, random_state=seed).fit_predict(X)

    on_full = [kmeans(full, s) for s in seeds]
    on_reduced = [kmeans(reduced, s) for s in seeds]
    pairs = [(a, b) for a in range(len(seeds)) for b in range(a + 1, len(seeds))]
    return {
        "ari_reduced_vs_full_same_seed": round(float(np.mean([adjusted_rand_score(f, r) for f, r in zip(on_full, on_reduced)])), 3),
        "ari_full_seed_vs_seed": round(float(np.mean([adjusted_rand_score(on_full[a], on_full[b]) for a, b in pairs])), 3),
        "ari_reduced_seed_vs_seed": round(float(np.mean([adjusted_rand_score(on_reduced[a], on_reduced[b]) for a, b in pairs])), 3),
    }


def compare(args: argparse.Namespace) -> dict:
    from sklearn.metrics import adjusted_rand_score

    slide, folder, write_seconds = slide_file(args.workdir, args.pixels[0], args.bins, args.seed)
    read = {"peaks": slide.mz.tolist(), "tolerance": float(slide.tolerance)}
    store, conversion = convert(slide, folder)
    runs = {
        "in_memory": run(config(folder / "memory.yaml", slide.imzml, read=read, components=args.components,
                                seed=args.seed), folder / "run_memory"),
        "chunked": run(config(folder / "chunked.yaml", store, read={}, components=args.components, seed=args.seed),
                       folder / "run_chunked"),
        "in_memory_full_regular": run(config(folder / "full.yaml", slide.imzml, read=read, components=None,
                                             seed=args.seed), folder / "run_full"),
    }
    memory, chunked, full = (clusters(folder / f"run_{name}") for name in ("memory", "chunked", "full"))
    return {
        "pixels": args.pixels[0], "bins": args.bins, "dense_matrix_gb": round(args.pixels[0] * args.bins * 4 / 2**30, 3),
        "write_imzml_seconds": round(write_seconds, 1), "convert": conversion, **runs,
        "chunked_over_in_memory_time": round(runs["chunked"]["seconds"] / runs["in_memory"]["seconds"], 2),
        "chunked_over_in_memory_time_with_convert": round(
            (runs["chunked"]["seconds"] + conversion["seconds"]) / runs["in_memory"]["seconds"], 2),
        "chunked_over_in_memory_rss": round(runs["chunked"]["peak_rss_gb"] / runs["in_memory"]["peak_rss_gb"], 2),
        "ari_chunked_vs_in_memory": round(float(adjusted_rand_score(memory, chunked)), 4),
        "ari_svd_vs_full_regular_run": round(float(adjusted_rand_score(full, memory)), 4),
        **svd_agreement(folder / "run_full" / "results.h5ad", args.components),
    }


def slide(args: argparse.Namespace) -> list[dict]:
    rows = []
    for n_pixels in args.pixels:
        reused = reused_store(args.workdir, n_pixels, args.bins, args.continuous) if args.reuse else None
        if reused is None:
            slide_, folder, write_seconds = slide_file(args.workdir, n_pixels, args.bins, args.seed,
                                                       continuous=args.continuous)
            store, conversion = convert(slide_, folder)
            written = {"write_imzml_seconds": round(write_seconds, 1), "convert": conversion}
        else:
            folder, store = reused
            written = {"reused_store": str(store)}
        result = run(config(folder / "chunked.yaml", store, read={}, components=args.components, seed=args.seed),
                     folder / "run_chunked")
        rows.append({"pixels": n_pixels, "bins": args.bins, "continuous": args.continuous, "dense_matrix_gb": round(n_pixels * args.bins * 4 / 2**30, 2),
                     **written, "run": result})
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep and reused is None:  # a reused store stays
            shutil.rmtree(folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["compare", "slide"])
    parser.add_argument("--pixels", type=int, nargs="+", default=[40_000])
    parser.add_argument("--bins", type=int, default=2_000)
    parser.add_argument("--components", type=int, default=50, help="randomized-SVD components of the regular embedding")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the files of every size (slide mode)")
    parser.add_argument("--reuse", action="store_true",
                        help="slide mode: run on the Zarr store a kept earlier run wrote in --workdir, if any")
    parser.add_argument("--continuous", action="store_true",
                        help="slide mode: a continuous imzML (one shared m/z axis) instead of a processed one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    result = compare(args) if args.mode == "compare" else slide(args)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
