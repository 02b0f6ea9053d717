"""The learnt registration network: networks predict the initial conditions, shooting does the rest.

For a batch of (source I0, target I1) pairs on the network's grid:

1. (optional) the affine network gives A (B, d, d+1); the source seen by the next stage is I0 o A;
2. for each refinement step k: the momentum U-Net maps (I0 o A o phi_{k-1}, I1) to m0 on the map
   grid (softly bounded, m0 = c tanh(u / c), see ``NetworkConfig.momentum_clamp``) (for RDMM a second U-Net maps the same input to pre-weight logits z, h0 = sqrt(softmax z),
   the optimiser's parametrisation); the shooting model integrates the geodesic from the identity
   (the very models and integrator of optimisation: ``models.build_model``, ``integrators.integrate``)
   to psi_k = phi^-1(1); the step's map is phi_k = phi_{k-1} o psi_k;
3. the map is upsampled to the image grid; the full pull-back map is A o phi_K.

Both U-Nets' last layers start at zero (m0 = 0, h0 = the kernel's initial weights), so an
untrained network is the identity registration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import RegistrationConfig
from ..core.interpolation import identity_map, resize_field, sample
from ..integrators import integrate
from ..models.build import build_model
from ..models.shooting import RDMM, ShootingModel
from ..optim.preweights import logits_from_preweights, preweights_from_logits
from .affine_net import AffineNet, affine_map, apply_affine
from .config import NetworkConfig
from .unet import UNet

__all__ = ["Prediction", "RegistrationNetwork", "ShotStep", "map_spacing"]


@dataclass
class ShotStep:
    """One refinement step on the map grid: m0 (B, d, *M), h0 (B, N, *M) or None, the model's
    initial velocity v0 (B, d, *M), and psi (B, d, *M) the step's own map at t = 1."""

    m0: Tensor
    h0: Tensor | None
    v0: Tensor
    psi: Tensor


@dataclass
class Prediction:
    """A network's registration of a batch.

    phi: (B, d, *S) pull-back map of the deformation on the image grid (domain coordinates),
    the full map being A o phi; affine: (B, d, d+1) or None; warped: (B, C, *S) = I0 o A o phi;
    affine_warped: I0 o A or None; steps: the refinement steps (map grid); map_phi: (B, d, *M).
    """

    phi: Tensor
    map_phi: Tensor
    affine: Tensor | None
    warped: Tensor
    affine_warped: Tensor | None
    steps: list[ShotStep]

    @property
    def full_map(self) -> Tensor:
        """(B, d, *S) the pull-back map A o phi (phi when there is no affine stage)."""
        return self.phi if self.affine is None else apply_affine(self.affine, self.phi)


def map_spacing(image_shape: Sequence[int], map_shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, ...]:
    """Domain spacing of the map grid spanning the same extent as the image grid."""
    return tuple(h * (n - 1) / max(m - 1, 1) for h, n, m in zip(spacing, image_shape, map_shape))


