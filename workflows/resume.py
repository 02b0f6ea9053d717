"""What lets a cohort run resume: attempt numbers of failed pairs, and one run per cache.

* :func:`previous_retries`: a (pair, method) the last table lists as failed gets the next attempt
  number, which becomes its registration's ``retry`` input: a new cache hash, so it runs again
  instead of its cached failure being re-used. The numbers are kept in ``cohort_retries.json``.
* :func:`claim_cache`: an exclusive OS lock per cache for the run, and the removal of the task
  locks an interrupted run left behind.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

__all__ = ["LOCK_NAME", "RETRIES_NAME", "claim_cache", "previous_retries"]

log = logging.getLogger(__name__)

#: attempt numbers of the (pair, method)s that failed before ({id: {method: n}})
RETRIES_NAME = "cohort_retries.json"


def previous_retries(out: Path, table_name: str) -> dict[str, dict[str, int]]:
    """Attempt numbers for this run in ``out``: the last run's (``cohort_retries.json``), plus one
    for every row its table (``out/table_name``) lists as failed."""
    retries: dict[str, dict[str, int]] = {}
    state = out / RETRIES_NAME
    if state.is_file():
        try:
            retries = {str(k): {str(m): int(n) for m, n in v.items()} for k, v in json.loads(state.read_text()).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise ValueError(f"{state}: unreadable retry record ({exc}); delete it to start counting afresh") from exc
    table = out / table_name
    if table.is_file():
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("status") == "failed" and row.get("id") and row.get("method"):
                    attempts = retries.setdefault(row["id"], {})
                    attempts[row["method"]] = attempts.get(row["method"], 0) + 1
    return retries


LOCK_NAME = ".rdmm_cohort.lock"


def claim_cache(cache: Path):
    """Hold the cache for this run and clear the task locks an interrupted run left behind.

    pydra guards each task's directory with a lock *file* (``<task>.lock``, filelock's soft lock)
    that a killed process leaves behind. filelock breaks such a lock when its owner was a dead
    process *on the same host*, but not one left by a SLURM job on another node, on which a
    resumed run would wait for ever. So a run first takes an exclusive OS lock on
    ``cache/.rdmm_cohort.lock`` (released by the OS however the process ends); holding it, no
    other cohort run uses this cache, so every task lock found is stale and is removed.

    Returns:
        The open lock file (keep it open for the run; closing it releases the lock).

    Raises:
        RuntimeError: another cohort run holds the cache.
    """
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    handle = open(cache / LOCK_NAME, "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"{cache}: another cohort run is using this cache (it holds {LOCK_NAME}); "
                           "wait for it to end, or give another --cache") from None
    stale = sorted(p for p in cache.glob("*.lock") if p.name != LOCK_NAME)
    for lock in stale:
        lock.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d task lock(s) an interrupted run left in %s", len(stale), cache)
    return handle
