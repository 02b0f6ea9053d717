"""Cohort workflow: every pair of a manifest registered with every method, in one table.

* :func:`cohort_workflow` builds a :class:`CohortWorkflow`: a :class:`~.pair.PairWorkflow` node
  split over pairs x methods (outer product) and combined, then a :class:`CohortTable` node that
  writes ``cohort_table.csv`` (one row per pair and method, failed pairs included).
* :func:`run_cohort` runs it through :func:`rdmm_pipelines.interfaces.run` and lays the results
  out under ``out_dir``::

      out_dir/cohort_table.csv
      out_dir/cohort_report.html, cohort_dice.png, cohort_seconds.png
      out_dir/cohort_provenance.json  (worker, versions, times, SLURM job ids)
      out_dir/cohort_retries.json     (attempt numbers of pairs that failed before)
      out_dir/sub-<id>/<method>/sub-<id>_from-moving_to-fixed_mode-image_xfm.nii.gz
      out_dir/sub-<id>/<method>/sub-<id>_desc-warped_moving.nii.gz, ..._desc-warped_dseg.nii.gz
      out_dir/sub-<id>/<method>/sub-<id>_evaluation.json, sub-<id>_qc.png, sub-<id>_qc.html

  Every file is written atomically (a temporary name in the same folder, then ``os.replace``).

Caching and resuming: every node's result is cached under ``cache_root`` by input content;
re-running with the same ``out_dir`` re-uses finished pairs and runs only what is missing (an
interrupted run) or failed. A pair whose registration failed *gracefully* (status "failed", e.g.
a constant image) is listed in the table; the next run gives its registration the next ``retry``
number (``cohort_retries.json``), so it runs again instead of its cached failure being re-used.
A crash (TaskError) is not cached and is redone on the next run. ``rerun=True`` redoes everything.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
import typing as ty
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fileformats.application import Json
from fileformats.generic import File
from rdmm_pipelines.interfaces._pydra import Outputs, Task, arg, define, run, workflow
from rdmm_pipelines.interfaces.common import NiftiImage

from rdmm_pipelines.atomic import copy_atomic

from .pair import PairWorkflow, check_method
from .resume import RETRIES_NAME, claim_cache, previous_retries

__all__ = [
    "PROVENANCE_NAME",
    "REPORT_NAME",
    "RETRIES_NAME",
    "TABLE_NAME",
    "CohortResult",
    "CohortTable",
    "CohortWorkflow",
    "cohort_rows",
    "cohort_workflow",
    "run_cohort",
    "xfm_name",
]

log = logging.getLogger(__name__)

TABLE_NAME = "cohort_table.csv"
REPORT_NAME = "cohort_report.html"
PROVENANCE_NAME = "cohort_provenance.json"

#: PairSpec fields split together (one element per pair)
_PAIR_FIELDS = ("id", "fixed", "moving", "fixed_labels", "moving_labels", "moving_regions",
                "fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask")


# ------------------------------------------------------------------ rows and table
def _num(value: ty.Any) -> float:
    try:
        return math.nan if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return math.nan


def cohort_rows(ids, methods, evaluations, statuses, messages, seconds, devices) -> list[dict[str, ty.Any]]:
    """One table row per (pair, method) from the combined outputs of the pair workflows.

    Columns: id, method, status, message, mean_dice, mean_dice_before (the Dice of the moving
    labels on the fixed grid with no transform: the same for every method of a pair),
    dice_<label> (union over all rows, NaN where a row has none), folds, folding_voxels,
    tre_mean, seconds, device. A pair without an evaluation record (its Evaluate failed) still
    gets a row with its status and message.
    """
    from rdmm_pipelines.evaluation.table import EvaluationResult

    rows = []
    for i, (pair_id, method) in enumerate(zip(ids, methods)):
        record = None
        if evaluations[i] is not None:
            try:
                record = EvaluationResult.from_json(os.fspath(evaluations[i]))
            except (OSError, ValueError) as exc:
                log.warning("%s/%s: unreadable evaluation record: %s", pair_id, method, exc)
        folds = (record.folds or {}) if record else {}
        tre = (record.tre or {}) if record else {}
        rows.append({
            "id": pair_id,
            "method": method,
            "status": statuses[i] if statuses[i] else (record.status if record else "failed"),
            "message": messages[i] or (record.message if record else ""),
            "mean_dice": record.mean_dice if record else math.nan,
            "mean_dice_before": record.mean_dice_before if record else math.nan,
            "dice": dict(record.dice) if record else {},
            "folds": _num(folds.get("folds")),
            "folding_voxels": _num(folds.get("folding_voxels")),
            "tre_mean": _num(tre.get("mean")),
            "seconds": _num(seconds[i]),
            "device": devices[i] or "",
        })
    labels = sorted({label for row in rows for label in row["dice"]})
    table = []
    for row in rows:
        dice = row.pop("dice")
        out = {k: row[k] for k in ("id", "method", "status", "message", "mean_dice", "mean_dice_before")}
        out.update({f"dice_{label}": dice.get(label, math.nan) for label in labels})
        out.update({k: row[k] for k in ("folds", "folding_voxels", "tre_mean", "seconds", "device")})
        table.append(out)
    return table


def _run_cohort_table(ids, methods, evaluations, statuses, messages, seconds, devices):
    """The body of :class:`CohortTable` (module level: worker processes import it)."""
    from rdmm_pipelines.evaluation.table import write_csv

    rows = cohort_rows(ids, methods, evaluations, statuses, messages, seconds, devices)
    return write_csv(rows, Path.cwd() / TABLE_NAME)


@define
class CohortTable(Task["CohortTable.Outputs"]):
    """Gather the combined pair outputs into one CSV table (one row per pair and method).

    Args:
        ids: pair identifiers, one per (pair, method).
        methods: the methods, aligned with ids.
        evaluations: Evaluate records (None where evaluation failed).
        statuses: the pairs' statuses.
        messages: the pairs' messages.
        seconds: registration times.
        devices: devices the registrations ran on.
    """

    requires_gpu = False

    ids: list[str] = arg()
    methods: list[str] = arg()
    evaluations: list[Json | None] = arg()
    statuses: list[str] = arg()
    messages: list[str] = arg()
    seconds: list[float] = arg()
    devices: list[str] = arg()

    class Outputs(Outputs):
        """
        Args:
            table: cohort_table.csv.
        """

        table: File

    function = staticmethod(_run_cohort_table)


# ------------------------------------------------------------------ the cohort workflow
_COHORT_OUTPUTS = ["table", "subject_id", "method", "status", "message", "mean_dice", "evaluation",
                   "csv_row", "png", "html", "displacement", "warped", "warped_labels", "seconds",
                   "device_used"]


@workflow.define(outputs=_COHORT_OUTPUTS)
def CohortWorkflow(
    ids: list[str],
    fixed: list[NiftiImage],
    moving: list[NiftiImage],
    fixed_labels: list[NiftiImage | None],
    moving_labels: list[NiftiImage | None],
    moving_regions: list[NiftiImage | None],
    fixed_landmarks: list[File | None],
    moving_landmarks: list[File | None],
    methods: list[str],
    retries: list[dict] | None = None,
    config_json: Json | None = None,
    preset: str | None = None,
    method_options: dict | None = None,
    device: str = "auto",
    threads: int = 0,
    report: bool = True,
    fixed_mask: list[NiftiImage | None] | None = None,
    moving_mask: list[NiftiImage | None] | None = None,
):
    """Every pair registered with every method, evaluated, reported and tabulated.

    Args:
        ids: pair identifiers (one per pair, like every list below).
        fixed: fixed images.
        moving: moving images.
        fixed_labels: label maps of the fixed images (None where a pair has none: no Dice).
        moving_labels: label maps of the moving images (None where absent).
        moving_regions: region maps of the moving images (None where absent).
        fixed_landmarks: landmark files of the fixed images (None where absent).
        moving_landmarks: landmark files of the moving images (None where absent).
        methods: the methods (pair_workflow's METHODS).
        retries: per pair, {method: attempt} (see :class:`~.pair.PairWorkflow`); None: all 0.
        config_json: RegistrationConfig JSON for our methods.
        preset: preset for our methods when no config_json is given.
        method_options: {method: {input: value}} further registration-task inputs per method.
        device: device of our registrations ("auto" is resolved inside the task).
        threads: CPU threads per task.
        report: draw each pair's QC report.
        fixed_mask: masks of the fixed images (None where a pair has none; None: no pair has
            one), for the methods that use masks (:data:`~.pair.MASKED_METHODS`).
        moving_mask: masks of the moving images, the same way.

    Returns:
        table: cohort_table.csv.
        subject_id: pair id per (pair, method), pairs outer, methods inner.
        method: method per (pair, method).
        status: evaluation status per (pair, method).
        message: failure message per (pair, method).
        mean_dice: mean Dice per (pair, method).
        evaluation: evaluation record per (pair, method).
        csv_row: one-row CSV per (pair, method).
        png: QC figure per (pair, method).
        html: QC page per (pair, method).
        displacement: displacement field per (pair, method).
        warped: warped moving image per (pair, method).
        warped_labels: moving label map on the fixed grid per (pair, method).
        seconds: registration time per (pair, method).
        device_used: device per (pair, method).
    """
    pair = workflow.add(
        PairWorkflow(config_json=config_json, preset=preset, method_options=method_options, device=device,
                     threads=threads, report=report)
        .split([("subject_id", "fixed", "moving", "fixed_labels", "moving_labels", "moving_regions",
                 "fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask", "retries"), "method"],
               subject_id=ids, fixed=fixed, moving=moving, fixed_labels=fixed_labels, moving_labels=moving_labels,
               moving_regions=moving_regions, fixed_landmarks=fixed_landmarks, moving_landmarks=moving_landmarks,
               fixed_mask=fixed_mask if fixed_mask is not None else [None for _ in ids],
               moving_mask=moving_mask if moving_mask is not None else [None for _ in ids],
               retries=retries if retries is not None else [{} for _ in ids], method=methods)
        .combine(["subject_id", "method"]),
        name="pair")
    table = workflow.add(
        CohortTable(ids=pair.subject_id, methods=pair.method, evaluations=pair.evaluation,
                    statuses=pair.status, messages=pair.message, seconds=pair.seconds,
                    devices=pair.device_used),
        name="table")
    return (table.table, pair.subject_id, pair.method, pair.status, pair.message, pair.mean_dice,
            pair.evaluation, pair.csv_row, pair.png, pair.html, pair.displacement, pair.warped,
            pair.warped_labels, pair.seconds, pair.device_used)


def _absolute(value):
    return None if value is None else str(Path(os.fspath(value)).absolute())


def cohort_workflow(pairs: ty.Sequence, methods: ty.Sequence[str], config_json=None, *, preset=None,
                    method_options: dict | None = None, device: str = "auto", threads: int = 0,
                    report: bool = True, retries: dict[str, dict[str, int]] | None = None) -> CohortWorkflow:
    """Build the cohort workflow of ``pairs`` x ``methods``.

    Args:
        pairs: PairSpec objects (``workflows.manifest``): id, fixed, moving, fixed_labels,
            moving_labels and optionally moving_regions, fixed_landmarks, moving_landmarks,
            fixed_mask, moving_mask.
        methods: methods of :data:`.pair.METHODS` (each pair is registered with each).
        config_json: RegistrationConfig JSON for our methods (e.g. fewer iterations).
        preset: preset for our methods when no config_json is given.
        method_options: {method: {input: value}}, e.g. ``{"sitk-demons": {"levels": 1}}``.
        device: "auto" (resolved inside each registration task), "cpu", "cuda[:N]".
        threads: CPU threads per task (0: all).
        report: draw each pair's QC report.
        retries: {pair id: {method: attempt}} for (pair, method)s to run again (absent: 0).

    Returns:
        A parameterised :class:`CohortWorkflow`.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pairs to register")
    methods = [check_method(m) for m in methods]
    if not methods:
        raise ValueError("no methods given")
    ids = [str(p.id) for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"pair ids are not unique: {ids}")
    lists = {name: [_absolute(getattr(p, name, None)) for p in pairs] for name in _PAIR_FIELDS[1:]}
    per_pair = [{m: int(n) for m, n in sorted((retries or {}).get(i, {}).items()) if int(n)} for i in ids]
    return CohortWorkflow(ids=ids, methods=methods, config_json=_absolute(config_json), preset=preset,
                          method_options=method_options, device=device, threads=threads, report=report,
                          retries=per_pair, **lists)


# ------------------------------------------------------------------ running a cohort
@dataclass
class CohortResult:
    """What :func:`run_cohort` gives.

    Attributes:
        table: out_dir/cohort_table.csv.
        report: out_dir/cohort_report.html.
        rows: the table's rows (dicts of strings, as read back from the CSV).
        failed: (id, method, message) of every pair that failed.
        outputs: per (id, method): the laid-out files ("xfm", "warped", "warped_labels",
            "evaluation", "png", "html").
    """

    table: Path
    report: Path
    rows: list[dict]
    failed: list[tuple[str, str, str]]
    outputs: dict[tuple[str, str], dict[str, Path]] = field(default_factory=dict)


def xfm_name(pair_id: str) -> str:
    """BIDS-derivatives-style name of a pair's transform (moving -> fixed, image mode)."""
    return f"{_sub(pair_id)}_from-moving_to-fixed_mode-image_xfm.nii.gz"


def _sub(pair_id: str) -> str:
    return pair_id if pair_id.startswith("sub-") else f"sub-{pair_id}"


def _pairs_of(manifest_or_pairs) -> list:
    if isinstance(manifest_or_pairs, (str, os.PathLike)):
        from .manifest import read_manifest

        return list(read_manifest(manifest_or_pairs))
    return list(manifest_or_pairs)


def run_cohort(
    manifest_or_pairs,
    out_dir: os.PathLike | str,
    methods: ty.Sequence[str],
    worker: str = "cf",
    cache_root: os.PathLike | str | None = None,
    *,
    config_json=None,
    preset: str | None = None,
    method_options: dict | None = None,
    device: str = "auto",
    threads: int = 0,
    report: bool = True,
    rerun: bool = False,
    progress: ty.TextIO | None | bool = True,
    **worker_kwargs: ty.Any,
) -> CohortResult:
    """Register every pair with every method and write the cohort table, layout and report.

    Re-running with the same ``out_dir`` (and cache) re-uses every finished (pair, method) and
    runs again only what is missing (an interrupted run) or failed (the previous table's failed
    rows, whose registrations get the next ``retry`` number, so their cached failure is not
    re-used).

    Args:
        manifest_or_pairs: a manifest file (read with ``workflows.manifest.read_manifest``) or
            a list of PairSpec.
        out_dir: where the table, the report and ``sub-<id>/<method>/`` folders go.
        methods: the methods (:data:`.pair.METHODS`).
        worker: pydra worker, "cf" (processes), "debug" (this process) or "slurm" (one job per
            task; ``sbatch_args`` for every job, ``gpu_args`` e.g. "--gres=gpu:1" for the
            registration jobs only).
        cache_root: pydra cache (default ``out_dir/cache``); re-use it to re-use finished pairs.
        config_json, preset, method_options, device, report: see :func:`cohort_workflow`.
        threads: CPU threads per task; 0 with the "cf" worker: the CPUs divided between its
            ``n_procs`` processes (one each by default), so that the tasks do not oversubscribe
            the machine; 0 with "slurm" or "debug": the CPUs the task's process may use.
        rerun: ignore cached results.
        progress: print "pairs done (registrations done, failed, running)" lines while it runs
            (:class:`~.progress.CohortProgress`): True (to stderr), a stream, or False/None
            (silent). With the debug worker only the final line.
        **worker_kwargs: for the worker, e.g. ``n_procs=2`` (cf), ``sbatch_args``,
            ``gpu_args``, ``poll_delay`` (slurm).

    Returns:
        :class:`CohortResult`; ``out_dir/cohort_provenance.json`` records the run (worker and
        its options, versions, times, retries and, under SLURM, every job's id and GPUs).

    Raises:
        rdmm_pipelines.workflows.manifest.ManifestError: the manifest has problems (all listed).
        rdmm_pipelines.interfaces.TaskError: a task crashed (a pair's graceful failure is a row).
        RuntimeError: another cohort run is using the same cache.
    """
    from rdmm_pipelines.interfaces._pydra import read_job_log

    from rdmm_pipelines.provenance import versions, write_json_atomic
    from rdmm_pipelines.threads import available_cpus, threads_per_job

    from .progress import CohortProgress

    out = Path(out_dir).absolute()
    if worker == "cf" and threads == 0:  # the processes share the CPUs
        threads = threads_per_job(worker_kwargs.get("n_procs"))
    pairs = _pairs_of(manifest_or_pairs)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_root).absolute() if cache_root is not None else out / "cache"
    retries = previous_retries(out, TABLE_NAME)
    wf = cohort_workflow(pairs, methods, config_json, preset=preset, method_options=method_options,
                         device=device, threads=threads, report=report, retries=retries)
    stream = sys.stderr if progress is True else (progress or None)
    slots = (worker_kwargs.get("n_procs") or available_cpus()) if worker == "cf" else None  # jobs run at once
    monitor = CohortProgress([str(p.id) for p in pairs], list(methods), stream=stream, slots=slots)
    claim = claim_cache(cache)
    jobs_before = len(read_job_log(cache))
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        res = run(wf, cache_root=cache, worker=worker, rerun=rerun,
                  on_job=monitor if worker in ("cf", "slurm") else None, **worker_kwargs)
    except BaseException:
        monitor.close()  # the state when it stopped
        raise
    finally:
        claim.close()
    seconds = time.perf_counter() - t0

    outputs: dict[tuple[str, str], dict[str, Path]] = {}
    html_links: dict[tuple[str, str], str] = {}
    thumbnails: dict[tuple[str, str], str] = {}
    for i, (pair_id, method) in enumerate(zip(res.subject_id, res.method)):
        folder = out / _sub(pair_id) / method
        stem = _sub(pair_id)
        files = {
            "xfm": copy_atomic(res.displacement[i], folder / xfm_name(pair_id)),
            "warped": copy_atomic(res.warped[i], folder / f"{stem}_desc-warped_moving.nii.gz"),
            "warped_labels": copy_atomic(res.warped_labels[i], folder / f"{stem}_desc-warped_dseg.nii.gz"),
            "evaluation": copy_atomic(res.evaluation[i], folder / f"{stem}_evaluation.json"),
            "png": copy_atomic(res.png[i], folder / f"{stem}_qc.png"),
            "html": copy_atomic(res.html[i], folder / f"{stem}_qc.html"),
        }
        outputs[(pair_id, method)] = {k: v for k, v in files.items() if v is not None}
        if files["html"] is not None:
            html_links[(pair_id, method)] = files["html"].relative_to(out).as_posix()
        if files["png"] is not None:
            thumbnails[(pair_id, method)] = files["png"].relative_to(out).as_posix()

    table = copy_atomic(res.table, out / TABLE_NAME)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    monitor.close(rows)  # the final state: pairs found whole in the cache were not heard while it ran
    failed = [(r["id"], r["method"], r["message"]) for r in rows if r["status"] == "failed"]
    write_json_atomic(out / RETRIES_NAME, retries)

    from .cohort_report import write_cohort_report

    report_path = write_cohort_report(rows, out / REPORT_NAME, qc_links=html_links, thumbnails=thumbnails)
    ok = sum(1 for r in rows if r["status"] != "failed")
    summary = monitor.summary(ok, len(failed))
    options = {k: v for k, v in worker_kwargs.items() if isinstance(v, (str, int, float, bool))}
    write_json_atomic(out / PROVENANCE_NAME, {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "worker": worker,
        "worker_options": options,
        "cache_root": str(cache),
        "methods": list(methods),
        "pairs": len(pairs),
        "summary": summary,
        "retries": retries,
        "device": device,
        "threads": threads,
        "versions": versions(),
        "slurm_jobs": read_job_log(cache)[jobs_before:],
    })
    if stream is not None:
        print(summary, file=stream, flush=True)
    return CohortResult(table=table, report=report_path, rows=rows, failed=failed, outputs=outputs)
