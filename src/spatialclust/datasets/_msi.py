"""Simulator of mass spectrometry imaging (MSI) data with known spatial pattern classes and isotopes.

The built-in default dataset of ``spatialclust demo`` and the ground truth the clustering tests
check against. A tissue section (an irregular blob on a pixel grid, surrounded by matrix) holds
``n_patterns`` spatial patterns of the kinds seen in tissue ion images (anatomical regions,
layers along the tissue border, gradients, foci, rings, irregular blobs). Each simulated ion
follows one pattern; matrix ions sit off tissue. The counts of every ion image go through the
distortions real MSI data show (see :func:`simulate_msi`), and abundant ions get their 13C M+1
isotope peak, the ground truth of the isotope-based metrics of Zhang et al. (seed 000).

Two regimes (``realism``): ``"ideal"`` (the default demo data: equal class sizes, mild distortions,
on which k-means on the regular images is already near-perfect) and ``"real"``, built so that the
raw-image baseline sits where it does on measured data (k-means ACC ~0.55-0.75 at 13 classes; see
docs/benchmarks.md for the comparison with the mouse urinary bladder data): abundances over two
orders of magnitude at low counts, a wide per-ion contrast (gamma), strong ion-specific suppression
gain fields, strong partial mixing of patterns, more and brighter hot pixels, patterns with smooth,
irregularly warped borders, unequal class sizes and isotope partners at 10-50 % of their parent.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
from scipy import ndimage

from .. import _keys as K
from .._logging import logger
from .._registry import invalid_option
from ..io import images_to_adata
from ..metrics import C13_SHIFT

__all__ = ["REALISMS", "pattern_names", "simulate_msi"]

#: Pattern kinds, in the order they are used (cycled when ``n_patterns`` exceeds their number).
PATTERN_KINDS = ("region", "layer", "gradient", "spots", "ring", "blob")
#: ``var["pattern"]`` of the off-tissue matrix ions.
MATRIX_PATTERN = "matrix"
#: Natural abundance of 13C.
C13_ABUNDANCE = 0.0107
#: Smallest m/z distance between two simulated peaks, and the margin kept around the 13C shift
#: between peaks that are not a planted isotope pair (so the isotope ground truth is exact).
_MIN_PEAK_DISTANCE = 0.05
_ISOTOPE_MARGIN = 0.02

#: Defaults of the two regimes of :func:`simulate_msi` (an argument left at None takes these).
REALISM_DEFAULTS: dict[str, dict] = {
    "ideal": dict(
        shape=(64, 64), n_patterns=6, ions_per_pattern=15, n_matrix_ions=10, isotope_fraction=0.4,
        mean_counts=60.0, abundance_sigma=0.8, contrast_range=(0.7, 1.4), max_baseline=0.35, mixing=0.3,
        suppression=0.3, own_suppression=0.0, tic_variation=0.2, hot_pixel_fraction=0.002,
        hot_pixel_gain=(5.0, 20.0), warp=0.0, isotope_ratio_range=None,
    ),
    "real": dict(
        shape=(96, 96), n_patterns=12, ions_per_pattern=None, n_matrix_ions=20, isotope_fraction=0.3,
        mean_counts=5.0, abundance_sigma=1.2, contrast_range=(0.4, 2.5), max_baseline=0.2, mixing=0.35,
        suppression=0.4, own_suppression=0.3, tic_variation=0.3, hot_pixel_fraction=0.002,
        hot_pixel_gain=(2.0, 6.0), warp=0.05, isotope_ratio_range=(0.1, 0.5),
    ),
}  # fmt: skip
#: Monoisotopic on-tissue ions of the ``"real"`` regime when neither ``n_ions`` nor
#: ``ions_per_pattern`` is given (with the default 20 matrix ions and 30 % isotopes: ~390 images,
#: the size of the 13-class benchmark of Hu et al., seed 001).
REAL_N_IONS = 280
REALISMS = tuple(REALISM_DEFAULTS)


def pattern_names(n_patterns: int = 6) -> list[str]:
    """Names of the ``n_patterns`` spatial patterns of :func:`simulate_msi` (``var["pattern"]``).

    The kinds ``region, layer, gradient, spots, ring, blob`` are used in turn; a kind used again
    gets a suffix (``region-2``). Matrix ions have the pattern ``"matrix"``.
    """
    names = []
    for i in range(n_patterns):
        kind, repeat = PATTERN_KINDS[i % len(PATTERN_KINDS)], i // len(PATTERN_KINDS)
        names.append(kind if repeat == 0 else f"{kind}-{repeat + 1}")
    return names


def isotope_ratio(n_carbon: np.ndarray | int) -> np.ndarray:
    """Expected M+1 / M intensity ratio from 13C for a molecule with ``n_carbon`` carbons.

    With each carbon independently 13C with probability ``p = 0.0107``, the number of 13C atoms
    is binomial: ``P(1) / P(0) = n p (1 - p)^(n - 1) / (1 - p)^n = n p / (1 - p)``.
    """
    return np.asarray(n_carbon) * C13_ABUNDANCE / (1.0 - C13_ABUNDANCE)


def _smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def _tissue(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Irregular, connected tissue section: an ellipse with a smoothly perturbed border."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height * rng.uniform(0.45, 0.55), width * rng.uniform(0.45, 0.55)
    ry, rx = height * rng.uniform(0.34, 0.42), width * rng.uniform(0.34, 0.42)
    radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    tissue = radius + 0.08 * _smooth_field(shape, min(shape) / 8, rng) < 1.0
    labels, n = ndimage.label(tissue)
    if n > 1:  # keep the largest piece
        tissue = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(tissue)


def _pattern(kind: str, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One spatial pattern in [0, 1] (maximum 1), zero off tissue."""
    shape = tissue.shape
    height, width = shape
    size = min(shape)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ty, tx = np.nonzero(tissue)

    def random_tissue_point() -> tuple[float, float]:
        i = rng.integers(ty.size)
        return float(ty[i]), float(tx[i])

    if kind == "region":  # one cell of a noisy Voronoi partition of the tissue (an anatomical region)
        seeds = [random_tissue_point() for _ in range(4)]
        distances = np.stack([np.hypot(yy - y, xx - x) for y, x in seeds])
        distances += 0.08 * size * np.stack([_smooth_field(shape, size / 10, rng) for _ in seeds])
        image = (distances.argmin(axis=0) == 0).astype(np.float64)
        image = ndimage.gaussian_filter(image, 1.0)
    elif kind == "layer":  # a band at a given depth below the tissue border (cortex-like layer)
        depth = ndimage.distance_transform_edt(tissue)
        depth = depth / depth.max()
        centre, half_width = rng.uniform(0.1, 0.6), rng.uniform(0.08, 0.15)
        image = np.exp(-0.5 * ((depth - centre) / half_width) ** 4)
    elif kind == "gradient":  # intensity ramp across the section in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        lo, hi = ramp[tissue].min(), ramp[tissue].max()
        image = np.clip((ramp - lo) / (hi - lo + 1e-12), 0, 1) ** rng.uniform(1.0, 2.0)
    elif kind == "spots":  # small foci (e.g. follicles, glomeruli)
        image = np.zeros(shape)
        for _ in range(int(rng.integers(6, 11))):
            y, x = random_tissue_point()
            sigma = size * rng.uniform(0.02, 0.04)
            image = np.maximum(image, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)))
    elif kind == "ring":  # an annulus, e.g. around a vessel or a lesion
        y, x = random_tissue_point()
        radius, width_ = size * rng.uniform(0.12, 0.22), size * rng.uniform(0.03, 0.05)
        image = np.exp(-((np.hypot(yy - y, xx - x) - radius) ** 2) / (2 * width_**2))
    elif kind == "blob":  # irregular smooth patches
        field = _smooth_field(shape, size / 12, rng)
        cut = np.quantile(field[tissue], 0.7)
        image = 1.0 / (1.0 + np.exp(-(field - cut) * 4.0))
    else:  # pragma: no cover - kinds come from PATTERN_KINDS
        raise AssertionError(kind)
    image = image * tissue
    return image / max(image.max(), 1e-12)


