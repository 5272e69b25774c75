"""The shared preprocessing of ion images of Zhang et al. (seed 000) in one call."""

from __future__ import annotations

from anndata import AnnData

from .. import _keys as K
from .._logging import logger
from .._registry import invalid_option
from . import _standardize
from ._matrix import check_finite, is_dask, start
from ._normalize import normalize_rms, normalize_tic
from ._standardize import remove_empty_features, scale_images

_NORMALIZATIONS = ("tic", "rms", "none")


def preprocess_ion_images(
    adata: AnnData,
    *,
    normalize: str | None = "tic",
    target_sum: float | None = None,
    winsorize: float | None = 95.0,
    scale: bool = True,
    remove_empty: bool = True,
    tissue_only: bool = True,
    keep_raw: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Shared preprocessing of ion images (Zhang et al., seed 000, "Shared preprocessing").

    In order: keep the raw intensities in ``layers["raw"]``, drop empty/constant images
    (:func:`remove_empty_features`), normalise every pixel (:func:`normalize_tic` or
    :func:`normalize_rms`), winsorise every image above its 95th percentile (:func:`winsorize`;
    sparse images at the percentile of their non-zero pixels, so that they keep their pattern) and
    scale every image to [0, 1] (:func:`scale_images`). The result are the paper's "regular ion
    images". With ``remove_empty``, images left empty or constant on the tissue pixels (e.g. an
    image with signal only off the tissue, which scaling over the tissue pixels turns all zero) are
    dropped at the end too, so no all-zero image reaches an embedding or a clusterer (a cosine
    distance is undefined for it).
    Non-finite intensities raise a ValueError naming the features.

    Parameters
    ----------
    adata
        Spatial MSI dataset (obs = pixels, var = m/z features).
    normalize
        ``"tic"`` (default, as in the paper), ``"rms"`` or ``"none"``/None.
    target_sum
        TIC after normalisation (see :func:`normalize_tic`).
    winsorize
        Upper percentile for :func:`winsorize` (default 95, as in the paper); None skips it.
    scale
        Scale every image to [0, 1].
    remove_empty
        Drop all-zero and constant images first, and those left all-zero or constant on the
        tissue pixels at the end.
    tissue_only
        Compute winsorising and scaling statistics over ``obs["tissue"]`` pixels when present.
    keep_raw
        Store the input matrix in ``layers["raw"]`` (unless that layer already exists, which
        happens when the data were preprocessed before; it is then left as it is).
    copy
        Return a preprocessed copy instead of modifying ``adata``.

    Returns
    -------
    None, or the copy when ``copy=True``. Modifies ``X``, may drop features, writes
    ``layers["raw"]`` and appends one entry per step to ``uns["preprocessing"]`` (a second
    ``remove_empty_features`` entry, over the tissue pixels, when ``remove_empty``).
    """
    normalize = "none" if normalize is None else normalize
    if normalize not in _NORMALIZATIONS:
        raise invalid_option(normalize, "normalize", list(_NORMALIZATIONS))
    adata = start(adata, copy)
    if remove_empty:  # non-finite intensities are refused from its pass over the data, before any change
        remove_empty_features(adata, nonfinite="raise")
        if adata.n_vars == 0:
            raise ValueError("Every feature image is empty or constant: nothing is left to preprocess.")
    else:
        check_finite(adata)
    if keep_raw:  # the input intensities (of the kept images: removing images changes no value)
        if K.RAW in adata.layers:
            logger.info("`layers[%r]` already exists and is kept as the raw intensities.", K.RAW)
        else:
            adata.layers[K.RAW] = adata.X if is_dask(adata.X) else adata.X.copy()
    if normalize == "tic":
        normalize_tic(adata, target_sum=target_sum)
    elif normalize == "rms":
        normalize_rms(adata)
    if winsorize is not None and scale and remove_empty and tissue_only:
        # the statistics of winsorising give those of scaling and removing (one pass over the data, not three)
        _standardize._scale_and_remove_empty(adata, *_standardize._winsorize(adata, percentile=winsorize, layer=None,
                                                                            tissue_only=True))
    else:
        if winsorize is not None:
            _standardize.winsorize(adata, percentile=winsorize, tissue_only=tissue_only)
        if scale:
            scale_images(adata, tissue_only=tissue_only)
        if remove_empty:  # over the tissue pixels, which is what the embeddings see
            remove_empty_features(adata, tissue_only=True)
    if remove_empty:
        if adata.n_vars == 0:
            raise ValueError(
                "Every feature image is empty or constant on the tissue pixels after preprocessing: "
                "nothing is left to cluster (check the tissue mask)."
            )
    return adata if copy else None
