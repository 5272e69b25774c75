"""Benchmark: binning a processed imzML file with ``read_imzml`` vs pyimzml's ``getionimage``.

Builds a simulated processed (centroid) imzML file of ``--size`` x ``--size`` pixels whose spectra
hold a random subset of ``--n-mz`` target peaks (with m/z jitter) plus noise peaks, then

* ``read_imzml(path, peaks=targets, tolerance=tol)``: one streaming pass, vectorised binning;
* the baseline: ``pyimzml.ImzMLParser.getionimage(parser, mz, tol)`` for each target m/z
  (one full pass over the file per ion). It is timed on ``--baseline-mz`` of the targets and
  scaled linearly to all of them (each call is one identical pass, so time is linear in m/z).

Both run in the same process; images are compared for the m/z the baseline computed.
Peak memory is measured with ``tracemalloc`` (NumPy allocations included) in a second,
untimed call of each method.

Reader speed (``--reader-only``, same file, same run, warm page cache, best of ``--repeat``; wall
and process CPU time):

* ``raw_ibd_read``: reading the ``.ibd`` bytes once (``Path.read_bytes``), the floor;
* ``read_imzml`` with and without the SHA-1 check (compiled XML scanner + compiled binner over
  the memory-mapped ``.ibd``), and ``before_*``: ``read_imzml`` of another source tree
  (``--baseline-src``, e.g. main before a change) in a child process on the same file;
* ``pyimzml_reader``: pyimzml's ``ImzMLParser`` (XML) + ``getspectrum`` per spectrum, binned
  the same way (one ``np.bincount`` per chunk); must give identical data;
* the XML index alone (``parse_index``: compiled scanner, its general parser, pyimzml's
  ``ImzMLParser``) and the binning alone;
* the first call in a fresh process with an empty numba cache (compiling) and with the cache.

``--file-dir`` keeps the simulated file (and reuses it on the next run).

    python benchmarks/bench_imzml.py                 # 200 x 200 pixels, 1,000 m/z
    python benchmarks/bench_imzml.py --size 60 --n-mz 200 --baseline-mz 10   # quick
    python benchmarks/bench_imzml.py --reader-only --repeat 3 --json reader.json  # reader speed only

Zarr store (``--store``): a simulated whole-slide processed file (``_whole_slide.py``, written
chunk by chunk) of ``--pixels`` spectra binned onto ``--n-bins`` peak windows is converted to a
chunked Zarr store (``read_imzml(..., store=...)``) in a child process, whose wall time and peak
resident memory (``VmHWM``; ``ru_maxrss`` off Linux) are reported next to one raw read of the ``.ibd``; then the
load time of single ion images and of one block of spectra from the store (directly with zarr,
and through the lazy dask ``X``), and the time to reopen (reuse) the store:

    python benchmarks/bench_imzml.py --store --pixels 500000 --n-bins 8000 --json store.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def make_file(path: Path, *, size: int, n_mz: int, noise_peaks: int, seed: int) -> np.ndarray:
    """Write the simulated processed imzML; returns the target m/z list."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    spacing = 700 / n_mz
    targets = 300 + spacing * (np.arange(n_mz) + rng.uniform(0.1, 0.9, n_mz))  # windows never overlap
    abundance = rng.lognormal(2, 1, len(targets))
    with ImzMLWriter(str(path), mode="processed", mz_dtype=np.float64, intensity_dtype=np.float32) as writer:
        for y in range(size):
            for x in range(size):
                present = rng.random(len(targets)) < 0.6
                mz = np.concatenate(
                    [
                        targets[present] + rng.uniform(-5e-4, 5e-4, present.sum()),
                        # noise: at least two peaks below all targets, so that pyimzml's
                        # getionimage edge case (first m/z above the window) never occurs
                        [100.0, 150.0],
                        rng.uniform(100, 1100, noise_peaks),
                    ]
                )
                inten = np.concatenate(
                    [rng.poisson(abundance[present]) + 1.0, rng.exponential(1.0, noise_peaks + 2)]
                )
                order = np.argsort(mz)
                writer.addSpectrum(mz[order], inten[order].astype(np.float32), (x + 1, y + 1, 1))
    return targets


