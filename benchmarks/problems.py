"""Benchmark problems: one shooting objective at one scale, built as the optimiser builds it.

``make_problem(model, shape)`` returns a :class:`Problem` whose ``loss()`` is the objective of
``optim.multiscale`` at a single scale (regularity 1/2 <m0, K m0> + similarity after shooting
+ the RDMM penalties for optimised pre-weights), with a smooth non-zero momentum so the flow is
not trivial. Used by the profiling, equivalence and scaling scripts of this folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rdmm_pipelines.config import IntegratorConfig, RegistrationConfig
from rdmm_pipelines.core.gaussian import gaussian_filter, gaussian_mixture
from rdmm_pipelines.core.interpolation import resize_field, sample
from rdmm_pipelines.integrators import integrate
from rdmm_pipelines.metric import inner_product
from rdmm_pipelines.models.build import build_model
from rdmm_pipelines.models.shooting import RDMM
from rdmm_pipelines.optim.penalties import omt_penalty, penalty_weights, range_penalty
from rdmm_pipelines.optim.preweights import (
    constant_preweights,
    logits_from_preweights,
    preweights_from_logits,
)
from rdmm_pipelines.presets import get_preset
from rdmm_pipelines.similarity import make_similarity

#: benchmark method -> (preset, model, regulariser source)
METHODS = {
    "vsvf": ("default", "vsvf", None),
    "lddmm": ("default", "lddmm", None),
    "rdmm-predefined": ("default", "rdmm", "predefined"),
    "rdmm-optimized": ("default", "rdmm", "optimized"),
}


def method_config(method: str, sigmas: Sequence[float] | None = None, steps: int | None = None,
                  integrator: dict | None = None) -> RegistrationConfig:
    """The configuration of a benchmark method (optionally with other sigmas or time steps)."""
    preset, model, source = METHODS[method]
    cfg = get_preset(preset, model)
    if sigmas is not None:
        n = len(sigmas)
        cfg = cfg.replace(kernel=cfg.kernel.replace(sigmas=tuple(sigmas), weights=tuple([1.0 / n] * n)))
    if source is not None:
        rows = ((0.0,) * (len(cfg.kernel.sigmas) - 1) + (1.0,), cfg.kernel.normalized_weights)
        cfg = cfg.replace(regional=cfg.regional.replace(source=source, region_weights=rows if source == "predefined" else ()))
    ic = cfg.integrator.to_dict()
    if steps is not None:
        ic["steps"] = steps
    ic.update(integrator or {})
    return cfg.replace(integrator=IntegratorConfig(**ic))


@dataclass
class Problem:
    """A single-scale shooting objective with its parameters (m0 and, optionally, logits z)."""

    cfg: RegistrationConfig
    model: torch.nn.Module
    spacing: tuple[float, ...]
    source: Tensor
    target: Tensor
    m0: Tensor
    z: Tensor | None
    h_fixed: Tensor | None
    h_init: Tensor | None

    @property
    def params(self) -> list[Tensor]:
        return [p for p in (self.m0, self.z) if p is not None]

    def preweights(self) -> Tensor | None:
        if self.z is not None:
            return preweights_from_logits(self.z)
        return self.h_fixed

    def energies(self) -> dict[str, Tensor]:
        """The objective's named terms at the current parameters."""
        h0 = self.preweights()
        model = self.model
        state0 = model.initial_state(self.m0, h0) if isinstance(model, RDMM) else model.initial_state(self.m0)
        ic = self.cfg.integrator
        reg = self.cfg.regularity_weight * 0.5 * inner_product(self.m0, model.initial_velocity(state0), self.spacing).sum()
        state1 = integrate(model, state0, **ic.options())
        img_shape = tuple(self.target.shape[2:])
        phi = state1.phi if img_shape == tuple(self.m0.shape[2:]) else resize_field(state1.phi, img_shape)
        img_h = tuple(1.0 / (max(img_shape) - 1) for _ in img_shape)
        warped = sample(self.source, phi, img_h)
        sim = make_similarity(self.cfg.similarity.name, self.target.shape[2:])(warped, self.target).sum()
        out = {"similarity": sim, "regularity": reg, "phi": state1.phi}
        if self.z is not None:
            lam_range, lam_omt = penalty_weights(3, self.cfg.regional.decay_k, self.cfg.regional.c_range,
                                                 self.cfg.regional.c_omt)
            w0 = model.metric.weights(h0, self.spacing)
            out["omt"] = lam_omt * omt_penalty(w0, model.metric.sigmas, self.cfg.regional.omt_power, self.spacing).sum()
            out["range"] = lam_range * range_penalty(w0, self.h_init, self.spacing).sum()
        out["total"] = sum(v for k, v in out.items() if k != "phi")
        return out

    def loss(self) -> Tensor:
        return self.energies()["total"]


