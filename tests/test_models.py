"""Properties of the shooting models and the integrators (DESIGN.md 1.2, STYLE.md 'Model properties')."""

import math
from typing import NamedTuple

import pytest
import torch
from torch.autograd import gradcheck

from rdmm_pipelines.core.differences import jacobian_determinant
from rdmm_pipelines.integrators import integrate
from rdmm_pipelines.metric import MultiGaussianMetric, RegionalMetric
from rdmm_pipelines.models import LDDMM, RDMM, VSVF, FlowState

D = torch.float64
SIGMAS = (0.05, 0.1, 0.15)
OMEGA = (0.2, 0.5, 0.3)


def bump_momentum(n, amp=(0.5, 0.2)):
    x = torch.linspace(0, 1, n, dtype=D)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    b = torch.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / (2 * 0.1**2))
    return torch.stack([amp[0] * b, amp[1] * b])[None], X, Y


def region_preweights(X, Y, smooth=0.01):
    inside = torch.sigmoid((0.2**2 - (X - 0.5) ** 2 - (Y - 0.45) ** 2) / smooth)
    return torch.stack(
        [(0.2 * inside).sqrt(), (0.5 * inside + 0.5 * (1 - inside)).sqrt(), (0.3 * inside + 0.5 * (1 - inside)).sqrt()]
    )[None]


def models(n):
    h = (1 / (n - 1),) * 2
    return (
        VSVF(MultiGaussianMetric(SIGMAS, OMEGA), h),
        LDDMM(MultiGaussianMetric(SIGMAS, OMEGA), h),
        RDMM(RegionalMetric(SIGMAS, 0.03), h),
    )


def shoot(model, m0, h0=None, **kw):
    s0 = model.initial_state(m0, h0) if isinstance(model, RDMM) else model.initial_state(m0)
    return s0, integrate(model, s0, **kw)


def test_zero_momentum_gives_identity():
    m0, X, Y = bump_momentum(16)
    m0 = torch.zeros_like(m0)
    for model in models(16):
        s0, s1 = shoot(model, m0, region_preweights(X, Y), steps=4)
        assert torch.equal(s1.phi, s0.phi)


def test_constant_velocity_flow_is_a_translation():
    h = (0.1, 0.125)
    model = VSVF(MultiGaussianMetric(SIGMAS, OMEGA), h)
    m = torch.zeros(1, 2, 9, 7, dtype=D)
    phi0 = model.identity(m)
    v = torch.tensor([0.3, -0.2], dtype=D).view(1, 2, 1, 1).expand_as(phi0).clone()
    s1 = integrate(model, FlowState(phi0, v), steps=5)
    assert torch.allclose(s1.phi, phi0 - v, atol=1e-12)


@pytest.mark.parametrize("which", ["lddmm", "rdmm"])
def test_energy_is_conserved_and_error_shrinks_with_step(which):
    n = 64
    m0, X, Y = bump_momentum(n)
    model = models(n)[1] if which == "lddmm" else models(n)[2]
    h0 = region_preweights(X, Y)
    errors = []
    for steps in (5, 10, 20):
        s0, s1 = shoot(model, m0, h0, steps=steps)
        errors.append(abs((model.energy(s1) / model.energy(s0) - 1).item()))
    assert errors[0] > errors[1] > errors[2]
    # LDDMM: pure time error, 4th order; RDMM: time error down to a spatial floor O(h^2) (~0.5% here)
    assert errors[2] < (1e-4 if which == "lddmm" else 6e-3)


def test_rdmm_energy_floor_shrinks_with_grid_refinement():
    floors = []
    for n in (32, 64):
        m0, X, Y = bump_momentum(n)
        model = models(n)[2]
        s0, s1 = shoot(model, m0, region_preweights(X, Y), steps=20)
        floors.append(abs((model.energy(s1) / model.energy(s0) - 1).item()))
    assert floors[1] < floors[0] / 2.5  # second order in space


