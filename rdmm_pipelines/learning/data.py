"""Training and prediction pairs on a network's grid.

A :class:`NetworkPair` holds one (source, target) pair ready for a network: the moving image
resampled onto the fixed image's grid through the headers (world space), both intensity-normalised
(0.1/99.9 percentiles to 0/1) and resized to the network's ``image_shape``; optional label maps
for validation Dice go the same way (nearest neighbour).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from ..core.interpolation import resize_field, sample_voxel
from ..spatial import Grid, Image, load_image, load_labels, normalize_intensity
from ..spatial.image import resample_to_grid

__all__ = ["NetworkPair", "collate", "load_pair", "prepare_pair", "synthetic_network_pairs"]

ImageSource = Image | str | os.PathLike


@dataclass(frozen=True)
class NetworkPair:
    """One pair on a network's grid.

    source, target: (C, *S) float32 normalised images; source_labels, target_labels: (*S) int64 or
    None; spacing: the domain spacing of the grid (the fixed grid resized to S); grid: the fixed
    image's own grid (where predictions are returned); name: an identifier.
    """

    source: Tensor
    target: Tensor
    spacing: tuple[float, ...]
    grid: Grid
    name: str = ""
    source_labels: Tensor | None = None
    target_labels: Tensor | None = None


def _resize_labels(labels: Tensor, shape: Sequence[int]) -> Tensor:
    if tuple(labels.shape) == tuple(shape):
        return labels.long()
    d = labels.dim()
    src = torch.tensor(labels.shape, dtype=torch.float64)
    dst = torch.tensor(tuple(shape), dtype=torch.float64)
    scale = ((src - 1) / (dst - 1).clamp_min(1)).view(1, d, *([1] * d))
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    idx = torch.stack(axes)[None] * scale
    return sample_voxel(labels[None, None].double(), idx, mode="nearest", padding="border")[0, 0].round().long()


def prepare_pair(
    fixed: Image,
    moving: Image,
    image_shape: Sequence[int],
    *,
    fixed_labels: Image | None = None,
    moving_labels: Image | None = None,
    resample: bool = False,
    name: str = "",
) -> NetworkPair:
    """A :class:`NetworkPair` from images (see the module docstring).

    Args:
        image_shape: the network's input size.
        resample: allow fixed images of another size (resized linearly to ``image_shape``); without
            it such a pair is refused with a ValueError naming both sizes.
    """
    shape = tuple(int(n) for n in image_shape)
    where = f"{name}: " if name else ""
    if fixed.ndim != len(shape) or moving.ndim != len(shape):
        raise ValueError(f"{where}the network is {len(shape)}D but the images are {fixed.ndim}D and {moving.ndim}D")
    if fixed.channels != moving.channels:
        raise ValueError(f"{where}fixed image has {fixed.channels} channels, moving image {moving.channels}")
    if tuple(fixed.grid.shape) != shape and not resample:
        raise ValueError(
            f"{where}fixed image of size {fixed.grid.shape} does not fit the network's input size {shape}; "
            "resample the images (resample=True, --resample) or train a network for this size")
    for what, img in (("fixed", fixed), ("moving", moving)):
        if not torch.isfinite(img.data).all():
            raise ValueError(f"{where}{what} image contains NaN or infinite values")
    on_fixed = resample_to_grid(moving.to(dtype=torch.float32), fixed.grid, mode="linear", padding="zeros")
    source = resize_field(normalize_intensity(on_fixed.data.float())[None], shape)[0]
    target = resize_field(normalize_intensity(fixed.data.float())[None], shape)[0]
    labels = [None, None]
    for k, (what, lab) in enumerate((("moving", moving_labels), ("fixed", fixed_labels))):
        if lab is None:
            continue
        if lab.ndim != fixed.ndim:
            raise ValueError(f"{where}{what} labels are {lab.ndim}D but the images are {fixed.ndim}D")
        lab = lab if lab.is_labels else lab.with_data(lab.data.round().long())
        on = resample_to_grid(lab, fixed.grid, mode="nearest", padding="zeros")
        labels[k] = _resize_labels(on.data[0], shape)
    return NetworkPair(source=source.contiguous(), target=target.contiguous(),
                       spacing=tuple(fixed.grid.resized(shape).domain_spacing), grid=fixed.grid, name=name,
                       source_labels=labels[0], target_labels=labels[1])


def load_pair(
    fixed: ImageSource,
    moving: ImageSource,
    image_shape: Sequence[int],
    *,
    fixed_labels: ImageSource | None = None,
    moving_labels: ImageSource | None = None,
    resample: bool = False,
    name: str = "",
) -> NetworkPair:
    """:func:`prepare_pair` from NIfTI paths (or Images)."""
    def img(x):
        return x if isinstance(x, Image) else load_image(x)

    def lab(x):
        return None if x is None else (x if isinstance(x, Image) else load_labels(x))

    return prepare_pair(img(fixed), img(moving), image_shape, fixed_labels=lab(fixed_labels),
                        moving_labels=lab(moving_labels), resample=resample, name=name)


def synthetic_network_pairs(n: int, seed: int, size: int) -> list[NetworkPair]:
    """``n`` pairs of the paper's 2D synthetic data (:func:`rdmm_pipelines.synthetic.make_pairs_2d`)
    at ``size`` x ``size``, with their object labels."""
    from ..synthetic import make_pairs_2d

    out = []
    for p in make_pairs_2d(n, seed=seed, size=size):
        grid = Grid.from_shape((size, size))
        out.append(prepare_pair(
            Image(p.target.float(), grid), Image(p.source.float(), grid), (size, size),
            fixed_labels=Image(p.target_labels[None].long(), grid),
            moving_labels=Image(p.source_labels[None].long(), grid), name=p.name))
    return out


def collate(pairs: Sequence[NetworkPair], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, tuple[float, ...]]:
    """Stack pairs into (B, C, *S) source and target batches on ``device``; all must share a spacing."""
    spacing = pairs[0].spacing
    for p in pairs[1:]:
        if any(abs(a - b) > 1e-6 * max(abs(a), 1e-12) for a, b in zip(p.spacing, spacing)):
            raise ValueError(
                f"pairs {pairs[0].name!r} and {p.name!r} have different grid spacings ({spacing} and {p.spacing}); "
                "a batch needs one spacing: use batch size 1 or resample the images to one template grid")
    source = torch.stack([p.source for p in pairs]).to(device)
    target = torch.stack([p.target for p in pairs]).to(device)
    return source, target, spacing
