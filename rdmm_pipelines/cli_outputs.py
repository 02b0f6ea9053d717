"""The output folder of the command line: what is checked before a run writes into ``--out`` (a
file, unwritable, another result, an unfinished run, a concurrent run, free space). The input
files are :mod:`.cli_inputs`'s; finding a finished result again is :mod:`.cli_records`'s.

Every check raises ValueError (or FileNotFoundError) with a one-line message, before any heavy work.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "check_free_space", "check_output_dir", "output_lock", "output_names",
           "prepare_output_dir"]

log = logging.getLogger("rdmm")


def check_output_dir(out: Path) -> None:
    """Refuse, before any work, an --out that is a file or lies in a directory this user cannot
    write to."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


#: held (flock) by the run writing into an --out; released by the kernel if the run is killed
LOCK_NAME = ".rdmm-register.lock"


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on --out while a run writes into it: a second run into the same
    folder is refused instead of mixing its files with the first's."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out}: another rdmm register is writing into it; wait for it or choose "
                             "another --out") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def prepare_output_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse an --out that holds a result (a registration.json; unless ``overwrite``); remove
    what an unfinished run left there (result files without a record, temporaries)."""
    from .result import holds_result, stale_temporaries

    present = holds_result(out)
    if "registration.json" in present and not overwrite:
        raise ValueError(f"--out {out}: holds a registration result ({', '.join(present[:3])}"
                         f"{', ...' if len(present) > 3 else ''}); give --overwrite to replace it, or another --out")
    if present and "registration.json" not in present:  # no record: the leftovers of an unfinished run
        from .result import clear_result

        log.warning("--out %s: removing the files of an unfinished run (no registration.json): %s", out,
                    ", ".join(present))
        clear_result(out)
    for tmp in stale_temporaries(out):
        tmp.unlink(missing_ok=True)


def check_free_space(out: Path, fixed: str) -> None:
    """Refuse, before any work, an --out whose file system cannot hold the result: about 64 bytes
    per fixed-image voxel uncompressed (warped image, displacement field and composite transform in
    float64, det J, momentum, RDMM maps) plus 2 MB for the QC report."""
    import shutil

    import nibabel as nib

    try:
        voxels = math.prod(int(n) for n in nib.load(fixed).shape[:3])
    except Exception:  # an unreadable fixed image is reported, with its name, by register()
        return
    need = 64 * voxels + (2 << 20)
    existing = out
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise ValueError(f"--out {out}: {free / 2**20:.1f} MB free on its file system, a result needs about "
                         f"{need / 2**20:.0f} MB")


def output_names() -> set[str]:
    from .result import OUTPUT_FILES

    return set(OUTPUT_FILES.values())


#: how a baseline's displacement field ends (``{prefix}{method}_displacement.nii.gz``, with its record
#: ``{prefix}{method}.log`` beside it: :mod:`rdmm_pipelines.interfaces.baselines`)
