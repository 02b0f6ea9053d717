"""The metric preconditioner of L-BFGS: symmetric positive definite, constants kept, logits
untouched, and fewer iterations on the problem it is made for (a momentum seen through a kernel)."""

import math

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, register
from rdmm_pipelines.config import ConfigError
from rdmm_pipelines.core.gaussian import gaussian_filter, gaussian_mixture, gaussian_taps
from rdmm_pipelines.core.interpolation import identity_map, sample_voxel
from rdmm_pipelines.optim.lbfgs import minimize
from rdmm_pipelines.optim.precondition import metric_preconditioner

D = torch.float64
SHAPE, SPACING = (24, 20), (1 / 23, 1 / 23)
SIGMAS, WEIGHTS = (0.02, 0.05, 0.1), (0.3, 0.3, 0.4)


def _p(floor=1e-3, shape=SHAPE):
    return metric_preconditioner(shape, SPACING, SIGMAS, WEIGHTS, floor, D, torch.device("cpu"))


def test_symmetric_positive_definite_and_keeps_constants():
    P, n = _p(), 2 * math.prod(SHAPE)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(n, generator=gen, dtype=D), torch.randn(n, generator=gen, dtype=D)
    assert float(x.dot(P(y))) == pytest.approx(float(P(x).dot(y)), rel=1e-10)
    assert float(x.dot(P(x))) > 0
    ones = torch.ones(n, dtype=D)
    assert torch.allclose(P(ones), ones, atol=1e-12)
    # the finest oscillation (-1)^(i + j) is an eigenvector: gain (1 + eps) / (K^ + eps) with K^ the
    # transfer of the very taps the kernel applies, sum_j g_j (-1)^j per axis (not the continuous
    # Gaussian's, which differs by up to 2x for Gaussians about a voxel wide)
    checker = torch.tensor([(-1.0) ** (i + j) for i in range(SHAPE[0]) for j in range(SHAPE[1])], dtype=D).repeat(2)

    def nyquist(n, h, s):
        g = gaussian_taps(n, h, s)
        r = (g.numel() - 1) // 2
        return float((g * torch.tensor([(-1.0) ** j for j in range(-r, r + 1)], dtype=D)).sum())

    k_hat = max(0.0, sum(w * nyquist(SHAPE[0], SPACING[0], s) * nyquist(SHAPE[1], SPACING[1], s)
                         for s, w in zip(SIGMAS, WEIGHTS)))
    assert torch.allclose(P(checker), checker * (1 + 1e-3) / (k_hat + 1e-3), rtol=1e-9)


def test_entries_after_the_momentum_pass_unchanged():
    P, n = _p(), 2 * math.prod(SHAPE)
    z = torch.arange(7, dtype=D)
    out = P(torch.cat([torch.zeros(n, dtype=D), z]))
    assert torch.equal(out[n:], z) and out.numel() == n + 7


def test_rejects_a_non_positive_floor():
    with pytest.raises(ValueError, match="floor"):
        _p(floor=0.0)


def test_fewer_iterations_on_a_momentum_seen_through_the_kernel():
    """E(m) = 1/2 <m, K m> + 1/2 |K m - b|^2 / s^2 (the shape of LDDMM's objective to first order):
    twenty preconditioned L-BFGS iterations get closer to the minimum than forty plain ones."""
    shape, spacing = (48, 40), (1 / 39, 1 / 39)
    gen = torch.Generator().manual_seed(0)
    b = gaussian_mixture(torch.randn((1, 2) + shape, generator=gen, dtype=D), spacing, (0.04,), (1.0,))

    def energy(m):
        km = gaussian_mixture(m, spacing, SIGMAS, WEIGHTS)
        return 0.5 * (m * km).sum() + 0.5 * ((km - b) ** 2).sum() / 1e-4

    def run(iterations, precondition):
        m = torch.zeros((1, 2) + shape, dtype=D, requires_grad=True)

        def evaluate(k):
            e = energy(m)
            e.backward()
            return e

        minimize(evaluate, [m], max_iter=iterations, history=5, precondition=precondition)
        return float(energy(m.detach()))

    P = metric_preconditioner(shape, spacing, SIGMAS, WEIGHTS, 1e-3, D, torch.device("cpu"))
    best = run(400, P)
    plain, preconditioned = run(40, None), run(20, P)
    assert preconditioned - best < 0.5 * (plain - best)


def test_the_floor_is_validated():
    with pytest.raises(ConfigError, match="optimizer.preconditioner_floor"):
        OptimizerConfig(preconditioner_floor=-1e-3)
    with pytest.raises(ConfigError, match="optimizer.preconditioner_floor"):
        OptimizerConfig(preconditioner_floor=float("nan"))
    with pytest.raises(ConfigError, match="optimizer.preconditioner_floor"):
        OptimizerConfig(preconditioner_floor=True)
    with pytest.raises(ConfigError, match="optimizer.preconditioner_floor"):
        OptimizerConfig(preconditioner_floor="on")
    # plain L-BFGS on 2D images unless asked (2D folds: docs/benchmarks.md); preconditioned in 3D
    assert OptimizerConfig().resolved(2).preconditioner_floor == 0.0
    assert OptimizerConfig().resolved(3).preconditioner_floor == 1e-3


def _texture_pair(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture, and the same texture under a smooth warp of up to 3 pixels."""
    g = torch.Generator().manual_seed(1)
    tex = gaussian_filter(torch.randn(1, 1, n, n, generator=g, dtype=D), (1.0, 1.0), (2.0,))[:, 0]
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    u = gaussian_filter(torch.randn(1, 2, n, n, generator=g, dtype=D), (1.0, 1.0), (6.0,))[:, 0]
    moving = sample_voxel(tex, identity_map((n, n), (1.0, 1.0), dtype=D) + u * (3.0 / u.abs().max()))[0]
    return tex[0].float(), moving.float()


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_a_registration_gets_further_in_the_same_iterations(model):
    """The whole multi-scale optimisation, same pair, same budget (8 iterations per scale): with
    the preconditioner the final objective is lower (RDMM: the logits ride along unpreconditioned)."""
    fixed, moving = _texture_pair()
    grid = Grid.from_shape(tuple(fixed.shape[1:]))
    finals = {}
    for floor in (0.0, 1e-3):
        cfg = get_preset("default", model)
        cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                          optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(8, 8), window=0,
                                                    preconditioner_floor=floor))
        result = register(Image(fixed, grid), Image(moving, grid), config=cfg, device="cpu")
        assert all(s["iterations"] == 8 for s in result.scales)
        finals[floor] = result.history[-1].total
    assert finals[1e-3] < finals[0.0], finals
