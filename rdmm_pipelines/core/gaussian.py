"""Gaussian filters, linear (zero extension, no wrap-around), by banded matrices or by FFT.

A Gaussian of standard deviation sigma (domain units) is sampled at the grid offsets, truncated at
``min(4 sigma, extent)`` and normalised so its samples sum to 1. Convolution is *linear*: momentum
near one border never reaches the opposite border (the authors' code convolves circularly; see
docs/numerics.md). Two exact implementations of the same operator, chosen by grid size:

* **Banded matrices** (axes of at most :data:`MATMUL_MAX_AXIS` samples): a Gaussian is separable,
  so along axis k it is the symmetric Toeplitz matrix ``M_k[i, j] = g(i - j)`` (zero beyond the
  radius), applied to every line of the field by one matrix product. Measured (1 thread,
  ``benchmarks/gaussian_operators.py``): 2.6-6x faster than the separable FFT per Gaussian on the
  3D map grids of the registrations (40x48x56, 80x96x112), 1-3x on 2D grids up to 128x256.
* **Padded FFT** (longer axes, and the 2D mixture K = sum_i omega_i K_i, which is not separable):
  the field is zero-padded to at least ``n + r`` samples per axis (r the kernel radius in voxels).

Matrices and transfer functions are cached per (shape, spacing, sigmas, dtype, device).

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
from collections.abc import Sequence

import torch
from torch import Tensor

from .linear import apply_linear

__all__ = [
    "MATMUL_MAX_AXIS",
    "gaussian_taps",
    "gaussian_filter",
    "gaussian_filter_each",
    "gaussian_mixture",
    "padded_shape",
    "smooth_preserving",
    "smooth_preserving_adjoint",
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


#: longest axis (samples) convolved by banded matrix products; longer axes go through the FFT
MATMUL_MAX_AXIS = 256


def gaussian_taps(n: int, h: float, sigma: float) -> Tensor:
    """The sampled, sum-normalised 1D Gaussian g(-r), ..., g(r) of an axis of n samples of spacing
    h, truncated at r = min(4 sigma / h, n - 1) samples: (2r + 1,) float64. Every operator of this
    module applies these taps."""
    r = _radius(n, h, sigma)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (offsets * h / sigma) ** 2) if sigma > 0 else (offsets == 0).double()
    return g / g.sum()


def _kernel_1d(n: int, size: int, h: float, sigma: float, dtype: torch.dtype) -> Tensor:
    """Sampled, sum-normalised 1D Gaussian laid out circularly on ``size`` samples."""
    g = gaussian_taps(n, h, sigma)
    r = (g.numel() - 1) // 2
    k = torch.zeros(size, dtype=torch.float64)
    k[torch.arange(-r, r + 1) % size] = g
    return k.to(dtype)


def _toeplitz(n: int, h: float, sigma: float) -> Tensor:
    """(n, n) float64 matrix of the linear convolution along one axis: M[i, j] = g(i - j)."""
    g = gaussian_taps(n, h, sigma)
    r = (g.numel() - 1) // 2
    i = torch.arange(n)
    offset = i.view(-1, 1) - i.view(1, -1)
    inside = offset.abs() <= r
    return torch.where(inside, g[(offset + r).clamp(0, 2 * r)], torch.zeros((), dtype=torch.float64))


@functools.lru_cache(maxsize=128)
def _axis_matrices(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    sigma: float,
    dtype: torch.dtype,
    device: str,
) -> tuple[Tensor | None, ...]:
    """Per axis, the symmetric (n_k, n_k) convolution matrix of one Gaussian (None: axis of length 1)."""
    return tuple(None if n == 1 else _toeplitz(n, h, sigma).to(dtype=dtype, device=torch.device(device))
                 for n, h in zip(shape, spacing))


def _uses_matrices(shape: Sequence[int]) -> bool:
    return max(shape) <= MATMUL_MAX_AXIS


def _convolve_matrices(x: Tensor, matrices: Sequence[Tensor | None], d: int) -> Tensor:
    """Separable linear convolution (..., *S) -> (..., *S): axis k multiplied by its matrix M_k.

    The last axis is one product ``x (R, n) @ M``; axis k < d - 1 is ``M @ x (R, n_k, n_after)``,
    batched over the leading R lines, so no axis is ever transposed in memory (M is symmetric).
    """
    shape = x.shape
    x = x.contiguous()
    for k in range(d - 1, -1, -1):
        M = matrices[k]
        if M is None:
            continue
        n = shape[k - d]
        if k == d - 1:
            x = (x.reshape(-1, n) @ M).reshape(shape)
        else:
            x = torch.matmul(M, x.reshape(-1, n, math.prod(shape[k - d + 1:]))).reshape(shape)
    return x


@functools.lru_cache(maxsize=64)
def _stacked_axis_matrices(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    sigmas: tuple[float, ...],
    dtype: torch.dtype,
    device: str,
) -> tuple[Tensor | None, ...]:
    """Per axis, the N convolution matrices of the Gaussians stacked, (N, n_k, n_k) (None: axis of length 1)."""
    per = [_axis_matrices(shape, spacing, s, dtype, device) for s in sigmas]
    return tuple(None if m[0] is None else torch.stack(m) for m in zip(*per))


#: largest field (bytes, all Gaussians together) filtered by the batched products; larger fields go
#: one Gaussian at a time, whose passes stay in the 2 MB L2 cache (5 x 3 channels at 40x48x56, 6.4
#: MB: 13.7 ms one at a time against 21 ms batched; 0.61 MB at 80x192: 1.06 against 0.93 ms)
BATCHED_MAX_BYTES = 2 ** 21


def _fits_batched(x: Tensor, n_gaussians: int, d: int) -> bool:
    lines = x.numel() // max(x.shape[x.dim() - d - 2], 1)
    return lines * n_gaussians * x.element_size() <= BATCHED_MAX_BYTES


def _convolve_matrices_each(x: Tensor, stacks: Sequence[Tensor | None], d: int) -> Tensor:
    """(..., N', C, *S) -> (..., N, C, *S): slice i convolved with Gaussian i, all N at once.

    ``stacks[k]`` is (N, n_k, n_k); N' is N or 1 (one input for every Gaussian). The Gaussians
    share each product: the last axis is one batched product ``(N, R, n) @ (N, n, n)``, the first
    axis ``(N, 1, n_0, n_0) @ (N, A, n_0, P)`` (A the leading lines, P the other axes), a middle
    axis of a 3D grid one product per Gaussian. The same products as one Gaussian at a time
    (bitwise the same on the registrations' grids; a product of a single row can round in the last
    bit otherwise, 7.5e-9 on a 1 x 25 slice) in a fifth of the calls for RDMM's five: 260 -> 157 us
    at 40x96, 1.06 -> 0.93 ms at 80x192 (5 x 2 channels), 0.74 -> 0.63 ms at 20x24x28 (5 x 3), 1
    thread; used up to :data:`BATCHED_MAX_BYTES`.
    """
    n_g = next(m.shape[0] for m in stacks if m is not None) if any(m is not None for m in stacks) else 1
    axis = x.dim() - d - 2
    xt = x.movedim(axis, 0)
    if xt.shape[0] != n_g:
        xt = xt.expand(n_g, *xt.shape[1:])
    shape = xt.shape
    y = xt.contiguous()
    for k in range(d - 1, -1, -1):
        M = stacks[k]
        if M is None:
            continue
        n = shape[k - d]
        after = math.prod(shape[k - d + 1:])
        if k == d - 1:
            y = torch.bmm(y.reshape(n_g, -1, n), M)
        elif k == 0:
            y = torch.matmul(M.unsqueeze(1), y.reshape(n_g, -1, n, after))
        else:
            lines = y.reshape(n_g, -1, n, after)
            y = torch.stack([torch.matmul(M[i], lines[i]) for i in range(n_g)])
        y = y.reshape(shape)
    return y.movedim(0, axis)


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
    """irfftn(rfftn(pad(x)) * T), cropped, as a *pruned* multi-dimensional FFT.

    ``T`` (*F) or (N, ..., *F) broadcasts against the spectrum of ``x`` on the padded grid
    ``size``. Equal to ``irfftn(rfftn(x, s=size) * T, s=size)[..., :n_0, ..., :n_{d-1}]``, but
    the transforms skip what is known to be zero or not needed: the last axis is transformed on
    the n_0 x ... x n_{d-2} rows that hold data only, each further axis on the rows not padded
    yet; the inverse crops each axis right after transforming it. About half the work of the
    full padded transform in 3D (docs/benchmarks.md).
    """
    if d == 3 and x.dim() > d and x.shape[-d - 1] > 1:  # 3D channel by channel: the spectra stay in cache (-12 %)
        return torch.cat([_convolve(c, T, size, d) for c in x.split(1, dim=-d - 1)], dim=-d - 1)
    shape = x.shape[-d:]
    X = torch.fft.rfft(x, n=size[-1], dim=-1)
    for k in range(d - 2, -1, -1):
        X = torch.fft.fft(X, n=size[k], dim=k - d)
    torch.view_as_real(X).mul_(T.unsqueeze(-1))  # a real transfer: no complex copy of T per call
    for k in range(d - 1):
        X = torch.fft.ifft(X, dim=k - d).narrow(k - d, 0, shape[k])
    return torch.fft.irfft(X, n=size[-1], dim=-1).narrow(-1, 0, shape[-1])


def _convolve_separable(x: Tensor, transfers: Sequence[Tensor], size: Sequence[int], d: int) -> Tensor:
    """Separable linear convolution: one padded 1D FFT pair per axis.

    For a Gaussian (a product of 1D Gaussians) ``K x = K_0 (K_1 (... K_{d-1} x))`` with each 1D
    factor applied by ``irfft(rfft(pad(x)) * t_k)`` along its axis and cropped. ``transfers[k]``
    is the 1D transfer function of axis k on ``size[k]`` samples, shaped to broadcast along that
    axis (leading dimensions select a Gaussian per slice). Equal to the d-dimensional padded FFT
    with transfer prod_k t_k, at about a quarter of its cost in 3D (no d-dimensional padded
    buffer; real transforms only).
    """
    for k in range(d - 1, -1, -1):
        dim = k - d
        n = x.shape[dim]
        X = torch.fft.rfft(x, n=size[k], dim=dim)
        torch.view_as_real(X).mul_(transfers[k].unsqueeze(-1))
        x = torch.fft.irfft(X, n=size[k], dim=dim).narrow(dim, 0, n)
    return x


@functools.lru_cache(maxsize=128)
def _axis_transfers(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    sigmas: tuple[float, ...],
    dtype: torch.dtype,
    device: str,
) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    """Per-axis 1D transfer functions of the Gaussians, and the padded size per axis.

    Returns ``(t_0, ..., t_{d-1})`` with t_k of shape (N, 1, 1, ..., F_k, ..., 1): Gaussian i in
    row i (broadcasting against (N, C, *S)), F_k = size_k // 2 + 1 frequencies on axis k; the
    padded sizes are those of :func:`padded_shape` for the widest of ``sigmas``.
    """
    size = padded_shape(shape, spacing, sigmas)
    d = len(shape)
    out = []
    for k in range(d):
        rows = [torch.fft.rfft(_kernel_1d(shape[k], size[k], spacing[k], s, torch.float64)).real for s in sigmas]
        view = [len(sigmas), 1] + [1] * d
        view[2 + k] = size[k] // 2 + 1
        out.append(torch.stack(rows).view(view).to(dtype=dtype, device=torch.device(device)))
    return tuple(out), size


def _key(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> tuple:
    d = len(spacing)
    return (tuple(x.shape[-d:]), tuple(map(float, spacing)), tuple(map(float, sigmas)), _real_dtype(x), str(x.device))


def _filter_each(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> Tensor:
    """(..., N, C, *S) -> same: slice i convolved with Gaussian i (separable; N may broadcast).

    One Gaussian at a time, by its banded axis matrices (module doc) or, on longer axes, on the
    FFT grid padded for its own radius: measured on 4 Gaussians x 3 channels at 40x48x56 (1
    thread), 22 ms against 65 ms for all of them batched on the grid of the widest (the batched
    passes no longer fit the 2 MB L2 cache, and the narrow Gaussians pay the widest's padding).
    """
    d = len(spacing)
    if len(sigmas) > 1 and _uses_matrices(x.shape[-d:]) and _fits_batched(x, len(sigmas), d):
        shape, spacing_, sigmas_, dtype, device = _key(x, spacing, sigmas)
        return _convolve_matrices_each(x, _stacked_axis_matrices(shape, spacing_, sigmas_, dtype, device), d)
    if len(sigmas) == 1:
        if _uses_matrices(x.shape[-d:]):
            shape, spacing_, _, dtype, device = _key(x, spacing, sigmas)
            return _convolve_matrices(x, _axis_matrices(shape, spacing_, float(sigmas[0]), dtype, device), d)
        transfers, size = _axis_transfers(*_key(x, spacing, sigmas))
        return _convolve_separable(x, transfers, size, d)
    axis = x.dim() - d - 2
    one = x.shape[axis] == 1
    return torch.cat([_filter_each(x.narrow(axis, 0 if one else i, 1), spacing, (s,)) for i, s in enumerate(sigmas)],
                     dim=axis)


def gaussian_filter(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> Tensor:
    """Apply each Gaussian to ``x``.

    Args:
        x: (B, C, *S).
        spacing: domain spacing (h_0, ..., h_{d-1}).
        sigmas: N standard deviations in domain units.

    Returns:
        (B, N, C, *S): [:, i] = K_sigma_i * x (linear convolution, zero outside the grid).
    """
    return _filter_each(x.unsqueeze(1), spacing, sigmas)


def gaussian_mixture(
    x: Tensor, spacing: Sequence[float], sigmas: Sequence[float], weights: Sequence[float]
) -> Tensor:
    """Apply the mixture K = sum_i omega_i K_sigma_i (one pruned FFT pair; on 3D grids within
    :data:`MATMUL_MAX_AXIS`, each Gaussian by its axis matrices).

    Args:
        x: (B, C, *S).
        weights: omega_i, one per sigma.

    Returns:
        (B, C, *S). The operator is symmetric; its gradient is the same convolution.
    """
    if len(weights) != len(sigmas):
        raise ValueError(f"{len(weights)} weights for {len(sigmas)} Gaussians")
    d = len(spacing)
    shape, spacing_, sigmas_, dtype, device = _key(x, spacing, sigmas)
    if d == 3 and _uses_matrices(shape):
        terms = tuple((float(w), _axis_matrices(shape, spacing_, s, dtype, device))
                      for w, s in zip(weights, sigmas_) if w != 0)
        return apply_linear(x, functools.partial(_mixture_by_matrices, terms=terms, d=d))
    T, size = _mixture_transfer(shape, spacing_, sigmas_, dtype, device, tuple(map(float, weights)))
    return apply_linear(x, functools.partial(_convolve, T=T, size=size, d=d))


def _mixture_by_matrices(x: Tensor, terms: tuple, d: int) -> Tensor:
    """sum_i omega_i K_i x with each K_i applied by its axis matrices (3D grids: faster than the
    FFT of the non-separable mixture, 6 ms against 7.5-21 ms for 3 channels at 40x48x56)."""
    out = None
    for w, matrices in terms:
        y = _convolve_matrices(x, matrices, d)
        out = y.mul_(w) if out is None else out.add_(y, alpha=w)
    return out


@functools.lru_cache(maxsize=128)
def _mixture_transfer(shape, spacing, sigmas, dtype, device, weights) -> tuple[Tensor, tuple[int, ...]]:
    """sum_i omega_i T_i on the padded grid of the widest Gaussian, (*F); and that grid's shape."""
    T, size = _transfer(shape, spacing, sigmas, dtype, device)
    w = torch.tensor(list(weights), dtype=T.dtype, device=T.device).view(-1, *([1] * len(shape)))
    return (w * T).sum(0), size


def gaussian_filter_each(x: Tensor, spacing: Sequence[float], sigmas: Sequence[float]) -> Tensor:
    """Apply Gaussian i to slice i.

    Args:
        x: (B, N, C, *S).

    Returns:
        (B, N, C, *S): [:, i] = K_sigma_i * x[:, i]. Symmetric; its gradient is the same filter.
    """
    if x.shape[1] != len(sigmas):
        raise ValueError(f"input has {x.shape[1]} slices for {len(sigmas)} Gaussians")
    return apply_linear(x, functools.partial(_filter_each, spacing=tuple(spacing), sigmas=tuple(sigmas)))


def _smooth(x: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """G_sigma * x for (B, C, *S), separable and self-adjoint under autograd."""
    op = functools.partial(_filter_each, spacing=tuple(spacing), sigmas=(float(sigma),))
    return apply_linear(x.unsqueeze(1), op).squeeze(1)


@functools.lru_cache(maxsize=64)
def _mass(shape: tuple[int, ...], spacing: tuple[float, ...], sigma: float, dtype: torch.dtype,
          device: str) -> Tensor:
    """G * 1 on the grid (the normaliser of the constant-preserving smoother), (*S)."""
    ones = torch.ones((1, 1) + shape, dtype=dtype, device=torch.device(device))
    return _filter_each(ones.unsqueeze(1), spacing, (sigma,))[0, 0, 0]


def smooth_preserving(h: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """Constant-preserving Gaussian smoothing S h = (G_sigma * h) / (G_sigma * 1).

    Args:
        h: (B, C, *S).

    Returns:
        (B, C, *S).
    """
    d = len(spacing)
    mass = _mass(tuple(h.shape[-d:]), tuple(map(float, spacing)), float(sigma), _real_dtype(h), str(h.device))
    return _smooth(h, spacing, sigma) / mass


def smooth_preserving_adjoint(f: Tensor, spacing: Sequence[float], sigma: float) -> Tensor:
    """Adjoint of :func:`smooth_preserving`: S^T f = G_sigma * (f / (G_sigma * 1)).

    Args:
        f: (B, C, *S).

    Returns:
        (B, C, *S), with <S h, f> = <h, S^T f> on the grid.
    """
    d = len(spacing)
    mass = _mass(tuple(f.shape[-d:]), tuple(map(float, spacing)), float(sigma), _real_dtype(f), str(f.device))
    return _smooth(f / mass, spacing, sigma)