def _smooth_noise(shape: tuple[int, ...], channels: int, spacing: Sequence[float], sigma: float,
                  gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    x = torch.randn((1, channels) + shape, generator=gen, dtype=torch.float64)
    y = gaussian_filter(x, spacing, (sigma,))[:, 0]
    return (y / y.abs().max()).to(dtype)


def make_problem(method: str, shape: Sequence[int], dtype: torch.dtype = torch.float32, seed: int = 0,
                 sigmas: Sequence[float] | None = None, steps: int | None = None,
                 integrator: dict | None = None, displacement: float = 2.0,
                 image_shape: Sequence[int] | None = None) -> Problem:
    """A benchmark problem on a grid of ``shape`` (longest side 1 in domain units).

    The images are smooth random fields; m0 is a smooth random momentum scaled so that the
    initial velocity K m0 reaches ``displacement`` voxels; with ``image_shape`` the images live
    on that (finer) grid and the map is upsampled for the similarity, as in the optimiser; pre-defined pre-weights are two smooth regions.
    """
    shape = tuple(int(n) for n in shape)
    d = len(shape)
    h = 1.0 / (max(shape) - 1)
    spacing = (h,) * d
    cfg = method_config(method, sigmas, steps, integrator)
    model = build_model(cfg, spacing)
    gen = torch.Generator().manual_seed(seed)
    ishape = tuple(image_shape) if image_shape is not None else shape
    ispacing = tuple(1.0 / (max(ishape) - 1) for _ in ishape)
    source = _smooth_noise(ishape, 1, ispacing, 0.03, gen, dtype).abs()
    target = _smooth_noise(ishape, 1, ispacing, 0.03, gen, dtype).abs()
    m = _smooth_noise(shape, d, spacing, 0.05, gen, torch.float64)
    v = gaussian_mixture(m, spacing, cfg.kernel.sigmas, cfg.kernel.normalized_weights)
    m0 = (m * (displacement * h / float(v.abs().max()))).to(dtype).requires_grad_()
    z = h_fixed = h_init = None
    if cfg.model == "rdmm":
        h_init = constant_preweights(cfg.kernel.normalized_weights, shape, dtype)
        if cfg.regional.source == "optimized":
            pert = 0.5 * _smooth_noise(shape, len(cfg.kernel.sigmas), spacing, 0.1, gen, dtype)
            z = (logits_from_preweights(h_init) + pert).detach().requires_grad_()
        else:
            region = (_smooth_noise(shape, 1, spacing, 0.1, gen, dtype) > 0).to(dtype)
            rows = torch.tensor(cfg.regional.region_weights, dtype=torch.float64).sqrt().to(dtype)
            h_fixed = (rows[0].view(1, -1, *([1] * d)) * (1 - region) + rows[1].view(1, -1, *([1] * d)) * region)
            h_fixed = h_fixed / h_fixed.norm(dim=1, keepdim=True)
            h_fixed = model.metric.weights(h_fixed, spacing)
            h_fixed = (h_fixed / h_fixed.norm(dim=1, keepdim=True)).contiguous()
    return Problem(cfg, model, spacing, source, target, m0, z, h_fixed, h_init)
