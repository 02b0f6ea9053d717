"""Label overlap: Dice per label, its mean, and label-set consistency checks.

Conventions: label maps are integer arrays of equal shape; the value 0 is background. For a label
``l`` with ``A = {pred == l}`` and ``B = {truth == l}``::

    Dice(l) = 2 |A ∩ B| / (|A| + |B|)

* ``l`` present in one map only -> 0.0 (a real miss);
* ``l`` absent from both maps -> NaN (undefined, neither a perfect 1 nor a miss). NaNs are skipped
  by :func:`mean_dice`, so asking for a label that exists nowhere does not bias the mean.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..spatial import Image

__all__ = ["dice_per_label", "mean_dice", "check_label_sets", "label_values"]

# at most this many labels are listed in a message; the rest are counted
_MAX_LISTED = 20


def _as_label_tensor(x: Tensor | np.ndarray | Image, name: str) -> Tensor:
    """Integer tensor of a label map given as Tensor, ndarray or Image (its data)."""
    if isinstance(x, Image):
        x = x.data
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} label map must be a Tensor, ndarray or Image, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x.to(torch.int64)
    if x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name} label map has dtype {x.dtype}; label maps must be integer "
            "(load them with load_labels or warp them with warp_labels)"
        )
    return x


def label_values(labels: Tensor | np.ndarray | Image, include_background: bool = False) -> list[int]:
    """Sorted distinct label values of a map (0 left out unless ``include_background``)."""
    values = torch.unique(_as_label_tensor(labels, "the")).tolist()
    return [int(v) for v in values if include_background or v != 0]


def _counts(x: Tensor) -> dict[int, int]:
    values, counts = torch.unique(x, return_counts=True)
    return dict(zip((int(v) for v in values.tolist()), (int(c) for c in counts.tolist())))


def dice_per_label(
    pred: Tensor | np.ndarray | Image,
    truth: Tensor | np.ndarray | Image,
    labels: Sequence[int] | None = None,
) -> dict[int, float]:
    """Dice overlap per label, ``2 |A ∩ B| / (|A| + |B|)``.

    Args:
        pred: (*S) integer label map (e.g. the warped moving labels); an Image's data is used.
        truth: (*S) integer label map of the same shape (e.g. the fixed labels).
        labels: labels to score, in this order; default: every label present in either map
            except background 0 (ask for 0 explicitly to score it).

    Returns:
        label -> Dice in [0, 1]; 0.0 when the label is in one map only, NaN when it is in neither.

    Raises:
        ValueError: shapes differ. TypeError: a map is not integer.
    """
    p = _as_label_tensor(pred, "predicted")
    t = _as_label_tensor(truth, "reference")
    if p.shape != t.shape:
        raise ValueError(
            f"predicted label map shape {tuple(p.shape)} does not match reference label map "
            f"shape {tuple(t.shape)}; warp the labels onto the fixed grid first"
        )
    t = t.to(p.device)
    size_p, size_t = _counts(p), _counts(t)
    both = _counts(p[p == t])
    if labels is None:
        wanted = sorted((set(size_p) | set(size_t)) - {0})
    else:
        wanted = [int(v) for v in labels]
    out: dict[int, float] = {}
    for v in wanted:
        denom = size_p.get(v, 0) + size_t.get(v, 0)
        out[v] = 2.0 * both.get(v, 0) / denom if denom else math.nan
    return out


def mean_dice(dice: Mapping[int, float]) -> float:
    """Mean of the Dice values, ignoring NaN (labels absent from both maps).

    Returns:
        the mean, or NaN when there is no finite value (empty mapping or all NaN).
    """
    vals = [float(v) for v in dice.values() if not math.isnan(float(v))]
    return float(sum(vals) / len(vals)) if vals else math.nan


def _listed(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    more = f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def check_label_sets(
    fixed_labels: Tensor | np.ndarray | Image, moving_labels: Tensor | np.ndarray | Image
) -> list[str]:
    """Compare the foreground label sets of the fixed and moving label maps.

    Args:
        fixed_labels: (*S_fixed) integer label map of the fixed (target) image.
        moving_labels: (*S_moving) integer label map of the moving (source) image; the shapes
            need not agree (this is checked before warping).

    Returns:
        warning messages, empty when both maps hold the same labels: one message for labels only
        in the fixed map and one for labels only in the moving map. Their Dice will be 0.

    Raises:
        ValueError: either map has no foreground label (all background 0); Dice is then
            meaningless and the caller should record NaN.
    """
    fixed = set(label_values(fixed_labels))
    moving = set(label_values(moving_labels))
    if not fixed:
        raise ValueError("fixed label map is empty (every voxel is background 0)")
    if not moving:
        raise ValueError("moving label map is empty (every voxel is background 0)")
    warnings = []
    only_fixed = sorted(fixed - moving)
    only_moving = sorted(moving - fixed)
    if only_fixed:
        warnings.append(
            f"{len(only_fixed)} label(s) only in the fixed label map (Dice 0): {_listed(only_fixed)}"
        )
    if only_moving:
        warnings.append(
            f"{len(only_moving)} label(s) only in the moving label map (Dice 0): {_listed(only_moving)}"
        )
    return warnings
