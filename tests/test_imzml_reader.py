"""The imzML reader never returns silently wrong data: corrupt input, real-format corner cases,
pyimzml as the reference, and a bounded mutation fuzzer (issue 13 items 4-6 and 10, issue 14 item 5)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser
from pyimzml.ImzMLWriter import ImzMLWriter

import spatialclust as sc
from spatialclust.io import ImzMLError, NegativeIntensityWarning
from spatialclust.io._imzml_index import parse_index

MZ = np.array([400.1, 401.1034, 500.2, 600.3, 700.4])


@pytest.fixture()
def adata():
    rng = np.random.default_rng(0)
    stack = rng.poisson(3, size=(len(MZ), 6, 7)).astype(np.float32) + 1
    return sc.io.images_to_adata(stack, mz=MZ, pixel_size=20.0)


def write(adata, tmp_path, mode="continuous", name="data"):
    return sc.io.write_imzml(adata, tmp_path / f"{name}.imzML", mode=mode)


def write_pyimzml(path, spectra, coords, **kwargs):
    with ImzMLWriter(str(path), **kwargs) as writer:
        for (mz, inten), xy in zip(spectra, coords):
            writer.addSpectrum(mz, inten, (*xy, 1))
    return path


def edit_xml(path, accession, spectrum, value, occurrence=0):
    """Set the ``occurrence``-th ``accession`` cvParam of spectrum ``spectrum`` to ``value``."""
    text = path.read_text()
    head, sep, body = text.partition("<spectrumList")
    parts = re.split(r"(<spectrum )", body)
    i = 2 + 2 * spectrum
    hits = list(re.finditer(rf'accession="{accession}"[^>]*value="([^"]*)"', parts[i]))
    m = hits[occurrence]
    parts[i] = parts[i][: m.start(1)] + str(value) + parts[i][m.end(1) :]
    path.write_text(head + sep + "".join(parts))


def read(path, **kwargs):
    kwargs.setdefault("peaks", MZ)
    kwargs.setdefault("tolerance", 0.01)
    return sc.io.read_imzml(path, **kwargs)


def same(a, b) -> bool:
    return (a.shape == b.shape and np.array_equal(np.asarray(a.X), np.asarray(b.X))
            and np.array_equal(a.obsm["spatial"], b.obsm["spatial"])
            and np.array_equal(a.var["mz"], b.var["mz"]) and np.array_equal(a.obs["tic"], b.obs["tic"]))


def _ibd_offset(path, kind="int", spectrum=0):
    parser = ImzMLParser(str(path))
    try:
        return (parser.intensityOffsets if kind == "int" else parser.mzOffsets)[spectrum]
    finally:
        parser.m.close()


def _write_at(path, offset, values):
    with open(path.with_suffix(".ibd"), "r+b") as fh:
        fh.seek(offset)
        fh.write(values.tobytes())


# --- pyimzml is the reference -------------------------------------------------------------------


def _assert_same_index(a, b):
    for field in a.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        assert (np.array_equal(x, y) and x.dtype == y.dtype) if isinstance(x, np.ndarray) else x == y, field


def _reference(path, peaks=None, tol=0.01):
    """Per-spectrum binning with pyimzml's parser: native axis, or sums within peak +- tol."""
    parser = ImzMLParser(str(path))
    try:
        rows = []
        for i in range(len(parser.coordinates)):
            mz, inten = parser.getspectrum(i)
            if peaks is None:
                rows.append(inten.astype(np.float64))
            else:
                rows.append([inten[(mz >= p - tol) & (mz <= p + tol)].sum(dtype=np.float64) for p in peaks])
        coords = np.asarray(parser.coordinates)[:, :2]
        return np.asarray(rows, dtype=np.float32), coords - coords.min(axis=0)
    finally:
        parser.m.close()


