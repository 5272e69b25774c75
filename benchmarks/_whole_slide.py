"""A simulated whole-slide imzML file, written chunk by chunk with bounded memory.

``write_whole_slide(path, n_pixels=500_000, n_bins=8_000, peaks_per_spectrum=300)`` writes a
processed (centroid) imzML + ``.ibd`` pair of ``n_pixels`` spectra on a raster grid: the tissue
is ``n_regions`` Voronoi regions, each with its own abundance profile over ``n_bins`` target m/z
(a random 10 % of the targets are 4x more abundant in a region, the rest share one lognormal
profile). A processed spectrum holds each target with a probability proportional to its
abundance (``peaks_per_spectrum`` on average), its m/z jittered by at most ``jitter`` Da; a
continuous one (``continuous=True``) holds every target m/z (one shared axis) with zeros where
a peak is absent. Memory is one chunk of ``chunk`` spectra: a 500,000 x 8,000 file needs a few
hundred MB whatever its size on disk.

The XML is the subset of pyimzml's ``ImzMLWriter`` output that readers need (pyimzml and
:func:`spatialclust.io.read_imzml` read it); the ``.ibd`` carries the UUID and its SHA-1 is
declared, as pyimzml writes it. Used by ``benchmarks/bench_imzml.py --store`` and
``benchmarks/bench_scale.py``.

    from _whole_slide import write_whole_slide
    slide = write_whole_slide("slide.imzML", n_pixels=500_000, n_bins=8_000)
    sc.io.read_imzml(slide.imzml, peaks=slide.mz, tolerance=slide.tolerance, store="slide.zarr")
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HEADER = """<?xml version="1.0" encoding="ISO-8859-1"?>
<mzML xmlns="http://psi.hupo.org/ms/mzml" version="1.1">
  <cvList count="2">
    <cv id="MS" fullName="Proteomics Standards Initiative Mass Spectrometry Ontology" version="3.65.0" uri="http://psidev.cvs.sourceforge.net/*checkout*/psidev/psi/psi-ms/mzML/controlledVocabulary/psi-ms.obo"/>
    <cv id="UO" fullName="Unit Ontology" version="12:10:2011" uri="http://obo.cvs.sourceforge.net/*checkout*/obo/obo/ontology/phenotype/unit.obo"/>
  </cvList>
  <fileDescription>
    <fileContent>
      <cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>
      <cvParam cvRef="MS" accession="MS:1000127" name="centroid spectrum" value=""/>
      <cvParam cvRef="IMS" accession="{mode_acc}" name="{mode}" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" value="{{{uuid}}}"/>
      <cvParam cvRef="IMS" accession="IMS:1000091" name="ibd SHA-1" value="{sha1}"/>
    </fileContent>
  </fileDescription>
  <referenceableParamGroupList count="2">
    <referenceableParamGroup id="mzArray">
      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>
      <cvParam cvRef="MS" accession="MS:1000514" name="m/z array" unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>
      <cvParam cvRef="MS" accession="MS:1000523" name="64-bit float" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>
    </referenceableParamGroup>
    <referenceableParamGroup id="intensityArray">
      <cvParam cvRef="MS" accession="MS:1000521" name="32-bit float" value=""/>
      <cvParam cvRef="MS" accession="MS:1000515" name="intensity array" unitCvRef="MS" unitAccession="MS:1000131" unitName="number of detector counts"/>
      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>
      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>
    </referenceableParamGroup>
  </referenceableParamGroupList>
  <softwareList count="1">
    <software id="spatialclust_whole_slide" version="1">
      <cvParam cvRef="MS" accession="MS:1000799" name="custom unreleased software tool" value="simulated whole slide"/>
    </software>
  </softwareList>
  <scanSettingsList count="1">
    <scanSettings id="scanSettings1">
      <cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" value="{width}"/>
      <cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" value="{height}"/>
      <cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size (x)" value="{pixel_size}" unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
      <cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" value="{pixel_size}" unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>
    </scanSettings>
  </scanSettingsList>
  <instrumentConfigurationList count="1">
    <instrumentConfiguration id="IC1"/>
  </instrumentConfigurationList>
  <dataProcessingList count="1">
    <dataProcessing id="simulation">
      <processingMethod order="0" softwareRef="spatialclust_whole_slide">
        <cvParam cvRef="MS" accession="MS:1000530" name="file format conversion" value="Output to imzML"/>
      </processingMethod>
    </dataProcessing>
  </dataProcessingList>
  <run defaultInstrumentConfigurationRef="IC1" id="whole_slide">
    <spectrumList count="{n}" defaultDataProcessingRef="simulation">
