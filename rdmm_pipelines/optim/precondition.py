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

__all__ = ["metric_preconditioner"]


def _periodic_mixture_transfer(shape: Sequence[int], spacing: Sequence[float], sigmas: Sequence[float],
                               weights: Sequence[float]) -> Tensor:
    """sum_i w_i prod_k exp(-(sigma_i omega_k)^2 / 2) on the rfftn frequencies of ``shape``, (*F), float64."""
    d = len(shape)
    total = None
    for sigma, w in zip(sigmas, weights):
        t = None
        for k, (n, h) in enumerate(zip(shape, spacing)):
            f = torch.fft.rfftfreq(n, d=h) if k == d - 1 else torch.fft.fftfreq(n, d=h)
            g = torch.exp(-0.5 * (2.0 * math.pi * sigma * f.double()) ** 2)
            view = [1] * d
            view[k] = g.numel()
            t = g.view(view) if t is None else t * g.view(view)
        total = w * t if total is None else total + w * t
    return total


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
