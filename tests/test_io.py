"""imzML and image-stack I/O, including every bad-input case of the foundation issue."""

from __future__ import annotations

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser, getionimage

import spatialclust as sc
from spatialclust.io import ImzMLError

from .conftest import shared_data

MZ = np.array([400.1, 401.1034, 500.2, 600.3, 700.4])


@pytest.fixture()
def stack():
    rng = np.random.default_rng(0)
    return rng.poisson(3, size=(len(MZ), 6, 7)).astype(np.float32)


@pytest.fixture()
def adata(stack):
    return sc.io.images_to_adata(stack, mz=MZ, pixel_size=20.0)


def write(adata, tmp_path, mode="continuous", name="data"):
    return sc.io.write_imzml(adata, tmp_path / f"{name}.imzML", mode=mode)


def test_images_to_adata_layout(stack):
    mask = np.ones(stack.shape[1:], dtype=bool)
    mask[0, 0] = False
    a = sc.io.images_to_adata(stack, mz=MZ, mask=mask)
    assert a.shape == (stack.shape[1] * stack.shape[2] - 1, len(MZ))
    x, y = a.obsm["spatial"][3]
    np.testing.assert_array_equal(a.X[3], stack[:, y, x])
    assert a.uns["grid"]["shape"] == [6, 7]
    assert list(a.var["mz"]) == list(MZ)
    assert a.var_names[0] == "mz-400.1000"


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_imzml_round_trip_peaks(adata, tmp_path, mode):
    path = write(adata, tmp_path, mode)
    back = sc.io.read_imzml(path, peaks=MZ, tolerance=0.01)
    np.testing.assert_allclose(back.X, adata.X)
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
    assert back.uns["grid"] == {"shape": [6, 7], "pixel_size": 20.0}
    assert back.uns["source"]["mode"] == mode
    np.testing.assert_allclose(back.obs["tic"], adata.X.sum(1))


def test_binning_matches_getionimage(adata, tmp_path):
    """The streaming binning gives exactly pyimzml's per-m/z images.

    (Continuous mode: in processed files pyimzml's ``getionimage`` wrongly returns a spectrum's
    first intensity when its first m/z lies above the window; see benchmarks/bench_imzml.py.)
    """
    path = write(adata, tmp_path, "continuous")
    back = sc.io.read_imzml(path, peaks=MZ, tolerance=0.05)
    parser = ImzMLParser(str(path))
    try:
        expected = np.stack([getionimage(parser, mz, tol=0.05) for mz in MZ])
    finally:
        parser.m.close()
    got = np.zeros_like(expected)
    xy = back.obsm["spatial"]
    got[:, xy[:, 1], xy[:, 0]] = back.X.T
    np.testing.assert_allclose(got, expected)


def test_regular_axis_da_and_ppm(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    da = sc.io.read_imzml(path, bin_width=1.0, bin_unit="Da")
    assert np.allclose(np.diff(da.var["mz"]), 1.0)
    np.testing.assert_allclose(da.X.sum(), adata.X.sum())
    ppm = sc.io.read_imzml(path, bin_width=1000, bin_unit="ppm")
    rel = np.diff(ppm.var["mz"]) / ppm.var["mz"].to_numpy()[:-1]
    assert np.allclose(rel, 1e-3, rtol=1e-3)
    np.testing.assert_allclose(ppm.X.sum(), adata.X.sum(), rtol=1e-6)


def test_mz_range_and_native_axis(adata, tmp_path):
    path = write(adata, tmp_path)
    native = sc.io.read_imzml(path)
    np.testing.assert_allclose(native.X, adata.X)
    part = sc.io.read_imzml(path, mz_range=(450, 650))
    assert list(part.var["mz"]) == [500.2, 600.3]
    sparse = sc.io.read_imzml(path, sparse=True, peaks=MZ, tolerance=0.01)
    np.testing.assert_allclose(sparse.X.toarray(), adata.X)


def test_overlapping_peak_windows_split(adata, tmp_path):
    path = write(adata, tmp_path)
    close = np.array([400.1, 400.15])
    back = sc.io.read_imzml(path, peaks=close, tolerance=0.1)
    np.testing.assert_allclose(back.X[:, 0], adata.X[:, 0])  # 400.1 goes to its nearest peak only
    assert back.X[:, 1].sum() == 0


def test_read_dispatch_and_stacks(stack, tmp_path):
    np.save(tmp_path / "s.npy", stack)
    np.savetxt(tmp_path / "mz.txt", MZ)
    a = sc.io.read(tmp_path / "s.npy", mz=tmp_path / "mz.txt", mask="all")
    assert a.shape == (42, 5) and list(a.var["mz"]) == list(MZ)
    seg = np.arange(42).reshape(6, 7)
    np.savez(tmp_path / "s.npz", cube=stack, mz=MZ, segments=seg)
    b = sc.io.read(tmp_path / "s.npz")
    assert "segments" in b.obs and b.n_vars == 5
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", stack)
    c = sc.io.read(tmp_path / "s.tif", mask="all")
    np.testing.assert_allclose(c.X, a.X)
    b.write_h5ad(tmp_path / "s.h5ad")
    assert sc.io.read(tmp_path / "s.h5ad").shape == b.shape


# --- bad input --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sc.io.read_imzml(tmp_path / "nope.imzML")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sc.io.read(tmp_path / "nope.npz")


def test_missing_ibd(adata, tmp_path):
    path = write(adata, tmp_path)
    path.with_suffix(".ibd").unlink()
    with pytest.raises(FileNotFoundError, match=r"binary data file .* missing"):
        sc.io.read_imzml(path)


def test_mismatched_uuid(adata, tmp_path):
    a = write(adata, tmp_path, name="a")
    b = write(adata, tmp_path, name="b")
    a.with_suffix(".ibd").write_bytes(b.with_suffix(".ibd").read_bytes())
    with pytest.raises(ImzMLError, match="UUID mismatch"):
        sc.io.read_imzml(a)


def test_truncated_ibd(adata, tmp_path):
    path = write(adata, tmp_path)
    ibd = path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:-100])
    with pytest.raises(ImzMLError, match="truncated"):
        sc.io.read_imzml(path)


