"""Run directories: every CLI run writes into one folder, atomically, with its config and log.

A run is built in a hidden temporary folder next to the destination and renamed into place only
when it finished, so an interrupted or failed run never leaves a directory that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from ._atomic import atomic_path
from ._config import dump_config
from ._logging import logger

CONFIG_FILE = "config.yaml"
LOG_FILE = "run.log"
MANIFEST_FILE = "run.json"


def check_output_dir(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse an output directory that already holds something, unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"Output path {str(path)!r} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = "a different run" if (path / CONFIG_FILE).exists() else "other files"
        raise FileExistsError(
            f"Output directory {str(path)!r} already holds {what}; choose another directory "
            "or pass --overwrite (overwrite=True) to replace it."
        )
    return path


@contextlib.contextmanager
def run_directory(
    path: str | Path, config: Mapping[str, Any], *, command: str, overwrite: bool = False
) -> Iterator[Path]:
    """Create a run directory atomically; yield the (temporary) folder to write results into.

    Writes ``config.yaml`` (the resolved configuration) and ``run.log`` (DEBUG log of the run) at
    the start and ``run.json`` (command, version, timings, status) at the end.
    """
    path = check_output_dir(path, overwrite=overwrite)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        dump_config(config, tmp / CONFIG_FILE)
        handler = logging.FileHandler(tmp / LOG_FILE)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        previous_level = logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
        start = time.time()
        try:
            logger.info("spatialclust %s: %s -> %s", __version__, command, path)
            yield tmp
            manifest = {
                "command": command,
                "version": __version__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
                "seconds": round(time.time() - start, 2),
                "status": "complete",
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        finally:
            logger.removeHandler(handler)
            handler.close()
            logger.setLevel(previous_level)