def _assert_index_equals_pyimzml(path):
    ours = parse_index(path)
    _assert_same_index(ours, parse_index(path, compiled=False))  # the compiled scanner = the general parser
    parser = ImzMLParser(str(path))
    try:
        np.testing.assert_array_equal(ours.mz_offset, parser.mzOffsets)
        np.testing.assert_array_equal(ours.int_offset, parser.intensityOffsets)
        np.testing.assert_array_equal(ours.mz_length, parser.mzLengths)
        np.testing.assert_array_equal(ours.int_length, parser.intensityLengths)
        np.testing.assert_array_equal(ours.coords, np.asarray(parser.coordinates))
        assert ours.mz_dtype == np.dtype(parser.mzPrecision) and ours.int_dtype == np.dtype(parser.intensityPrecision)
    finally:
        parser.m.close()


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_equal_to_pyimzml(adata, tmp_path, mode):
    path = write(adata, tmp_path, mode)
    _assert_index_equals_pyimzml(path)
    expected, coords = _reference(path, MZ)
    got = read(path)
    np.testing.assert_array_equal(got.X, expected)
    np.testing.assert_array_equal(got.obsm["spatial"], coords)
    assert got.uns["source"]["checksum_verified"]
    if mode == "continuous":
        np.testing.assert_array_equal(sc.io.read_imzml(path).X, _reference(path)[0])


