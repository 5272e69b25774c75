"""The index of an imzML file (where every spectrum lies in the ``.ibd``), parsed and checked.

imzML (Schramm et al. 2012, J. Proteomics 75:5106) is mzML XML whose ``<spectrum>`` elements point
into a binary ``.ibd`` file that starts with a 16-byte UUID. The XML holds ~2 kB per spectrum, so
parsing it is a large part of reading a file. The header (everything outside ``<spectrumList>``) is
small and parsed as XML. The spectrum list is read by a compiled scanner over the memory-mapped
file (:func:`._imzml_kernels.scan_spectrum_list`) where its layout is the plain one writers
produce; any other layout goes to the general parser, which streams the list in blocks and scans
it with a few compiled regular expressions, whose matches are assigned to spectra and arrays by
their position (mzML fixes the order: scan coordinates before the binary data arrays). Every count
is cross-checked (one x and y per spectrum, one offset and length per array, one m/z and one
intensity array per spectrum, the declared number of spectra), so a layout neither understands is
an error, never a silent misreading; both give the same index (tests).

:func:`check_binary` then checks every array against the ``.ibd``: UUID, header, file size,
lengths, overlaps and the declared SHA-1/MD5 checksum.
"""

from __future__ import annotations

import hashlib
import mmap
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._logging import logger

#: Bytes read from the XML per block.
_BLOCK = 1 << 23
#: The .ibd starts with the 16-byte UUID of its imzML file.
HEADER_BYTES = 16

_DTYPES = {  # binary data type accessions (mzML and imzML) and names -> little-endian dtype
    "MS:1000521": "<f4", "MS:1000523": "<f8", "MS:1000519": "<i4", "MS:1000522": "<i8",
    "IMS:1000141": "<i4", "IMS:1000142": "<i8",
    "32-bit float": "<f4", "64-bit float": "<f8", "32-bit integer": "<i4", "64-bit integer": "<i8",
}
_NO_COMPRESSION = "MS:1000576"
_COMPRESSIONS = {"MS:1000574": "zlib", "MS:1002312": "MS-Numpress linear", "MS:1002313": "MS-Numpress pic",
                 "MS:1002314": "MS-Numpress slof"}
_CHECKSUMS = {"IMS:1000090": "md5", "IMS:1000091": "sha1"}
_FIELDS = {b"050": "position x", b"051": "position y", b"052": "position z",
           b"102": "external offset", b"103": "external array length", b"104": "external encoded length"}


class ImzMLError(ValueError):
    """An imzML/ibd file pair is missing, corrupt, inconsistent or holds invalid values."""


@dataclass(frozen=True)
class ImzMLIndex:
    """Where the spectra of an imzML file lie in its ``.ibd`` (one entry per spectrum, file order)."""

    mz_offset: np.ndarray  # int64 byte offsets
    mz_length: np.ndarray  # int64 number of values
    int_offset: np.ndarray
    int_length: np.ndarray
    coords: np.ndarray  # int64 (n, 3) x, y, z (z = 1 when absent, as pyimzml)
    mz_dtype: np.dtype
    int_dtype: np.dtype
    uuid: str | None  # 32 lower-case hex digits
    checksum: tuple[str, str] | None  # (hashlib name, lower-case hex digest)
    declared_mode: str | None  # "continuous" / "processed" as declared in fileContent
    pixel_size: tuple[float | None, float | None]

    @property
    def n_spectra(self) -> int:
        return len(self.coords)


def _patterns(prefix: bytes) -> dict[str, re.Pattern]:
    p = re.escape(prefix)
    q = rb"[\"']"
    code = rb"IMS:1000(05[012]|10[234])"
    attrs = rb"(?:\s+(?!value=)[\w:]+=(?:\"[^\"]*\"|'[^']*'))*"  # the attributes between accession and value
    return {
        "list_end": re.compile(rb"</" + p + rb"spectrumList\s*>"),
        "start": re.compile(rb"<" + p + rb"spectrum[\s>]"),
        "end": re.compile(rb"</" + p + rb"spectrum\s*>"),
        "array": re.compile(rb"<" + p + rb"binaryDataArray[\s>]"),
        "ref": re.compile(rb"<" + p + rb"referenceableParamGroupRef\s[^>]*?ref=" + q + rb"([^\"']*)"),
        "code": re.compile(code + q),
        "value_after": re.compile(code + q + attrs + rb"\s+value=" + q + rb"([^\"']*)"),
        "value_before": re.compile(rb"\bvalue=" + q + rb"([^\"']*)" + q + rb"[^>]*?\baccession=" + q + code + q),
    }


