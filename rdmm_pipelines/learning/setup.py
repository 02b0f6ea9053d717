"""Network configurations from registration presets, and training pairs from a list of files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..presets import get_preset
from .config import NetworkConfig
from .data import NetworkPair, load_pair

__all__ = ["load_pairs", "network_from_preset"]


def network_from_preset(model: str, image_shape: Sequence[int], preset: str = "synthetic-optimized",
                        **changes: Any) -> NetworkConfig:
    """A :class:`NetworkConfig` with a registration preset's kernel, regulariser, similarity and
    regularity weight (RDMM's pre-weights always come from the network: the regulariser's source is
    set to "optimized")."""
    cfg = get_preset(preset, model)
    regional = cfg.regional.replace(source="optimized", region_weights=())
    settings = {"kernel": cfg.kernel, "regional": regional, "similarity": cfg.similarity,
                "regularity_weight": cfg.regularity_weight, **changes}
    return NetworkConfig(model=model, image_shape=tuple(int(n) for n in image_shape), **settings)


def load_pairs(rows: Sequence[dict[str, Any]], image_shape: Sequence[int], resample: bool = False) -> list[NetworkPair]:
    """Load every pair of ``rows`` ({"id", "fixed", "moving"[, "fixed_labels", "moving_labels"]}),
    collecting the problems of all of them into one ValueError (one line per pair)."""
    pairs, problems = [], []
    for row in rows:
        try:
            pairs.append(load_pair(row["fixed"], row["moving"], image_shape, fixed_labels=row.get("fixed_labels"),
                                   moving_labels=row.get("moving_labels"), resample=resample, name=str(row["id"])))
        except (ValueError, OSError) as err:
            msg = str(err)
            problems.append(msg if msg.startswith(f"{row['id']}:") else f"{row['id']}: {msg}")
    if problems:
        raise ValueError(f"{len(problems)} of {len(rows)} pairs cannot be used:\n  " + "\n  ".join(problems))
    return pairs


