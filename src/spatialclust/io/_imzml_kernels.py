"""Compiled (numba) loops of the imzML reader: the spectrum-list scanner and the spectrum binner.

Both walk their input once, byte by byte or value by value, where NumPy needs several passes
(one per regular expression, search, check or sum). They release the GIL. This module imports
numba, so it is imported only when a file is read (``import spatialclust`` stays fast).

The compiled code is cached next to this file (``__pycache__``) or, where that is not writable,
in numba's per-user cache; where neither is (a read-only install and home), the kernels are
compiled in memory in every process (a few seconds on first use) instead of failing.
"""

from __future__ import annotations

import numba
import numpy as np

from .._logging import logger


def _compile(func):
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError as err:  # "cannot cache function ...: no locator available"
        logger.debug("numba cannot cache %s (%s); compiling it in memory.", func.__name__, err)
        return numba.njit(nogil=True)(func)


# --- the spectrum list ---------------------------------------------------------------------------

#: Why the scanner handed a spectrum list to the general parser (index = the scanner's status).
SCAN_REASONS = (
    "ok",
    "text, a comment, CDATA or a processing instruction in the spectrum list",
    "XML syntax the scanner does not read (attribute or tag form, non-ASCII name, nesting deeper than 64)",
    "a namespace prefix other than that of <spectrumList>",
    "a spectrum, array, coordinate, offset or group reference where the scanner does not expect it",
    "a coordinate or offset value that is not a plain decimal integer",
    "a spectrum without exactly one m/z and one intensity array, a coordinate or an offset",
    "more or fewer spectra than the declared count",
    "the data ends inside the spectrum list",
    "an IMS coordinate/offset accession outside the accession of a cvParam",
)
_OK, _TEXT, _SYNTAX, _PREFIX, _PLACE, _VALUE, _COUNT, _DECLARED, _EOF, _STRAY = (np.int64(k) for k in range(10))
#: Local element names the scanner acts on (index = element kind).
ELEMENTS = (b"spectrum", b"binaryDataArray", b"cvParam", b"referenceableParamGroupRef", b"spectrumList")
_SPECTRUM, _ARRAY, _CVPARAM, _REF, _LIST = range(5)
#: The accession digits after "IMS:1000": position x, y, z; external offset, array length, encoded length.
_CODES = np.array([50, 51, 52, 102, 103, 104], dtype=np.int64)
_IMS = np.frombuffer(b"IMS:1000", dtype=np.uint8)
_ACCESSION = np.frombuffer(b"accession", dtype=np.uint8)
_VALUE_NAME = np.frombuffer(b"value", dtype=np.uint8)
_REF_NAME = np.frombuffer(b"ref", dtype=np.uint8)


_SPACE = np.zeros(256, np.bool_)
_SPACE[[32, 10, 13, 9]] = True
_NAME = np.zeros(256, np.bool_)  # [A-Za-z0-9_:.-]
_NAME[[*range(97, 123), *range(65, 91), *range(48, 59), 95, 46, 45]] = True
_WORD = _NAME.copy()  # [A-Za-z0-9_]
_WORD[[58, 46, 45]] = False
_VALUE_STOP = np.zeros(256, np.bool_)  # where the scan of an attribute value stops: < I " '
_VALUE_STOP[[60, 73, 34, 39]] = True


@numba.njit
def _is_space(c) -> bool:
    return _SPACE[c]


@numba.njit
def _is_name(c) -> bool:
    return _NAME[c]


@numba.njit
def _same(buf, a, n, ref, b) -> bool:
    for k in range(n):
        if buf[a + k] != ref[b + k]:
            return False
    return True


@numba.njit
def _code_at(buf, p):
    """The index in ``_CODES`` of an ``IMS:1000ddd`` accession followed by a quote at ``p``, else -1."""
    if p + 11 >= len(buf) or not _same(buf, p, 8, _IMS, 0):
        return -1
    d0, d1, d2 = buf[p + 8] - 48, buf[p + 9] - 48, buf[p + 10] - 48
    q = buf[p + 11]
    if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9) or not (q == 34 or q == 39):
        return -1
    number = d0 * 100 + d1 * 10 + d2
    for k in range(6):
        if _CODES[k] == number:
            return k
    return -1


@numba.njit
def _integer(buf, a, b):
    """``(ok, value)`` of the decimal integer ``-?[0-9]{1,18}`` in ``buf[a:b]``."""
    neg = a < b and buf[a] == 45
    if neg:
        a += 1
    if b - a < 1 or b - a > 18:
        return False, 0
    value = 0
    for k in range(a, b):
        d = buf[k] - 48
        if d < 0 or d > 9:
            return False, 0
        value = value * 10 + d
    return True, -value if neg else value


