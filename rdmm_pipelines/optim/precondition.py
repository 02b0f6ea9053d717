"""A preconditioner for L-BFGS on the initial momentum: the inverse of the metric, floored.

The objective's gradient with respect to the momentum m0 reaches m0 mostly through the velocity
v = K m0, so it carries the kernel K: in m0's coordinates the Hessian is about K + K A K (A the
similarity's curvature), whose eigenvalues run from about |A| at low frequencies down to the
Gaussians' tails. L-BFGS with H0 = gamma I then spends its iterations on that spread. With H0 =
gamma P, P = (1 + eps) (K_per + eps)^-1 (K_per the mixture as a periodic convolution, eps the
floor), the step is close to the gradient in the metric's own inner product (the "V-gradient" of
LDDMM), and the spread left is that of 1 + A K. P is symmetric positive definite and fixed within a
scale, as BFGS's H0 must be; it maps constants to themselves, so the low frequencies keep the scale
they had without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core.gaussian import gaussian_taps

__all__ = ["metric_preconditioner"]


def _periodic_mixture_transfer(shape: Sequence[int], spacing: Sequence[float], sigmas: Sequence[float],
                               weights: Sequence[float]) -> Tensor:
    """sum_i w_i prod_k g^_ik on the rfftn frequencies of ``shape``, (*F), float64, clamped at 0.

    g^_ik is the DFT of the same sampled, truncated, sum-normalised taps the kernel applies
    (:func:`rdmm_pipelines.core.gaussian.gaussian_taps`), laid out circularly on the n_k samples of axis k
    (taps that wrap around are added): so P K = 1 on every Fourier mode of the periodic K, also for
    Gaussians narrower than a voxel, where the continuous transfer function is far from the sampled
    one. The sampled transfer can dip a little below 0 (about -3e-5); the clamp keeps P positive.
    """
    d = len(shape)
    total = None
    for sigma, w in zip(sigmas, weights):
        t = None
        for k, (n, h) in enumerate(zip(shape, spacing)):
            taps = gaussian_taps(n, h, sigma)
            r = (taps.numel() - 1) // 2
            line = torch.zeros(n, dtype=torch.float64).index_add_(0, torch.arange(-r, r + 1) % n, taps)
            g = torch.fft.rfft(line).real if k == d - 1 else torch.fft.fft(line).real
            view = [1] * d
            view[k] = g.numel()
            t = g.view(view) if t is None else t * g.view(view)
        total = w * t if total is None else total + w * t
    return total.clamp_min(0.0)


def metric_preconditioner(shape: Sequence[int], spacing: Sequence[float], sigmas: Sequence[float],
                          weights: Sequence[float], floor: float, dtype: torch.dtype,
                          device: torch.device) -> Callable[[Tensor], Tensor]:
    """P for flat parameter vectors whose first d * prod(shape) entries are a momentum (1, d, *S).

    P x = irfftn((1 + eps) / (K^(omega) + eps) rfftn(x)) on the momentum (each component), the
    identity on the entries after it (RDMM's pre-weight logits).

    Args:
        shape: the map grid S (d axes); spacing: its domain spacing.
        sigmas, weights: the Gaussian mixture K = sum_i w_i G_sigma_i (domain units, sum w_i = 1).
        floor: eps > 0; P's largest gain is (1 + eps) / eps.
    """
    if not floor > 0:
        raise ValueError(f"the preconditioner's floor must be positive; got {floor!r}")
    shape = tuple(int(n) for n in shape)
    d = len(shape)
    gain = ((1.0 + floor) / (_periodic_mixture_transfer(shape, spacing, sigmas, weights) + floor)).to(dtype=dtype,
                                                                                                         device=device)
    n_m = d * math.prod(shape)
    dims = tuple(range(-d, 0))

    def apply(x: Tensor) -> Tensor:
        m = x[:n_m].view(d, *shape)
        pm = torch.fft.irfftn(torch.fft.rfftn(m, dim=dims) * gain, s=shape, dim=dims).reshape(-1)
        return pm if x.numel() == n_m else torch.cat([pm, x[n_m:]])

    return apply