"""
_ARRAY = """          <binaryDataArray encodedLength="0">
            <referenceableParamGroupRef ref="{ref}"/>
            <cvParam accession="IMS:1000103" cvRef="IMS" name="external array length" value="{{{kind}_n}}"/>
            <cvParam accession="IMS:1000104" cvRef="IMS" name="external encoded length" value="{{{kind}_b}}"/>
            <cvParam accession="IMS:1000102" cvRef="IMS" name="external offset" value="{{{kind}_o}}"/>
            <binary/>
          </binaryDataArray>
"""
_SPECTRUM = """      <spectrum defaultArrayLength="0" id="spectrum={i}" index="{i}">
        <scanList count="1">
          <cvParam accession="MS:1000795" cvRef="MS" name="no combination"/>
          <scan instrumentConfigurationRef="IC1">
            <cvParam accession="IMS:1000050" cvRef="IMS" name="position x" value="{x}"/>
            <cvParam accession="IMS:1000051" cvRef="IMS" name="position y" value="{y}"/>
          </scan>
        </scanList>
        <binaryDataArrayList count="2">
""" + _ARRAY.format(ref="mzArray", kind="mz") + _ARRAY.format(ref="intensityArray", kind="int") + """        </binaryDataArrayList>
      </spectrum>
"""
_FOOTER = """    </spectrumList>
  </run>