def test_processed_ragged_spectra_equal_to_pyimzml(tmp_path):
    """Spectra of different lengths (one of a single peak), 32-bit m/z, integer intensities."""
    rng = np.random.default_rng(1)
    spectra = []
    for i in range(30):
        n = 1 if i == 4 else int(rng.integers(2, 40))
        mz = np.sort(rng.uniform(100, 900, n)).astype(np.float32)
        spectra.append((mz, rng.integers(0, 1000, n).astype(np.int32)))
    coords = [(1 + i % 6, 1 + i // 6) for i in range(30)]
    path = write_pyimzml(tmp_path / "ragged.imzML", spectra, coords, mode="processed",
                         mz_dtype=np.float32, intensity_dtype=np.int32)
    _assert_index_equals_pyimzml(path)
    peaks = np.arange(150.0, 900.0, 50.0)
    expected, _ = _reference(path, peaks, tol=20.0)
    np.testing.assert_allclose(read(path, peaks=peaks, tolerance=20.0).X, expected, rtol=1e-6)
    binned = sc.io.read_imzml(path, bin_width=5.0, bin_unit="Da")
    np.testing.assert_array_equal(binned.obs["tic"], [s[1].sum(dtype=np.float64) for s in spectra])


@pytest.mark.parametrize("shift", [1, 2, 4])
def test_unaligned_offsets_equal_to_pyimzml(adata, tmp_path, shift):
    """Arrays at offsets that are not multiples of the value size (read as overlapping strided
    values of the mapped file) give the same data, for processed and continuous files."""
    for mode in ("processed", "continuous"):
        path = write(adata, tmp_path, mode, name=f"{mode}{shift}")
        original = read(path, verify_checksum=False)
        ibd = path.with_suffix(".ibd")
        data = ibd.read_bytes()
        ibd.write_bytes(data[:16] + b"\0" * shift + data[16:])
        text = re.sub(r'(accession="IMS:1000102"[^>]*value=")(\d+)', lambda m: m[1] + str(int(m[2]) + shift),
                      path.read_text())
        path.write_text(re.sub(r'<cvParam[^>]*accession="IMS:1000091"[^>]*/>', "", text))  # SHA-1 no longer valid
        _assert_index_equals_pyimzml(path)
        assert same(read(path), original)
        np.testing.assert_array_equal(read(path).X, _reference(path, MZ)[0])


@pytest.mark.parametrize("variant", ["single_quotes", "value_first", "comments", "prefix", "no_encoded_length"])
def test_xml_layouts_equal_to_pyimzml(adata, tmp_path, variant, caplog):
    """Layouts other writers produce: the index equals pyimzml's and the data the original's; all
    but the comments are read by the compiled scanner, the comments by the general parser."""
    path = write(adata, tmp_path, "processed")
    original = read(path)
    text = path.read_text()
    if variant == "single_quotes":
        text = re.sub(r'(accession|value|ref)="([^"]*)"', r"\1='\2'", text)
    elif variant == "value_first":
        text = re.sub(r'accession="(IMS:100010[23])"([^>]*?) value="([^"]*)"', r'value="\3" accession="\1"\2', text)
    elif variant == "comments":
        text = text.replace("<spectrum ", '<!-- <cvParam accession="IMS:1000102" value="0"/> -->\n<spectrum ')
    elif variant == "prefix":
        text = re.sub(r"<(/?)(?!\?)(\w+)([\s>/])", r"<\1m:\2\3", text)
        text = text.replace('xmlns="http://psi.hupo.org/ms/mzml"', 'xmlns:m="http://psi.hupo.org/ms/mzml"')
    else:
        text = re.sub(r'<cvParam[^>]*accession="IMS:1000104"[^>]*/>', "", text)
    path.write_text(text)
    if variant != "prefix":  # pyimzml does not read namespace prefixes other than the default
        _assert_index_equals_pyimzml(path)
    with caplog.at_level(logging.DEBUG, logger="spatialclust"):
        assert same(read(path), original)
    taken = "general parser" if variant == "comments" else "compiled scanner"
    assert re.search(rf"spectrum list .*{taken}|{taken}.* spectrum list|read by the {taken}", caplog.text), caplog.text
    _assert_same_index(parse_index(path), parse_index(path, compiled=False))


def test_compressed_arrays_refused(tmp_path):
    from pyimzml.compression import ZlibCompression

    spectra = [(MZ, np.ones(len(MZ), np.float32))] * 4
    path = write_pyimzml(tmp_path / "z.imzML", spectra, [(1, 1), (2, 1), (1, 2), (2, 2)],
                         mz_compression=ZlibCompression(), intensity_compression=ZlibCompression())
    with pytest.raises(ImzMLError, match="zlib-compressed"):
        read(path)


# --- item 4: checksum, offsets, lengths, values ----------------------------------------------


def test_checksum_verified_and_optional(adata, tmp_path, monkeypatch):
    path = write(adata, tmp_path)
    offset = _ibd_offset(path, "int", 3)
    _write_at(path, offset, np.array([7.0], np.float32))  # finite, positive: only the checksum sees it
    with pytest.raises(ImzMLError, match="Checksum mismatch: .* declares SHA-1"):
        read(path)
    changed = read(path, verify_checksum=False)
    assert not changed.uns["source"]["checksum_verified"]
    from spatialclust.io import _imzml

    monkeypatch.setattr(_imzml, "_CHECKSUM_AUTO_BYTES", 100)  # above the automatic limit: skipped
    assert not read(path).uns["source"]["checksum_verified"]
    with pytest.raises(ImzMLError, match="Checksum mismatch"):
        read(path, verify_checksum=True)


def test_md5_checksum(adata, tmp_path):
    import hashlib

    path = write(adata, tmp_path)
    digest = hashlib.md5(path.with_suffix(".ibd").read_bytes()).hexdigest()
    text = re.sub(r'accession="IMS:1000091" name="ibd SHA-1" value="[^"]*"',
                  f'accession="IMS:1000090" name="ibd MD5" value="{digest}"', path.read_text())
    path.write_text(text)
    assert read(path).uns["source"]["checksum_verified"]
    path.write_text(text.replace(digest, "0" * 32))
    with pytest.raises(ImzMLError, match="declares MD5"):
        read(path)


def test_offset_into_header(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    edit_xml(path, "IMS:1000102", 0, 4)
    with pytest.raises(ImzMLError, match="starts at byte 4, inside the 16-byte UUID header"):
        read(path, verify_checksum=False)


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_overlapping_arrays(adata, tmp_path, mode):
    path = write(adata, tmp_path, mode)
    offset = _ibd_offset(path, "int", 2)
    edit_xml(path, "IMS:1000102", 1, offset + 4, occurrence=1)  # intensities of 1 inside those of 2
    with pytest.raises(ImzMLError, match="overlaps"):
        read(path)


def test_continuous_with_differing_mz_arrays(adata, tmp_path):
    path = write(adata, tmp_path, "continuous")
    edit_xml(path, "IMS:1000102", 5, _ibd_offset(path, "int", 0))
    with pytest.raises(ImzMLError, match="declares continuous mode .* 2 different m/z arrays"):
        read(path)


def test_offset_beyond_file_and_length_mismatch(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    edit_xml(path, "IMS:1000102", 3, 10**12, occurrence=1)
    with pytest.raises(ImzMLError, match="ends at byte 10000000"):
        read(path)
    path = write(adata, tmp_path, "processed", name="len")
    edit_xml(path, "IMS:1000103", 3, 2)
    with pytest.raises(ImzMLError, match="spectrum 3 declares a m/z array of 2 values"):
        read(path)
    edit_xml(path, "IMS:1000104", 3, 16)
    with pytest.raises(ImzMLError, match="different lengths"):
        read(path)


def test_declared_count(adata, tmp_path):
    path = write(adata, tmp_path)
    path.write_text(re.sub(r'<spectrumList count="42"', '<spectrumList count="41"', path.read_text()))
    with pytest.raises(ImzMLError, match="declares count=41 spectra but holds 42"):
        read(path)


def test_negative_intensities_policy(adata, tmp_path):
    path = write(adata, tmp_path)
    _write_at(path, _ibd_offset(path, "int", 5), np.array([-2.5], np.float32))
    with pytest.raises(ImzMLError, match=r"1 negative intensities .* spectrum 5 \(-2.5\).* negative='clip'"):
        read(path, verify_checksum=False)
    with pytest.warns(NegativeIntensityWarning, match="1 negative intensities"):
        kept = read(path, verify_checksum=False, negative="warn")
    assert kept.X[5, 0] == -2.5
    clipped = read(path, verify_checksum=False, negative="clip")
    assert clipped.X[5, 0] == 0 and clipped.obs["tic"].iloc[5] == adata.X[5, 1:].sum()
    with pytest.raises(ValueError, match="Invalid option `zero` for `negative`"):
        read(path, negative="zero")


# --- item 5: every failure is an ImzMLError; absurd grids ------------------------------------


def test_zero_pixel_file(adata, tmp_path):
    path = write(adata, tmp_path)
    text = path.read_text()
    head, _, rest = text.partition("<spectrumList")
    tail = rest[rest.index("</spectrumList>"):]
    path.write_text(head + '<spectrumList count="0" defaultDataProcessingRef="export_from_pyimzml">' + tail)
    with pytest.raises(ImzMLError, match="contains no spectra"):
        read(path)


def test_huge_coordinate(adata, tmp_path):
    path = write(adata, tmp_path)
    edit_xml(path, "IMS:1000050", 0, 10**30)
    with pytest.raises(ImzMLError, match="invalid position x value"):
        read(path)


def test_absurd_grid_refused_with_numbers(adata, tmp_path):
    path = write(adata, tmp_path)
    edit_xml(path, "IMS:1000050", 0, 10**6)  # one stray pixel far away
    with pytest.raises(ImzMLError, match=r"1,000,000 x 6 = 6e\+06 cells for 42 spectra .*input.read.max_grid_ratio=null"):
        read(path)
    stray = read(path, max_grid_ratio=None)
    assert stray.uns["grid"]["shape"] == [6, 1_000_000]
    edit_xml(path, "IMS:1000050", 0, 300)  # a sparse but small grid (< 65,536 cells) is accepted
    assert read(path).uns["grid"]["shape"] == [6, 300]


# --- item 6 and 10: precise messages ---------------------------------------------------------


def test_ibd_cut_to_ten_bytes(adata, tmp_path):
    path = write(adata, tmp_path)
    ibd = path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:10])
    with pytest.raises(ImzMLError, match="truncated: it has 10 bytes, fewer than its 16-byte UUID header"):
        read(path)


def test_first_spectrum_empty_in_continuous_file(adata, tmp_path):
    path = write(adata, tmp_path, "continuous")
    for acc in ("IMS:1000103", "IMS:1000104"):
        for occurrence in (0, 1):
            edit_xml(path, acc, 0, 0, occurrence=occurrence)
    native = sc.io.read_imzml(path, verify_checksum=False)
    assert native.shape == (42, 5) and native.uns["source"]["mode"] == "continuous"
    np.testing.assert_array_equal(native.X[1:], adata.X[1:])
    assert (native.X[0] == 0).all() and native.uns["source"]["n_empty_spectra"] == 1


def test_directory_as_imzml(tmp_path):
    folder = tmp_path / "data.imzML"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory; expected an .imzML file"):
        sc.io.read_imzml(folder)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        sc.io.read(folder)


def test_processed_needs_binning_names_cli_form(adata, tmp_path):
    path = write(adata, tmp_path, "processed")
    with pytest.raises(ValueError, match=r"pass `bin_width`.*--set input.read.bin_width="):
        sc.io.read_imzml(path)


# --- the mutation fuzzer ---------------------------------------------------------------------

MUTATIONS = ("ibd_flip", "xml_offset", "xml_length", "xml_count", "ibd_truncate", "uuid", "xml_cut")


def _mutate(kind, rng, xml: bytes, ibd: bytes) -> tuple[bytes, bytes]:
    if kind == "ibd_flip":
        b = bytearray(ibd)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return xml, bytes(b)
    if kind == "ibd_truncate":
        return xml, ibd[: int(rng.integers(len(ibd)))]
    if kind == "xml_cut":
        return xml[: int(rng.integers(len(xml)))], ibd
    if kind == "uuid":
        m = re.search(rb'IMS:1000080"[^>]*value="\{?([0-9A-F-]+)', xml)
        digits = [m.start(1) + j for j, c in enumerate(m.group(1)) if c != ord("-")]
        i = digits[int(rng.integers(len(digits)))]
        return xml[:i] + (b"0" if xml[i : i + 1] != b"0" else b"1") + xml[i + 1 :], ibd
    if kind == "xml_count":
        m = re.search(rb'<spectrumList count="(\d+)"', xml)
        value = str(int(m.group(1)) + int(rng.choice([-2, -1, 1, 5]))).encode()
    else:
        acc = {"xml_offset": rb"IMS:1000102", "xml_length": rb"IMS:100010[34]"}[kind]
        hits = list(re.finditer(rb'accession="' + acc + rb'"[^>]*value="(\d+)"', xml))
        m = hits[int(rng.integers(len(hits)))]
        old = int(m.group(1))
        value = str(int(rng.choice([old + int(rng.integers(1, 17)), max(old - int(rng.integers(1, 17)), 0),
                                    int(rng.integers(0, 16)), int(rng.integers(0, len(ibd) + 64)), 2**40])))
        value = (value if int(value) != old else str(old + 1)).encode()  # always a change
    return xml[: m.start(1)] + value + xml[m.end(1) :], ibd


def fuzz(tmp_path, adata, *, n_cases: int, seed: int, verify_checksum: bool | None = None) -> dict:
    """Mutate small continuous and processed files; count raised / equal / different results."""
    rng = np.random.default_rng(seed)
    counts = {"cases": 0, "raised": 0, "equal": 0, "different": 0, "by_kind": {}}
    for mode in ("continuous", "processed"):
        path = write(adata, tmp_path, mode, name=f"fuzz_{mode}")
        xml, ibd = path.read_bytes(), path.with_suffix(".ibd").read_bytes()
        original = read(path)
        for _ in range(n_cases):
            kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
            new_xml, new_ibd = _mutate(kind, rng, xml, ibd)
            path.write_bytes(new_xml)
            path.with_suffix(".ibd").write_bytes(new_ibd)
            try:
                result = read(path, verify_checksum=verify_checksum)
            except ImzMLError:
                outcome = "raised"
            else:
                outcome = "equal" if same(result, original) else "different"
            counts["cases"] += 1
            counts[outcome] += 1
            counts["by_kind"].setdefault(kind, {}).setdefault(outcome, 0)
            counts["by_kind"][kind][outcome] += 1
    return counts


def test_mutation_fuzzer(adata, tmp_path):
    """Every mutated file either raises ImzMLError or reads exactly as the original."""
    counts = fuzz(tmp_path, adata, n_cases=100, seed=0)
    assert counts["different"] == 0, counts
    assert counts["cases"] == 200 and counts["raised"] >= 190, counts  # the mutations do change the files



# --- the compiled scanner and binner (issue 14 item 5) ---------------------------------------

XML_EDITS = ("replace", "delete", "insert", "duplicate_line", "swap_lines", "stray_accession")


def _edit_list(kind, rng, xml: bytes) -> bytes:
    """A random edit inside the spectrum list of ``xml``."""
    lo, hi = xml.index(b"<spectrumList"), xml.index(b"</spectrumList>") + len(b"</spectrumList>")
    at = int(rng.integers(lo, hi))
    if kind == "replace":
        return xml[:at] + bytes([rng.choice(list(b"<>/\"'= \n0123456789-:aI&!?"))]) + xml[at + 1 :]
    if kind == "delete":
        return xml[:at] + xml[at + 1 :]
    if kind == "insert":
        return xml[:at] + bytes([rng.choice(list(b"<>/\"' x5-"))]) + xml[at:]
    if kind == "stray_accession":
        stray = [b'IMS:1000102"', b" IMS:1000050' ", b'<cvParam accession="IMS:1000051" value="3"/>']
        return xml[:at] + stray[int(rng.integers(len(stray)))] + xml[at:]
    lines = xml[lo:hi].split(b"\n")
    i = int(rng.integers(1, len(lines) - 1))
    if kind == "duplicate_line":
        lines.insert(i, lines[i])
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return xml[:lo] + b"\n".join(lines) + xml[hi:]


def _index_outcome(path, compiled):
    try:
        return parse_index(path, compiled=compiled)
    except ImzMLError:
        return "ImzMLError"


def test_compiled_scanner_agrees_with_general_parser(adata, tmp_path, caplog):
    """200 seeded edits of the spectrum list: the compiled scanner (which hands every layout it
    does not read to the general parser) gives exactly the general parser's index or error."""
    rng = np.random.default_rng(0)
    counts = {"compiled": 0, "general": 0, "raised": 0}
    for mode in ("continuous", "processed"):
        path = write(adata, tmp_path, mode, name=f"scan_{mode}")
        xml = path.read_bytes()
        for _ in range(100):
            path.write_bytes(_edit_list(XML_EDITS[int(rng.integers(len(XML_EDITS)))], rng, xml))
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="spatialclust"):
                fast = _index_outcome(path, True)
            general = _index_outcome(path, False)
            counts["compiled" if "read by the compiled scanner" in caplog.text else "general"] += 1
            if isinstance(general, str):
                assert fast == general
                counts["raised"] += 1
            else:
                _assert_same_index(fast, general)
    # the edits reach both paths, and errors
    assert counts["compiled"] >= 40 and counts["general"] >= 40 and counts["raised"] >= 20, counts


def _numpy_binned(path, bins):
    """Reference binning: pyimzml's spectra, NumPy's search, float64 sums in value order."""
    parser = ImzMLParser(str(path))
    try:
        rows = []
        for i in range(len(parser.coordinates)):
            mz, inten = parser.getspectrum(i)
            col = bins.index(np.asarray(mz, np.float64))
            rows.append(np.bincount(col[col >= 0], weights=inten[col >= 0].astype(np.float64),
                                    minlength=len(bins.centers)))
        return np.asarray(rows).astype(np.float32)
    finally:
        parser.m.close()


@pytest.mark.parametrize("dense_cells", [0, 10**9])  # the sparse-cell and the dense-block path of every chunk
def test_compiled_binner_equals_numpy_reference(tmp_path, monkeypatch, dense_cells):
    """Values on, just inside and just outside the bin edges, clustered peak windows with one far
    away (the lookup table then holds many edges per cell), regular Da and ppm axes, dense and
    sparse output, chunks of 7 spectra on two threads."""
    from spatialclust.io import _imzml

    monkeypatch.setattr(_imzml, "_DENSE_CELLS_PER_VALUE", dense_cells)
    rng = np.random.default_rng(3)
    peaks = np.concatenate([300 + 0.01 * np.arange(40), [900.0]])
    windows = _imzml.peak_bins(peaks, 0.003, "Da")
    edges = np.concatenate([windows.lower, windows.upper, np.nextafter(windows.upper, np.inf),
                            np.nextafter(windows.lower, -np.inf)])
    spectra = []
    for i in range(40):
        mz = np.unique(np.concatenate([rng.choice(edges, 30), rng.uniform(250, 950, 30), [899.9971] * (i % 2)]))
        spectra.append((mz, rng.exponential(5, len(mz)).astype(np.float32)))
    path = write_pyimzml(tmp_path / "edges.imzML", spectra, [(1 + i % 8, 1 + i // 8) for i in range(40)],
                         mode="processed")
    lo, hi = min(s[0][0] for s in spectra), max(s[0][-1] for s in spectra)
    for kwargs, bins in (
        ({"peaks": peaks, "tolerance": 0.003}, windows),
        ({"bin_width": 0.7, "bin_unit": "Da"}, _imzml.regular_bins(lo, hi, 0.7, "Da")),
        ({"bin_width": 500.0, "bin_unit": "ppm"}, _imzml.regular_bins(lo, hi, 500.0, "ppm")),
    ):
        expected = _numpy_binned(path, bins)
        got = sc.io.read_imzml(path, chunk_size=7, **kwargs)
        np.testing.assert_array_equal(got.X, expected)
        np.testing.assert_array_equal(sc.io.read_imzml(path, chunk_size=7, sparse=True, **kwargs).X.toarray(), expected)
        np.testing.assert_allclose(got.obs["tic"], [s[1].sum(dtype=np.float64) for s in spectra], rtol=1e-12)


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """A read-only install with a read-only home: numba finds no cache folder, and the kernels are
    compiled in memory instead (no error, no warning)."""
    from numba.core import caching

    from spatialclust.io import _imzml_kernels

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])

    def plus_one(x):
        return x + 1

    assert _imzml_kernels._compile(plus_one)(1) == 2
