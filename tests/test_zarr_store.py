"""The chunked Zarr store of an imzML file (issue 14 item 1): the same data as the in-memory
reader, lazy, reused only for the same file and binning, never left half-written."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import anndata as ad
import dask.array as da
import numpy as np
import pytest
import zarr
from pyimzml.ImzMLParser import ImzMLParser
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust.cli import app
from spatialclust.io import _imzml

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _whole_slide_module():
    spec = importlib.util.spec_from_file_location("_whole_slide", ROOT / "benchmarks" / "_whole_slide.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A processed file of 300 spectra x 120 target m/z on a 18 x 17 grid (last row partial)."""
    path = tmp_path_factory.mktemp("slide") / "slide.imzML"
    return _whole_slide_module().write_whole_slide(path, n_pixels=300, n_bins=120, peaks_per_spectrum=30,
                                                   n_regions=3, chunk=64)


def read(slide, **kwargs):
    return sc.io.read_imzml(slide.imzml, peaks=slide.mz, tolerance=slide.tolerance, **kwargs)


def assert_same(lazy, eager):
    assert isinstance(lazy.X, da.Array)
    np.testing.assert_array_equal(lazy.X.compute(), eager.X)
    assert lazy.X.dtype == eager.X.dtype == np.float32
    np.testing.assert_array_equal(lazy.obsm["spatial"], eager.obsm["spatial"])
    assert lazy.obs.equals(eager.obs) and lazy.var.equals(eager.var)
    assert lazy.uns["grid"] == eager.uns["grid"]
    assert {k: v for k, v in lazy.uns["source"].items() if k != "store"} == eager.uns["source"]


def test_whole_slide_writer_read_by_pyimzml(slide):
    parser = ImzMLParser(str(slide.imzml))
    try:
        assert len(parser.coordinates) == 300
        mz, inten = parser.getspectrum(7)
        counts = parser.mzLengths
    finally:
        parser.m.close()
    adata = read(slide, verify_checksum=True)  # the declared SHA-1 matches
    row = adata.X[7]
    assert np.count_nonzero(row) == len(mz) and np.allclose(row[row > 0], inten)
    assert adata.uns["grid"]["shape"] == list(slide.shape) and 15 < np.mean(counts) < 45
    assert len(np.unique(slide.labels)) == 3


@pytest.mark.parametrize("chunks", [(64, 16), (1000, 1000)])
def test_store_round_trip_equals_in_memory_read(slide, tmp_path, chunks):
    eager = read(slide, chunk_size=50)
    store = tmp_path / "slide.zarr"
    lazy = read(slide, store=store, store_chunks=chunks, chunk_size=50)
    assert_same(lazy, eager)
    assert lazy.uns["source"]["store"] == str(store)
    assert zarr.open_group(store, mode="r")["X"].chunks == tuple(min(c, s) for c, s in zip(chunks, eager.shape))
    # the store is an AnnData Zarr store: anndata reads it as it is
    plain = ad.read_zarr(store)
    np.testing.assert_array_equal(plain.X, eager.X)
    assert plain.obs.equals(eager.obs)
    # one ion image and one block of spectra, lazily
    np.testing.assert_array_equal(lazy.X[:, 5].compute(), eager.X[:, 5])
    np.testing.assert_array_equal(lazy.X[10:80].compute(), eager.X[10:80])


def test_continuous_and_regular_bins(tmp_path):
    ws = _whole_slide_module()
    cont = ws.write_whole_slide(tmp_path / "cont.imzML", n_pixels=90, n_bins=40, continuous=True,
                                peaks_per_spectrum=10, chunk=32)
    assert_same(sc.io.read_imzml(cont.imzml, store=tmp_path / "native.zarr"), sc.io.read_imzml(cont.imzml))
    kwargs = {"bin_width": 20.0, "bin_unit": "Da", "mz_range": (300.0, 800.0)}
    assert_same(sc.io.read_imzml(cont.imzml, store=tmp_path / "regular.zarr", **kwargs),
                sc.io.read_imzml(cont.imzml, **kwargs))