@numba.njit
def _element(buf, a, b, prefix, names, name_start):
    """Kind of the element named ``buf[a:b]`` (an index into ``ELEMENTS``), -1 for any other
    element, -2 for one of ``ELEMENTS`` with a prefix other than ``prefix``."""
    local = a
    for k in range(a, b):
        if buf[k] == 58:
            local = k + 1
    n = b - local
    for e in range(len(name_start) - 1):
        if name_start[e + 1] - name_start[e] == n and _same(buf, local, n, names, name_start[e]):
            if local - a == len(prefix) and _same(buf, a, local - a, prefix, 0):
                return e
            return -2
    return -1


@_compile
def scan_spectrum_list(buf, start, prefix, names, name_start, group_ids, group_start, group_kind, coords, arrays):
    """Scan the spectrum list ``buf[start:]`` up to its ``</spectrumList>``.

    Fills ``coords`` (one row per declared spectrum: x, y, z; z preset) and ``arrays`` (spectrum,
    kind 0 m/z / 1 intensity, field 0 offset / 1 length / 2 encoded length; the encoded length
    preset). Returns ``(status, position)``: status 0 and the position of ``</spectrumList>``, or
    the reason (an index into ``SCAN_REASONS``) and the position at which the scanner gave up.
    The scanner accepts only a plain, regular layout: anything else is handed back, never guessed.
    """
    size = len(buf)
    n_spectra = coords.shape[0]
    stack_at = np.empty(64, np.int64)
    stack_len = np.empty(64, np.int64)
    depth = 0
    spectrum = -1  # the current spectrum
    spectrum_depth = array_depth = -1  # depth of the open spectrum / array element, -1 when none
    n_arrays = 0
    has_position = np.zeros(3, np.bool_)
    done_kind = np.zeros(2, np.bool_)
    field = np.zeros(3, np.int64)
    has_field = np.zeros(3, np.bool_)
    array_kind = -1
    i = start
    while True:
        while i < size and buf[i] != 60:  # text up to the next '<': whitespace only
            if not _is_space(buf[i]):
                return _TEXT, i
            i += 1
        if i + 1 >= size:
            return _EOF, i
        tag = i
        i += 1
        c = buf[i]
        if c == 33 or c == 63:  # '<!', '<?'
            return _TEXT, tag
        closing = c == 47
        if closing:
            i += 1
        name_at = i
        while i < size and _is_name(buf[i]):
            i += 1
        name_len = i - name_at
        if name_len == 0:
            return _SYNTAX, i
        kind = _element(buf, name_at, i, prefix, names, name_start)
        if kind == -2:
            return _PREFIX, tag
        if closing:
            while i < size and _is_space(buf[i]):
                i += 1
            if i >= size:
                return _EOF, i
            if buf[i] != 62:
                return _SYNTAX, i
            i += 1
            if depth == 0:
                if kind != _LIST:
                    return _SYNTAX, tag
                if spectrum + 1 != n_spectra:
                    return _DECLARED, tag
                return _OK, tag
            depth -= 1
            if stack_len[depth] != name_len or not _same(buf, name_at, name_len, buf, stack_at[depth]):
                return _SYNTAX, tag
            if depth == array_depth:  # </binaryDataArray>
                if array_kind < 0 or done_kind[array_kind] or not (has_field[0] and has_field[1]):
                    return _COUNT, tag
                done_kind[array_kind] = True
                for f in range(3):
                    if has_field[f]:
                        arrays[spectrum, array_kind, f] = field[f]
                array_depth = -1
            elif depth == spectrum_depth:  # </spectrum>
                if n_arrays != 2 or not (has_position[0] and has_position[1]):
                    return _COUNT, tag
                spectrum_depth = -1
            continue
        # a start tag: its attributes
        code = -1
        value_at = value_end = -1
        ref_at = ref_end = -1
        n_attributes = 0
        plain_names = True  # attribute names in [A-Za-z0-9_] only, as the general parser's patterns
        self_closing = False
        while True:
            space = i
            while i < size and _is_space(buf[i]):
                i += 1
            if i + 1 >= size:
                return _EOF, i
            c = buf[i]
            if c == 62:
                i += 1
                break
            if c == 47:
                if buf[i + 1] != 62:
                    return _SYNTAX, i
                self_closing = True
                i += 2
                break
            if i == space:
                return _SYNTAX, i
            attr_at = i
            while i < size and _is_name(buf[i]):
                plain_names &= _WORD[buf[i]]
                i += 1
            attr_len = i - attr_at
            if attr_len == 0 or i + 1 >= size or buf[i] != 61 or not (buf[i + 1] == 34 or buf[i + 1] == 39):
                return _SYNTAX, i
            quote = buf[i + 1]
            i += 2
            at = i
            is_accession = kind == _CVPARAM and attr_len == 9 and _same(buf, attr_at, 9, _ACCESSION, 0)
            while True:  # the value: up to its closing quote, stopping at '<', 'I' and quotes
                while i < size and not _VALUE_STOP[buf[i]]:
                    i += 1
                if i >= size:
                    return _EOF, i
                c = buf[i]
                if c == quote:
                    break
                if c == 60:
                    return _SYNTAX, i
                if c == 73:  # 'I': an accession the general parser would take for a coordinate/offset?
                    k = _code_at(buf, i)
                    if k >= 0:
                        if not (is_accession and i == at and buf[i + 11] == quote) or code >= 0:
                            return _STRAY, i
                        code = k
                i += 1
            n_attributes += 1
            if kind == _CVPARAM and attr_len == 5 and _same(buf, attr_at, 5, _VALUE_NAME, 0):
                if value_at >= 0:
                    return _SYNTAX, i
                value_at, value_end = at, i
            elif kind == _REF and attr_len == 3 and _same(buf, attr_at, 3, _REF_NAME, 0):
                ref_at, ref_end = at, i
            i += 1
        # the element
        if kind == _SPECTRUM:
            if depth != 0 or self_closing:
                return _PLACE, tag
            spectrum += 1
            if spectrum >= n_spectra:
                return _DECLARED, tag
            spectrum_depth = depth
            n_arrays = 0
            has_position[:] = False
            done_kind[:] = False
        elif kind == _ARRAY:
            if spectrum_depth < 0 or array_depth >= 0 or self_closing:
                return _PLACE, tag
            n_arrays += 1
            if n_arrays > 2:
                return _COUNT, tag
            array_depth = depth
            array_kind = -1
            has_field[:] = False
        elif kind == _LIST:
            return _PLACE, tag
        elif kind == _CVPARAM and code >= 0:
            if value_at < 0 or not plain_names:
                return _SYNTAX, tag
            ok, value = _integer(buf, value_at, value_end)
            if not ok:
                return _VALUE, value_at
            if code < 3:  # a coordinate: in the spectrum, before its arrays
                if spectrum_depth < 0 or n_arrays > 0:
                    return _PLACE, tag
                if has_position[code]:
                    return _COUNT, tag
                has_position[code] = True
                coords[spectrum, code] = value
            else:
                if array_depth < 0:
                    return _PLACE, tag
                if has_field[code - 3]:
                    return _COUNT, tag
                has_field[code - 3] = True
                field[code - 3] = value
        elif kind == _REF:
            if n_attributes != 1 or ref_at < 0:
                return _SYNTAX, tag
            group = -1
            for g in range(len(group_kind)):
                n = group_start[g + 1] - group_start[g]
                if ref_end - ref_at == n and _same(buf, ref_at, n, group_ids, group_start[g]):
                    group = group_kind[g]
            if group >= 0:
                if array_depth >= 0:
                    if array_kind >= 0 and array_kind != group:
                        return _COUNT, tag
                    array_kind = group
                elif spectrum_depth < 0 or n_arrays > 0:
                    return _PLACE, tag
        if not self_closing:
            if depth == 64:
                return _SYNTAX, tag
            stack_at[depth] = name_at
            stack_len[depth] = name_len
            depth += 1


