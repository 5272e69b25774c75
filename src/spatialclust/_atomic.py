"""Atomic output: a failed run never leaves a half-written file or directory that looks complete.

Everything is first written under a temporary name in the destination folder and renamed into
place only when complete (a rename within one file system is atomic).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    Works for a file or a directory written at the yielded path. On error the temporary is
    removed and ``path`` is untouched.

    Parameters
    ----------
    path
        Final destination.
    overwrite
        Replace an existing ``path``; if False an existing ``path`` raises FileExistsError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {str(path)!r} already exists; pass overwrite=True to replace it.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written to the temporary output for {str(path)!r}.")
        replace(tmp, path)
    finally:
        remove(tmp)


def replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, replacing a file or directory already there.

    A directory is first renamed to a hidden ``.<name>.*.old.tmp`` next to it, then deleted; the
    caller decides whether ``dst`` may be replaced at all.
    """
    if dst.is_dir() and not dst.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old.tmp", dir=dst.parent))
        os.replace(dst, trash)  # onto the empty directory just made: atomic, and the name is ours
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def rename_new(src: Path, dst: Path) -> None:
    """Rename the directory ``src`` to ``dst``, refusing when ``dst`` exists (an empty directory excepted).

    The refusal is the file system's own (``rename(2)`` fails on a non-empty directory and on a
    file), so of two processes finishing at the same moment exactly one succeeds.
    """
    try:
        os.rename(src, dst)
    except OSError as err:  # ENOTEMPTY, EEXIST, ENOTDIR when dst exists
        if not (dst.exists() or dst.is_symlink()):
            raise
        raise FileExistsError(
            f"{str(dst)!r} was created by another process while this one was writing it; nothing was replaced."
        ) from err


def remove(path: Path) -> None:
    """Remove a file or directory if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
