"""One evaluation record per (pair, method), and tables of them (JSON per record, CSV per study).

Missing values: NaN is written as ``nan`` in CSV and ``null`` in JSON (and read back as NaN);
a column a row does not have is left empty in CSV.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch import Tensor

from ..spatial import Image
from .folds import fold_statistics
from .overlap import check_label_sets, dice_per_label, mean_dice

__all__ = ["EvaluationResult", "evaluation_record", "write_csv", "STATUSES"]

logger = logging.getLogger(__name__)

#: statuses of a record: measured, measured only in part, or not measured
STATUSES = ("ok", "partial", "failed")

_TRE_KEYS = ("mean", "std", "median", "max")


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one registration (one pair, one method).

    Attributes:
        pair_id: identifier of the fixed/moving pair.
        method: registration method (e.g. "rdmm", "lddmm", "vsvf", "ants-syn").
        dice: label -> Dice (NaN where undefined), see :func:`~.overlap.dice_per_label`.
        mean_dice: mean over the finite Dice values (NaN if none).
        folds: :func:`~.folds.fold_statistics` of the Jacobian determinant, or None.
        tre: target registration error summary (``n_points``, ``mean``, ``std``, ``median``,
            ``max`` and ``before_mean`` ... in mm), or None without landmarks.
        seconds: registration run time, or None.
        status: one of :data:`STATUSES`.
        warnings: problems met while evaluating (label set mismatches, ...).
        message: error text when a metric could not be computed.
        dice_before: label -> Dice of the moving labels resampled onto the fixed grid with no
            transform (the identity in world space) against the fixed labels: the overlap before
            registration, on the labels of ``dice`` (empty without label maps).
        mean_dice_before: mean over the finite ``dice_before`` values (NaN if none).
    """

    pair_id: str
    method: str
    dice: Mapping[int, float] = field(default_factory=dict)
    mean_dice: float = math.nan
    folds: Mapping[str, float] | None = None
    tre: Mapping[str, float] | None = None
    seconds: float | None = None
    status: str = "ok"
    warnings: tuple[str, ...] = ()
    message: str = ""
    dice_before: Mapping[int, float] = field(default_factory=dict)
    mean_dice_before: float = math.nan

    def __post_init__(self) -> None:
        if not str(self.pair_id):
            raise ValueError("pair_id must not be empty")
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        object.__setattr__(self, "pair_id", str(self.pair_id))
        object.__setattr__(self, "method", str(self.method))
        object.__setattr__(self, "dice", {int(k): float(v) for k, v in self.dice.items()})
        object.__setattr__(self, "mean_dice", float(self.mean_dice))
        object.__setattr__(self, "dice_before", {int(k): float(v) for k, v in self.dice_before.items()})
        object.__setattr__(self, "mean_dice_before", float(self.mean_dice_before))
        if self.folds is not None:
            object.__setattr__(self, "folds", dict(self.folds))
        if self.tre is not None:
            object.__setattr__(self, "tre", dict(self.tre))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", float(self.seconds))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> None, label keys as strings)."""
        return _json_safe({
            "pair_id": self.pair_id,
            "method": self.method,
            "status": self.status,
            "seconds": self.seconds,
            "mean_dice": self.mean_dice,
            "dice": {str(k): v for k, v in self.dice.items()},
            "mean_dice_before": self.mean_dice_before,
            "dice_before": {str(k): v for k, v in self.dice_before.items()},
            "folds": self.folds,
            "tre": self.tre,
            "warnings": list(self.warnings),
            "message": self.message,
        })

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temporary file, then ``os.replace``)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        return _write_atomic(Path(path), text)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        """Inverse of :meth:`to_dict` (None -> NaN for numbers; a record written before
        ``dice_before`` existed reads back without it)."""
        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        def section(v: Any) -> dict | None:
            return None if v is None else {k: (math.nan if x is None else x) for k, x in v.items()}

        return cls(
            pair_id=data["pair_id"],
            method=data["method"],
            dice={int(k): num(v) for k, v in (data.get("dice") or {}).items()},
            mean_dice=num(data.get("mean_dice")),
            folds=section(data.get("folds")),
            tre=section(data.get("tre")),
            seconds=data.get("seconds"),
            status=data.get("status", "ok"),
            warnings=tuple(data.get("warnings", ())),
            message=data.get("message", ""),
            dice_before={int(k): num(v) for k, v in (data.get("dice_before") or {}).items()},
            mean_dice_before=num(data.get("mean_dice_before")),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "EvaluationResult":
        """Read a record written by :meth:`to_json`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            return cls.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}: not an evaluation record ({type(exc).__name__}: {exc})") from exc

    def summary(self) -> str:
        """What was measured, in one line: Dice (with label maps), folds and det J, TRE (with
        landmarks); what was not measured is left out (never "mean Dice nan over 0 labels")."""
        parts = []
        if self.dice:
            if any(math.isfinite(v) for v in self.dice.values()):
                before = (f" (before {self.mean_dice_before:.4f})"
                          if math.isfinite(getattr(self, "mean_dice_before", math.nan)) else "")
                parts.append(f"mean Dice {self.mean_dice:.4f}{before} over {len(self.dice)} labels")
            else:
                parts.append(f"Dice undefined for all {len(self.dice)} labels")
        if self.folds:
            folds = self.folds
            parts.extend(f"{words} {int(folds[key])}" for key, words in
                         (("folding_voxels", "folding voxels"), ("folded_cells", "folded cells"))
                         if key in folds and math.isfinite(folds[key]))
            if math.isfinite(folds.get("det_min", math.nan)):
                parts.append(f"min det J {folds['det_min']:.3g}")
        if self.tre:
            before = self.tre.get("before_mean")
            parts.append(f"TRE {self.tre.get('mean', math.nan):.3g} mm"
                         + (f" (before {before:.3g} mm)" if before is not None and math.isfinite(before) else "")
                         + f" over {int(self.tre.get('n_points', 0))} points")
        return ", ".join(parts) if parts else "nothing measured"

    # ------------------------------------------------------------------ CSV
    def csv_row(self) -> dict[str, str | float]:
        """Flat row: pair_id, method, status, seconds, mean_dice, mean_dice_before,
        dice_<label>..., fold keys, tre_<key> and tre_before_<key>..., message. Missing numbers
        are '' (None) or NaN."""
        row: dict[str, str | float] = {
            "pair_id": self.pair_id,
            "method": self.method,
            "status": self.status,
            "seconds": "" if self.seconds is None else self.seconds,
            "mean_dice": self.mean_dice,
            "mean_dice_before": self.mean_dice_before,
        }
        for label in sorted(self.dice):
            row[f"dice_{label}"] = self.dice[label]
        for key, value in (self.folds or {}).items():
            row[key] = value
        for key, value in (self.tre or {}).items():
            if not isinstance(value, (list, tuple)):
                row[f"tre_{key}"] = value
        row["message"] = self.message
        return row


def evaluation_record(
    pair_id: str,
    method: str,
    *,
    warped_labels: Tensor | np.ndarray | Image | None = None,
    fixed_labels: Tensor | np.ndarray | Image | None = None,
    moving_labels: Tensor | np.ndarray | Image | None = None,
    labels: Sequence[int] | None = None,
    before_labels: Tensor | np.ndarray | Image | None = None,
    det: Tensor | np.ndarray | Image | None = None,
    mask: Tensor | np.ndarray | None = None,
    cells: Tensor | None = None,
    tre: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    status: str = "ok",
    message: str = "",
) -> EvaluationResult:
    """Compute the metrics of one registration and collect them in an :class:`EvaluationResult`.

    Dice compares ``warped_labels`` (moving labels warped onto the fixed grid) with
    ``fixed_labels``. The label sets are checked with :func:`~.overlap.check_label_sets` on
    ``moving_labels`` (default: the warped labels); an empty map makes every Dice NaN and the
    status ``"partial"`` (the check's ValueError text goes to ``message``). Fold statistics come
    from ``det`` (optionally within ``mask``); ``tre`` is the dict of
    :func:`~.landmarks.target_registration_error`, of which the summary is kept.

    Args:
        pair_id, method: identify the record.
        warped_labels, fixed_labels: (*S_fixed) integer label maps (Images allowed), both or neither.
        moving_labels: the moving label map before warping, for the label-set check.
        labels: labels to score (default: all foreground labels present).
        before_labels: (*S_fixed) the moving labels resampled onto the fixed grid without the
            registration (identity in world space): Dice before registration, on the labels of
            the Dice after (``dice_before``, ``mean_dice_before``); None: not measured.
        det: Jacobian determinant field (any shape), e.g. ``jacobian_determinant_physical(...)``.
        mask: voxels where the fold statistics are taken.
        cells: folded cells (:func:`~.folds.folded_cells`) for the exact per-cell count, or None.
        tre: landmark errors, or None.
        seconds: registration time. status: the caller's status (see :data:`STATUSES`).
        message: the caller's note (e.g. the error of a failed registration).
    """
    if (warped_labels is None) != (fixed_labels is None):
        raise ValueError("give both warped_labels and fixed_labels, or neither")
    warnings: list[str] = []
    notes = [message] if message else []
    dice: dict[int, float] = {}
    dice_before: dict[int, float] = {}
    if warped_labels is not None:
        reference = moving_labels if moving_labels is not None else warped_labels
        try:
            warnings = check_label_sets(fixed_labels, reference)
        except ValueError as exc:
            notes.append(f"Dice not measured: {exc}")
            status = "partial" if status == "ok" else status
            dice = {int(v): math.nan for v in labels} if labels is not None else {}
        else:
            dice = dice_per_label(_data(warped_labels), _data(fixed_labels), labels)
            if before_labels is not None:
                dice_before = dice_per_label(_data(before_labels), _data(fixed_labels), list(dice))
    if tre is not None:
        warnings = [*warnings, *tre.get("warnings", ())]
    for w in warnings:
        logger.warning("%s / %s: %s", pair_id, method, w)
    folds = None
    if det is not None:
        folds = fold_statistics(_data(det), mask, cells=cells)
    return EvaluationResult(
        pair_id=pair_id,
        method=method,
        dice=dice,
        mean_dice=mean_dice(dice),
        folds=folds,
        tre=_tre_summary(tre) if tre is not None else None,
        seconds=seconds,
        status=status,
        warnings=tuple(warnings),
        message="; ".join(notes),
        dice_before=dice_before,
        mean_dice_before=mean_dice(dice_before),
    )


def _data(x: Tensor | np.ndarray | Image) -> Tensor | np.ndarray:
    return x.data if isinstance(x, Image) else x


def _tre_summary(tre: Mapping[str, Any]) -> dict[str, float]:
    """Flatten a target_registration_error dict to numbers (per-point lists dropped)."""
    out: dict[str, float] = {}
    if "n_points" in tre:
        out["n_points"] = int(tre["n_points"])
    for key in _TRE_KEYS:
        if key in tre:
            out[key] = float(tre[key])
    before = tre.get("before")
    if isinstance(before, Mapping):
        for key in _TRE_KEYS:
            if key in before:
                out[f"before_{key}"] = float(before[key])
    return out


def _json_safe(obj: Any) -> Any:
    """Recursively replace NaN/inf floats by None and numpy scalars by Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_atomic(path: Path, text: str) -> Path:
    from ..atomic import write_text_atomic

    return write_text_atomic(path, text)


def _dice_label(column: str) -> int | None:
    if column.startswith("dice_"):
        try:
            return int(column[5:])
        except ValueError:
            return None
    return None


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the rows' columns in first-seen order, dice_<label> columns grouped and sorted
    by label where the first of them appears."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    dice_cols = sorted((c for c in seen if _dice_label(c) is not None), key=_dice_label)
    out: list[str] = []
    for column in seen:
        if _dice_label(column) is None:
            out.append(column)
        elif dice_cols:
            out.extend(dice_cols)
            dice_cols = []
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(value)  # full precision; NaN -> 'nan', inf -> 'inf'
    return str(value)


def write_csv(rows: Iterable[Mapping[str, Any] | EvaluationResult], path: str | os.PathLike) -> Path:
    """Write rows (dicts or :class:`EvaluationResult`) as one CSV table, atomically.

    The columns are the union over all rows (see :func:`_columns`); a row lacking a column gets
    an empty cell; NaN is written ``nan``.

    Returns:
        the path written.
    """
    flat = [r.csv_row() if isinstance(r, EvaluationResult) else dict(r) for r in rows]
    if not flat:
        raise ValueError(f"no rows to write to {path}")
    columns = _columns(flat)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in flat:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return _write_atomic(Path(path), buf.getvalue())