# --- binning -------------------------------------------------------------------------------------

def edge_table(edges: np.ndarray, *, cells_per_edge: int = 4, max_cells: int = 1 << 20):
    """``(table, lo, inverse_width)`` for :func:`bin_spectra`: the range of ``edges`` cut into
    uniform cells, and for each cell the number of edges up to the start of the cell before it
    (a lower bound of the count for any m/z the cell computation can put into the cell, whatever
    its rounding); any layout of the edges is correct, clustered ones only need more galloping."""
    lo, hi = float(edges[0]), float(edges[-1])
    n = int(min(max(cells_per_edge * len(edges), 1), max_cells))
    width = (hi - lo) / n if hi > lo else 1.0
    starts = lo + width * (np.arange(n) - 1)
    return np.searchsorted(edges, starts, side="right").astype(np.int64), lo, 1.0 / width


@numba.njit
def _put_sum(s, col, total, n_bins, dense, cells, sums, n_cells):
    """Write the sum of bin ``col`` of spectrum ``s`` (see :func:`bin_spectra`); the new cell count."""
    if dense.shape[0] > 0:
        dense[s, col] = total
        return n_cells
    cells[n_cells] = s * n_bins + col
    sums[n_cells] = total
    return n_cells + 1


#: ``bin_spectra`` statuses: 0, or a problem (what the spectrum it is found in has, by status).
BIN_PROBLEMS = ("no problem", "non-finite intensities", "negative intensities", "non-finite m/z values",
                "m/z values not sorted in increasing order")