def _draw_mz(
    n_ions: int,
    with_isotope: np.ndarray,
    mz_range: tuple[float, float],
    rng: np.random.Generator,
    *,
    max_tries: int = 10_000,
) -> np.ndarray:
    """Monoisotopic m/z values with realistic mass defects and no accidental isotope spacing.

    A candidate (and its M+1 peak if it gets one) is rejected when it lies closer than
    ``_MIN_PEAK_DISTANCE`` to an accepted peak, or when its distance to one is within
    ``_ISOTOPE_MARGIN`` of the 13C shift, so that the only isotope-spaced peaks are planted pairs.
    """
    lo, hi = mz_range
    peaks: list[float] = []
    mz = np.empty(n_ions)
    for i in range(n_ions):
        for _ in range(max_tries):
            nominal = rng.integers(int(np.ceil(lo)), int(np.floor(hi - (C13_SHIFT if with_isotope[i] else 0))))
            # mass defect of organic molecules grows with mass (~ +0.0005 Da per Da)
            candidate = nominal + 0.0005 * nominal + rng.normal(0.0, 0.06)
            new = [candidate, candidate + C13_SHIFT] if with_isotope[i] else [candidate]
            if not (lo <= candidate and new[-1] <= hi):
                continue
            if peaks:
                gaps = np.abs(np.subtract.outer(np.asarray(new), np.asarray(peaks)))
                if (gaps < _MIN_PEAK_DISTANCE).any() or (np.abs(gaps - C13_SHIFT) < _ISOTOPE_MARGIN).any():
                    continue
            peaks.extend(new)
            mz[i] = candidate
            break
        else:
            raise ValueError(
                f"Could not place {n_ions} ions in `mz_range`={mz_range} without overlapping or accidentally "
                "isotope-spaced peaks; widen `mz_range` or simulate fewer ions."
            )
    return mz


