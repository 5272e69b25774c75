"""Benchmark: an image embedder on a chunked X (images a batch at a time) vs in memory, same data.

One preprocessed dataset (a simulated MSI of ``--side`` x ``--side`` pixels and ``--bins`` ion
images, preprocessed with the default TIC / winsorise / scale) is written once as a Zarr array
chunked like a converted store (65,536 pixels x 64 m/z) plus its metadata. Then, each in its own
process, ``sc.tl.embed(adata, METHOD, ...)`` runs

* in memory: ``X`` read from the array into a numpy matrix (the embedder gets the whole image stack);
* chunked: ``X`` a dask array over the array (images built, conditioned and embedded a batch at a time);

and the process reports the wall time of the embedding and its peak resident memory (RSS) while it
ran: the peak is reset (``/proc/self/clear_refs``) after ``X`` is loaded, so it is the data held
plus what the embedding adds. The two embeddings are compared (largest absolute difference).

    python benchmarks/bench_scale_embed.py --side 400 --bins 1000 --method neural --backbone test_tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Chunks of the written array: a converted store's (pixels, m/z) blocks.
CHUNKS = (65536, 64)


def prepare(folder: Path, side: int, n_bins: int, seed: int) -> None:
    """Simulate, preprocess and write ``X.zarr`` + ``meta.h5ad`` (everything but X) once."""
    import anndata as ad
    import zarr

    import spatialclust as sc

    if (folder / "meta.h5ad").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    n_patterns = 20
    adata = sc.datasets.simulate_msi(shape=(side, side), n_patterns=n_patterns, n_ions=int(n_bins * 0.9),
                                     n_matrix_ions=n_bins - int(n_bins * 0.9), seed=seed)
    sc.pp.preprocess_ion_images(adata, keep_raw=False)
    X = zarr.create_array(store=str(folder / "X.zarr"), shape=adata.shape, chunks=CHUNKS, dtype="float32")
    X[:] = np.asarray(adata.X, dtype=np.float32)
    ad.AnnData(obs=adata.obs, var=adata.var, obsm=dict(adata.obsm), uns=dict(adata.uns)).write_h5ad(folder / "meta.h5ad")


def _status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def embed(folder: Path, mode: str, method: str, params: dict) -> dict:
    """One embedding in this process: its seconds and peak RSS (GiB) after X was loaded."""
    import anndata as ad
    import dask.array as da
    import zarr

    import spatialclust as sc

    meta = ad.read_h5ad(folder / "meta.h5ad")
    array = zarr.open_array(str(folder / "X.zarr"), mode="r")
    X = da.from_zarr(array, chunks=CHUNKS) if mode == "chunked" else array[:]
    adata = ad.AnnData(X=X, obs=meta.obs, var=meta.var, obsm=dict(meta.obsm), uns=dict(meta.uns))
    if method != "regular":  # torch and the network are held by both runs: loaded before the baseline
        from spatialclust.models import create_backbone

        create_backbone(params["backbone"])
    rss_before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: measure the embedding from here
    start = time.perf_counter()
    sc.tl.embed(adata, method, **params)
    seconds = time.perf_counter() - start
    np.save(folder / f"embedding_{mode}.npy", adata.varm[f"X_{method}"])
    return {"seconds": round(seconds, 1), "rss_before_gb": round(rss_before, 3), "peak_rss_gb": round(_status("VmHWM"), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=400, help="grid side in pixels (side^2 pixels)")
    parser.add_argument("--bins", type=int, default=1000, help="ion images (m/z bins)")
    parser.add_argument("--method", default="neural", choices=["neural", "regular", "simclr"])
    parser.add_argument("--backbone", default="test_tiny")
    parser.add_argument("--params", default="{}", help="more embedder parameters, as JSON")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale_embed"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", choices=["memory", "chunked"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.workdir / f"sim_{args.side}x{args.bins}_{args.seed}"
    params = {**({"backbone": args.backbone} if args.method != "regular" else {}), **json.loads(args.params)}
    if args.child is not None:
        print(json.dumps(embed(folder, args.child, args.method, params)))
        return
    started = time.perf_counter()
    prepare(folder, args.side, args.bins, args.seed)
    prepare_seconds = time.perf_counter() - started
    runs = {}
    for mode in ("memory", "chunked"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode], check=True,
                             capture_output=True, text=True)
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    memory, chunked = (np.load(folder / f"embedding_{mode}.npy") for mode in ("memory", "chunked"))
    result = {
        "pixels": args.side**2, "bins": args.bins, "method": args.method, "params": params,
        "image_stack_gb": round(args.side**2 * args.bins * 4 / 2**30, 3), "prepare_seconds": round(prepare_seconds, 1),
        **runs,
        "chunked_over_memory_time": round(runs["chunked"]["seconds"] / runs["memory"]["seconds"], 2),
        "chunked_over_memory_peak_rss": round(runs["chunked"]["peak_rss_gb"] / runs["memory"]["peak_rss_gb"], 2),
        "max_abs_difference": float(np.abs(memory - chunked).max()),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
