"""How the command line finds a finished result again: its displacement field (ours or a
baseline's folder) and its record (the method as the cohort names it, the seconds, the grids).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spatial import Grid


__all__ = ["BASELINE_FIELD_SUFFIX", "RecordedResult", "field_path", "method_of_record", "read_record", "recorded"]

log = logging.getLogger("rdmm")


BASELINE_FIELD_SUFFIX = "_displacement.nii.gz"

#: a baseline runner's method (its log's ``method:``) -> the method as the cohort names it
#: (:data:`rdmm_pipelines.workflows.pair.BASELINE_METHODS`)
_BASELINE_NAMES = {"ants-syn": "ants-syn", "sitk-demons-diffeomorphic": "sitk-demons",
                   "sitk-demons-fss": "sitk-demons", "niftyreg-f3d": "niftyreg"}


def _baseline_log(field: Path) -> Path | None:
    """The log (the record) of a baseline's displacement field, None for another file."""
    if not field.name.endswith(BASELINE_FIELD_SUFFIX):
        return None
    return field.with_name(field.name[:-len(BASELINE_FIELD_SUFFIX)] + ".log")


def _baseline_fields(folder: Path) -> list[Path]:
    """The baselines' displacement fields in ``folder`` that have their log beside them."""
    found = []
    for candidate in sorted(folder.glob(f"*{BASELINE_FIELD_SUFFIX}")):
        log = _baseline_log(candidate)
        if candidate.is_file() and log is not None and log.is_file():
            found.append(candidate)
    return found


def field_path(result: str) -> Path:
    """The displacement field of a result directory (or the field file itself): our result's
    (a directory with its registration.json, which is written last), or a baseline's (a
    directory with one ``*_displacement.nii.gz`` and its ``.log``)."""
    from .result import OUTPUT_FILES

    p = Path(result)
    if p.is_dir() and not (p / OUTPUT_FILES["record"]).is_file():
        baselines = _baseline_fields(p)
        if len(baselines) == 1:
            return baselines[0]
        if baselines:
            raise ValueError(f"{p}: holds {len(baselines)} baseline results ({', '.join(f.name for f in baselines)}); "
                             "give the displacement field of one")
        raise ValueError(f"{p}: not a complete result (no {OUTPUT_FILES['record']}, which is written last): "
                         "the registration did not finish")
    field = p / OUTPUT_FILES["displacement"] if p.is_dir() else p
    if not field.is_file():
        raise FileNotFoundError(f"{field}: no displacement field (give a result directory or a field file)")
    return field


@dataclass(frozen=True)
class RecordedResult:
    """What a result's own record says about it (None where it says nothing).

    Attributes:
        method: what was run, named as the cohort names its methods: "rdmm-optimized",
            "rdmm-predefined", "lddmm", "vsvf", "<model>-net" (a trained network), "<model>-net+io"
            (a network's prediction refined by instance optimisation), "ants-syn",
            "sitk-demons", "niftyreg".
        seconds: the registration's total time (registration.json's ``timings_seconds.total``, a
            baseline log's "finished in ... s").
        moving_grid: the moving image's grid (the grid the transform maps into).
        source: the record read (a registration.json or a baseline's log); None without one.
        notes: what could not be read from it, in words.
    """

    method: str | None = None
    seconds: float | None = None
    moving_grid: Grid | None = None
    source: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def method_of_record(record: Mapping[str, Any]) -> str | None:
    """The method a ``registration.json`` record says was run, named as the cohort names it
    ("rdmm-optimized", "rdmm-predefined", "lddmm", "vsvf", or "<model>-net" for a trained
    network's prediction, "<model>-net+io" for it refined by instance optimisation); None when
    the record names no model."""
    config = record.get("config") or {}
    model = config.get("model") if isinstance(config, Mapping) else None
    if not model:
        return None
    inputs = record.get("inputs") or {}
    if isinstance(inputs, Mapping) and (inputs.get("network") is not None or inputs.get("weights") is not None):
        return f"{model}-net+io" if inputs.get("refine") is not None else f"{model}-net"
    if model == "rdmm":
        source = (config.get("regional") or {}).get("source")
        return f"rdmm-{source}" if source in ("predefined", "optimized") else "rdmm"
    return str(model)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _grid_of_file(path: Any, notes: list[str]) -> Grid | None:
    """The grid of the image file a record names (None, with a note, when it is gone)."""
    from .spatial import load_image

    if not path:
        return None
    try:
        return load_image(str(path)).grid
    except (ValueError, OSError) as err:
        notes.append(f"the moving image it names cannot be read ({' '.join(str(err).split())})")
        return None


def _our_record(path: Path) -> RecordedResult:
    from .spatial import Grid

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return RecordedResult(source=path, notes=(f"{path} cannot be read ({err})",))
    if not isinstance(data, dict):
        return RecordedResult(source=path, notes=(f"{path} is not a registration record",))
    notes: list[str] = []
    moving = (data.get("inputs") or {}).get("moving") or {}
    grid = moving.get("grid")
    if grid:
        moving_grid = Grid(shape=tuple(grid["shape"]), affine=grid["affine"])
    else:  # a network's record names the moving image's file only
        moving_grid = _grid_of_file(moving.get("path"), notes)
    method = method_of_record(data)
    seconds = _seconds((data.get("timings_seconds") or {}).get("total"))
    if method is None:
        notes.append("it names no model")
    if seconds is None:
        notes.append("it has no total time")
    return RecordedResult(method=method, seconds=seconds, moving_grid=moving_grid, source=path, notes=tuple(notes))


def _baseline_record(log: Path) -> RecordedResult:
    """A baseline's log: a header of ``key: value`` lines (method, tool, fixed, moving, ...), a
    blank line, what was run, and ``[<method> finished in <seconds> s]``."""
    try:
        text = log.read_text(errors="replace")
    except OSError as err:
        return RecordedResult(source=log, notes=(f"{log} cannot be read ({err})",))
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(": ")
        if sep:
            header[key.strip()] = value.strip()
    notes: list[str] = []
    tool_method = header.get("method")
    method = _BASELINE_NAMES.get(tool_method, tool_method) if tool_method else None
    finished = re.search(r"\[(\S+) finished in ([0-9.eE+-]+) s\]", text)
    seconds = _seconds(finished.group(2)) if finished else None
    if method is None:
        notes.append("it names no method")
    if seconds is None:
        notes.append("it has no time (the run did not finish?)")
    moving_grid = _grid_of_file(header.get("moving"), notes)
    return RecordedResult(method=method, seconds=seconds, moving_grid=moving_grid, source=log, notes=tuple(notes))


def read_record(field_file: Path) -> RecordedResult:
    """What the record beside a displacement field says: our ``registration.json``, or a
    baseline's log (``<prefix><method>.log`` beside ``<prefix><method>_displacement.nii.gz``).
    A field without either gives an empty :class:`RecordedResult` with a note."""
    from .result import OUTPUT_FILES

    log = _baseline_log(field_file)
    if log is not None and log.is_file():
        return _baseline_record(log)
    ours = field_file.parent / OUTPUT_FILES["record"]
    if ours.is_file():
        return _our_record(ours)
    return RecordedResult(notes=(f"no {OUTPUT_FILES['record']} (nor a baseline's .log) beside {field_file}",))


def recorded(record: Path) -> tuple[str | None, Grid | None]:
    """The method and the moving image's grid a result's registration.json records (None where
    absent); see :func:`read_record` for everything a record says."""
    found = _our_record(record) if record.is_file() else RecordedResult()
    return found.method, found.moving_grid