BIN_OK, BIN_NONFINITE_INTENSITY, BIN_NEGATIVE, BIN_NONFINITE_MZ, BIN_UNSORTED_MZ = (np.int64(k) for k in range(5))


@_compile
def bin_spectra(mz_views, mz_view, mz_at, int_views, int_view, int_at, lengths, edges, table, lo, inverse_width,
                shared_col, negative_error, clip, dense, cells, sums, tic):
    """Bin spectra onto sorted, non-overlapping bins, each spectrum in one merge-style walk.

    Spectrum ``s`` has ``lengths[s]`` values, its m/z at ``mz_views[mz_view[s]][mz_at[s]:]`` and
    its intensities at ``int_views[int_view[s]][int_at[s]:]`` (one view of the mapped file per
    byte alignment). A value at m/z ``m`` falls into bin ``j // 2`` when ``j``, the number of
    ``edges`` (``lower[0], end[0], lower[1], ...``, half-open) up to ``m``, is odd. ``j`` is found
    by galloping up from ``table[c]``, a lower bound of it for every m/z of the uniform cell
    ``c = (m - lo) * inverse_width`` (:func:`edge_table`); usually no step or one is needed. With
    a non-empty ``shared_col`` (continuous mode) value ``i`` of every spectrum goes to column
    ``shared_col[i]`` (-1: none) and the m/z are not read. Values of one bin are consecutive
    (sorted m/z, sorted bins): each bin's sum is added up in float64 in value order and
    written once, to ``dense[s, bin]`` when ``dense`` has rows, else as the next
    ``cells``/``sums`` entry (``s * n_bins + bin``; in order). ``tic[s]`` gets the sum of the
    spectrum (after clipping).

    Returns ``(status, spectrum, n_cells, n_negative)``: status 0, or one of the ``BIN_*``
    problems and the spectrum where it was found first.
    """
    n_edges = len(edges)
    n_bins = n_edges // 2
    n_table = len(table)
    use_shared = len(shared_col) > 0
    n_cells = 0
    n_negative = 0
    for s in range(len(lengths)):
        n = lengths[s]
        total = 0.0
        if n == 0:
            tic[s] = total
            continue
        iv = int_views[int_view[s]]
        ia = int_at[s]
        mv = mz_views[mz_view[s]]
        ma = mz_at[s]
        previous = -np.inf
        current = -1
        acc = 0.0
        for t in range(n):
            v = np.float64(iv[ia + t])
            if not np.isfinite(v):
                return BIN_NONFINITE_INTENSITY, s, n_cells, n_negative
            if v < 0:
                n_negative += 1
                if negative_error:
                    return BIN_NEGATIVE, s, n_cells, n_negative
                if clip:
                    v = 0.0
            total += v
            if use_shared:
                col = shared_col[t]
            else:
                m = np.float64(mv[ma + t])
                if not np.isfinite(m):
                    return BIN_NONFINITE_MZ, s, n_cells, n_negative
                if m < previous:
                    return BIN_UNSORTED_MZ, s, n_cells, n_negative
                previous = m
                x = (m - lo) * inverse_width  # the lookup table: a lower bound of j, then gallop
                j = table[0 if x < 0 else n_table - 1 if x >= n_table else int(x)]
                if j < n_edges and edges[j] <= m:
                    lo_j = j  # edges[lo_j] <= m
                    hi = j + 1
                    step = 1
                    while hi < n_edges and edges[hi] <= m:
                        lo_j = hi
                        step *= 2
                        hi = lo_j + step
                    hi = min(hi, n_edges)
                    lo_j += 1
                    while lo_j < hi:
                        mid = (lo_j + hi) >> 1
                        if edges[mid] <= m:
                            lo_j = mid + 1
                        else:
                            hi = mid
                    j = lo_j
                col = j >> 1 if j & 1 else -1
            if col != current:
                if current >= 0:
                    n_cells = _put_sum(s, current, acc, n_bins, dense, cells, sums, n_cells)
                current = col
                acc = 0.0
            acc += v
        if current >= 0:
            n_cells = _put_sum(s, current, acc, n_bins, dense, cells, sums, n_cells)
        tic[s] = total
    return BIN_OK, np.int64(-1), n_cells, n_negative