def test_rdmm_with_constant_preweights_equals_lddmm():
    n = 32
    m0, _, _ = bump_momentum(n)
    _, lddmm, rdmm = models(n)
    hc = torch.tensor(OMEGA, dtype=D).sqrt().view(1, 3, 1, 1).expand(1, 3, n, n)
    for wg in ("advected", "initial"):
        rdmm.weight_gradient = wg
        _, a = shoot(rdmm, m0, hc, steps=8)
        _, b = shoot(lddmm, m0, steps=8)
        assert torch.allclose(a.phi, b.phi, atol=1e-12) and torch.allclose(a.m, b.m, atol=1e-12)


def test_advected_weight_gradient_conserves_energy_better_than_initial():
    n = 48
    m0, X, Y = bump_momentum(n)
    rdmm = models(n)[2]
    h0 = region_preweights(X, Y)
    err = {}
    for wg in ("advected", "initial"):
        rdmm.weight_gradient = wg
        s0, s1 = shoot(rdmm, m0, h0, steps=16)
        err[wg] = abs((rdmm.energy(s1) / rdmm.energy(s0) - 1).item())
    assert err["advected"] < err["initial"] / 3


def test_moderate_momentum_gives_positive_jacobian():
    n = 48
    m0, X, Y = bump_momentum(n, amp=(0.4, -0.25))
    for model in models(n):
        _, s1 = shoot(model, m0, region_preweights(X, Y), steps=10)
        assert jacobian_determinant(s1.phi, model.spacing).min() > 0
        assert (s1.phi - model.identity(m0)).abs().max() > 3 * model.spacing[0]  # it did move


@pytest.mark.parametrize("which", [0, 1, 2])
def test_right_hand_sides_gradcheck(which):
    torch.manual_seed(0)
    n0, n1 = 6, 5
    h = (1 / 5, 1 / 5)
    model = [VSVF(MultiGaussianMetric((0.2, 0.4), (0.5, 0.5)), h),
             LDDMM(MultiGaussianMetric((0.2, 0.4), (0.5, 0.5)), h),
             RDMM(RegionalMetric((0.2, 0.4), 0.2), h)][which]
    m = (0.1 * torch.randn(1, 2, n0, n1, dtype=D)).requires_grad_()
    phi = (model.identity(m) + 0.02 * torch.randn(1, 2, n0, n1, dtype=D)).requires_grad_()
    h0 = torch.rand(1, 2, n0, n1, dtype=D) + 0.1
    h0 = (h0 / h0.norm(dim=1, keepdim=True)).requires_grad_()
    t = torch.tensor(0.0, dtype=D)
    if which == 0:
        fn = lambda a, b: tuple(model(t, FlowState(a, b)))  # noqa: E731
        assert gradcheck(fn, (phi, m))
    elif which == 1:
        fn = lambda a, b: tuple(model(t, model.initial_state(a, b)))  # noqa: E731
        assert gradcheck(fn, (m, phi))
    else:
        fn = lambda a, b, c: tuple(model(t, model.initial_state(a, c, b))[:2])  # noqa: E731
        assert gradcheck(fn, (m, phi, h0))


def test_shooting_gradcheck_through_rk4():
    h = (1 / 4, 1 / 4)
    model = RDMM(RegionalMetric((0.2, 0.4), 0.2), h)
    m = (0.1 * torch.randn(1, 2, 5, 5, dtype=D)).requires_grad_()
    h0 = torch.rand(1, 2, 5, 5, dtype=D) + 0.1
    h0 = (h0 / h0.norm(dim=1, keepdim=True)).requires_grad_()
    assert gradcheck(lambda a, b: integrate(model, model.initial_state(a, b), steps=2).phi, (m, h0))


