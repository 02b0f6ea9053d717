"""Atomic outputs: every file the package writes appears complete or not at all.

A file is written under a temporary name in its destination folder and then renamed over the
destination (``os.replace``, atomic on POSIX within one file system), so an interrupted run never
leaves a half-written file that looks complete, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "copy_atomic", "write_text_atomic"]


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp", *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; it replaces ``path`` when the block ends.

    Args:
        path: the destination.
        suffix: the temporary name's ending (writers that infer the format from the name need
            it, e.g. ".tmp.nii.gz").
        make_parents: create the destination folder if missing (else a missing folder is an
            error of the caller's).

    The temporary file is made readable like a normally created file (mode 0644; ``mkstemp``
    gives 0600) and is removed if the block raises.
    """
    dest = Path(path)
    if make_parents:
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines as given)."""
    dest = Path(path)
    with atomic_output(dest) as tmp, open(tmp, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return dest


def copy_atomic(source: str | os.PathLike | None, target: str | os.PathLike) -> Path | None:
    """Copy ``source`` to ``target`` atomically; None (nothing written) when there is no source."""
    if source is None or not Path(os.fspath(source)).exists():
        return None
    dest = Path(target)
    with atomic_output(dest) as tmp:
        shutil.copyfile(os.fspath(source), tmp)
    return dest
