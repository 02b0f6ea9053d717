"""Readable names of the metrics that QC figures and pages show (an evaluation record's flattened,
dotted keys -> words)."""

from __future__ import annotations

__all__ = ["METRIC_NAMES", "metric_name"]

#: readable names of the raw (flattened, dotted) metric keys of an evaluation record
METRIC_NAMES: dict[str, str] = {
    "status": "status",
    "message": "message",
    "method": "method",
    "seconds": "seconds",
    "mean_dice": "mean Dice",
    "mean_dice_before": "mean Dice before registration",
    "folds.folds": "folds |\u03a3 det J<0|",
    "folds.folding_voxels": "folding voxels",
    "folds.folding_percent": "folding voxels (%)",
    "folds.det_min": "min det J",
    "folds.det_max": "max det J",
    "folds.det_mean": "mean det J",
    "folds.det_std": "det J std",
    "folds.folded_cells": "folded cells",
    "folds.folded_cells_percent": "folded cells (%)",
    "tre.n_points": "landmarks",
    "tre.mean": "TRE mean (mm)",
    "tre.std": "TRE std (mm)",
    "tre.median": "TRE median (mm)",
    "tre.max": "TRE max (mm)",
    "tre.before_mean": "TRE before registration, mean (mm)",
    "tre.before_std": "TRE before registration, std (mm)",
    "tre.before_median": "TRE before registration, median (mm)",
    "tre.before_max": "TRE before registration, max (mm)",
}


def metric_name(key: str) -> str:
    """The readable name of a metric key: :data:`METRIC_NAMES` where listed, else the key with
    ``_`` as spaces and ``.`` as ": " (keys that are already names, e.g. "Dice before", stay)."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    return key.replace("_", " ").replace(".", ": ")
