"""RDMM's penalties on the initial pre-weights and their decay schedule (DESIGN.md 1.3).

    OMT   = |log(sigma_{N-1}/sigma_0)|^-s  sum_i  int w_i^2 |log(sigma_{N-1}/sigma_i)|^s dx
    Range = int sum_i (w_i - w_init_i)^2 dx,            w = G_sigma h0
    lambda_T = max(K / (K + exp(T / K)), floor),
    lambda_Range = C_Range lambda_T,  lambda_OMT = C_OMT (1 - lambda_T)

The authors' code floors lambda_T at 0.1 (``RegionalConfig.decay_floor``); the default here is the
paper's schedule without a floor, because the floor holds optimised pre-weights at their start
(measured in docs/numerics.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["omt_penalty", "range_penalty", "decay", "penalty_weights"]


def omt_penalty(w: Tensor, sigmas: Sequence[float], power: float, spacing: Sequence[float]) -> Tensor:
    """Optimal-mass-transport style penalty favouring large sigmas.

    Args:
        w: (B, N, *S) weights.
        sigmas: N increasing standard deviations.

    Returns:
        (B,) the OMT penalty (0 when all mass sits on the largest Gaussian).
    """
    if len(sigmas) < 2:
        return w.new_zeros(w.shape[0])
    smax, smin = sigmas[-1], sigmas[0]
    c = torch.tensor([abs(math.log(smax / s)) ** power for s in sigmas], dtype=w.dtype, device=w.device)
    c = c / abs(math.log(smax / smin)) ** power
    return (w.pow(2) * c.view(1, -1, *([1] * (w.dim() - 2)))).flatten(1).sum(1) * math.prod(spacing)


def range_penalty(w: Tensor, w_init: Tensor, spacing: Sequence[float]) -> Tensor:
    """int sum_i (w_i - w_init_i)^2 dx; w (B, N, *S), w_init broadcastable; returns (B,)."""
    return (w - w_init).pow(2).flatten(1).sum(1) * math.prod(spacing)


def decay(T: float, K: float) -> float:
    """lambda_T = K / (K + exp(T / K))."""
    return K / (K + math.exp(min(T / K, 700.0)))


def penalty_weights(T: float, K: float, c_range: float, c_omt: float, floor: float = 0.0) -> tuple[float, float]:
    """(lambda_Range, lambda_OMT) at iteration (or epoch) T; lambda_T never below ``floor``."""
    lam = max(decay(T, K), floor)
    return c_range * lam, c_omt * (1.0 - lam)
