"""Gaussian filters applied by FFT, without wrap-around.

A Gaussian of standard deviation sigma (domain units) is sampled at the grid offsets, truncated at
``min(4 sigma, extent)`` and normalised so its samples sum to 1. Convolution is *linear*: the field
is zero-padded to at least ``n + r`` samples per axis (r the kernel radius in voxels) before the
FFT, so momentum near one border never reaches the opposite border (the authors' code convolves
circularly; see docs/numerics.md). Transfer functions are built separably and cached per
(shape, spacing, sigmas, dtype, device).

Two boundary treatments are offered:

* ``gaussian_filter`` / ``gaussian_mixture`` / ``gaussian_filter_each``: zero extension. Used for
  the metric K (v = K m): the operator is symmetric on the grid (K = P G P^T).
* ``smooth_preserving`` and its adjoint: normalised convolution ``(G * h) / (G * 1)``, which maps
  constants to themselves. Used for the pre-weight smoother w = G_sigma h, so that spatially
  constant pre-weights stay exactly constant (RDMM then reduces to LDDMM exactly).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "gaussian_filter",
    "gaussian_mixture",
    "gaussian_filter_each",
    "smooth_preserving",
    "smooth_preserving_adjoint",
    "padded_shape",
]


def _next_fast_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3, 5 or 7."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _radius(n: int, h: float, sigma: float) -> int:
    return int(min(n - 1, math.ceil(4.0 * sigma / h))) if n > 1 else 0


def padded_shape(shape: Sequence[int], spacing: Sequence[float], sigmas: Sequence[float]) -> tuple[int, ...]:
    """FFT size per axis that makes the convolution linear for the widest of ``sigmas``."""
    smax = max(sigmas)
    return tuple(_next_fast_size(n + _radius(n, h, smax)) for n, h in zip(shape, spacing))


def _kernel_1d(n: int, size: int, h: float, sigma: float, dtype: torch.dtype) -> Tensor:
    """Sampled, sum-normalised 1D Gaussian laid out circularly on ``size`` samples."""
    r = _radius(n, h, sigma)
    k = torch.zeros(size, dtype=torch.float64)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (offsets * h / sigma) ** 2) if sigma > 0 else (offsets == 0).double()
    g = g / g.sum()
    k[offsets.long() % size] = g
    return k.to(dtype)


@functools.lru_cache(maxsize=128)
def _transfer(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    sigmas: tuple[float, ...],
    dtype: torch.dtype,
    device: str,
) -> tuple[Tensor, tuple[int, ...]]:
    """Transfer functions (N, *F) of the Gaussians on the padded grid, and the padded shape."""
    size = padded_shape(shape, spacing, sigmas)
    d = len(shape)
    out = []
    for sigma in sigmas:
        t = None
        for k in range(d):
            k1 = _kernel_1d(shape[k], size[k], spacing[k], sigma, torch.float64)
            f = torch.fft.rfft(k1).real if k == d - 1 else torch.fft.fft(k1).real
            view = [1] * d
            view[k] = f.numel()
            t = f.view(view) if t is None else t * f.view(view)
        out.append(t)
    T = torch.stack(out).to(dtype=dtype, device=torch.device(device))
    return T, size


def _real_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _convolve(x: Tensor, T: Tensor, size: tuple[int, ...], d: int) -> Tensor:
    """irfftn(rfftn(pad(x)) * T), cropped. ``T`` broadcasts against rfftn(pad(x))."""
    shape = x.shape[-d:]
    dims = tuple(range(-d, 0))
    X = torch.fft.rfftn(x, s=size, dim=dims)
    y = torch.fft.irfftn(X * T, s=size, dim=dims)
    for k in range(d):
        y = y.narrow(-d + k, 0, shape[k])
    return y


@functools.lru_cache(maxsize=128)
def _groups(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    sigmas: tuple[float, ...],
    dtype: torch.dtype,
    device: str,
) -> tuple[tuple[tuple[int, ...], Tensor, tuple[int, ...]], ...]:
    """Gaussians grouped by the FFT size each needs: ((indices, transfer (n, *F), size), ...).

    Narrow Gaussians need little padding; giving each group its own FFT size avoids paying the
    widest Gaussian's padding for all of them.
    """
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(sigmas):
        by_size.setdefault(padded_shape(shape, spacing, (s,)), []).append(i)
    out = []
    for size, idx in by_size.items():
        T, size2 = _transfer(shape, spacing, tuple(sigmas[i] for i in idx), dtype, device)
        assert size2 == size
        out.append((tuple(idx), T, size))
    return tuple(out)


def _key(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> tuple:
    d = len(spacing)
    return (tuple(x.shape[-d:]), tuple(map(float, spacing)), tuple(map(float, sigmas)), _real_dtype(x), str(x.device))


def gaussian_filter(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> Tensor:
    """Apply each Gaussian to ``x``.

    Args:
        x: (B, C, *S).
        spacing: domain spacing (h_0, ..., h_{d-1}).
        sigmas: N standard deviations in domain units.

    Returns:
        (B, N, C, *S): [:, i] = K_sigma_i * x (linear convolution, zero outside the grid).
    """
    d = len(spacing)
    groups = _groups(*_key(x, spacing, sigmas))
    if len(groups) == 1:
        _, T, size = groups[0]
        return _convolve(x.unsqueeze(1), T.unsqueeze(1), size, d)
    parts: list[Tensor] = [None] * len(sigmas)  # type: ignore[list-item]
    for idx, T, size in groups:
        y = _convolve(x.unsqueeze(1), T.unsqueeze(1), size, d)
        for j, i in enumerate(idx):
            parts[i] = y[:, j]
    return torch.stack(parts, dim=1)


def gaussian_mixture(
    x: Tensor, spacing: Sequence[float], sigmas: Sequence[float], weights: Sequence[float]
) -> Tensor:
    """Apply the mixture K = sum_i omega_i K_sigma_i with one FFT pair.

    Args:
        x: (B, C, *S).
        weights: omega_i, one per sigma.

    Returns:
        (B, C, *S).
    """
    if len(weights) != len(sigmas):
        raise ValueError(f"{len(weights)} weights for {len(sigmas)} Gaussians")
    d = len(spacing)
    T, size = _transfer(*_key(x, spacing, sigmas))
    w = torch.tensor(list(weights), dtype=T.dtype, device=T.device).view(-1, *([1] * d))
    return _convolve(x, (w * T).sum(0), size, d)


def gaussian_filter_each(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> Tensor:
    """Apply Gaussian i to slice i.

    Args:
        x: (B, N, C, *S).

    Returns:
        (B, N, C, *S): [:, i] = K_sigma_i * x[:, i].
    """
    if x.shape[1] != len(sigmas):
        raise ValueError(f"input has {x.shape[1]} slices for {len(sigmas)} Gaussians")
    d = len(spacing)
    groups = _groups(*_key(x, spacing, sigmas))
    if len(groups) == 1:
        _, T, size = groups[0]
        return _convolve(x, T.unsqueeze(1), size, d)
    parts: list[Tensor] = [None] * len(sigmas)  # type: ignore[list-item]
    for idx, T, size in groups:
        sel = x[:, list(idx)] if len(idx) > 1 else x[:, idx[0]:idx[0] + 1]
        y = _convolve(sel, T.unsqueeze(1), size, d)
        for j, i in enumerate(idx):
            parts[i] = y[:, j]
    return torch.stack(parts, dim=1)


@functools.lru_cache(maxsize=64)
def _mass(shape: tuple[int, ...], spacing: tuple[float, ...], sigma: float, dtype: torch.dtype,
          device: str) -> Tensor:
    """G * 1 on the grid (the normaliser of the constant-preserving smoother), (*S)."""
    ones = torch.ones((1, 1) + shape, dtype=dtype, device=torch.device(device))
    return gaussian_filter(ones, spacing, (sigma,))[0, 0, 0]


def smooth_preserving(h: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """Constant-preserving Gaussian smoothing S h = (G_sigma * h) / (G_sigma * 1).

    Args:
        h: (B, C, *S).

    Returns:
        (B, C, *S).
    """
    d = len(spacing)
    mass = _mass(tuple(h.shape[-d:]), tuple(map(float, spacing)), float(sigma), _real_dtype(h), str(h.device))
    return gaussian_filter(h, spacing, (sigma,))[:, 0] / mass


def smooth_preserving_adjoint(f: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """Adjoint of :func:`smooth_preserving`: S^T f = G_sigma * (f / (G_sigma * 1)).

    Args:
        f: (B, C, *S).

    Returns:
        (B, C, *S), with <S h, f> = <h, S^T f> on the grid.
    """
    d = len(spacing)
    mass = _mass(tuple(f.shape[-d:]), tuple(map(float, spacing)), float(sigma), _real_dtype(f), str(f.device))
    return gaussian_filter(f / mass, spacing, (sigma,))[:, 0]