def test_reuse_and_mismatch(slide, tmp_path, monkeypatch):
    store = tmp_path / "slide.zarr"
    first = read(slide, store=store)
    calls = []
    monkeypatch.setattr(_imzml, "parse_index", lambda *a, **k: calls.append(a) or pytest.fail("re-read"))
    again = read(slide, store=store)  # same file, same binning: reused without reading the imzML
    assert not calls
    np.testing.assert_array_equal(again.X.compute(), first.X.compute())
    monkeypatch.undo()

    with pytest.raises(ValueError, match=r"other parameters.*`tolerance`: store 0\.0025, now 0\.003.*overwrite_store"):
        sc.io.read_imzml(slide.imzml, peaks=slide.mz, tolerance=0.003, store=store)
    with pytest.raises(ValueError, match=r"`peaks`"):
        sc.io.read_imzml(slide.imzml, peaks=slide.mz[:-1], tolerance=slide.tolerance, store=store)
    rebuilt = sc.io.read_imzml(slide.imzml, peaks=slide.mz, tolerance=0.003, store=store, overwrite_store=True)
    assert rebuilt.uns["source"]["tolerance"] == 0.003

    # the source file changed (same size, new modification time): never reused silently
    stat = slide.imzml.stat()
    os.utime(slide.imzml, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(ValueError, match=r"`imzml_mtime_ns`"):
            sc.io.read_imzml(slide.imzml, peaks=slide.mz, tolerance=0.003, store=store)
    finally:
        os.utime(slide.imzml, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_foreign_directory_never_replaced(slide, tmp_path):
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a spatialclust imzML store"):
            read(slide, store=other, overwrite_store=overwrite)
    assert (other / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError, match="sparse=True"):
        read(slide, store=tmp_path / "s.zarr", sparse=True)
    with pytest.raises(ValueError, match="store_chunks"):
        read(slide, store=tmp_path / "s.zarr", store_chunks=(0, 5))


def test_failed_conversion_leaves_no_store(slide, tmp_path, monkeypatch):
    store = tmp_path / "slide.zarr"
    original = _imzml._Spectra.bin

    def fail_midway(self, spectra, bins, shared_col, *, put, **kwargs):
        def put_then_fail(start, *args):
            put(start, *args)
            if start > 0:
                raise OSError("disk full (simulated)")
        return original(self, spectra, bins, shared_col, put=put_then_fail, **kwargs)

    monkeypatch.setattr(_imzml._Spectra, "bin", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        read(slide, store=store, chunk_size=64)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary
    monkeypatch.undo()
    # a corrupt value found late: no store either, and the next run builds a complete one
    assert_same(read(slide, store=store), read(slide))


def test_sc_io_read_opens_a_store(slide, tmp_path):
    store = tmp_path / "slide.zarr"
    read(slide, store=store)
    assert sc.io.is_imzml_store(store) and not sc.io.is_imzml_store(tmp_path)
    assert_same(sc.io.read(store), read(slide))
    with pytest.raises(ValueError, match="not a spatialclust imzML store"):
        sc.io.read_imzml_store(tmp_path)
    with pytest.raises(ValueError, match=r"reader options \['bin_width'\] do not apply"):
        sc.io.read(store, bin_width=5)


def test_cli_convert(slide, tmp_path):
    peaks = tmp_path / "peaks.txt"
    np.savetxt(peaks, slide.mz)
    store = tmp_path / "out.zarr"
    args = ["convert", str(slide.imzml), str(store), "--peaks", str(peaks), "--tolerance", str(slide.tolerance),
            "--chunks", "64,32", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "300 spectra x 120 m/z" in result.output
    np.testing.assert_array_equal(sc.io.read(store).X.compute(), read(slide).X)
    assert runner.invoke(app, args).exit_code == 0  # reused

    changed = runner.invoke(app, [*args[:6], "0.003", *args[7:]])
    assert changed.exit_code == 1 and "--overwrite" in changed.output
    assert runner.invoke(app, [*args[:6], "0.003", *args[7:], "--overwrite"]).exit_code == 0

    bad = runner.invoke(app, ["convert", str(slide.imzml), str(tmp_path / "b.zarr"), "--chunks", "64", "-q"])
    assert bad.exit_code == 1 and "--chunks" in bad.output
    half = runner.invoke(app, ["convert", str(slide.imzml), str(tmp_path / "c.zarr"), "--mz-min", "200", "-q"])
    assert half.exit_code == 1 and "--mz-max" in half.output


@pytest.mark.parametrize("cells_per_value", [0, 10**9])  # always the runs of equal cells / always bincount
def test_both_binning_paths_identical(slide, tmp_path, monkeypatch, cells_per_value):
    expected = read(slide)
    monkeypatch.setattr(_imzml, "_DENSE_CELLS_PER_VALUE", cells_per_value)
    for kwargs in ({"chunk_size": 37}, {"bin_width": 3.0, "bin_unit": "Da", "peaks": None}):
        args = {"peaks": slide.mz, "tolerance": slide.tolerance, **kwargs}
        dense = sc.io.read_imzml(slide.imzml, **args)
        if "bin_width" not in kwargs:
            np.testing.assert_array_equal(dense.X, expected.X)
        np.testing.assert_array_equal(sc.io.read_imzml(slide.imzml, sparse=True, **args).X.toarray(), dense.X)
        store = tmp_path / f"{len(kwargs)}{cells_per_value}.zarr"
        np.testing.assert_array_equal(sc.io.read_imzml(slide.imzml, store=store, store_chunks=(50, 16), **args).X, dense.X)
