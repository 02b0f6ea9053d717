"""Progress of a running cohort: registrations done / failed / running, printed while it runs.

:class:`CohortProgress` is the ``on_job`` listener of :func:`rdmm_pipelines.interfaces.run`: the
pydra worker (cf or slurm) tells it, in the submitting process, when each job starts and ends.
A (pair, method) counts as *running* while its registration job runs, and as *done* or *failed*
when its evaluation ends or is found in the cache (by the evaluation's status), or *failed* when
one of its jobs crashed. Whole pair workflows found in the cache are never expanded into jobs, so
they are not counted while the cohort runs; :meth:`CohortProgress.summary` reports at the end how
many registrations ran and how many were re-used.
"""

from __future__ import annotations

import sys
import threading
import time
import typing as ty

__all__ = ["REGISTRATION_TASKS", "CohortProgress"]

#: the task classes (by name) that register a pair: ours and the baselines'
REGISTRATION_TASKS = frozenset({"RdmmRegistration", "AntsSyN", "SimpleITKDemons", "NiftyRegF3D"})


class CohortProgress:
    """Counts (pair, method) registrations from job events and prints a line as they change.

    Args:
        total: number of (pair, method) registrations in the cohort.
        stream: where the lines go (default ``sys.stderr``); None prints nothing.
        min_interval: seconds between two printed lines (the last state is always printed
            by :meth:`close`).

    The line reads ``cohort: 5/12 done, 1 failed, 2 in progress [40 s]`` (in progress: submitted,
    queued or running).
    """

    def __init__(self, total: int, stream: ty.TextIO | None = sys.stderr, min_interval: float = 2.0):
        self.total = int(total)
        self.stream = stream
        self.min_interval = float(min_interval)
        self.done = 0
        self.failed = 0
        self.running = 0
        self.registered = 0  # registrations that ran in this run (not re-used)
        self._crashed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_print = -float("inf")
        self._last_line = ""

    def __call__(self, event: str, task: ty.Any, outputs: ty.Any) -> None:
        """The listener: ``event`` is "started", "finished", "errored" or "cached"."""
        name = type(task).__name__
        with self._lock:
            if name in REGISTRATION_TASKS and event != "cached":
                if event == "started":
                    self.running += 1
                else:
                    self.running = max(0, self.running - 1)
                    self.registered += 1
            if event == "errored":
                key = (str(getattr(task, "subject_id", "")), name)
                if key not in self._crashed and name != "CohortTable":
                    self._crashed.add(key)
                    self.failed += 1
            elif event in ("finished", "cached") and name == "Evaluate":
                status = getattr(outputs, "status", "failed")
                if status == "failed":
                    self.failed += 1
                else:
                    self.done += 1
            self._print(force=False)

    @property
    def line(self) -> str:
        """The current state as one line."""
        seconds = time.monotonic() - self._start
        return (f"cohort: {self.done}/{self.total} done, {self.failed} failed, {self.running} in progress "
                f"[{seconds:.0f} s]")

    def _print(self, force: bool) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        line = self.line
        changed = line.rsplit(" [", 1)[0] != self._last_line.rsplit(" [", 1)[0]
        if force or (changed and now - self._last_print >= self.min_interval):
            print(line, file=self.stream, flush=True)
            self._last_print = now
            self._last_line = line

    def close(self) -> None:
        """Print the final state (once more, whatever the interval)."""
        with self._lock:
            self._print(force=True)

    def summary(self, ok: int, failed: int) -> str:
        """The end-of-run line, given the table's counts: how many were re-used from the cache."""
        ran = min(self.registered, ok + failed)
        reused = ok + failed - ran
        return (f"{ok + failed} registrations: {ok} ok, {failed} failed; {ran} run now, "
                f"{reused} re-used from the cache")