</mzML>
"""
#: A fixed-width placeholder for the SHA-1 in the header, known only once the .ibd is written.
_SHA1_PLACEHOLDER = "0" * 40


@dataclass(frozen=True)
class WholeSlide:
    """What :func:`write_whole_slide` wrote."""

    imzml: Path  #: the .imzML file (its .ibd lies next to it)
    mz: np.ndarray  #: the target m/z (float64, sorted): ``read_imzml(peaks=mz, tolerance=tolerance)``
    tolerance: float  #: Da; a peak window that holds every jittered peak of its target and no other
    shape: tuple[int, int]  #: grid (height, width); pixels fill it in raster order
    labels: np.ndarray  #: the region of every pixel (int16, raster order = spectrum order)
    continuous: bool


def _regions(n_pixels: int, width: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Voronoi regions of ``n_regions`` random centres on the grid, one label per pixel."""
    height = -(-n_pixels // width)
    centres = rng.uniform(0, 1, (n_regions, 2)) * (width, height)
    labels = np.empty(n_pixels, dtype=np.int16)
    for start in range(0, n_pixels, 1 << 16):  # bounded memory
        idx = np.arange(start, min(start + (1 << 16), n_pixels))
        xy = np.stack([idx % width, idx // width], axis=1).astype(np.float64)
        labels[idx] = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return labels


def write_whole_slide(
    path: str | os.PathLike,
    *,
    n_pixels: int = 500_000,
    n_bins: int = 8_000,
    peaks_per_spectrum: int = 300,
    continuous: bool = False,
    n_regions: int = 8,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    jitter: float = 1e-3,
    pixel_size: float = 10.0,
    chunk: int = 2048,
    seed: int = 0,
) -> WholeSlide:
    """Write a simulated whole-slide imzML file chunk by chunk (bounded memory, any size).

    Parameters
    ----------
    path
        The ``.imzML`` to write (the ``.ibd`` goes next to it); existing files are replaced.
    n_pixels
        Spectra, on a raster grid ``ceil(sqrt(n_pixels))`` wide (the last row may be partial).
    n_bins
        Target m/z, evenly spread over ``mz_range`` (the features after binning with ``peaks=mz``).
    peaks_per_spectrum
        Mean number of targets a processed spectrum holds (ignored when ``continuous``).
    continuous
        Write a continuous file: one shared m/z axis (the targets), a dense intensity array per
        spectrum (``n_pixels * n_bins * 4`` bytes: 16 GB for the defaults).
    n_regions
        Tissue regions (the ground truth in ``labels``).
    mz_range, jitter
        Span of the targets and the largest m/z shift of a peak from its target (Da).
    pixel_size
        µm, declared in the scan settings.
    chunk
        Spectra generated and written at once.
    seed
        Random seed.

    Returns
    -------
    :class:`WholeSlide` with the paths, the targets, the peak-window tolerance, the grid shape and
    the region labels.
    """
    if n_pixels < 1 or n_bins < 1 or not 0 < peaks_per_spectrum <= n_bins:
        raise ValueError(f"Need n_pixels >= 1, n_bins >= 1 and 0 < peaks_per_spectrum <= n_bins, got "
                         f"{n_pixels}, {n_bins}, {peaks_per_spectrum}.")
    path = Path(path)
    ibd = path.with_suffix(".ibd")
    rng = np.random.default_rng(seed)
    width = int(np.ceil(np.sqrt(n_pixels)))
    height = -(-n_pixels // width)
    spacing = (mz_range[1] - mz_range[0]) / n_bins
    if not jitter < spacing / 4:
        raise ValueError(f"`jitter`={jitter} must be < a quarter of the target spacing ({spacing:.4g} Da).")
    mz = mz_range[0] + spacing * (np.arange(n_bins) + 0.5)
    labels = _regions(n_pixels, width, n_regions, rng)
    base = rng.lognormal(1.0, 1.0, n_bins)
    abundance = np.tile(base, (n_regions, 1))
    abundance[rng.random((n_regions, n_bins)) < 0.1] *= 4.0  # region markers
    presence = np.minimum(1.0, abundance * (peaks_per_spectrum / abundance.sum(axis=1, keepdims=True)))
    presence = presence.astype(np.float32)
    file_id = uuid.uuid4()
    sha1 = hashlib.sha1()
    mz_bytes = mz.astype("<f8").tobytes()

    def write(fh, data: bytes) -> None:
        fh.write(data)
        sha1.update(data)

    offset = 16
    with open(ibd, "wb") as bin_fh, open(path, "w", encoding="ascii") as xml_fh:
        write(bin_fh, file_id.bytes)
        xml_fh.write(_HEADER.format(
            mode_acc="IMS:1000030" if continuous else "IMS:1000031", mode="continuous" if continuous else "processed",
            uuid=str(file_id).upper(), sha1=_SHA1_PLACEHOLDER, width=width, height=height,
            pixel_size=pixel_size, n=n_pixels,
        ))
        if continuous:
            write(bin_fh, mz_bytes)
            shared_offset, offset = offset, offset + len(mz_bytes)
        for start in range(0, n_pixels, chunk):
            lab = labels[start : start + chunk]
            k = len(lab)
            scale = rng.exponential(1.0, (k, n_bins)).astype(np.float32)
            present = rng.random((k, n_bins), dtype=np.float32) < presence[lab]
            inten = np.where(present, scale * abundance[lab].astype(np.float32), np.float32(0))
            parts, xml = [], []
            for r in range(k):
                i = start + r
                if continuous:
                    row = inten[r]
                    mz_o, n_values = shared_offset, n_bins
                else:
                    cols = np.flatnonzero(present[r])
                    row = inten[r, cols]
                    spec_mz = (mz[cols] + rng.uniform(-jitter, jitter, len(cols))).astype("<f8").tobytes()
                    parts.append(spec_mz)
                    mz_o, n_values = offset, len(cols)
                    offset += len(spec_mz)
                int_bytes = row.astype("<f4").tobytes()
                parts.append(int_bytes)
                xml.append(_SPECTRUM.format(
                    i=i + 1, x=i % width + 1, y=i // width + 1, mz_n=n_values, mz_b=8 * n_values, mz_o=mz_o,
                    int_n=n_values, int_b=4 * n_values, int_o=offset,
                ))
                offset += len(int_bytes)
            write(bin_fh, b"".join(parts))
            xml_fh.write("".join(xml))
        xml_fh.write(_FOOTER)
    # the SHA-1 is known only now: overwrite the fixed-width placeholder in place
    with open(path, "r+b") as fh:
        head = fh.read(1 << 16)
        at = head.index(_SHA1_PLACEHOLDER.encode())
        fh.seek(at)
        fh.write(sha1.hexdigest().upper().encode())
    return WholeSlide(imzml=path, mz=mz, tolerance=float(min(spacing / 2.5, 2.5 * jitter)), shape=(height, width),
                      labels=labels, continuous=continuous)
