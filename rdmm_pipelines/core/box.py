"""Truncated centred box sums and means over every voxel, the local moments of LNCC.

O(1) per voxel whatever the window: prefix sums along one axis after the other, accumulated in
float64, then window sums from two slices of them; the sum is symmetric, so its backward is the
same box sum (:class:`_BoxSum`, differentiable to any order).
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["box_mean"]

_SLICE_LOOP_MIN_NUMEL = 1 << 20  # CPU prefix sums of tensors this large along a non-last axis add slices


def _radii(windows: Sequence[int], spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """Box radius per axis, ``min(window // 2, n - 1)``: a larger one covers the whole axis anyway."""
    return tuple(min(int(w) // 2, int(n) - 1) for w, n in zip(windows, spatial_shape))


@functools.lru_cache(maxsize=32)
def _inverse_counts(spatial_shape: tuple[int, ...], radii: tuple[int, ...], device: torch.device) -> Tensor:
    """1 / (voxels of each voxel's truncated box), float64 of shape (1, 1, *S); cached (the same
    windows serve every evaluation of a scale).

    Per axis ``count_k(i) = min(i + r_k, n_k - 1) - max(i - r_k, 0) + 1``; the box count is the
    product over the axes.
    """
    d = len(spatial_shape)
    inv = torch.ones((1, 1) + (1,) * d, dtype=torch.float64, device=device)
    for k, (n, r) in enumerate(zip(spatial_shape, radii)):
        i = torch.arange(n, device=device)
        count = (i + r).clamp_max(n - 1) - (i - r).clamp_min(0) + 1
        shape = [1] * (d + 2)
        shape[k + 2] = n
        inv = inv * count.to(torch.float64).reciprocal().reshape(shape)
    return inv


def _prefix_sums_(c: Tensor, dim: int) -> Tensor:
    """In place: ``c_i <- sum_{j <= i} c_j`` along ``dim`` (inclusive prefix sums); returns c.

    On the CPU, ``cumsum`` along a non-last axis of a tensor that does not fit the cache is
    several times slower than adding whole slices one after the other (measured on this project's
    2-core machine, float32 in, float64 sums, (1, 3, 80, 96, 112): 14.5 ms vs 2.6 ms along the
    first axis, 5.6 ms vs 3.4 ms along the second; for a (1, 3, 200, 200) image cumsum is
    faster, 0.13 ms vs 0.50 ms), so tensors of at least ``_SLICE_LOOP_MIN_NUMEL`` elements use
    the slice loop there. Both are the same sequential sum.
    """
    if c.device.type != "cpu" or dim == c.dim() - 1 or c.numel() < _SLICE_LOOP_MIN_NUMEL:
        return c.cumsum_(dim)
    prev = c.select(dim, 0)
    for i in range(1, c.shape[dim]):
        cur = c.select(dim, i)
        cur.add_(prev)
        prev = cur
    return c


def _window_sums(c: Tensor, dim: int, r: int, out: Tensor) -> Tensor:
    """Sums over ``[i - r, i + r]`` truncated to ``[0, n - 1]``, from inclusive prefix sums ``c`` along ``dim``.

    ``out_i = c[min(i + r, n - 1)] - c[i - r - 1]`` (the second term 0 for i <= r): every output
    voxel is written once from two slices of c, O(1) per voxel whatever r. Requires 0 <= r <= n - 1.
    c, out: the same shape (out must not overlap c); returns out.
    """
    n = c.shape[dim]
    a, b = min(r + 1, n), max(n - r, 0)  # i < a: nothing to subtract; i >= b: the upper end is n - 1
    total = c.narrow(dim, n - 1, 1)
    if a <= b:
        out.narrow(dim, 0, a).copy_(c.narrow(dim, r, a))
        torch.sub(c.narrow(dim, a + r, b - a), c.narrow(dim, 0, b - a), out=out.narrow(dim, a, b - a))
    else:
        out.narrow(dim, 0, b).copy_(c.narrow(dim, r, b))
        out.narrow(dim, b, a - b).copy_(total.expand_as(out.narrow(dim, b, a - b)))
    lo = max(a, b)
    torch.sub(total, c.narrow(dim, lo - r - 1, n - lo), out=out.narrow(dim, lo, n - lo))
    return out


def _box_sum_float64(x: Tensor, radii: tuple[int, ...]) -> Tensor:
    """Forward of :class:`_BoxSum` (no autograd): (B, G, *S) -> (B, G, *S) float64, a new tensor.

    One axis after the other: prefix sums in place, then window sums into a second buffer; the
    two buffers swap roles (two allocations per call, whatever d).
    """
    y = x.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
    spare: Tensor | None = None
    for k, r in enumerate(radii):
        if r > 0:
            spare = torch.empty_like(y) if spare is None else spare
            y, spare = _window_sums(_prefix_sums_(y, k + 2), k + 2, r, spare), y
    return y


class _BoxSum(torch.autograd.Function):
    """Truncated centred box sum ``(S x)_i = sum_{j in box_i} x_j`` with a hand-written adjoint.

    ``box_i = prod_k [i_k - r_k, i_k + r_k]`` intersected with the image. S is symmetric
    (j in box_i iff i in box_j), so the backward is S itself (differentiable, so double backward
    works) and nothing is saved. Forward accumulates in float64 and returns float64; the
    gradient is returned in the input's dtype.
    """

    @staticmethod
    def forward(ctx, x: Tensor, radii: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        ctx.radii, ctx.dtype = radii, x.dtype
        return _box_sum_float64(x, radii)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _BoxSum.apply(grad, ctx.radii).to(ctx.dtype), None


def box_mean(x: Tensor, window: Sequence[int]) -> Tensor:
    """Centred box mean over every voxel, truncated at the image border.

    For a window w_k on axis k (radius ``r_k = w_k // 2``, so an even w_k acts as ``w_k + 1``),
    voxel i averages the box ``prod_k [i_k - r_k, i_k + r_k]`` intersected with the image:

        mean_i(x) = sum_{j in box_i} x_j / prod_k count_k(i_k),
        count_k(i) = min(i + r_k, n_k - 1) - max(i - r_k, 0) + 1.

    Computed separably, one axis after the other, with cumulative sums accumulated in float64
    (O(1) per voxel whatever the window), then divided by the count; a radius beyond ``n_k - 1``
    acts as ``n_k - 1`` (the whole axis from every voxel). Differentiable: the sum's adjoint is
    the sum itself (:class:`_BoxSum`).

    x: (B, G, *S), d = len(S); window: d ints >= 1 -> (B, G, *S) float64.
    """
    radii = _radii(window, x.shape[2:])
    return _BoxSum.apply(x, radii) * _inverse_counts(tuple(x.shape[2:]), radii, x.device)
