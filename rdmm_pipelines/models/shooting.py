"""Shooting models as ODE right-hand sides (DESIGN.md 1.2).

Each model is an ``nn.Module`` without parameters whose ``forward(t, state)`` returns d/dt state
for a named-tuple state; everything that needs a gradient (m0, h0) travels in the state, so the
adjoint method sees it. All quantities are in domain coordinates with domain spacing ``spacing``.

* :class:`VSVF`: v = K m0 stationary; d/dt phi^-1 = -(D phi^-1) v.
* :class:`LDDMM`: dm/dt = -(div(m (x) v) + (Dv)^T m), v = K m; d/dt phi^-1 = -(D phi^-1) v.
* :class:`RDMM`: h(t) = h0 o phi^-1(t), w = G_sigma h(t), nu_i = K_i (w_i m), v = sum_i w_i nu_i,
  dm/dt = -(div(m (x) v) + (Dv)^T m) + sum_i G_sigma^T (m . nu_i) grad h_i(t),
  d/dt phi^-1 = -(D phi^-1) v.

Two views of the same right-hand side: ``forward(t, state)`` is the whole ODE, the map advected
by central differences (for torchdiffeq's adaptive solvers and for comparison), and
``velocity_and_rates(t, state)`` returns v and the rates of everything but the map, which the
fixed-step integrator advances by composition (``integrators.integrate``, DESIGN.md 2).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..core.interpolation import identity_map, sample
from ..metric import MultiGaussianMetric, RegionalMetric, inner_product
from .states import FlowState, GeodesicState, RegionalState
from .transport import advect, contracted_gradient, epdiff

__all__ = ["VSVF", "LDDMM", "RDMM", "ShootingModel"]

WEIGHT_GRADIENTS = ("advected", "initial")


class ShootingModel(nn.Module):
    """Common parts: the grid spacing, the identity map and the kinetic energy.

    Subclasses define ``velocity_and_rates(t, state) -> (v, rates)`` with ``rates`` the state's
    derivative except for the map (``rates.phi`` is None; a None field is constant), and set
    ``map_in_rates`` when the rates read ``state.phi`` (RDMM's advected pre-weights).
    """

    map_in_rates = False

    def __init__(self, spacing: Sequence[float]) -> None:
        super().__init__()
        if len(spacing) not in (2, 3) or min(spacing) <= 0:
            raise ValueError(f"spacing must have 2 or 3 positive entries, got {tuple(spacing)}")
        self.spacing = tuple(float(h) for h in spacing)

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    def identity(self, m0: Tensor) -> Tensor:
        """Identity map (B, d, *S) matching ``m0``'s grid, dtype and device."""
        self._check_momentum(m0)
        idm = identity_map(m0.shape[2:], self.spacing, dtype=m0.dtype, device=m0.device)
        return idm.expand(m0.shape[0], *idm.shape[1:]).clone()

    def forward(self, t: Tensor, state):
        """The whole ODE right-hand side: the rates, and d/dt phi^-1 = -(D phi^-1) v."""
        v, rates = self.velocity_and_rates(t, state)
        full = {k: (torch.zeros_like(x) if r is None else r)
                for k, x, r in zip(state._fields, state, rates)}
        full["phi"] = -advect(state.phi, v, self.spacing)
        return type(state)(**full)

    def velocity_and_rates(self, t: Tensor, state):  # pragma: no cover - every model defines it
        raise TypeError(f"{type(self).__name__} does not define velocity_and_rates(t, state)")

    def energy(self, state) -> Tensor:
        """Kinetic energy 1/2 <m, K m> of the state, (B,)."""
        m, v = self.momentum_and_velocity(state)
        return 0.5 * inner_product(m, v, self.spacing)

    def _check_momentum(self, m0: Tensor) -> None:
        if m0.dim() != self.ndim + 2 or m0.shape[1] != self.ndim:
            raise ValueError(
                f"momentum of shape {tuple(m0.shape)} is not (B, {self.ndim}, *S) for a "
                f"{self.ndim}D model"
            )


class VSVF(ShootingModel):
    """Stationary velocity v = K m0; the map flows by d/dt phi^-1 = -(D phi^-1) v."""

    def __init__(self, metric: MultiGaussianMetric, spacing: Sequence[float]) -> None:
        super().__init__(spacing)
        self.metric = metric

    def initial_state(self, m0: Tensor, phi0: Tensor | None = None) -> FlowState:
        """State at t = 0 from momentum m0 (B, d, *S) and an optional initial map."""
        phi = self.identity(m0) if phi0 is None else phi0
        return FlowState(phi=phi, v=self.metric.velocity(m0, self.spacing))

    def velocity_and_rates(self, t: Tensor, state: FlowState) -> tuple[Tensor, FlowState]:
        """v (stationary) and no rates: the velocity does not change."""
        return state.v, FlowState(phi=None, v=None)

    def momentum_and_velocity(self, state: FlowState) -> tuple[Tensor, Tensor]:
        raise TypeError("vSVF keeps no momentum in its state; use the optimiser's m0")

    def initial_velocity(self, state: FlowState) -> Tensor:
        """v0 (B, d, *S) of an initial state."""
        return state.v


class LDDMM(ShootingModel):
    """Geodesic shooting by EPDiff with a constant multi-Gaussian metric."""

    def __init__(self, metric: MultiGaussianMetric, spacing: Sequence[float]) -> None:
        super().__init__(spacing)
        self.metric = metric

    def initial_state(self, m0: Tensor, phi0: Tensor | None = None) -> GeodesicState:
        phi = self.identity(m0) if phi0 is None else phi0
        return GeodesicState(m=m0, phi=phi)

    def velocity_and_rates(self, t: Tensor, state: GeodesicState) -> tuple[Tensor, GeodesicState]:
        """v = K m and dm/dt = -ad*_v m."""
        v = self.metric.velocity(state.m, self.spacing)
        return v, GeodesicState(m=-epdiff(state.m, v, self.spacing), phi=None)

    def momentum_and_velocity(self, state: GeodesicState) -> tuple[Tensor, Tensor]:
        return state.m, self.metric.velocity(state.m, self.spacing)

    def initial_velocity(self, state: GeodesicState) -> Tensor:
        """v0 = K m0, (B, d, *S)."""
        return self.metric.velocity(state.m, self.spacing)


class RDMM(ShootingModel):
    """Region-specific metric whose pre-weights are advected with the flow.

    Args:
        metric: the regional kernel (sigmas and the pre-weight smoother G_sigma).
        spacing: domain spacing.
        weight_gradient: "advected" uses grad h(t) with h(t) = h0 o phi^-1(t) (the paper,
            Thm. 2); "initial" uses grad h0, as the authors' code does (for comparison only).
    """

    def __init__(
        self, metric: RegionalMetric, spacing: Sequence[float], weight_gradient: str = "advected"
    ) -> None:
        super().__init__(spacing)
        if weight_gradient not in WEIGHT_GRADIENTS:
            raise ValueError(f"weight_gradient must be one of {WEIGHT_GRADIENTS}, got {weight_gradient!r}")
        self.metric = metric
        self.weight_gradient = weight_gradient

    def initial_state(self, m0: Tensor, h0: Tensor, phi0: Tensor | None = None) -> RegionalState:
        self._check_momentum(m0)
        if h0.shape[0] != m0.shape[0] or h0.shape[2:] != m0.shape[2:]:
            raise ValueError(
                f"pre-weights of shape {tuple(h0.shape)} do not match momentum of shape {tuple(m0.shape)}"
            )
        phi = self.identity(m0) if phi0 is None else phi0
        return RegionalState(m=m0, phi=phi, h0=h0)

    def pre_weights(self, state: RegionalState) -> Tensor:
        """h(t) = h0 o phi^-1(t), (B, N, *S) (bilinear, border)."""
        return sample(state.h0, state.phi, self.spacing, mode="linear", padding="border")

    map_in_rates = True

    def velocity_and_rates(self, t: Tensor, state: RegionalState) -> tuple[Tensor, RegionalState]:
        """v = K(w(t)) m and dm/dt = -ad*_v m + sum_i G^T((T m) . nu_i) grad h_i."""
        m, h0 = state.m, state.h0
        h = self.pre_weights(state)
        w = self.metric.weights(h, self.spacing)
        v, nu = self.metric.velocity(m, w, self.spacing)
        mt = self.metric.tapered(m)
        force = self.metric.weights_adjoint((mt.unsqueeze(1) * nu).sum(2), self.spacing)  # (B, N, *S)
        h_grad = h if self.weight_gradient == "advected" else h0
        dm = -epdiff(m, v, self.spacing) + contracted_gradient(h_grad, force, self.spacing)
        return v, RegionalState(m=dm, phi=None, h0=None)

    def momentum_and_velocity(self, state: RegionalState) -> tuple[Tensor, Tensor]:
        w = self.metric.weights(self.pre_weights(state), self.spacing)
        v, _ = self.metric.velocity(state.m, w, self.spacing)
        return state.m, v

    def initial_velocity(self, state: RegionalState) -> Tensor:
        """v0 = K(h0) m0 at t = 0 (where h = h0, no interpolation needed), (B, d, *S)."""
        v, _ = self.metric.velocity(state.m, self.metric.weights(state.h0, self.spacing), self.spacing)
        return v

    def weights_at(self, state: RegionalState) -> Tensor:
        """w(t) = G_sigma (h0 o phi^-1(t)), (B, N, *S)."""
        return self.metric.weights(self.pre_weights(state), self.spacing)