def _warp(image: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Deform ``image`` by a smooth random displacement of about ``amplitude`` pixels (irregular borders)."""
    shape = image.shape
    sigma = min(shape) / 8
    dy, dx = (amplitude * _smooth_field(shape, sigma, rng) for _ in range(2))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return ndimage.map_coordinates(image, [yy + dy, xx + dx], order=1, mode="nearest")


def _class_sizes(n_ions: int, n_patterns: int, rng: np.random.Generator) -> np.ndarray:
    """Unequal numbers of ions per pattern (at least 3 each), as in annotated real datasets."""
    proportions = rng.dirichlet(np.full(n_patterns, 2.0))
    return 3 + rng.multinomial(n_ions - 3 * n_patterns, proportions)


def simulate_msi(
    *,
    realism: str = "ideal",
    shape: tuple[int, int] | None = None,
    n_patterns: int | None = None,
    ions_per_pattern: int | None = None,
    n_ions: int | None = None,
    n_matrix_ions: int | None = None,
    isotopes: bool = True,
    isotope_fraction: float | None = None,
    isotope_ratio_range: tuple[float, float] | None = None,
    mz_range: tuple[float, float] = (300.0, 1000.0),
    pixel_size: float = 20.0,
    mean_counts: float | None = None,
    abundance_sigma: float | None = None,
    contrast_range: tuple[float, float] | None = None,
    max_baseline: float | None = None,
    mixing: float | None = None,
    suppression: float | None = None,
    own_suppression: float | None = None,
    tic_variation: float | None = None,
    hot_pixel_fraction: float | None = None,
    hot_pixel_gain: tuple[float, float] | None = None,
    warp: float | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate an MSI dataset with ground-truth pattern classes and 13C isotope pairs.

    The generative model, per ion ``i`` following pattern ``P`` (an image in [0, 1]; with
    ``warp > 0`` every pattern is deformed by a smooth random displacement field, so that its
    borders are irregular rather than geometric):

    1. **image**: ``(1 - b_i) [(1 - m_i) P^g_i + m_i Q_i] + b_i T`` with ``T`` the tissue mask, an
       ion-specific on-tissue baseline ``b_i ~ U(0, max_baseline)``, contrast exponent
       ``g_i ~ U(contrast_range)`` and a share ``m_i ~ U(0, mixing)`` of a second, random pattern ``Q_i``
       (molecules present in two structures), plus a chemical background of 2% off tissue. Matrix ions (``var["on_tissue"]`` False) are high off
       tissue, suppressed to 10-30% on tissue, with spray-track stripes.
    2. **abundance**: ``a_i ~ LogNormal(log(mean_counts), abundance_sigma)`` counts at the maximum.
    3. **ion suppression**: a smooth multiplicative gain field per ion,
       ``exp(suppression * sum_k w_ik F_k + own_suppression * G_i)`` over three shared smooth fields
       ``F_k`` and one field ``G_i`` of the ion's own.
    4. **TIC variation**: a per-pixel factor (same for every ion of a pixel; log-normal, with a
       slow drift along the acquisition order) that TIC normalisation removes.
    5. **hot pixels**: a fraction ``hot_pixel_fraction`` of the pixels of each ion are
       ``U(hot_pixel_gain)`` times too bright (the outliers winsorising removes).
    6. **counting noise**: Poisson counts.
    7. **isotopes**: the ``isotope_fraction`` most abundant ions (on- and off-tissue) get an M+1
       peak at ``m/z + 1.00336`` with the same expected image, scaled by the binomial 13C ratio
       ``n_C p / (1 - p)`` (``p = 0.0107``, :func:`isotope_ratio`) and with independent Poisson noise.
       The carbon number ``n_C`` follows the mass (``≈ m/z / 14``), so the ratio grows with m/z;
       with ``isotope_ratio_range`` the ratio is drawn uniformly in that range instead and ``n_C``
       is the carbon number that gives it.

    Every m/z lies in ``mz_range``; no two peaks are closer than 0.05 and no two peaks that are not a
    planted isotope pair are within 0.02 of the 13C spacing, so the isotope ground truth is exact.

    Parameters
    ----------
    realism
        ``"ideal"`` (default; the demo dataset) or ``"real"``: the regime whose defaults fill every
        argument left at None (:data:`REALISM_DEFAULTS`). ``"real"`` gives 13 classes (12 tissue
        patterns + matrix) of unequal size, ~390 images of 96 x 96 px, on which the raw-image
        baseline performs as on measured data (docs/benchmarks.md).
    shape
        Grid ``(height, width)`` in pixels (ideal 64 x 64, real 96 x 96).
    n_patterns
        Number of on-tissue spatial pattern classes (see :func:`pattern_names`; ideal 6, real 12).
    ions_per_pattern
        Monoisotopic ions per pattern, the same for every pattern (ideal 15).
    n_ions
        Monoisotopic on-tissue ions in all, split unequally over the patterns (Dirichlet
        proportions, at least 3 per pattern); exclusive with ``ions_per_pattern`` (real: 280 when
        neither is given).
    n_matrix_ions
        Off-tissue matrix ions (pattern ``"matrix"``; ideal 10, real 20).
    isotopes
        Add 13C M+1 isotope peaks.
    isotope_fraction
        Fraction of the monoisotopic ions (the most abundant ones) that get an M+1 peak.
    isotope_ratio_range
        ``(low, high)`` M+1 / M abundance ratio drawn per pair (real: 0.1-0.5); None (ideal): from
        the m/z via the carbon number.
    mz_range
        ``(low, high)`` m/z range of all peaks.
    pixel_size
        Pixel size in µm (``uns["grid"]["pixel_size"]``).
    mean_counts
        Median expected count of an ion at the maximum of its pattern (ideal 60; real 5: most pixels
        hold 0-5 counts and most images are mostly zeros, as in measured data).
    abundance_sigma
        Log-normal spread of the ion abundances (ideal 0.8; real 1.2: the 5-95 % range spans two
        orders of magnitude).
    contrast_range
        Range of the per-ion contrast exponent ``g_i`` (ideal 0.7-1.4, real 0.4-2.5).
    max_baseline
        Largest on-tissue baseline share ``b_i`` (ions with a high baseline are weakly patterned).
    mixing
        Largest share ``m_i`` of a second pattern in an ion image (0: pure patterns).
    suppression
        Strength of the shared ion-suppression gain fields (0 switches them off).
    own_suppression
        Strength of the ion's own suppression gain field (ideal 0, real 0.3).
    tic_variation
        Log-normal spread of the per-pixel TIC factor (0 switches it off).
    hot_pixel_fraction
        Fraction of hot pixels per ion image.
    hot_pixel_gain
        ``(low, high)`` range of the factor by which a hot pixel is too bright (ideal 5-20, real 2-6).
    warp
        Amplitude of the smooth deformation of the patterns as a fraction of the shorter image side
        (ideal 0, real 0.05).
    seed
        Seed of every random step: the same seed gives the identical dataset.

    Returns
    -------
    AnnData with obs = the ``height * width`` pixels (row-major), var = ion images sorted by m/z,
    ``X`` float32 non-negative counts, and

    - ``var["mz"]``, ``var["pattern"]`` (pattern name or ``"matrix"``), ``var["isotope_of"]`` (var
      name of the monoisotopic ion for an M+1 peak, else ``""``), ``var["n_carbon"]``,
      ``var["on_tissue"]``;
    - ``obs["tissue"]`` (true tissue mask), ``obs["tic"]`` (total counts of each pixel);
    - ``obsm["spatial"]``, ``uns["grid"]`` = ``{"shape": [H, W], "pixel_size": µm}``;
    - ``uns["simulation"]``: ``params`` (all arguments, with the regime's defaults filled in),
      ``pattern_names``, ``pattern_images`` (``(n_patterns, H, W)`` float32), ``isotope_pairs``
      (``(n_pairs, 2)`` var names, monoisotopic first), ``isotope_ratios`` (expected M+1 / M ratio of
      each pair) and ``abundance`` (expected count at the pattern maximum of every var, aligned with var).

    Examples
    --------
    >>> import spatialclust as sc
    >>> adata = sc.datasets.simulate_msi(seed=0)
    >>> sorted(set(adata.var["pattern"]))
    ['blob', 'gradient', 'layer', 'matrix', 'region', 'ring', 'spots']
    >>> real = sc.datasets.simulate_msi(realism="real", seed=0)
    >>> real.var["pattern"].nunique(), real.uns["grid"]["shape"]
    (13, [96, 96])
    """
    if realism not in REALISM_DEFAULTS:
        raise invalid_option(realism, "realism", REALISMS)
    given = dict(
        shape=shape, n_patterns=n_patterns, ions_per_pattern=ions_per_pattern, n_matrix_ions=n_matrix_ions,
        isotope_fraction=isotope_fraction, mean_counts=mean_counts, abundance_sigma=abundance_sigma,
        contrast_range=contrast_range, max_baseline=max_baseline, mixing=mixing, suppression=suppression,
        own_suppression=own_suppression, tic_variation=tic_variation, hot_pixel_fraction=hot_pixel_fraction,
        hot_pixel_gain=hot_pixel_gain, warp=warp, isotope_ratio_range=isotope_ratio_range,
    )  # fmt: skip
    resolved = {k: REALISM_DEFAULTS[realism][k] if v is None else v for k, v in given.items()}
    if n_ions is not None:
        if ions_per_pattern is not None:
            raise ValueError("Give either `ions_per_pattern` (the same for every pattern) or `n_ions` (in all), not both.")
        resolved["ions_per_pattern"] = None
    elif resolved["ions_per_pattern"] is None:
        n_ions = REAL_N_IONS
    params = dict(
        realism=realism, shape=[int(s) for s in resolved["shape"]], n_patterns=resolved["n_patterns"],
        ions_per_pattern=resolved["ions_per_pattern"], n_ions=n_ions, n_matrix_ions=resolved["n_matrix_ions"],
        isotopes=isotopes, isotope_fraction=resolved["isotope_fraction"],
        isotope_ratio_range=None if resolved["isotope_ratio_range"] is None else [float(r) for r in resolved["isotope_ratio_range"]],
        mz_range=[float(m) for m in mz_range], pixel_size=pixel_size, mean_counts=resolved["mean_counts"],
        abundance_sigma=resolved["abundance_sigma"], contrast_range=[float(c) for c in resolved["contrast_range"]],
        max_baseline=resolved["max_baseline"], mixing=resolved["mixing"], suppression=resolved["suppression"],
        own_suppression=resolved["own_suppression"], tic_variation=resolved["tic_variation"],
        hot_pixel_fraction=resolved["hot_pixel_fraction"], hot_pixel_gain=[float(g) for g in resolved["hot_pixel_gain"]],
        warp=resolved["warp"], seed=seed,
    )  # fmt: skip
    _validate(params)
    n_patterns, n_matrix_ions, mixing = params["n_patterns"], params["n_matrix_ions"], params["mixing"]
    rng = np.random.default_rng(seed)
    height, width = shape = (params["shape"][0], params["shape"][1])
    tissue = _tissue(shape, rng)
    names = pattern_names(n_patterns)
    patterns = np.stack([_pattern(PATTERN_KINDS[p % len(PATTERN_KINDS)], tissue, rng) for p in range(n_patterns)])
    if params["warp"] > 0:
        for p in range(n_patterns):
            warped = _warp(patterns[p], params["warp"] * min(shape), rng) * tissue
            patterns[p] = warped / max(warped.max(), 1e-12)

    # --- monoisotopic ions: pattern, expected image shape, abundance -------------------------------
    if n_ions is None:
        sizes = np.full(n_patterns, params["ions_per_pattern"])
    else:
        sizes = _class_sizes(n_ions, n_patterns, rng)
    n_tissue_ions = int(sizes.sum())
    n_mono = n_tissue_ions + n_matrix_ions
    pattern_of = np.concatenate([np.repeat(np.arange(n_patterns), sizes), np.full(n_matrix_ions, -1)])
    expected = np.empty((n_mono, height, width))
    tissue_f = tissue.astype(np.float64)
    for i in range(n_tissue_ions):
        baseline, contrast = rng.uniform(0.0, params["max_baseline"]), rng.uniform(*params["contrast_range"])
        image = patterns[pattern_of[i]] ** contrast
        if n_patterns > 1 and mixing > 0:  # part of the ion co-localises with a second pattern
            other = (pattern_of[i] + rng.integers(1, n_patterns)) % n_patterns
            weight = rng.uniform(0.0, mixing)
            image = (1 - weight) * image + weight * patterns[other]
        expected[i] = (1 - baseline) * image + baseline * tissue_f + 0.02 * (1 - tissue_f)
    rows = np.arange(height)[:, None] * np.ones((1, width))
    for i in range(n_tissue_ions, n_mono):
        period, on_level = rng.uniform(6, 12), rng.uniform(0.1, 0.3)
        stripes = 1.0 + 0.15 * np.sin(2 * np.pi * rows / period + rng.uniform(0, 2 * np.pi))
        expected[i] = ((1 - tissue_f) + on_level * tissue_f) * stripes
    abundance = params["mean_counts"] * rng.lognormal(0.0, params["abundance_sigma"], size=n_mono)

    # --- distortions shared by an ion and its isotope: suppression gain and hot pixels -------------
    fields = np.stack([_smooth_field(shape, min(shape) / 6, rng) for _ in range(3)])
    weights = rng.normal(0.0, 1.0 / np.sqrt(3), size=(n_mono, 3))
    expected *= np.exp(params["suppression"] * np.tensordot(weights, fields, axes=1))
    if params["own_suppression"] > 0:
        for i in range(n_mono):
            expected[i] *= np.exp(params["own_suppression"] * _smooth_field(shape, min(shape) / 6, rng))
    n_hot = int(round(params["hot_pixel_fraction"] * height * width))
    for i in range(n_mono):
        hot = rng.choice(height * width, size=n_hot, replace=False)
        expected[i].flat[hot] *= rng.uniform(*params["hot_pixel_gain"], size=n_hot)

    # --- isotopes of the most abundant ions; m/z and carbon numbers --------------------------------
    n_iso = int(round(params["isotope_fraction"] * n_mono)) if isotopes else 0
    with_isotope = np.zeros(n_mono, dtype=bool)
    with_isotope[np.argsort(-abundance, kind="stable")[:n_iso]] = True
    mz = _draw_mz(n_mono, with_isotope, params["mz_range"], rng)
    if params["isotope_ratio_range"] is None:
        n_carbon = np.maximum(1, np.round(mz / rng.uniform(12.5, 15.5, size=n_mono))).astype(np.int64)
    else:
        target = rng.uniform(*params["isotope_ratio_range"], size=n_mono)
        n_carbon = np.maximum(1, np.round(target * (1.0 - C13_ABUNDANCE) / C13_ABUNDANCE)).astype(np.int64)
    ratio = isotope_ratio(n_carbon)
    parents = np.flatnonzero(with_isotope)

    # --- per-pixel TIC factor (whole spectrum) and Poisson counting --------------------------------
    drift = np.linspace(-1.0, 1.0, height * width).reshape(shape) * rng.uniform(-0.5, 0.5)
    pixel_factor = np.exp(params["tic_variation"] * (rng.normal(size=shape) + drift))
    mean = np.concatenate([abundance[:, None, None] * expected, (abundance * ratio)[parents, None, None] * expected[parents]])
    mean *= pixel_factor
    counts = rng.poisson(mean).astype(np.float32)

    # --- AnnData, sorted by m/z ----------------------------------------------------------------------
    all_mz = np.concatenate([mz, mz[parents] + C13_SHIFT])
    all_pattern = np.concatenate([pattern_of, pattern_of[parents]])
    all_carbon = np.concatenate([n_carbon, n_carbon[parents]])
    all_abundance = np.concatenate([abundance, abundance[parents] * ratio[parents]])
    parent_of = np.concatenate([np.full(n_mono, -1), parents])  # index into the unsorted ions
    order = np.argsort(all_mz, kind="stable")
    adata = images_to_adata(
        counts[order], mz=all_mz[order], mask=None, pixel_size=pixel_size, obs_images={K.TISSUE: tissue}
    )
    var_names = np.empty(all_mz.size, dtype=object)
    var_names[order] = adata.var_names.to_numpy()
    adata.var[K.PATTERN] = [names[p] if p >= 0 else MATRIX_PATTERN for p in all_pattern[order]]
    adata.var[K.ISOTOPE_OF] = [var_names[p] if p >= 0 else "" for p in parent_of[order]]
    adata.var[K.N_CARBON] = all_carbon[order]
    adata.var[K.ON_TISSUE] = all_pattern[order] >= 0
    adata.obs[K.TISSUE] = adata.obs[K.TISSUE].astype(bool)
    adata.obs[K.TIC] = np.asarray(adata.X.sum(axis=1), dtype=np.float64)
    adata.uns[K.SIMULATION] = {
        "params": params,
        "pattern_names": names,
        "pattern_images": patterns.astype(np.float32),
        "isotope_pairs": np.array([[var_names[p], var_names[n_mono + k]] for k, p in enumerate(parents)], dtype=str).reshape(-1, 2),
        "isotope_ratios": ratio[parents],
        "abundance": all_abundance[order],
    }
    logger.info(
        "Simulated MSI (%s): %dx%d pixels (%d on tissue), %d ion images (%d patterns, %d-%d ions each, %d matrix ions, "
        "%d isotopes).",
        realism, height, width, int(tissue.sum()), adata.n_vars, n_patterns, sizes.min(), sizes.max(), n_matrix_ions, n_iso,
    )  # fmt: skip
    return adata


def _validate(params: dict) -> None:
    """Check the arguments of :func:`simulate_msi`, naming the parameter and the value received."""
    shape = params["shape"]
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"`shape` must be (height, width) with both >= 8 pixels, got {shape}.")
    for name in ("n_patterns", "ions_per_pattern", "n_ions"):
        if params[name] is not None and (int(params[name]) != params[name] or params[name] < 1):
            raise ValueError(f"`{name}` must be a positive integer, got {params[name]!r}.")
    if params["n_ions"] is not None and params["n_ions"] < 3 * params["n_patterns"]:
        raise ValueError(
            f"`n_ions` must be at least 3 per pattern (3 x `n_patterns` = {3 * params['n_patterns']}), got {params['n_ions']}."
        )
    if int(params["n_matrix_ions"]) != params["n_matrix_ions"] or params["n_matrix_ions"] < 0:
        raise ValueError(f"`n_matrix_ions` must be a non-negative integer, got {params['n_matrix_ions']!r}.")
    for name in ("isotope_fraction", "max_baseline", "mixing"):
        if not 0.0 <= params[name] <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {params[name]}.")
    lo, hi = params["mz_range"]
    if not 0 < lo < hi - 2:
        raise ValueError(f"`mz_range` must be (low, high) with 0 < low < high - 2, got {params['mz_range']}.")
    for name in ("pixel_size", "mean_counts"):
        if not params[name] > 0:
            raise ValueError(f"`{name}` must be > 0, got {params[name]}.")
    for name in ("abundance_sigma", "suppression", "own_suppression", "tic_variation", "warp"):
        if not params[name] >= 0:
            raise ValueError(f"`{name}` must be >= 0, got {params[name]}.")
    for name, lowest in (("contrast_range", 0.0), ("hot_pixel_gain", 1.0), ("isotope_ratio_range", 0.0)):
        bounds = params[name]
        if bounds is not None and not (len(bounds) == 2 and lowest < bounds[0] <= bounds[1]):
            raise ValueError(f"`{name}` must be (low, high) with {lowest} < low <= high, got {bounds}.")
    if not 0.0 <= params["hot_pixel_fraction"] < 0.5:
        raise ValueError(f"`hot_pixel_fraction` must be in [0, 0.5), got {params['hot_pixel_fraction']}.")