_PLAIN = _patterns(b"")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _params(elem: ET.Element) -> dict[str, str]:
    """accession -> value of the direct ``cvParam`` children (names too, for data types)."""
    out = {}
    for child in elem:
        if _local(child.tag) == "cvParam":
            acc, value = child.get("accession", ""), child.get("value", "")
            out[acc] = value
            out.setdefault(child.get("name", ""), value)
    return out


def _starts(pattern: re.Pattern, text: bytes) -> np.ndarray:
    return np.fromiter(map(re.Match.start, pattern.finditer(text)), dtype=np.int64)


def _int(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    try:
        return values.astype(np.int64)
    except (ValueError, OverflowError) as err:
        raise ImzMLError(f"{str(path)!r}: an invalid {what} value in the spectrum list ({err}).") from err


class _Header:
    """What the XML outside the spectrum list declares."""

    def __init__(self, root: ET.Element, path: Path):
        self.groups: dict[str, str] = {}  # referenceableParamGroup id -> "mz" / "int"
        self.dtypes: dict[str, str] = {}
        self.uuid = self.checksum = self.mode = None
        self.pixel_size: tuple[float | None, float | None] = (None, None)
        for elem in root.iter():
            name = _local(elem.tag)
            if name == "referenceableParamGroup":
                params = _params(elem)
                kind = "mz" if "MS:1000514" in params else "int" if "MS:1000515" in params else None
                if kind is None:
                    continue
                if kind in self.dtypes:
                    raise ImzMLError(f"{str(path)!r} declares several {kind} array groups; not supported.")
                dtype = next((_DTYPES[k] for k in params if k in _DTYPES), None)
                if dtype is None:
                    raise ImzMLError(f"{str(path)!r}: the {kind} array group declares no known binary data type.")
                compression = next((v for k, v in _COMPRESSIONS.items() if k in params), None)
                if compression is not None:
                    raise ImzMLError(
                        f"{str(path)!r}: the {kind} arrays are {compression}-compressed; only uncompressed "
                        f"({_NO_COMPRESSION} 'no compression') imzML is supported."
                    )
                self.groups[elem.get("id", "")] = kind
                self.dtypes[kind] = dtype
            elif name == "fileContent":
                params = _params(elem)
                if "IMS:1000080" in params:
                    self.uuid = re.sub(r"[{}\-\s]", "", params["IMS:1000080"]).lower()
                for acc, algo in _CHECKSUMS.items():
                    if params.get(acc):
                        self.checksum = (algo, params[acc].strip().lower())
                self.mode = "continuous" if "IMS:1000030" in params else "processed" if "IMS:1000031" in params else None
            elif name == "scanSettings":
                params = _params(elem)
                try:
                    self.pixel_size = tuple(  # type: ignore[assignment]
                        float(params[a]) if params.get(a) else None for a in ("IMS:1000046", "IMS:1000047")
                    )
                except ValueError:
                    logger.warning("%s: unreadable pixel size %s; ignored.", path.name,
                                   [params.get("IMS:1000046"), params.get("IMS:1000047")])
        for kind in ("mz", "int"):
            if kind not in self.dtypes:
                raise ImzMLError(
                    f"{str(path)!r} is not a valid imzML file: no referenceableParamGroup declares the "
                    f"{'m/z' if kind == 'mz' else 'intensity'} array (MS:{1000514 if kind == 'mz' else 1000515})."
                )


class _SpectrumScanner:
    """Accumulates the spectra of complete ``<spectrum>...</spectrum>`` pieces of the spectrum list."""

    def __init__(self, pats: dict[str, re.Pattern], groups: dict[str, str], path: Path):
        self.pats, self.groups, self.path = pats, groups, path
        self.parts: list[dict[str, np.ndarray]] = []

    def _error(self, spectrum: int, what: str) -> ImzMLError:
        n = sum(len(p["x"]) for p in self.parts) + spectrum
        return ImzMLError(f"{str(self.path)!r}: spectrum {n} of the spectrum list {what}.")

    def add(self, piece: bytes) -> None:
        if b"<!--" in piece or b"<![CDATA[" in piece:
            piece = re.sub(rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>", b"", piece, flags=re.S)
        pats = self.pats
        starts = _starts(pats["start"], piece)
        if len(starts) == 0:
            return
        if len(pats["end"].findall(piece)) != len(starts):
            raise ImzMLError(f"{str(self.path)!r}: unbalanced <spectrum> elements in the spectrum list.")
        arrays = _starts(pats["array"], piece)
        # structural elements (spectrum starts, array starts) in document order
        struct = np.concatenate([starts, arrays])
        is_array = np.concatenate([np.zeros(len(starts), bool), np.ones(len(arrays), bool)])
        order = np.argsort(struct, kind="stable")
        struct, is_array = struct[order], is_array[order]
        spectrum_of = np.cumsum(~is_array) - 1  # spectrum of every structural element
        array_id = np.cumsum(is_array) - 1  # array number of every array element

        n = len(starts)
        arr_spec = spectrum_of[is_array]
        per_spectrum = np.bincount(arr_spec, minlength=n)
        if np.any(per_spectrum != 2):
            raise self._error(int(np.argmax(per_spectrum != 2)),
                              "does not hold exactly two binary data arrays (m/z and intensity)")

        # kind of every array (0 m/z, 1 intensity) from its referenceableParamGroupRefs
        names = pats["ref"].findall(piece)
        kind = np.full(len(arrays), -1, dtype=np.int64)
        if names:
            codes = {"mz": 0, "int": 1}
            by_name = {u: codes.get(self.groups.get(u.decode("utf-8", "replace")), -1) for u in set(names)}
            code = np.array([by_name[u] for u in names], dtype=np.int64)
            owner = np.searchsorted(struct, _starts(pats["ref"], piece), side="right") - 1
            sel = (code >= 0) & (owner >= 0)
            sel[sel] = is_array[owner[sel]]
            a, c = array_id[owner[sel]], code[sel]
            kind[a] = c
            if np.any(kind[a] != c):
                bad = int(a[np.argmax(kind[a] != c)])
                raise self._error(int(arr_spec[bad]), "has an array that references both m/z and intensity groups")
        missing = kind < 0
        if missing.any():
            raise self._error(int(arr_spec[np.argmax(missing)]), "has a binary data array without a "
                              "referenceableParamGroupRef to the m/z or intensity group")
        mz_count = np.bincount(arr_spec[kind == 0], minlength=n)
        if np.any(mz_count != 1):
            raise self._error(int(np.argmax(mz_count != 1)), "does not hold exactly one m/z and one intensity array")

        # coordinates (spectrum level) and offsets/lengths (array level)
        pos = _starts(pats["code"], piece)
        found = pats["value_after"].findall(piece)  # each match starts at a code: same order as pos
        if len(found) != len(pos):  # some cvParams carry value= before accession=
            both = [(m.start(), m[1], m[2]) for m in pats["value_after"].finditer(piece)]
            both += [(m.start(), m[2], m[1]) for m in pats["value_before"].finditer(piece)]
            both.sort()
            pos = np.array([b[0] for b in both], dtype=np.int64)
            found = [b[1:] for b in both]
        if not found:
            raise self._error(0, "has no coordinates")
        codes = np.array([f[0] for f in found], dtype=np.bytes_)
        values = np.array([f[1] for f in found], dtype=np.bytes_)
        owner = np.searchsorted(struct, pos, side="right") - 1
        if np.any(owner < 0):
            raise ImzMLError(f"{str(self.path)!r}: a coordinate or offset outside any <spectrum> element.")
        part: dict[str, np.ndarray] = {}
        for code, field in _FIELDS.items():
            sel = codes == code
            at = owner[sel]
            on_array = is_array[at]
            if code in (b"050", b"051", b"052"):
                if on_array.any():
                    raise self._error(int(spectrum_of[at[on_array][0]]), f"has its {field} in an array")
                who, size = spectrum_of[at], n
            else:
                if not on_array.all():
                    raise self._error(int(spectrum_of[at[~on_array][0]]), f"has an {field} outside its arrays")
                who, size = array_id[at], len(arrays)
            count = np.bincount(who, minlength=size)
            optional = code in (b"052", b"104")
            if np.any(count > 1) or (not optional and np.any(count != 1)):
                bad = int(np.argmax(count > 1 if optional else count != 1))
                raise self._error(bad if size == n else int(arr_spec[bad]),
                                  f"has {int(count[bad])} '{field}' values (expected one)")
            out = np.full(size, 1 if code == b"052" else -1, dtype=np.int64)  # z = 1 when absent, as pyimzml
            out[who] = _int(values[sel], field, self.path)
            part[field] = out
        mz_a, int_a = np.nonzero(kind == 0)[0], np.nonzero(kind == 1)[0]  # in document (= spectrum) order
        self.parts.append({
            "x": part["position x"], "y": part["position y"], "z": part["position z"],
            "mz_offset": part["external offset"][mz_a], "mz_length": part["external array length"][mz_a],
            "mz_bytes": part["external encoded length"][mz_a],
            "int_offset": part["external offset"][int_a], "int_length": part["external array length"][int_a],
            "int_bytes": part["external encoded length"][int_a],
        })

    def result(self) -> dict[str, np.ndarray]:
        keys = ("x", "y", "z", "mz_offset", "mz_length", "mz_bytes", "int_offset", "int_length", "int_bytes")
        return {k: np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(0, np.int64) for k in keys}


def _fix_offsets(offsets: np.ndarray) -> np.ndarray:
    """Undo signed 32-bit offsets written by some converters (as pyimzml's ``__fix_offsets``)."""
    if not np.any(offsets < 0):
        return offsets
    wraps = np.zeros(len(offsets), dtype=np.int64)
    wraps[1:] = (offsets[1:] < 0) & (offsets[:-1] >= 0)
    return offsets + np.cumsum(wraps) * 2**32


def _feed(pull: ET.XMLPullParser, data: bytes, path: Path) -> list:
    try:
        pull.feed(data)
        return list(pull.read_events())
    except ET.ParseError as err:
        raise ImzMLError(f"{str(path)!r} is not a valid imzML file: {err}") from err


def _scan_streamed(fh, buf: bytes, pats: dict[str, re.Pattern], prefix: bytes, groups: dict[str, str],
                   path: Path) -> tuple[dict[str, np.ndarray], bytes]:
    """The spectrum list read from ``buf`` and then ``fh`` in blocks by the general parser, and the
    XML from its ``</spectrumList>`` on."""
    scanner = _SpectrumScanner(pats, groups, path)
    close = b"</" + prefix + b"spectrum"
    while (end := pats["list_end"].search(buf)) is None:
        cut = buf.rfind(close)
        gt = buf.find(b">", cut)
        if cut >= 0 and gt >= 0 and not buf[cut + len(close) : gt].strip():
            scanner.add(buf[: gt + 1])
            buf = buf[gt + 1 :]
        block = fh.read(_BLOCK)
        if not block:
            raise ImzMLError(
                f"{str(path)!r} is truncated: the XML ends inside the spectrum list (no </spectrumList>)."
            )
        buf += block
    scanner.add(buf[: end.start()])
    return scanner.result(), buf[end.start() :] + fh.read()


def _packed(names: list[bytes] | tuple[bytes, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``names`` as one uint8 array and the start of each (and the end of the last)."""
    starts = np.cumsum([0] + [len(n) for n in names]).astype(np.int64)
    return np.frombuffer(b"".join(names), dtype=np.uint8), starts


def _scan_mapped(path: Path, list_at: int, prefix: bytes, groups: dict[str, str],
                 count: int | None) -> tuple[dict[str, np.ndarray], bytes] | None:
    """The spectrum list from ``list_at`` on, scanned by the compiled scanner over the memory-mapped
    XML, and the XML from its ``</spectrumList>`` on; ``None`` (logged) where the file has a layout
    the scanner does not read, which the general parser then reads (or rejects)."""
    from . import _imzml_kernels as kernels

    if count is None:
        logger.debug("%s: the spectrum list declares no count; read by the general parser.", path.name)
        return None
    coords = np.ones((count, 3), dtype=np.int64)  # z = 1 when absent, as pyimzml
    arrays = np.full((count, 2, 3), -1, dtype=np.int64)  # (spectrum, m/z or intensity, offset/length/bytes)
    group_ids = [name.encode("utf-8") for name in groups]  # compared as written, as the general parser does
    group_kind = np.array([groups[name] == "int" for name in groups], dtype=np.int64)  # 0 m/z, 1 intensity
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        buf = np.frombuffer(mapped, dtype=np.uint8)
        try:
            status, at = kernels.scan_spectrum_list(buf, list_at, np.frombuffer(prefix, np.uint8),
                                                    *_packed(kernels.ELEMENTS), *_packed(group_ids), group_kind,
                                                    coords, arrays)
        finally:
            del buf  # the map cannot close while a NumPy view of it exists
        tail = mapped[at:] if status == 0 else b""
    if status != 0:
        logger.debug("%s: %s (near byte %d); read by the general parser.", path.name, kernels.SCAN_REASONS[status], at)
        return None
    logger.debug("%s: spectrum list read by the compiled scanner.", path.name)
    found = {"x": coords[:, 0], "y": coords[:, 1], "z": coords[:, 2]}
    for k, kind in enumerate(("mz", "int")):
        found[f"{kind}_offset"], found[f"{kind}_length"], found[f"{kind}_bytes"] = arrays[:, k].T.copy()
    return found, tail


def parse_index(path: Path, *, compiled: bool = True,
                on_checksum: Callable[[tuple[str, str] | None], None] | None = None) -> ImzMLIndex:
    """Read the imzML XML once and return its :class:`ImzMLIndex` (header and spectrum list checked).

    The spectrum list is scanned by a compiled scanner over the memory-mapped file where its layout
    is the plain one every writer we know produces (``compiled=True``, the default), otherwise
    (comments, unusual attribute forms, ...) streamed in blocks through the general regular-expression
    parser; both give the same index, and any layout the scanner does not read goes to the general one.
    ``on_checksum`` is called with the ``.ibd`` checksum the header declares (``(algorithm, hex digest)``
    or ``None``) as soon as the header is parsed, before the spectrum list.
    """
    list_start = re.compile(rb"<(\w+:)?spectrumList[\s>]")
    with open(path, "rb") as fh:
        head = b""
        while (m := list_start.search(head)) is None or head.find(b">", m.end() - 1) < 0:
            block = fh.read(_BLOCK)
            if not block:
                what = "has no <spectrumList> element" if m is None else "ends inside the <spectrumList> tag"
                raise ImzMLError(f"{str(path)!r} is not a valid imzML file: it {what}.")
            head += block
        prefix = m.group(1) or b""
        pats = _PLAIN if not prefix else _patterns(prefix)
        tag_end = head.find(b">", m.end() - 1)
        header, list_tag, buf = head[: m.start()], head[m.start() : tag_end + 1], head[tag_end + 1 :]
        count = re.search(rb"\bcount=[\"'](\d+)[\"']", list_tag)
        # the header (file content, param groups, scan settings) is complete before the spectrum list
        pull = ET.XMLPullParser(events=("start",))
        events = _feed(pull, header, path)
        if not events:
            raise ImzMLError(f"{str(path)!r} is not a valid imzML file: no XML element before <spectrumList>.")
        info = _Header(events[0][1], path)
        if on_checksum is not None:
            on_checksum(info.checksum)
        scanned = (_scan_mapped(path, tag_end + 1, prefix, info.groups, None if count is None else int(count.group(1)))
                   if compiled else None)
        if scanned is not None:
            found, tail = scanned
        else:
            found, tail = _scan_streamed(fh, buf, pats, prefix, info.groups, path)
    _feed(pull, list_tag + tail, path)
    try:
        pull.close()
    except ET.ParseError as err:
        raise ImzMLError(f"{str(path)!r} is not a valid imzML file (truncated?): {err}") from err
    n = len(found["x"])
    if count is not None and int(count.group(1)) != n:
        raise ImzMLError(
            f"{str(path)!r}: the spectrum list declares count={int(count.group(1))} spectra but holds {n}."
        )
    mz_dtype, int_dtype = np.dtype(info.dtypes["mz"]), np.dtype(info.dtypes["int"])
    for kind, nbytes, length, dtype in (("m/z", found["mz_bytes"], found["mz_length"], mz_dtype),
                                        ("intensity", found["int_bytes"], found["int_length"], int_dtype)):
        bad = (nbytes >= 0) & (nbytes != length * dtype.itemsize)
        if bad.any():
            i = int(np.argmax(bad))
            raise ImzMLError(
                f"{str(path)!r}: spectrum {i} declares a {kind} array of {int(length[i])} values "
                f"({dtype.itemsize} bytes each) but an encoded length of {int(nbytes[i])} bytes."
            )
    return ImzMLIndex(
        mz_offset=_fix_offsets(found["mz_offset"]), mz_length=found["mz_length"],
        int_offset=_fix_offsets(found["int_offset"]), int_length=found["int_length"],
        coords=np.stack([found["x"], found["y"], found["z"]], axis=1),
        mz_dtype=mz_dtype, int_dtype=int_dtype, uuid=info.uuid, checksum=info.checksum,
        declared_mode=info.mode, pixel_size=info.pixel_size,
    )


def check_binary(index: ImzMLIndex, path: Path, ibd: Path) -> bool:
    """Check every array of ``index`` against the ``.ibd``; returns whether the m/z axis is shared.

    The ``.ibd`` must start with the UUID the XML declares, and every non-empty array must lie
    after that 16-byte header, inside the file, with as many m/z as intensity values, and no two
    arrays may overlap, except one m/z array shared by all spectra (continuous mode).
    """
    size = ibd.stat().st_size
    if size < HEADER_BYTES:
        raise ImzMLError(
            f"{str(ibd)!r} is truncated: it has {size} bytes, fewer than its {HEADER_BYTES}-byte UUID header."
        )
    with open(ibd, "rb") as fh:
        found = fh.read(HEADER_BYTES).hex()
    if index.uuid is not None and index.uuid != found:
        raise ImzMLError(
            f"UUID mismatch: {str(path)!r} declares {index.uuid} but {str(ibd)!r} starts with {found}; "
            "the .imzML and .ibd files do not belong together."
        )
    n = index.n_spectra
    if n == 0:
        raise ImzMLError(f"{str(path)!r} contains no spectra.")
    for kind, length in (("m/z", index.mz_length), ("intensity", index.int_length)):
        if np.any(length < 0):
            raise ImzMLError(f"{str(path)!r}: spectrum {int(np.argmax(length < 0))} has a negative {kind} array length.")
    differ = index.mz_length != index.int_length
    if differ.any():
        i = int(np.argmax(differ))
        raise ImzMLError(
            f"{str(path)!r}: spectrum {i} has m/z and intensity arrays of different lengths "
            f"({int(index.mz_length[i])} and {int(index.int_length[i])})."
        )
    used = index.mz_length > 0
    if not used.any():
        raise ImzMLError(f"All {n} spectra of {str(path)!r} are empty.")
    mz_pairs = np.stack([index.mz_offset[used], index.mz_length[used]], axis=1)
    shared = bool(np.all(mz_pairs == mz_pairs[0]))
    if index.declared_mode == "continuous" and not shared and used.sum() > 1:
        raise ImzMLError(
            f"{str(path)!r} declares continuous mode (one m/z axis for all spectra) but its spectra "
            f"reference {len(np.unique(mz_pairs, axis=0))} different m/z arrays."
        )
    # every non-empty array: [start, end) in bytes, labelled (spectrum, kind) for the messages
    spec = np.nonzero(used)[0]
    mz_spec = spec[:1] if shared else spec
    starts = np.concatenate([index.mz_offset[mz_spec], index.int_offset[spec]])
    ends = starts + np.concatenate([index.mz_length[mz_spec] * index.mz_dtype.itemsize,
                                    index.int_length[spec] * index.int_dtype.itemsize])
    label = np.concatenate([mz_spec, spec]), np.concatenate([np.zeros(len(mz_spec), int), np.ones(len(spec), int)])
    kinds = ("m/z", "intensity")
    if np.any(starts < HEADER_BYTES):
        i = int(np.argmax(starts < HEADER_BYTES))
        raise ImzMLError(
            f"{str(path)!r}: the {kinds[label[1][i]]} array of spectrum {int(label[0][i])} starts at byte "
            f"{int(starts[i])}, inside the {HEADER_BYTES}-byte UUID header of the .ibd."
        )
    if ends.max() > size:
        i = int(np.argmax(ends))
        raise ImzMLError(
            f"{str(ibd)!r} is truncated or the offsets are corrupt: the {kinds[label[1][i]]} array of "
            f"spectrum {int(label[0][i])} ends at byte {int(ends[i])}, the file has {size} bytes."
        )
    order = np.argsort(starts, kind="stable")
    overlap = starts[order][1:] < ends[order][:-1]
    if overlap.any():
        a, b = order[int(np.argmax(overlap))], order[int(np.argmax(overlap)) + 1]
        raise ImzMLError(
            f"{str(path)!r}: the {kinds[label[1][a]]} array of spectrum {int(label[0][a])} (bytes "
            f"{int(starts[a])}-{int(ends[a])}) overlaps the {kinds[label[1][b]]} array of spectrum "
            f"{int(label[0][b])} (from byte {int(starts[b])})."
        )
    return shared


def file_digest(ibd: Path, algorithm: str) -> str:
    """Hex digest of a whole file (hashlib releases the GIL: this may run in a thread)."""
    with open(ibd, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()