def test_bad_model_input():
    _, lddmm, rdmm = models(8)
    with pytest.raises(ValueError, match="momentum of shape"):
        lddmm.initial_state(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="pre-weights of shape"):
        rdmm.initial_state(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 7, 8))
    with pytest.raises(ValueError, match="weight_gradient"):
        RDMM(RegionalMetric(SIGMAS, 0.03), (0.1, 0.1), weight_gradient="bogus")
    with pytest.raises(ValueError, match="increasing"):
        MultiGaussianMetric((0.2, 0.1), (0.5, 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        MultiGaussianMetric((0.1, 0.2), (0.5, 0.6))


# ---------------------------------------------------------------- integrators
class Decay(NamedTuple):
    y: torch.Tensor


class DecayModel(torch.nn.Module):
    def forward(self, t, s):
        return Decay(-s.y * (1 + t))  # y(t) = y0 exp(-(t + t^2/2))


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(method, order):
    y0 = Decay(torch.ones(3, dtype=D))
    exact = math.exp(-1.5)
    errs = [abs(integrate(DecayModel(), y0, method=method, steps=n).y[0].item() - exact) for n in (8, 16, 32)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) == pytest.approx(order, abs=0.25)


def test_adaptive_solver_and_adjoint_gradient_match_direct():
    y0 = torch.ones(2, dtype=D, requires_grad=True)
    out = integrate(DecayModel(), Decay(y0 * 2), method="dopri5", rtol=1e-10, atol=1e-10)
    assert out.y[0].item() == pytest.approx(2 * math.exp(-1.5), rel=1e-8)
    g_direct, = torch.autograd.grad(out.y.sum(), y0)
    out_adj = integrate(DecayModel(), Decay(y0 * 2), method="dopri5", rtol=1e-10, atol=1e-10, adjoint=True)
    g_adj, = torch.autograd.grad(out_adj.y.sum(), y0)
    assert torch.allclose(g_direct, g_adj, rtol=1e-7)


def test_checkpointed_integration_gives_the_same_gradient():
    n = 16
    m0, X, Y = bump_momentum(n)
    rdmm = models(n)[2]
    m0 = m0.clone().requires_grad_()
    h0 = region_preweights(X, Y)
    grads = []
    for ck in (False, True):
        s1 = integrate(rdmm, rdmm.initial_state(m0, h0), steps=4, checkpointed=ck)
        grads.append(torch.autograd.grad(s1.phi.pow(2).sum(), m0)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_unknown_solver_and_adjoint_on_fixed_step_are_rejected():
    with pytest.raises(ValueError, match="unknown integrator"):
        integrate(DecayModel(), Decay(torch.ones(1)), method="rk5")
    with pytest.raises(ValueError, match="adaptive"):
        integrate(DecayModel(), Decay(torch.ones(1)), method="rk4", adjoint=True)


@pytest.mark.parametrize("shape", [(7, 6), (4, 3, 5)])
def test_epdiff_node_equals_the_recorded_graph_and_is_twice_differentiable(shape):
    from torch.autograd import gradgradcheck

    from rdmm_pipelines.core.differences import partial
    from rdmm_pipelines.models.transport import contracted_gradient, epdiff

    d = len(shape)
    spacing = tuple(0.1 * (k + 1) for k in range(d))
    g = torch.Generator().manual_seed(11)
    m, v, w = (torch.randn((2, d) + shape, generator=g, dtype=torch.float64) for _ in range(3))
    m.requires_grad_()
    v.requires_grad_()
    # ad*_v m written as products, sums and differences, differentiated by autograd
    graph = sum(partial(m * v[:, j : j + 1], j, h) for j, h in enumerate(spacing)) + contracted_gradient(v, m, spacing)
    node = epdiff(m, v, spacing)
    assert torch.allclose(node, graph, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(node, (m, v), w), torch.autograd.grad(graph, (m, v), w)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert gradcheck(lambda a, b: epdiff(a, b, spacing), (m, v))
    assert gradgradcheck(lambda a, b: epdiff(a, b, spacing), (m, v))
