"""The one module through which ``rdmm_pipelines`` talks to pydra.

pydra 1.0 is still an alpha (written against 1.0a12): every task and workflow of this package
imports the pydra names it needs from here, so an API change is absorbed in one place.

What is re-exported:
    * :func:`define`, :data:`arg`, :data:`out`, :data:`Task`, :data:`Outputs`: the python-task
      decorator and field types (``pydra.compose.python``); :func:`define` also keeps the class
      docstring (pydra 1.0a12 replaces a class task's ``__doc__`` with its function's).
    * :data:`workflow`: ``pydra.compose.workflow`` (``workflow.define``, ``workflow.add``, ...).
    * :class:`Submitter`, :data:`WORKERS`: the submitter and the worker names we support.
    * :class:`SlurmWorker`: pydra's SLURM worker, asking a GPU only for tasks that need one and
      logging every job's SLURM id (what ``worker="slurm"`` uses).

Helpers:
    * :func:`run`: run a task (or a workflow) and return its outputs; an errored result becomes a
      :class:`TaskError` carrying the real traceback(s) (pydra's cf and slurm workers do not raise).
    * :func:`cache_dir`: the cache directory a task runs in (to check reuse in tests and reports).
    * :func:`error_reports`: the tracebacks recorded under a cache root (``_error.pklz`` files).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import typing as ty
from pathlib import Path

import attrs
import cloudpickle
from pydra.compose import python, workflow
from pydra.engine.submitter import Submitter
from pydra.workers import cf as _cf
from pydra.workers import slurm as _slurm

__all__ = [
    "JOB_LOG",
    "WORKERS",
    "ConcurrentWorker",
    "Outputs",
    "SlurmWorker",
    "Submitter",
    "Task",
    "TaskError",
    "arg",
    "cache_dir",
    "check_slurm",
    "define",
    "error_reports",
    "out",
    "read_job_log",
    "run",
    "workflow",
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


#: job listeners of the runs in progress in this process, by key (see :func:`run`'s ``on_job``).
#: Workers carry only the key: a pickled copy in another process finds nothing and stays quiet.
_LISTENERS: dict[str, ty.Callable[[str, ty.Any, ty.Any], None]] = {}


def _notify(key: str, event: str, job: ty.Any, outputs: ty.Any = None) -> None:
    listener = _LISTENERS.get(key) if key else None
    if listener is None:
        return
    try:
        listener(event, job.task, outputs)
    except Exception:  # a progress display must never break a run
        log.debug("job listener failed on %s", event, exc_info=True)


def _cached_result(job: ty.Any) -> ty.Any:
    """The result a job already has in the cache (None when it has none, or only a failure)."""
    try:
        result = job.result()
    except Exception:
        return None
    return None if result is None or getattr(result, "errored", False) else result


async def _observed(key: str, submit: ty.Callable, job: ty.Any, rerun: bool) -> ty.Any:
    """Run ``submit(job, rerun=...)`` telling the listener ``key`` when it starts and ends.

    A job whose result is already cached is not submitted at all (pydra would start a worker
    process, or a SLURM job, only to find it): the listener hears "cached".
    """
    if not rerun:
        cached = _cached_result(job)
        if cached is not None:
            _notify(key, "cached", job, cached.outputs)
            return cached
    _notify(key, "started", job)
    try:
        value = await submit(job, rerun=rerun)
    except BaseException:
        _notify(key, "errored", job)
        raise
    if key:
        result = _cached_result(job)
        _notify(key, "finished" if result is not None else "errored", job,
                None if result is None else result.outputs)
    return value


@attrs.define(getstate_setstate=False)
class ConcurrentWorker(_cf.Worker):
    """pydra's concurrent-futures worker (a process pool) whose processes are *spawned*, telling
    :func:`run`'s ``on_job`` listener when each job starts and ends (what ``worker="cf"`` uses).

    pydra's own pool forks the submitting process. A fork is unsafe once that process has run
    torch on several threads (GNU OpenMP's thread pool does not survive a fork: the children hang
    at their first parallel region) or initialised CUDA. Spawned processes start clean, at the
    price of importing the libraries once per pool process; as with any spawning pool, a script
    that runs a cohort must guard its entry point with ``if __name__ == "__main__":``.
    """

    _plugin_name = "cf"

    listener: str = ""

    def __attrs_post_init__(self) -> None:
        import concurrent.futures
        import multiprocessing

        self.pool.shutdown(wait=False)  # pydra's forking pool (no process started yet)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.n_procs, mp_context=multiprocessing.get_context("spawn"))

    async def run(self, job, rerun=False):
        return await _observed(self.listener, super().run, job, rerun)


#: name of the job log a :class:`SlurmWorker` keeps in the cache root (one line per SLURM job)
JOB_LOG = "slurm_jobs.tsv"


@attrs.define(getstate_setstate=False)
class SlurmWorker(_slurm.Worker):
    """pydra's SLURM worker (one ``sbatch`` job per task), with a GPU request per task class.

    pydra 1.0a12 has no per-task resource request: every job gets the same ``sbatch_args``. Here
    a task whose class sets ``requires_gpu = True`` (the registrations) also gets ``gpu_args``
    (e.g. ``--gres=gpu:1``) as ``#SBATCH`` lines of its batch script; the other stages (evaluation,
    reports, tables) stay CPU-only jobs.

    Every job appends one tab-separated line to ``cache_root/slurm_jobs.tsv`` *from inside the
    job* when it starts: SLURM job id, task class, pydra job uid, GPU options asked,
    ``CUDA_VISIBLE_DEVICES`` as the job sees it. That is the run's record that its tasks really
    ran under SLURM and which of them were given a GPU (:func:`read_job_log`).

    Attributes:
        sbatch_args: options of every job (pydra's), e.g. ``"--partition=gpu --time=2:00:00"``.
        gpu_args: extra options of the jobs of ``requires_gpu`` tasks ("" asks for no GPU).
        poll_delay: seconds between ``squeue`` polls.
        listener: key of :func:`run`'s ``on_job`` listener (set by :func:`run`).
    """

    _plugin_name = "slurm"

    gpu_args: str = ""
    listener: str = ""

    async def run(self, job, rerun=False):
        return await _observed(self.listener, super().run, job, rerun)

    def _prepare_runscripts(self, job, interpreter="/bin/sh", rerun=False):
        script_dir, batchscript = super()._prepare_runscripts(job, interpreter=interpreter, rerun=rerun)
        task = job.task
        wants_gpu = bool(self.gpu_args) and bool(getattr(type(task), "requires_gpu", False))
        gpu = shlex.split(self.gpu_args) if wants_gpu else []
        fields = [type(task).__name__, str(job.uid), " ".join(gpu)]
        record = ("printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$SLURM_JOB_ID\" "
                  + " ".join(shlex.quote(f) for f in fields)
                  + f' "${{CUDA_VISIBLE_DEVICES:-}}" >> {shlex.quote(str(Path(job.cache_root) / JOB_LOG))}')
        lines = batchscript.read_text().split("\n")
        # #SBATCH directives must precede the first command; the shebang and pydra's own go first
        head = [line for line in lines if line.startswith("#")]
        body = [line for line in lines if line and not line.startswith("#")]
        script = [*head, *(f"#SBATCH {shlex.quote(a)}" for a in gpu), record, *body]
        batchscript.write_text("\n".join(script) + "\n")
        return script_dir, batchscript


def read_job_log(cache_root: os.PathLike | str) -> list[dict[str, str]]:
    """The jobs a :class:`SlurmWorker` ran under ``cache_root``, in start order.

    Returns:
        One dict per job: ``job_id``, ``task``, ``uid``, ``gpu_args`` (options asked),
        ``cuda_visible_devices`` (what the job saw; "" when SLURM gave it no GPU).
    """
    path = Path(cache_root) / JOB_LOG
    if not path.is_file():
        return []
    keys = ("job_id", "task", "uid", "gpu_args", "cuda_visible_devices")
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == len(keys):
            rows.append(dict(zip(keys, parts)))
    return rows


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


def check_slurm() -> None:
    """Raise a RuntimeError saying what is missing when SLURM's commands cannot be run here.

    pydra's worker needs ``sbatch``, ``squeue`` and ``sacct`` on PATH and a controller answering.
    """
    import shutil
    import subprocess

    missing = [c for c in ("sbatch", "squeue", "sacct") if shutil.which(c) is None]
    if missing:
        raise RuntimeError(f"the slurm worker needs SLURM's commands, not found on PATH: {', '.join(missing)}")
    try:
        probe = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError("SLURM's controller did not answer `squeue` within 30 s") from None
    if probe.returncode:
        raise RuntimeError(f"SLURM is not reachable (`squeue` failed): {probe.stderr.strip()}")


def run(
    task: Task,
    *,
    cache_root: os.PathLike | str | None = None,
    worker: str = "debug",
    rerun: bool = False,
    on_job: ty.Callable[[str, ty.Any, ty.Any], None] | None = None,
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
        on_job: called in this process as ``on_job(event, task, outputs)`` when a job (one
            task of the graph) is "started", "finished" (``outputs``: its outputs), "errored", or
            "cached" (re-used from the cache without being submitted; ``outputs``: the cached
            ones). "cf" and "slurm" workers only; exceptions it raises are logged and ignored.
        **worker_kwargs: passed to the worker, e.g. ``n_procs=2`` for "cf"; for "slurm"
            (:class:`SlurmWorker`) ``sbatch_args``, ``gpu_args`` and ``poll_delay``.

    Returns:
        The task's outputs object (a list of them for a split task, as pydra returns).
    """
    if isinstance(worker, str) and worker not in WORKERS:
        raise ValueError(f"unknown worker {worker!r}; use one of {', '.join(WORKERS)}")
    if worker == "slurm":
        check_slurm()
        worker = SlurmWorker
    elif worker == "cf":
        worker = ConcurrentWorker
    key = ""
    if on_job is not None:
        if worker not in (SlurmWorker, ConcurrentWorker):
            raise ValueError("on_job needs the 'cf' or 'slurm' worker")
        key = f"{os.getpid()}-{id(on_job)}-{time.monotonic_ns()}"
        _LISTENERS[key] = on_job
        worker_kwargs["listener"] = key
    start = time.time() - 1.0  # file times may be coarser than time.time()
    try:
        with Submitter(cache_root=cache_root, worker=worker, **worker_kwargs) as submitter:
            result = submitter(task, rerun=rerun, raise_errors=False)
            root = submitter.cache_root
    finally:
        _LISTENERS.pop(key, None)
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