class RegistrationNetwork(nn.Module):
    """Predicts and shoots m0 (and h0) for vSVF, LDDMM or RDMM; see the module docstring.

    ``forward(source, target, spacing)`` takes (B, C, *image_shape) images and the image grid's
    domain spacing and returns a :class:`Prediction`.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, c = cfg.ndim, cfg.channels
        level = 1 if cfg.map_low_res_factor == 0.5 else 0
        self.affine_net = AffineNet(d, c, cfg.features[1:], cfg.affine_steps) if cfg.affine_steps else None
        self.momentum_net = UNet(d, 2 * c, d, cfg.features, output_level=level)
        nn.init.zeros_(self.momentum_net.head.weight)
        nn.init.zeros_(self.momentum_net.head.bias)
        self.preweight_net = None
        if cfg.model == "rdmm":
            n = len(cfg.kernel.sigmas)
            self.preweight_net = UNet(d, 2 * c, n, cfg.features, output_level=level)
            nn.init.zeros_(self.preweight_net.head.weight)
            initial = torch.tensor(cfg.kernel.normalized_weights, dtype=torch.float64).sqrt().view(1, n)
            with torch.no_grad():
                self.preweight_net.head.bias.copy_(logits_from_preweights(initial).view(n).float())
        self._models: dict[tuple[float, ...], ShootingModel] = {}

    @property
    def registration_config(self) -> RegistrationConfig:
        """The equivalent optimisation configuration (kernel, regulariser, integrator, similarity)."""
        c = self.cfg
        return RegistrationConfig(model=c.model, kernel=c.kernel, regional=c.regional, integrator=c.integrator,
                                  similarity=c.similarity, regularity_weight=c.regularity_weight)

    def shooting_model(self, spacing: Sequence[float]) -> ShootingModel:
        """The shooting model on the map grid of an image grid with domain spacing ``spacing``."""
        h = map_spacing(self.cfg.image_shape, self.cfg.map_shape, spacing)
        key = tuple(round(x, 12) for x in h)
        if key not in self._models:
            self._models[key] = build_model(self.registration_config, h)
        return self._models[key]

    def check_input(self, source: Tensor, target: Tensor) -> None:
        """Raise a ValueError unless both are (B, channels, *image_shape)."""
        cfg = self.cfg
        want = (cfg.channels, *cfg.image_shape)
        for name, x in (("source", source), ("target", target)):
            if x.dim() != cfg.ndim + 2 or tuple(x.shape[1:]) != want:
                raise ValueError(
                    f"{name} of shape {tuple(x.shape)} does not fit this {cfg.ndim}D network, which takes "
                    f"(B, {cfg.channels}, {', '.join(map(str, cfg.image_shape))}); resample the images to "
                    f"{cfg.image_shape} (or train a network for their size)")
        if source.shape[0] != target.shape[0]:
            raise ValueError(f"source and target batch sizes differ: {source.shape[0]} and {target.shape[0]}")

    def forward(self, source: Tensor, target: Tensor, spacing: Sequence[float]) -> Prediction:
        self.check_input(source, target)
        cfg = self.cfg
        shape, mshape = cfg.image_shape, cfg.map_shape
        if len(spacing) != cfg.ndim:
            raise ValueError(f"spacing needs {cfg.ndim} values, got {tuple(spacing)}")
        mh = map_spacing(shape, mshape, spacing)
        model = self.shooting_model(spacing)
        affine = affine_warped = None
        base = source
        if self.affine_net is not None:
            affine = self.affine_net(source, target, spacing)
            affine_warped = sample(source, affine_map(affine, shape, spacing), spacing)
            base = affine_warped
        ident = identity_map(mshape, mh, dtype=source.dtype, device=source.device)
        map_phi = ident.expand(source.shape[0], *ident.shape[1:])
        warped = base
        steps: list[ShotStep] = []
        for _ in range(cfg.refine_steps):
            x = torch.cat([warped, target], dim=1)
            m0 = self.momentum_net(x)
            if cfg.momentum_clamp is not None:
                m0 = cfg.momentum_clamp * torch.tanh(m0 / cfg.momentum_clamp)
            h0 = preweights_from_logits(self.preweight_net(x)) if self.preweight_net is not None else None
            state0 = model.initial_state(m0, h0) if isinstance(model, RDMM) else model.initial_state(m0)
            v0 = model.initial_velocity(state0)
            ic = cfg.integrator
            psi = integrate(model, state0, **ic.options()).phi
            map_phi = psi if not steps else sample(map_phi, psi, mh, padding="border")
            steps.append(ShotStep(m0=m0, h0=h0, v0=v0, psi=psi))
            phi = resize_field(map_phi, shape)
            warped = sample(source, phi if affine is None else apply_affine(affine, phi), spacing)
        return Prediction(phi=phi, map_phi=map_phi, affine=affine, warped=warped, affine_warped=affine_warped,
                          steps=steps)
