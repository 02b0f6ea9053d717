"""The one module through which ``rdmm_pipelines`` talks to pydra.

pydra 1.0 is still an alpha (written against 1.0a12): every task and workflow of this package
imports the pydra names it needs from here, so an API change is absorbed in one place.

What is re-exported:
    * :func:`define`, :data:`arg`, :data:`out`, :data:`Task`, :data:`Outputs`: the python-task
      decorator and field types (``pydra.compose.python``); :func:`define` also keeps the class
      docstring (pydra 1.0a12 replaces a class task's ``__doc__`` with its function's).
    * :data:`workflow`: ``pydra.compose.workflow`` (``workflow.define``, ``workflow.add``, ...).
    * :class:`Submitter`, :data:`WORKERS`: the submitter and the worker names we support.

Helpers:
    * :func:`run`: run a task (or a workflow) and return its outputs; an errored result becomes a
      :class:`TaskError` carrying the real traceback(s) (pydra's cf and slurm workers do not raise).
    * :func:`cache_dir`: the cache directory a task runs in (to check reuse in tests and reports).
    * :func:`error_reports`: the tracebacks recorded under a cache root (``_error.pklz`` files).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import typing as ty
from pathlib import Path

import cloudpickle
from pydra.compose import python, workflow
from pydra.engine.submitter import Submitter

__all__ = [
    "define",
    "arg",
    "out",
    "Task",
    "Outputs",
    "workflow",
    "Submitter",
    "WORKERS",
    "TaskError",
    "run",
    "cache_dir",
    "error_reports",
]

log = logging.getLogger(__name__)

#: worker names accepted by :func:`run` ("debug": in this process, raises at once; "cf": a
#: process pool (forked: the parent must not have initialised CUDA); "slurm": one job per task)
WORKERS = ("debug", "cf", "slurm")

arg = python.arg
out = python.out
Task = python.Task
Outputs = python.Outputs

_T = ty.TypeVar("_T", bound=type)


def define(klass: _T) -> _T:
    """``pydra.compose.python.define`` for a class-style task, with two fixes for pydra 1.0a12.

    * The task's ``function`` must be a module-level function (``function =
      staticmethod(_run_stage)``), checked here. pydra hashes the function's source into the
      task's checksum; a method defined in the class body is not reachable by its qualified name
      on the attrs class pydra builds, so cloudpickle copies it *by value* to worker processes,
      where its source cannot be read and the bytecode hash gives another checksum: the cf and
      slurm workers then look for the result in the wrong directory ("Job main has no result").
    * pydra sets a class task's ``__doc__`` to its function's docstring; the class's own
      docstring is kept instead. Field help comes from the ``Args:`` section of the class
      docstring (inputs) and of the ``Outputs`` class docstring (outputs).
    """
    doc = klass.__doc__
    function = klass.__dict__.get("function")
    function = getattr(function, "__func__", function)
    module = sys.modules.get(getattr(function, "__module__", ""), None)
    if function is None or getattr(module, getattr(function, "__qualname__", ""), None) is not function:
        raise TypeError(
            f"{klass.__name__}.function must be a module-level function, e.g. "
            f"`function = staticmethod(_run)` with `def _run(...)` at module level, so that worker "
            f"processes import it (and hash it) instead of receiving a copy")
    task = python.define(klass)
    task.__doc__ = doc
    return task


class TaskError(RuntimeError):
    """A pydra task or workflow failed; the message holds the real traceback(s).

    Attributes:
        task_name: the class name of the task that was run.
        cache_dir: the directory of the failed job (its ``_error.pklz`` has the details).
        tracebacks: the recorded tracebacks, innermost failing jobs included.
    """

    def __init__(self, task_name: str, cache_dir: Path | None, tracebacks: list[str]):
        self.task_name = task_name
        self.cache_dir = cache_dir
        self.tracebacks = tracebacks
        where = f" (job directory {cache_dir})" if cache_dir else ""
        text = "\n".join(tracebacks) if tracebacks else "no traceback was recorded"
        super().__init__(f"{task_name} failed{where}:\n{text}")


def _read_error(path: Path) -> str:
    """The traceback text of one ``_error.pklz``."""
    try:
        with open(path, "rb") as f:
            report = cloudpickle.load(f)
    except Exception as exc:  # a half-written or foreign file: say so, do not hide the failure
        return f"{path}: unreadable error report ({type(exc).__name__}: {exc})"
    message = report.get("error message", "") if isinstance(report, dict) else report
    if isinstance(message, (list, tuple)):
        message = "".join(str(line) for line in message)
    name = report.get("name with checksum", path.parent.name) if isinstance(report, dict) else path.parent.name
    return f"--- {name} ---\n{str(message).rstrip()}"


def error_reports(cache_root: os.PathLike | str, since: float | None = None) -> list[str]:
    """Tracebacks of the ``_error.pklz`` files under ``cache_root``, oldest first.

    Args:
        cache_root: a pydra cache root (searched recursively: workflow nodes run in their own
            directories).
        since: only reports written at or after this ``time.time()`` value.
    """
    root = Path(cache_root)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("_error.pklz") if since is None or p.stat().st_mtime >= since]
    return [_read_error(p) for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def cache_dir(task: Task, cache_root: os.PathLike | str) -> Path:
    """The directory in which ``task`` runs (and its result is cached) under ``cache_root``.

    The name is the task's checksum: the hash of its inputs, files hashed by content.
    """
    return Path(cache_root).resolve() / task._checksum


def run(
    task: Task,
    *,
    cache_root: os.PathLike | str | None = None,
    worker: str = "debug",
    rerun: bool = False,
    **worker_kwargs: ty.Any,
) -> ty.Any:
    """Run ``task`` and return its outputs, raising :class:`TaskError` if it errored.

    pydra's cf and slurm workers record errors instead of raising them; this checks
    ``result.errored`` and collects the tracebacks written during this run (the failing node's
    own, not only the enclosing workflow's "node failed").

    Args:
        task: a parameterised task or workflow.
        cache_root: where jobs run and results are cached (default: pydra's run cache).
        worker: one of :data:`WORKERS` (or a pydra worker object).
        rerun: run again even when a cached result exists.
        **worker_kwargs: passed to the worker, e.g. ``n_procs=2`` for "cf".

    Returns:
        The task's outputs object (a list of them for a split task, as pydra returns).
    """
    if isinstance(worker, str) and worker not in WORKERS:
        raise ValueError(f"unknown worker {worker!r}; use one of {', '.join(WORKERS)}")
    start = time.time() - 1.0  # file times may be coarser than time.time()
    with Submitter(cache_root=cache_root, worker=worker, **worker_kwargs) as submitter:
        result = submitter(task, rerun=rerun, raise_errors=False)
        root = submitter.cache_root
    if result.errored:
        tracebacks = []
        own = result.errors
        if own:
            tracebacks.append(_read_error(result.cache_dir / "_error.pklz"))
        for text in error_reports(root, since=start):
            if text not in tracebacks:
                tracebacks.append(text)
        raise TaskError(type(task).__name__, result.cache_dir, tracebacks)
    return result.outputs
