"""Scores of a network's prediction on its grid: Dice of the warped source labels and folds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.interpolation import sample
from ..evaluation import (
    dice_per_label,
    fold_statistics,
    folded_cells,
    jacobian_determinant_physical,
    mean_dice,
)
from ..spatial import Grid

__all__ = ["map_dice", "map_folds", "warp_network_labels"]


def warp_network_labels(labels: Tensor, full_map: Tensor, spacing: Sequence[float]) -> Tensor:
    """Source labels (*S) int pulled back by the map (1, d, *S) (nearest neighbour, 0 outside) -> (*S) int64."""
    d = full_map.shape[1]
    out = sample(labels.to(full_map)[None, None], full_map, spacing, mode="nearest", padding="zeros")
    return out.reshape(full_map.shape[2:2 + d]).round().long()


def map_folds(full_map: Tensor, spacing: Sequence[float]) -> dict[str, float]:
    """Fold statistics (the full Jacobian determinant) of a pull-back map (1, d, *S) in domain units."""
    d = full_map.shape[1]
    inv_h = torch.tensor([1.0 / h for h in spacing], dtype=torch.float64, device=full_map.device)
    voxels = full_map.detach().double() * inv_h.view(1, d, *([1] * d))
    grid = Grid.from_shape(tuple(full_map.shape[2:]))
    return fold_statistics(jacobian_determinant_physical(voxels, grid, grid), cells=folded_cells(voxels))


def map_dice(source_labels: Tensor, target_labels: Tensor, full_map: Tensor, spacing: Sequence[float]) -> float:
    """Mean Dice over the target's and source's labels (background excluded) after warping."""
    warped = warp_network_labels(source_labels, full_map.detach(), spacing)
    return mean_dice(dice_per_label(warped.cpu(), target_labels.cpu()))
