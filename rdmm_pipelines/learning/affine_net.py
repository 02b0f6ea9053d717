"""The multi-step affine network: each step predicts an update of an affine pull-back map.

Affine maps act on domain coordinates x (the fixed image's grid, longest side 1) as homogeneous
(B, d, d+1) matrices A = [L | b]: x -> L x + b. A step's network sees the source warped by the
current map and the target, and predicts theta = (dL, db) of an update about the domain centre c,
D(x) = (I + dL)(x - c) + c + db; the map becomes A o D. The last layer starts at zero, so an
untrained network is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..affine import AffineTransform
from ..core.interpolation import identity_map, sample
from ..spatial import Grid
from .unet import conv_layer, init_weights

__all__ = ["AffineNet", "affine_map", "affine_to_world", "apply_affine", "compose_affine", "identity_affine"]


def identity_affine(batch: int, ndim: int, dtype=torch.float32, device=None) -> Tensor:
    """(B, d, d+1) identity matrices."""
    eye = torch.eye(ndim, ndim + 1, dtype=dtype, device=device)
    return eye.expand(batch, ndim, ndim + 1).clone()


def compose_affine(a: Tensor, b: Tensor) -> Tensor:
    """The matrices of x -> a(b(x)); a, b (B, d, d+1) -> (B, d, d+1)."""
    d = a.shape[1]
    linear = a[:, :, :d] @ b[:, :, :d]
    shift = (a[:, :, :d] @ b[:, :, d:]) + a[:, :, d:]
    return torch.cat([linear, shift], dim=2)


def apply_affine(a: Tensor, points: Tensor) -> Tensor:
    """L x + b at every point of a field: a (B, d, d+1), points (B or 1, d, *S) -> (B, d, *S)."""
    d = a.shape[1]
    flat = points.flatten(2).expand(a.shape[0], -1, -1)
    out = torch.einsum("bij,bjp->bip", a[:, :, :d], flat) + a[:, :, d:]
    return out.view(a.shape[0], d, *points.shape[2:])


def affine_map(a: Tensor, shape: Sequence[int], spacing: Sequence[float]) -> Tensor:
    """The map x -> L x + b sampled on the grid: (B, d, d+1) -> (B, d, *shape) domain coordinates."""
    return apply_affine(a, identity_map(shape, spacing, dtype=a.dtype, device=a.device))


def affine_to_world(a: Tensor, grid: Grid) -> AffineTransform:
    """The fixed-world -> moving-world :class:`AffineTransform` of a domain-coordinate affine map
    on ``grid`` (the moving image resampled onto ``grid`` through its header):
    M = W diag(1/h) A diag(h) W^-1, with W the grid's voxel -> world matrix and h its domain
    spacing. ``a``: (d, d+1)."""
    d = grid.ndim
    A = np.eye(d + 1)
    A[:d] = a.detach().double().cpu().numpy()
    h = np.asarray(grid.domain_spacing, dtype=np.float64)
    to_voxel = np.diag(np.r_[1.0 / h, 1.0])
    W = _voxel_to_world(grid)
    M = W @ to_voxel @ A @ np.linalg.inv(to_voxel) @ np.linalg.inv(W)
    full = np.eye(4)
    full[:d, :d], full[:d, 3] = M[:d, :d], M[:d, d]
    return AffineTransform(full, ndim=3 if d == 3 else 2)


def _voxel_to_world(grid: Grid) -> np.ndarray:
    m = np.asarray(grid.affine_matrix, dtype=np.float64)
    d = grid.ndim
    keep = list(range(d)) + [3]
    return m[np.ix_(keep, keep)]


class _Encoder(nn.Module):
    def __init__(self, ndim: int, c_in: int, features: Sequence[int], n_out: int) -> None:
        super().__init__()
        conv = conv_layer(ndim)
        layers: list[nn.Module] = []
        c = c_in
        for f in features:
            layers += [conv(c, f, 3, stride=2, padding=1), nn.LeakyReLU(0.2), conv(f, f, 3, padding=1), nn.LeakyReLU(0.2)]
            c = f
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if ndim == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(c, n_out)
        init_weights(self)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class AffineNet(nn.Module):
    """(source, target) -> affine pull-back map (B, d, d+1) in domain coordinates, in ``steps`` steps.

    Args:
        ndim: 2 or 3. channels: image channels. features: encoder channels per stride-2 level.
        steps: number of refinement steps (one network, shared by the steps).
    """

    def __init__(self, ndim: int, channels: int, features: Sequence[int], steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("an affine network needs at least one step")
        self.ndim, self.steps = ndim, steps
        self.encoder = _Encoder(ndim, 2 * channels, features, ndim * ndim + ndim)

    def update(self, warped: Tensor, target: Tensor, spacing: Sequence[float]) -> Tensor:
        """One step's update D (B, d, d+1) about the domain centre."""
        d = self.ndim
        theta = self.encoder(torch.cat([warped, target], dim=1))
        dL = theta[:, : d * d].view(-1, d, d)
        db = theta[:, d * d:].view(-1, d, 1)
        centre = torch.tensor([(n - 1) * h / 2 for n, h in zip(target.shape[2:], spacing)],
                              dtype=target.dtype, device=target.device).view(1, d, 1)
        eye = torch.eye(d, dtype=target.dtype, device=target.device)
        L = eye + dL
        b = centre - L @ centre + db
        return torch.cat([L, b], dim=2)

    def forward(self, source: Tensor, target: Tensor, spacing: Sequence[float]) -> Tensor:
        """The affine map after all steps, (B, d, d+1); source, target (B, C, *S)."""
        a = identity_affine(source.shape[0], self.ndim, source.dtype, source.device)
        shape = tuple(target.shape[2:])
        warped = source
        for _ in range(self.steps):
            a = compose_affine(a, self.update(warped, target, spacing))
            warped = sample(source, affine_map(a, shape, spacing), spacing)
        return a
