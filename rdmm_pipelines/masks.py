"""Masks that restrict a registration's similarity to a region (a brain, a lung, the field of view
without electrodes or the chest wall).

A mask is any image whose nonzero voxels are inside (a binary mask, a label map, a probability
map thresholded at 0): an :class:`Image` or a NIfTI path on any grid of the same world space as
the image it belongs to, or a (1, *S) / (*S) tensor on that image's own grid (a tensor has no
world space: it must have the image's shape). :func:`mask_on_grid` reads one, checks it and
resamples it through world space (nearest neighbour) onto that image's grid, so the checks run
before any heavy work:

* the mask has the image's dimension (2D / 3D) and one channel;
* it is not empty;
* it overlaps the image: at least one inside voxel lands in the image's field of view.

The registration weights its similarity by ``fixed_mask(x) * moving_mask(phi^-1(x))`` (the moving
mask travels with the moving image, linearly interpolated), in the affine stage and in the
deformable one (:mod:`rdmm_pipelines.similarity`).
"""

from __future__ import annotations

import os
from typing import Union

from torch import Tensor

from .spatial import Grid, Image, load_image, normalize_intensity, resample_to_grid

__all__ = ["MaskLike", "mask_on_grid", "describe_mask", "normalize_in_mask"]

MaskLike = Union[Image, str, os.PathLike, Tensor]


def _as_mask_image(x: MaskLike, what: str, grid: Grid) -> Image:
    if isinstance(x, Image):
        img = x
    elif isinstance(x, (str, os.PathLike)):
        img = load_image(x)
    elif isinstance(x, Tensor):
        t = x if x.dim() == grid.ndim + 1 and x.shape[0] == 1 else x[None]
        if tuple(t.shape[1:]) != tuple(grid.shape):
            raise ValueError(f"{what}: a tensor mask must have its image's shape {tuple(grid.shape)} (a tensor "
                             f"has no world space; give an Image or a NIfTI file for another grid); got "
                             f"{tuple(x.shape)}")
        img = Image(t.float(), grid)
    else:
        raise TypeError(f"{what}: expected an Image, a NIfTI path or a tensor, got {type(x).__name__}")
    if img.channels != 1:
        raise ValueError(f"{what} has {img.channels} channels; a mask has one")
    return img


def mask_on_grid(x: MaskLike, grid: Grid, what: str, image: str) -> Image:
    """The mask ``x`` as a (1, *S) float 0/1 image on ``grid`` (the grid of ``image``).

    Args:
        x: the mask (nonzero = inside), on any grid of the same world space.
        grid: the grid of the image the mask belongs to.
        what: the mask's name in errors, e.g. "fixed mask" (the CLI passes its flag).
        image: the image's name in errors, e.g. "fixed image".

    Raises:
        ValueError: a mask of another dimension, with several channels, empty, or with no
            inside voxel in the image's field of view.
    """
    img = _as_mask_image(x, what, grid)
    if img.ndim != grid.ndim:
        raise ValueError(f"{what} is {img.ndim}D but the {image} is {grid.ndim}D")
    inside = img.data != 0
    if not bool(inside.any()):
        raise ValueError(f"{what} is empty: no nonzero voxel")
    binary = img.with_data(inside.float())
    try:
        on_grid = resample_to_grid(binary, grid, mode="nearest", padding="zeros")
    except ValueError as err:
        raise ValueError(f"{what} cannot be resampled onto the {image}'s grid: {err}") from None
    if not bool((on_grid.data > 0).any()):
        raise ValueError(f"{what} does not overlap the {image}: none of the {image}'s voxel centres falls on one "
                         f"of its {int(inside.sum())} inside voxels (outside the field of view, or too thin for "
                         "the image's grid; check the headers)")
    return on_grid


def normalize_in_mask(image: Image, mask: Image | None, what: str,
                      percentiles: tuple[float, float] = (0.1, 99.9)) -> tuple[Image, str | None]:
    """``image`` with the ``percentiles`` of its voxels inside ``mask`` mapped to 0 and 1 (clamped),
    so that bright tissue outside the mask (bone, scalp) does not squeeze what is compared into a
    few intensity levels; and a note when the image is constant inside the mask, where the whole
    image's percentiles are used instead. Raises ValueError when the whole image is constant."""
    if mask is not None:
        try:
            return normalize_intensity(image, *percentiles, mask=mask.data), None
        except ValueError:
            note = f"the {what} is constant inside its mask: its intensities are normalised over the whole image"
            return normalize_intensity(image, *percentiles), note
    return normalize_intensity(image, *percentiles), None


def describe_mask(mask: Image) -> dict:
    """Voxels inside and their fraction of the grid, for registration.json."""
    inside = int((mask.data > 0).sum())
    return {"voxels_inside": inside, "fraction_inside": inside / mask.grid.numel}
