"""The SimCLR training pipeline behind ``spatialclust train`` (Hu et al. 2022, seed 001).

read -> preprocess (as ``spatialclust run``, from the same configuration, ``pipeline/config.yaml``)
-> train the SimCLR encoder of the configuration's ``embedding`` item with ``method: simclr`` ->
checkpoint directory (``model.safetensors`` + ``config.json``), resumed when interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._logging import logger
from ._cluster import load_input, preprocess
from ._config import load_config

__all__ = ["run_train"]


def run_train(
    config: str | Path | Mapping[str, Any] | None = None,
    output_dir: str | Path = "spatialclust_simclr",
    *,
    resume: bool = True,
) -> Any:
    """Train the SimCLR encoder on the ion images of the configured dataset and write its checkpoint.

    Parameters
    ----------
    config
        A clustering configuration (YAML file, (partial) mapping or None for the defaults): its
        ``input`` and ``preprocess`` sections give the images, the ``params`` of its ``embedding``
        item with ``method: simclr`` (if any) the training; ``seed`` seeds it unless set there.
    output_dir
        Checkpoint directory to write, or to resume from.
    resume
        Resume an unfinished training found in ``output_dir``; a finished one is not retrained.

    Returns
    -------
    spatialclust.tl.SimCLREmbedder
        The fitted embedder (``epochs_``, ``history_`` with the loss of every epoch).
    """
    from .. import models, pp, tl

    cfg = load_config(config)
    output_dir = models.check_checkpoint_path(output_dir)  # before any work: a foreign folder fails here
    params = next((dict(item["params"]) for item in cfg["embedding"] if item["method"] == "simclr"), {})
    params.setdefault("seed", cfg["seed"])
    adata, name = load_input(cfg["input"], seed=cfg["seed"])
    preprocess(adata, cfg["preprocess"])
    images, mask = pp.feature_images(adata), pp.tissue_mask_image(adata)
    logger.info("SimCLR on %d ion images of %s; checkpoint %s", images.shape[0], name, output_dir)
    return tl.SimCLREmbedder(**{**params, "checkpoint": output_dir, "resume": resume}).fit(images, mask=mask)
