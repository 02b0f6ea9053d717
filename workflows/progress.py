"""Progress of a running cohort in pairs and registrations, printed while it runs.

:class:`CohortProgress` is the ``on_job`` listener of :func:`rdmm_pipelines.interfaces.run`: the
pydra worker (cf or slurm) tells it, in the submitting process, when each job (one task of the
graph) starts and ends. It counts what a user asked for, (pair, method) registrations and
pairs, not pydra's tasks (each registration brings an evaluation, a QC report and maybe an
affine node):

* a registration is *done* when its registration task ends or is found in the cache: *ok*, or
  *failed* when its status says so, when its evaluation fails, or when one of its jobs crashes;
* a pair is done when all its methods' registrations are;
* *running*: registration jobs (affine nodes included) submitted and not yet ended; with the cf
  worker, whose pool runs ``slots`` jobs at once, those beyond the slots are *waiting*.

Pair workflows found whole in the cache may not be expanded into jobs at all, so they may not be
heard while the cohort runs; :meth:`CohortProgress.close` takes the final table's rows, so that
the last line counts every registration, and :meth:`CohortProgress.summary` says how many of
them ran now and how many were re-used.
"""

from __future__ import annotations

import sys
import threading
import time
import typing as ty

__all__ = ["REGISTRATION_TASKS", "CohortProgress"]

#: the task classes (by name) that register a pair: ours, the networks' and the baselines'
REGISTRATION_TASKS = frozenset({"RdmmRegistration", "NetworkRegistration", "AntsSyN", "SimpleITKDemons",
                                "NiftyRegF3D"})
#: task classes that are part of a registration's work (counted as running) without being one
_REGISTRATION_STAGES = frozenset({"AffineRegistration"})


def _method_of(task: ty.Any) -> str | None:
    """The cohort method a task belongs to (None when it belongs to none, e.g. an affine node)."""
    from .pair import BASELINE_METHODS

    name = type(task).__name__
    if name == "RdmmRegistration":
        model, regularizer = getattr(task, "model", None), getattr(task, "regularizer", None)
        return f"rdmm-{regularizer}" if model == "rdmm" and regularizer else model
    for method, task_name in BASELINE_METHODS.items():
        if name == task_name:
            return method
    method = getattr(task, "method", None)  # Evaluate, PairQc, NetworkRegistration
    return method if isinstance(method, str) else None


class CohortProgress:
    """Counts a cohort's pairs and (pair, method) registrations from job events and prints a line
    as they change.

    Args:
        pairs: the pairs' ids.
        methods: the methods each pair is registered with.
        stream: where the lines go (default ``sys.stderr``); None prints nothing.
        min_interval: seconds between two printed lines (the last state is always printed by
            :meth:`close`).
        slots: jobs the worker runs at once (the cf worker's processes); None when unknown
            (slurm): submitted registrations are then all "running".

    The line reads ``cohort: 3/5 pairs done (7/10 registrations, 1 failed, 2 running,
    1 waiting) [40 s]``.
    """

    def __init__(self, pairs: ty.Sequence[str], methods: ty.Sequence[str], stream: ty.TextIO | None = sys.stderr,
                 min_interval: float = 2.0, slots: int | None = None):
        self.pairs = [str(p) for p in pairs]
        self.methods = [str(m) for m in methods]
        self.stream = stream
        self.min_interval = float(min_interval)
        self.slots = slots
        self.status: dict[tuple[str, str], str] = {}  # (pair, method) -> "ok" / "failed"
        self.in_flight = 0  # registration jobs submitted and not ended
        self.ran: set[tuple[str, str]] = set()  # registrations that ran in this run
        self.reused: set[tuple[str, str]] = set()  # registrations heard of as found in the cache
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_print = -float("inf")
        self._last_line = ""

    @property
    def total(self) -> int:
        """The number of (pair, method) registrations."""
        return len(self.pairs) * len(self.methods)

    def _key(self, task: ty.Any) -> tuple[str, str] | None:
        pair, method = str(getattr(task, "subject_id", "")), _method_of(task)
        if method is None or method not in self.methods or pair not in self.pairs:
            return None
        return pair, method

    def __call__(self, event: str, task: ty.Any, outputs: ty.Any) -> None:
        """The listener: ``event`` is "started", "finished", "errored" or "cached"."""
        name = type(task).__name__
        with self._lock:
            key = self._key(task)
            if name in REGISTRATION_TASKS or name in _REGISTRATION_STAGES:
                if event == "started":
                    self.in_flight += 1
                elif event in ("finished", "errored"):
                    self.in_flight = max(0, self.in_flight - 1)
            if key is not None:
                failed = event == "errored" or (event in ("finished", "cached")
                                                and getattr(outputs, "status", "failed") == "failed")
                if name in REGISTRATION_TASKS and event != "started":
                    self.status[key] = "failed" if failed else self.status.get(key, "ok")
                    (self.reused if event == "cached" else self.ran).add(key)
                elif failed and (event == "errored" or name == "Evaluate"):  # the row fails
                    self.status[key] = "failed"
                elif name == "Evaluate" and event in ("finished", "cached"):  # its registration not heard
                    self.status.setdefault(key, "ok")
            self._print(force=False)

    # ------------------------------------------------------------ the counts
    @property
    def done(self) -> int:
        """Registrations ended (ok or failed)."""
        return len(self.status)

    @property
    def failed(self) -> int:
        """Registrations failed."""
        return sum(1 for s in self.status.values() if s == "failed")

    @property
    def pairs_done(self) -> int:
        """Pairs all of whose registrations have ended."""
        return sum(1 for p in self.pairs if all((p, m) in self.status for m in self.methods))

    @property
    def line(self) -> str:
        """The current state as one line."""
        seconds = time.monotonic() - self._start
        if self.slots:
            running = min(self.in_flight, self.slots)
            waiting = self.in_flight - running
            active = f"{running} running" + (f", {waiting} waiting" if waiting else "")
        else:
            active = f"{self.in_flight} running"
        return (f"cohort: {self.pairs_done}/{len(self.pairs)} pairs done ({self.done}/{self.total} registrations, "
                f"{self.failed} failed, {active}) [{seconds:.0f} s]")

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

    def close(self, rows: ty.Iterable[ty.Mapping[str, ty.Any]] | None = None) -> None:
        """Print the final state (once more, whatever the interval).

        Args:
            rows: the cohort table's rows (``id``, ``method``, ``status``), when the run
                finished: registrations not heard while it ran were re-used from the cache.
        """
        with self._lock:
            self.in_flight = 0
            for row in rows or ():
                key = (str(row.get("id", "")), str(row.get("method", "")))
                if key[0] in self.pairs and key[1] in self.methods:
                    self.status[key] = "failed" if row.get("status") == "failed" else "ok"  # the table says
            self._print(force=True)

    def summary(self, ok: int, failed: int) -> str:
        """The end-of-run line, given the table's counts: how many were re-used from the cache."""
        ran = min(len(self.ran), ok + failed)
        reused = ok + failed - ran
        return (f"{ok + failed} registrations: {ok} ok, {failed} failed; {ran} run now, "
                f"{reused} re-used from the cache")
