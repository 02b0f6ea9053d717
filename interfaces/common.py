"""What every task of :mod:`rdmm_pipelines.interfaces` shares: file types, input checks, devices,
thread limits, output names and the ``guarded`` failure policy.

No pydra here: the pydra-facing pieces are in :mod:`._pydra`; this module is plain Python so the
nipype interfaces use it too.

Conventions of every task:
    * **Files**: typed with fileformats, so inputs are validated when a task is built and hashed
      by content (a changed file re-runs the task, an unchanged one at a new path does not).
      Images are NIfTI-1 (``.nii``) or gzipped NIfTI (``.nii.gz``), see :data:`NiftiImage`.
    * **Names**: outputs are written into the task's working directory (pydra runs each task in
      its cache directory) under per-subject names ``{subject_id}_{method}_{what}{ext}``
      (:func:`output_path`), so workflow outputs copied into one folder never clash.
    * **Device**: the ``device`` input defaults to "auto" and is resolved *inside* the task
      (:func:`task_device`): the cache hash does not depend on the machine that built the task,
      and the device actually used is an output.
    * **Threads**: ``threads`` caps torch, OpenMP and ITK threads while the task runs
      (:func:`thread_limits`); 0 means the CPUs available to the process.
    * **Failures**: a pair that cannot be processed (a constant image, a broken file, a label map
      on another grid) gives ``status="failed"`` and the error in ``message`` instead of raising
      (:func:`guarded`), so one bad pair does not stop a cohort's table. Such a result is cached
      like any other: run again with ``rerun=True`` after fixing the input.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import traceback
import typing as ty
import zlib
from pathlib import Path

from fileformats.medimage import Nifti1, NiftiGz

from rdmm_pipelines.threads import available_cpus, thread_limits

__all__ = [
    "STATUSES",
    "NiftiImage",
    "available_cpus",
    "check_config_json",
    "check_device",
    "check_nifti",
    "check_subject_id",
    "check_threads",
    "failure_message",
    "guarded",
    "image_stem",
    "output_path",
    "read_config",
    "task_device",
    "thread_limits",
]

log = logging.getLogger(__name__)

#: an input image: NIfTI-1 (.nii, magic number checked) or gzipped NIfTI (.nii.gz)
NiftiImage = Nifti1 | NiftiGz

#: the ``status`` output of every task (Evaluate passes on its record's, which may also be "partial")
STATUSES = ("ok", "failed")

_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
_NIFTI_MAGIC = {1: (344, (b"n+1\x00", b"ni1\x00")), 2: (4, (b"n+2\x00", b"ni2\x00"))}


# ------------------------------------------------------------------ input checks (attrs validators)
def _skip(value: ty.Any) -> bool:
    """Values a file validator lets through: None, or a workflow's lazy field (checked when the
    node runs)."""
    return not isinstance(value, os.PathLike)


def check_nifti(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: a ``.nii.gz`` input must decompress to a NIfTI-1 or NIfTI-2 header.

    fileformats checks only the gzip magic number of a ``.nii.gz``; this also reads the first
    540 decompressed bytes, so a foreign file (or one cut inside its header) is refused when the
    task is built rather than when it runs. A file truncated or corrupt further on is refused when
    the task runs: the library reads every ``.nii.gz`` to its end and checks its gzip checksum
    (``spatial.io.verify_gzip``) before any work. (``.nii`` files have their magic number checked
    by fileformats.)
    """
    if _skip(value):
        return
    path = Path(os.fspath(value))
    if not path.name.endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{attribute.name}: {path} is not a readable gzip file ({exc})") from None
    if not any(len(head) >= at + 4 and head[at:at + 4] in magic for at, magic in _NIFTI_MAGIC.values()):
        raise ValueError(f"{attribute.name}: {path} does not hold a NIfTI-1 image (no NIfTI header "
                         "after decompression); is the file truncated or of another format?")