def timed(func, *args):
    """Wall time of ``func(*args)`` and, in a second call under tracemalloc, its peak memory."""
    t0 = time.perf_counter()
    result = func(*args)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    func(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def ours(path: Path, targets: np.ndarray, tol: float):
    import spatialclust as sc

    return sc.io.read_imzml(path, peaks=targets, tolerance=tol, tolerance_unit="Da")


def baseline(path: Path, targets: np.ndarray, tol: float) -> np.ndarray:
    from pyimzml.ImzMLParser import ImzMLParser, getionimage

    parser = ImzMLParser(str(path))
    try:
        return np.stack([getionimage(parser, mz, tol=tol) for mz in targets])
    finally:
        parser.m.close()


def pyimzml_reader(path: Path, targets: np.ndarray, tol: float, chunk: int = 1024) -> np.ndarray:
    """The previous ``read_imzml``: pyimzml parses the XML and reads every spectrum; chunked bincount."""
    from pyimzml.ImzMLParser import ImzMLParser

    lower, upper = targets - tol, targets + tol
    parser = ImzMLParser(str(path))
    try:
        n, n_bins = len(parser.coordinates), len(targets)
        X = np.zeros((n, n_bins), dtype=np.float32)
        for start in range(0, n, chunk):
            mzs, ints, rows = [], [], []
            for local, i in enumerate(range(start, min(start + chunk, n))):
                mz, inten = parser.getspectrum(i)
                mzs.append(mz)
                ints.append(inten)
                rows.append(np.full(inten.size, local, dtype=np.int64))
            mz, inten, row = np.concatenate(mzs), np.concatenate(ints).astype(np.float64), np.concatenate(rows)
            idx = np.searchsorted(lower, mz, side="right") - 1
            ok = idx >= 0
            ok[ok] = mz[ok] <= upper[idx[ok]]
            k = min(chunk, n - start)
            X[start : start + k] = np.bincount(row[ok] * n_bins + idx[ok], weights=inten[ok],
                                               minlength=k * n_bins).reshape(k, n_bins)
        return X
    finally:
        parser.m.close()


_FIRST_CALLS = """
import sys, time
import numpy as np
import spatialclust as sc
from spatialclust._logging import settings
settings["show_progress_bar"] = False
times = []
for _ in range(2):
    t0 = time.perf_counter()
    sc.io.read_imzml(sys.argv[1], peaks=np.load(sys.argv[2]), tolerance=float(sys.argv[3]), verify_checksum=False)
    times.append(time.perf_counter() - t0)
print(*times)
"""

_BEST_OF = """
import sys, time
import numpy as np
import spatialclust as sc
from spatialclust._logging import settings
settings["show_progress_bar"] = False
out = []
for verify in (False, True):
    times, cpu = [], []
    for _ in range(int(sys.argv[4])):
        t0, c0 = time.perf_counter(), time.process_time()
        sc.io.read_imzml(sys.argv[1], peaks=np.load(sys.argv[2]), tolerance=float(sys.argv[3]), verify_checksum=verify)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out += [min(times), min(cpu)]
print(*out)
"""


def _child(script: str, *args, env: dict | None = None) -> list[float]:
    """Run ``script`` in a fresh Python process; the numbers it prints."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return [float(v) for v in out]


def reader_speed(path: Path, targets: np.ndarray, tol: float, repeat: int, baseline_src: Path | None = None) -> dict:
    """Spectra/s of the readers and their time as a multiple of one raw read of the .ibd bytes.

    ``baseline_src``: a ``src`` folder of another version of spatialclust (e.g. main before a
    change), whose ``read_imzml`` is timed on the same file in a child process ("before").
    """
    import hashlib

    from pyimzml.ImzMLParser import ImzMLParser

    import spatialclust as sc
    from spatialclust.io._imzml import _DenseRows, _Spectra, peak_bins
    from spatialclust.io._imzml_index import check_binary, parse_index

    ibd = path.with_suffix(".ibd")
    np.save(path.with_suffix(".targets.npy"), targets)

    cpu = {}  # process CPU time (all threads) of the best run of each method: less sensitive to the load

    def best(func, name=None):
        times, cpu_times = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            out = func()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        if name:
            cpu[name] = min(cpu_times)
        return out, min(times)

    with tempfile.TemporaryDirectory() as cache:  # first calls: compiling (empty cache), then loading the cache
        t_cold = _child(_FIRST_CALLS, path, path.with_suffix(".targets.npy"), tol, env={"NUMBA_CACHE_DIR": cache})
        t_cached = _child(_FIRST_CALLS, path, path.with_suffix(".targets.npy"), tol, env={"NUMBA_CACHE_DIR": cache})
    ibd.read_bytes()  # warm the page cache for every method alike
    sc.io.read_imzml(path, peaks=targets, tolerance=tol, verify_checksum=False)  # and the compiled code
    _, t_raw = best(ibd.read_bytes, "raw")
    new, t_new = best(lambda: sc.io.read_imzml(path, peaks=targets, tolerance=tol, verify_checksum=False), "new")
    _, t_new_sha = best(lambda: sc.io.read_imzml(path, peaks=targets, tolerance=tol, verify_checksum=True), "sha")
    before = None
    if baseline_src is not None:
        before = _child(_BEST_OF, path, path.with_suffix(".targets.npy"), tol, repeat,
                        env={"PYTHONPATH": str(baseline_src)})
    old, t_old = best(lambda: pyimzml_reader(path, targets, tol))
    _, t_sha1 = best(lambda: hashlib.sha1(ibd.read_bytes()).hexdigest())
    index, t_index = best(lambda: parse_index(path), "index")
    general, t_index_general = best(lambda: parse_index(path, compiled=False), "general")
    check_binary(index, path, ibd)
    bins = peak_bins(targets, tol, "Da")

    def binning():
        sink = _DenseRows((index.n_spectra, len(targets)))
        _Spectra(index, ibd, path).bin(np.arange(index.n_spectra), bins, None, chunk_size=1024, negative="error",
                                       put=sink.put, rows=sink.rows)
        return sink.result()

    binned, t_binning = best(binning, "binning")

    def pyimzml_index():
        ImzMLParser(str(path)).m.close()

    _, t_pyimzml_index = best(pyimzml_index)
    n = index.n_spectra
    result = {
        "spectra": n,
        "ibd_MB": round(ibd.stat().st_size / 1e6, 1),
        "xml_MB": round(path.stat().st_size / 1e6, 1),
        "repeat": repeat,
        "raw_ibd_read_s": round(t_raw, 3),
        "read_imzml_s": round(t_new, 3),
        "read_imzml_sha1_s": round(t_new_sha, 3),
        "pyimzml_reader_s": round(t_old, 3),
        "sha1_of_ibd_s": round(t_sha1, 3),
        "xml_index_s": round(t_index, 3),
        "xml_index_general_parser_s": round(t_index_general, 3),
        "pyimzml_xml_index_s": round(t_pyimzml_index, 3),
        "binning_s": round(t_binning, 3),
        "first_call_compiling_s": round(t_cold[0], 2),
        "first_call_cached_s": round(t_cached[0], 2),
        "second_call_s": round(t_cached[1], 2),
        "read_imzml_spectra_per_s": round(n / t_new),
        "read_imzml_sha1_spectra_per_s": round(n / t_new_sha),
        "pyimzml_reader_spectra_per_s": round(n / t_old),
        "read_imzml_x_raw_read": round(t_new / t_raw, 2),
        "read_imzml_sha1_x_raw_read": round(t_new_sha / t_raw, 2),
        "xml_index_x_raw_read": round(t_index / t_raw, 2),
        "binning_x_raw_read": round(t_binning / t_raw, 2),
        "pyimzml_reader_x_raw_read": round(t_old / t_raw, 2),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_x_raw_read": {k: round(v / cpu["raw"], 2) for k, v in cpu.items()},
        "identical_to_pyimzml_reader": bool(np.array_equal(new.X, old)),
        "binning_alone_identical": bool(np.array_equal(binned, new.X)),
        "index_equal_to_general_parser": all(
            np.array_equal(getattr(index, f), getattr(general, f)) for f in ("mz_offset", "mz_length", "int_offset",
                                                                             "int_length", "coords")),
    }
    if before is not None:
        result.update({
            "before_read_imzml_s": round(before[0], 3),
            "before_spectra_per_s": round(n / before[0]), "before_x_raw_read": round(before[0] / t_raw, 2),
            "before_sha1_x_raw_read": round(before[2] / t_raw, 2), "before_sha1_read_imzml_s": round(before[2], 3),
            "before_cpu_x_raw_read": round(before[1] / cpu["raw"], 2),
            "before_sha1_cpu_x_raw_read": round(before[3] / cpu["raw"], 2),
        })
    return result


_CONVERT = """
import resource, sys, time
import numpy as np
import spatialclust as sc
from spatialclust._logging import settings
settings["show_progress_bar"] = False
t0 = time.perf_counter()
adata = sc.io.read_imzml(sys.argv[1], peaks=np.load(sys.argv[2]), tolerance=float(sys.argv[3]), store=sys.argv[4],
                         verify_checksum=False)
try:  # the high-water mark of this process's own memory (ru_maxrss also counts the parent's, copied at fork)
    peak_kb = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(time.perf_counter() - t0, peak_kb, adata.n_obs, adata.n_vars)
"""


def store_speed(tmp: Path, *, pixels: int, n_bins: int, peaks_per_spectrum: int, repeat: int) -> dict:
    """Convert a simulated whole-slide file to a Zarr store; time ion images and blocks of spectra from it."""
    import subprocess
    import sys

    import zarr

    import spatialclust as sc
    from _whole_slide import write_whole_slide

    t0 = time.perf_counter()
    slide = write_whole_slide(tmp / "slide.imzML", n_pixels=pixels, n_bins=n_bins,
                              peaks_per_spectrum=peaks_per_spectrum)
    t_write = time.perf_counter() - t0
    ibd = slide.imzml.with_suffix(".ibd")
    np.save(tmp / "mz.npy", slide.mz)
    store = tmp / "slide.zarr"
    t0 = time.perf_counter()
    ibd.read_bytes()
    t_raw = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", _CONVERT, str(slide.imzml), str(tmp / "mz.npy"), str(slide.tolerance),
                          str(store)], check=True, capture_output=True, text=True).stdout.split()
    t_convert, rss_kb = float(out[0]), int(out[1])
    t0 = time.perf_counter()
    adata = sc.io.read(store)  # reuse: opens the store, reads no spectrum
    t_open = time.perf_counter() - t0
    X = zarr.open_group(store, mode="r")["X"]
    rng = np.random.default_rng(0)
    ions = rng.choice(n_bins, size=repeat, replace=False)
    t_ion = []
    t_ion_dask = []
    for j in ions:
        t0 = time.perf_counter()
        direct = X[:, int(j)]
        t_ion.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lazy = adata.X[:, int(j)].compute()
        t_ion_dask.append(time.perf_counter() - t0)
        assert np.array_equal(direct, lazy)
    rows = X.chunks[0]
    t_block = []
    for b in rng.choice(pixels // rows, size=min(repeat, pixels // rows), replace=False):
        t0 = time.perf_counter()
        adata.X[int(b) * rows : (int(b) + 1) * rows].compute()
        t_block.append(time.perf_counter() - t0)
    store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    return {
        "pixels": pixels, "n_bins": n_bins, "peaks_per_spectrum": peaks_per_spectrum,
        "ibd_GB": round(ibd.stat().st_size / 1e9, 2), "xml_GB": round(slide.imzml.stat().st_size / 1e9, 2),
        "dense_float32_GB": round(pixels * n_bins * 4 / 1e9, 1), "store_GB": round(store_bytes / 1e9, 2),
        "chunks": list(X.chunks), "write_whole_slide_s": round(t_write, 1),
        "raw_ibd_read_s": round(t_raw, 2), "convert_s": round(t_convert, 1),
        "convert_x_raw_read": round(t_convert / t_raw, 1), "convert_spectra_per_s": round(pixels / t_convert),
        "convert_peak_rss_GB": round(rss_kb / 1e6, 2), "reopen_store_s": round(t_open, 2),
        "ion_image_zarr_s_median": round(float(np.median(t_ion)), 3), "ion_image_zarr_s_max": round(max(t_ion), 3),
        "ion_image_dask_s_median": round(float(np.median(t_ion_dask)), 3),
        "ion_image_dask_s_max": round(max(t_ion_dask), 3),
        f"block_of_{rows}_spectra_dask_s_median": round(float(np.median(t_block)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200, help="image width = height in pixels")
    parser.add_argument("--n-mz", type=int, default=1000, help="number of target m/z to bin")
    parser.add_argument("--noise-peaks", type=int, default=200, help="noise peaks per spectrum")
    parser.add_argument("--baseline-mz", type=int, default=20, help="target m/z the baseline computes")
    parser.add_argument("--tolerance", type=float, default=0.002, help="window half-width in Da")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="reader timings: best of this many runs")
    parser.add_argument("--reader-only", action="store_true", help="only the reader speed comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--store", action="store_true", help="only the Zarr store benchmark (whole-slide file)")
    parser.add_argument("--pixels", type=int, default=500_000, help="--store: spectra of the whole-slide file")
    parser.add_argument("--n-bins", type=int, default=8_000, help="--store: target m/z (features)")
    parser.add_argument("--peaks-per-spectrum", type=int, default=300, help="--store: mean peaks per spectrum")
    parser.add_argument("--tmp", type=Path, help="--store: folder for the files (default: a temporary one)")
    parser.add_argument("--file-dir", type=Path,
                        help="reader: write the simulated file here and reuse it when it is there already")
    parser.add_argument("--baseline-src", type=Path,
                        help="reader: also time read_imzml of this other spatialclust src folder (before a change)")
    args = parser.parse_args()

    from spatialclust._logging import settings

    settings["show_progress_bar"] = False
    if args.store:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            result = {"store": store_speed(Path(tmp), pixels=args.pixels, n_bins=args.n_bins,
                                           peaks_per_spectrum=args.peaks_per_spectrum, repeat=max(args.repeat, 5))}
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.file_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"bench_{args.size}_{args.n_mz}_{args.noise_peaks}_{args.seed}.imzML"
        t0 = time.perf_counter()
        if path.with_suffix(".targets.npy").is_file():
            targets = np.load(path.with_suffix(".targets.npy"))
            print(f"reusing {path}")
        else:
            targets = make_file(path, size=args.size, n_mz=args.n_mz, noise_peaks=args.noise_peaks, seed=args.seed)
            print(f"wrote {path.name}: {args.size}x{args.size} px, {len(targets)} target m/z, "
                  f"{(path.with_suffix('.ibd').stat().st_size) / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
        reader = reader_speed(path, targets, args.tolerance, args.repeat, args.baseline_src)
        print(json.dumps({"reader": reader}, indent=2))
        if args.reader_only:
            if args.json:
                args.json.write_text(json.dumps({"reader": reader}, indent=2))
            return
        adata, t_ours, mem_ours = timed(ours, path, targets, args.tolerance)
        import spatialclust as sc

        images = sc.pp.feature_images(adata)  # the same (n_mz, H, W) layout as the baseline, untimed
        pick = np.linspace(0, len(targets) - 1, min(args.baseline_mz, len(targets))).astype(int)
        base, t_base_part, mem_base = timed(baseline, path, targets[pick], args.tolerance)
    t_base = t_base_part * len(targets) / len(pick)
    identical = bool(np.array_equal(images[pick], base.astype(np.float32)))
    max_diff = float(np.abs(images[pick] - base).max())
    result = {
        "pixels": args.size**2,
        "n_mz": int(len(targets)),
        "read_imzml_s": round(t_ours, 2),
        "getionimage_s_measured": round(t_base_part, 2),
        "getionimage_mz_measured": int(len(pick)),
        "getionimage_s_all_mz": round(t_base, 1),
        "speedup": round(t_base / t_ours, 1),
        "read_imzml_peak_MB": round(mem_ours / 1e6, 1),
        "output_matrix_MB": round(args.size**2 * len(targets) * 4 / 1e6, 1),
        "getionimage_peak_MB": round(mem_base / 1e6, 1),
        "identical_images": identical,
        "max_abs_diff": max_diff,
        "reader": reader,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
