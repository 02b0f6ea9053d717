"""Build a shooting model from a configuration: the one place model names are resolved."""

from __future__ import annotations

from typing import Callable, Sequence

from ..config import RegistrationConfig
from ..metric import MultiGaussianMetric, RegionalMetric
from .shooting import LDDMM, RDMM, VSVF, ShootingModel

__all__ = ["build_model", "MODEL_BUILDERS"]


def _vsvf(cfg: RegistrationConfig, spacing: Sequence[float], scale: float) -> ShootingModel:
    return VSVF(MultiGaussianMetric(_sigmas(cfg, scale), cfg.kernel.normalized_weights, cfg.kernel.border), spacing)


def _lddmm(cfg: RegistrationConfig, spacing: Sequence[float], scale: float) -> ShootingModel:
    return LDDMM(MultiGaussianMetric(_sigmas(cfg, scale), cfg.kernel.normalized_weights, cfg.kernel.border), spacing)


def _rdmm(cfg: RegistrationConfig, spacing: Sequence[float], scale: float) -> ShootingModel:
    metric = RegionalMetric(_sigmas(cfg, scale), cfg.regional.smoothing_sigma * scale, cfg.kernel.border)
    return RDMM(metric, spacing, weight_gradient=cfg.regional.weight_gradient)


def _sigmas(cfg: RegistrationConfig, scale: float) -> tuple[float, ...]:
    return tuple(s * scale for s in cfg.kernel.sigmas)


#: model name -> builder(config, domain spacing, sigma scale) (sigma scale converts kernel units to domain units)
MODEL_BUILDERS: dict[str, Callable[[RegistrationConfig, Sequence[float], float], ShootingModel]] = {
    "vsvf": _vsvf,
    "lddmm": _lddmm,
    "rdmm": _rdmm,
}


def build_model(cfg: RegistrationConfig, spacing: Sequence[float], sigma_scale: float = 1.0) -> ShootingModel:
    """The shooting model named by ``cfg.model`` on a grid of domain spacing ``spacing``.

    Args:
        sigma_scale: multiplies every sigma (1 for domain units; 1 / L for sigmas in mm, with L
            the domain scale in mm).
    """
    try:
        builder = MODEL_BUILDERS[cfg.model]
    except KeyError:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {sorted(MODEL_BUILDERS)}") from None
    return builder(cfg, spacing, sigma_scale)