def check_subject_id(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: a subject id usable in file names (letters, digits, '.', '_', '-')."""
    if not isinstance(value, str):
        return  # lazy values are checked when the node runs
    if not _SUBJECT_ID.match(value):
        raise ValueError(f"{attribute.name} {value!r} cannot be used in file names: use letters, digits, "
                         "'.', '_' and '-' only, starting with a letter or digit")


def check_device(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: "auto", "cpu", "cuda" or "cuda:N" (availability is checked when the task runs)."""
    if isinstance(value, str) and not _DEVICE.match(value):
        raise ValueError(f"{attribute.name} {value!r} is not a device; use auto, cpu, cuda or cuda:N")


def check_threads(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: a non-negative thread count (0 = all CPUs available to the task)."""
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError(f"{attribute.name} must be a non-negative integer (0 = all available CPUs), got {value!r}")


def check_retry(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: a non-negative attempt number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer (an attempt number), got {value!r}")


def check_config_json(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator: a configuration JSON must parse and name only known keys.

    Accepts a :class:`~rdmm_pipelines.config.RegistrationConfig` dict, so a misspelled key is
    refused when the task is built, not after the queue wait.
    """
    if _skip(value):
        return
    read_config(Path(os.fspath(value)), attribute.name)


def read_config(path: Path, what: str = "config_json"):
    """The :class:`~rdmm_pipelines.config.RegistrationConfig` in a JSON file (ValueError otherwise)."""
    from rdmm_pipelines.config import RegistrationConfig

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not a readable JSON file ({exc})") from None
    try:
        return RegistrationConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {path} is not a registration configuration: {exc}") from None


# ------------------------------------------------------------------ devices and threads
def task_device(device: str = "auto"):
    """Resolve the ``device`` input inside a running task: "auto" -> "cuda" if this machine has a
    GPU, else "cpu"; "cpu", "cuda", "cuda:N" are checked. Returns a ``torch.device``.

    Call it only in the task body (never in the process building the workflow: pydra's cf worker
    forks, and a parent that initialised CUDA breaks its children).
    """
    from rdmm_pipelines.provenance import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------ outputs
def output_path(subject_id: str, method: str, what: str, ext: str, folder: os.PathLike | str | None = None) -> Path:
    """``{folder}/{subject_id}_{method}_{what}{ext}``, absolute (folder: the working directory).

    pydra runs a task in its cache directory; per-subject, per-method names keep workflow outputs
    apart when they are gathered into one folder.
    """
    base = Path(folder) if folder is not None else Path.cwd()
    stem = "_".join(part for part in (subject_id, method, what) if part)
    return (base / f"{stem}{ext}").absolute()


def image_stem(path: os.PathLike | str) -> str:
    """The file name without its NIfTI extension: ``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``."""
    name = os.path.basename(os.fspath(path))
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def failure_message(exc: BaseException) -> str:
    """One line for the ``message`` output: ``"ValueError: image is constant ..."``."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def guarded(
    work: ty.Callable[[], dict[str, ty.Any]],
    failed: dict[str, ty.Any],
    *,
    what: str,
    error_file: Path | None = None,
) -> dict[str, ty.Any]:
    """Run one pair's stage; turn an exception into ``failed`` outputs instead of raising.

    Args:
        work: computes the outputs (a dict, ``status`` and ``message`` included or defaulted to
            "ok" and "").
        failed: the outputs to give when ``work`` raises (files None, numbers NaN, ...);
            ``status`` becomes "failed" and ``message`` the error.
        what: names the stage and pair in the log, e.g. ``"sub-01: RdmmRegistration"``.
        error_file: where to write the full traceback of a failure (a per-subject name in the
            task's directory), next to the outputs.

    Only ``Exception`` is caught: KeyboardInterrupt and SystemExit still stop the run.
    """
    try:
        outputs = work()
    except Exception as exc:
        message = failure_message(exc)
        written = None
        if error_file is not None:
            try:
                error_file.write_text(f"{what} failed\n\n{traceback.format_exc()}")
                written = error_file
            except OSError:  # the failure report itself must not fail the task
                pass
        log.error("%s failed: %s%s", what, message, f" (traceback in {written})" if written else "",
                  exc_info=written is None)
        return {**failed, "status": "failed", "message": message}
    return {"status": "ok", "message": "", **outputs}
