"""Package logger and progress bars."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

logger = logging.getLogger("spatialclust")
logger.addHandler(logging.NullHandler())

#: Global switch for progress bars (the CLI turns them off with ``--quiet``).
settings = {"show_progress_bar": True}


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar unless progress bars are switched off."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not settings["show_progress_bar"])
