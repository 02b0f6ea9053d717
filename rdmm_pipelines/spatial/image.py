"""``Image``: a (C, *S) tensor on a world-space :class:`~rdmm_pipelines.spatial.grid.Grid`,
and world-space resampling between grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.interpolation import sample_voxel
from .grid import Grid

__all__ = ["Image", "resample_to_grid"]


@dataclass(frozen=True, eq=False)
class Image:
    """Image data with its grid.

    Attributes:
        data: (C, *S) tensor; float32 for intensities, int64 for label maps (other floating or
            integer dtypes are accepted, e.g. float64 for gradient checks).
        grid: the grid, with ``grid.shape == S``.

    Images compare by identity (tensors have no single truth value).
    """

    data: Tensor
    grid: Grid

    def __post_init__(self) -> None:
        if not isinstance(self.data, Tensor):
            raise TypeError(f"image data must be a torch.Tensor, got {type(self.data).__name__}")
        if not isinstance(self.grid, Grid):
            raise TypeError(f"image grid must be a Grid, got {type(self.grid).__name__}")
        if self.data.dim() != self.grid.ndim + 1 or tuple(self.data.shape[1:]) != self.grid.shape:
            raise ValueError(
                f"image data shape {tuple(self.data.shape)} must be (C, *{self.grid.shape}) "
                "to match its grid"
            )
        if self.data.is_complex() or self.data.dtype == torch.bool:
            raise ValueError(f"image data dtype {self.data.dtype} is not supported (float or int)")

    @property
    def ndim(self) -> int:
        """Number of spatial axes d."""
        return self.grid.ndim

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return int(self.data.shape[0])

    @property
    def is_labels(self) -> bool:
        """True for integer (label-map) data."""
        return not self.data.is_floating_point()

    def with_data(self, data: Tensor) -> "Image":
        """A new image on the same grid with ``data`` of shape (C', *S)."""
        return Image(data, self.grid)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "Image":
        """Move (and optionally cast) the data; the grid is unchanged."""
        return Image(self.data.to(device=device, dtype=dtype), self.grid)

    def batch(self) -> Tensor:
        """(1, C, *S) view of the data, the layout of the tensor layer."""
        return self.data[None]

    def __repr__(self) -> str:
        return (
            f"Image(channels={self.channels}, dtype={self.data.dtype}, device={self.data.device}, "
            f"grid={self.grid!r})"
        )


def resample_to_grid(
    image: Image, grid: Grid, mode: str = "linear", padding: str = "zeros"
) -> Image:
    """Resample ``image`` onto ``grid`` through world space (identity transform in world mm).

    out(j) = image(M @ [j, 1]) with M = ``grid.voxel_map_to(image.grid)``, sampled by
    :func:`rdmm_pipelines.core.interpolation.sample_voxel`.

    Args:
        image: (C, *S) image; integer (label) images need ``mode="nearest"`` and stay integer.
        grid: target grid (same d; for 2D, in the same plane as ``image.grid``).
        mode: "linear" or "nearest".
        padding: "zeros" or "border" (also "reflection"): values outside the image's voxel centres.

    Returns:
        Image (C, *grid.shape) on ``grid``, same dtype and device as ``image``.
    """
    if grid.ndim != image.ndim:
        raise ValueError(f"cannot resample a {image.ndim}D image onto a {grid.ndim}D grid")
    labels = image.is_labels
    if labels and mode != "nearest":
        raise ValueError(
            f"label image (dtype {image.data.dtype}) must be resampled with mode='nearest'"
        )
    if grid == image.grid:
        return Image(image.data.clone(), grid)
    work = torch.float64 if labels or image.data.dtype == torch.float64 else image.data.dtype
    d = grid.ndim
    m = torch.as_tensor(grid.voxel_map_to(image.grid), dtype=torch.float64)
    idx = grid.voxel_indices(torch.float64)
    coords = torch.einsum("kl,bl...->bk...", m[:d, :d], idx) + m[:d, d].view(1, d, *([1] * d))
    field = image.data[None].to(work)
    coords = coords.to(device=field.device, dtype=work)
    out = sample_voxel(field, coords, mode=mode, padding=padding)[0]
    out = out.round().to(image.data.dtype) if labels else out.to(image.data.dtype)
    return Image(out, grid)