def test_corrupt_xml(adata, tmp_path):
    path = write(adata, tmp_path)
    path.write_text(path.read_text()[:500])
    with pytest.raises(ImzMLError, match="not a valid imzML"):
        sc.io.read_imzml(path)


def _empty_spectra(path, n):
    """Declare the first ``n`` spectra of an imzML file as having no data points."""
    import re

    text = path.read_text()
    head, sep, body = text.partition("<spectrumList")
    parts = re.split(r"(<spectrum )", body)
    count = 0
    for i in range(2, len(parts), 2):
        if count == n:
            break
        parts[i] = re.sub(r'(accession="IMS:100010[34]"[^>]*value=")\d+', r"\g<1>0", parts[i])  # length, bytes
        count += 1
    path.write_text(head + sep + "".join(parts))


def test_empty_spectra(adata, tmp_path, caplog):
    path = write(adata, tmp_path, "processed")
    _empty_spectra(path, 3)
    back = sc.io.read_imzml(path, peaks=MZ, tolerance=0.01)
    assert back.uns["source"]["n_empty_spectra"] == 3
    assert (back.X[:3] == 0).all() and (back.obs["tic"][:3] == 0).all()
    np.testing.assert_allclose(back.X[3:], adata.X[3:])
    assert "3 of 42 spectra" in caplog.text
    _empty_spectra(path, 42)
    with pytest.raises(ImzMLError, match="All 42 spectra .* are empty"):
        sc.io.read_imzml(path, peaks=MZ, tolerance=0.01)


def test_write_all_zero_pixels_processed(adata, tmp_path):
    adata.X[:3] = 0
    path = write(adata, tmp_path, "processed")
    np.testing.assert_allclose(sc.io.read_imzml(path, peaks=MZ, tolerance=0.01).X, adata.X)


def _corrupt_first_mz(path, values):
    parser = ImzMLParser(str(path))
    offset, dtype = parser.mzOffsets[0], np.dtype(parser.mzPrecision)
    parser.m.close()
    with open(path.with_suffix(".ibd"), "r+b") as fh:
        fh.seek(offset)
        fh.write(np.asarray(values, dtype=dtype).tobytes())


