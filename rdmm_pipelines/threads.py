"""CPU threads: how many a registration uses, and a block that sets them and restores them.

torch parallelises each operation over its intra-op threads. A registration runs many small
operations per objective evaluation (the map grid of a 2D slice has ~15 000 points), so on small
images the threads cost more to wake and join than they save, and on a busy machine a thread that
waits for a descheduled sibling stalls every operation. Measured (``benchmarks/threads.py``,
LDDMM at the defaults, 2-core CPU, docs/benchmarks.md): 2 threads instead of 1 took 1.09x the time
on a 160x384 knee slice and 0.86x on a 80x96x112 brain when the machine was quiet, but 2.4x and
3.1x with one other busy process; on a 160x192x224 brain 0.70x. :func:`registration_threads`
therefore picks one thread per ``VOXELS_PER_THREAD`` fixed-image voxels (a 2D slice and a 2 mm
brain run on one), at most the CPUs this process may use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["available_cpus", "registration_threads", "threads_per_job", "thread_limits", "THREAD_VARIABLES", "VOXELS_PER_THREAD"]

#: environment variables that set the threads of OpenMP, MKL and ITK in child processes
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
#: image voxels (finest scale) per thread of a registration: below 2x this, one thread
VOXELS_PER_THREAD = 1_000_000


def available_cpus() -> int:
    """CPUs this process may run on (the SLURM allocation or taskset mask, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def registration_threads(voxels: int, limit: int | None = None) -> int:
    """Threads for a registration of a ``voxels``-voxel fixed image: ``voxels //
    VOXELS_PER_THREAD``, at least 1 and at most ``limit`` (default: torch's current thread count,
    itself at most :func:`available_cpus`)."""
    if voxels < 1:
        raise ValueError(f"voxels must be positive, got {voxels}")
    cap = min(limit if limit is not None else torch.get_num_threads(), available_cpus())
    return max(1, min(cap, voxels // VOXELS_PER_THREAD))


def threads_per_job(jobs: int | None) -> int:
    """Threads of each of ``jobs`` concurrent jobs sharing this process's CPUs (None: one job per
    CPU): ``available_cpus() // jobs``, at least 1, so that the jobs together do not oversubscribe
    the machine."""
    cpus = available_cpus()
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer or None, got {jobs!r}")
    return max(1, cpus // (jobs or cpus))


@contextlib.contextmanager
def thread_limits(threads: int = 0, environment: bool = True) -> Iterator[int]:
    """Set torch's intra-op threads (and, with ``environment``, ``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS`` and ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for the tools started from the
    block) while the block runs; restore the previous settings afterwards.

    Args:
        threads: the number of threads; 0 = :func:`available_cpus`.
        environment: also set the thread variables of child processes.

    Yields:
        the number of threads in effect.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer (0 = all available CPUs), got {threads!r}")
    n = threads or available_cpus()
    keys = THREAD_VARIABLES if environment else ()
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_torch = torch.get_num_threads()
    try:
        for k in keys:
            os.environ[k] = str(n)
        if n != saved_torch:
            torch.set_num_threads(n)
        yield n
    finally:
        if torch.get_num_threads() != saved_torch:
            torch.set_num_threads(saved_torch)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