def test_unsorted_mz(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    _corrupt_first_mz(path, [500.0, 400.0])
    with pytest.raises(ImzMLError, match="not sorted"):
        sc.io.read_imzml(path, peaks=MZ, tolerance=0.01, verify_checksum=False)
    with pytest.raises(ImzMLError, match="Checksum mismatch"):  # with the checksum, it reports that first
        sc.io.read_imzml(path, peaks=MZ, tolerance=0.01)


def test_non_finite_mz(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    _corrupt_first_mz(path, [np.nan])
    with pytest.raises(ImzMLError, match="non-finite m/z"):
        sc.io.read_imzml(path, peaks=MZ, tolerance=0.01, verify_checksum=False)
    with pytest.raises(ImzMLError, match="Checksum mismatch"):  # with the checksum, it reports that first
        sc.io.read_imzml(path, peaks=MZ, tolerance=0.01)


def test_non_finite_intensities(adata, tmp_path):
    path = write(adata, tmp_path)
    parser = ImzMLParser(str(path))
    offset = parser.intensityOffsets[5]
    parser.m.close()
    with open(path.with_suffix(".ibd"), "r+b") as fh:
        fh.seek(offset)
        fh.write(np.array([np.inf, np.nan], dtype=np.float32).tobytes())
    with pytest.raises(ImzMLError, match=r"2 non-finite \(NaN/inf\) intensities, first in spectrum 5"):
        sc.io.read_imzml(path, verify_checksum=False)
    with pytest.raises(ImzMLError, match="Checksum mismatch"):  # with the checksum, it reports that first
        sc.io.read_imzml(path)
    stack = np.ones((2, 3, 3), dtype=np.float32)
    stack[1, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", stack)
    with pytest.raises(ValueError, match="non-finite"):
        sc.io.read_ion_images(tmp_path / "nan.npy")


def test_mz_range_selects_nothing(adata, tmp_path):
    path = write(adata, tmp_path)
    with pytest.raises(ValueError, match=r"`mz_range`=\(100, 200\) selects no m/z"):
        sc.io.read_imzml(path, mz_range=(100, 200))


def test_processed_needs_binning(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    with pytest.raises(ValueError, match="processed imzML .* pass `bin_width`"):
        sc.io.read_imzml(path)


def test_write_is_atomic_and_refuses_overwrite(adata, tmp_path):
    path = write(adata, tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        write(adata, tmp_path)
    adata.X[4, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sc.io.write_imzml(adata, tmp_path / "bad.imzML")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.ibd", "data.imzML"]
    assert path.exists()


@pytest.mark.realdata
def test_real_mouse_bladder():
    path = shared_data("msi_mouse_bladder", "bladder_cube.npz")
    adata = sc.io.read_ion_images(path)
    assert adata.n_vars == 79
    assert adata.uns["grid"]["shape"] == [134, 260]
    assert 30_000 < adata.n_obs < 134 * 260
    assert "ssc_segments" in adata.obs
    assert 426 < adata.var["mz"].min() < adata.var["mz"].max() < 971
    # the documented 13C pairs exist in the m/z list
    mz = np.sort(adata.var["mz"].to_numpy())
    diffs = np.abs(mz[None, :] - mz[:, None] - 1.00336)
    assert (diffs < 0.005).sum() >= 5


def test_read_dispatches_st_h5ad_to_rasterisation(tmp_path):
    """An h5ad with float spot positions and no grid is rasterised; a data-model h5ad is read as is."""
    import anndata as ad

    xs, ys = np.meshgrid(np.arange(4), np.arange(3))
    st = ad.AnnData(np.ones((12, 2), dtype=np.float32))
    st.obsm["spatial"] = np.column_stack([xs.ravel() * 100.0 + 7.5, ys.ravel() * 100.0 + 3.0])
    st.write_h5ad(tmp_path / "st.h5ad")
    back = sc.io.read(tmp_path / "st.h5ad")
    assert back.uns["grid"]["shape"] == [3, 4]
    assert np.issubdtype(back.obsm["spatial"].dtype, np.integer)
    back.write_h5ad(tmp_path / "grid.h5ad")
    again = sc.io.read(tmp_path / "grid.h5ad")
    np.testing.assert_array_equal(again.obsm["spatial"], back.obsm["spatial"])


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5", "empty"])
def test_a_corrupt_h5ad_is_named_in_a_value_error(stack, tmp_path, damage):
    """Every reader of .h5ad files (sc.io.read, read_st_h5ad, read_metaspace) names the broken file."""
    path = tmp_path / "broken.h5ad"
    sc.io.images_to_adata(stack).write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not_hdf5": b"mz\tintensity\n1\t2\n", "empty": b""}[damage])
    for reader in (sc.io.read, sc.io.read_h5ad, sc.io.read_st_h5ad, sc.io.read_metaspace):
        with pytest.raises(ValueError, match="broken.h5ad.*not a readable .h5ad"):
            reader(path)
    with pytest.raises(FileNotFoundError, match="missing.h5ad"):
        sc.io.read_h5ad(tmp_path / "missing.h5ad")
