"""Numerics of the stateless core: finite differences, Gaussian filters, interpolation."""

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from rdmm_pipelines.core.differences import divergence, gradient, jacobian_determinant, partial
from rdmm_pipelines.core.gaussian import (
    gaussian_filter,
    gaussian_filter_each,
    gaussian_mixture,
    smooth_preserving,
    smooth_preserving_adjoint,
)
from rdmm_pipelines.core.interpolation import identity_map, resize_field, sample, sample_voxel

D = torch.float64


def grid2d(n0, n1, h):
    return identity_map((n0, n1), h, dtype=D)


# ---------------------------------------------------------------- finite differences
def test_differences_exact_on_quadratics_inside_and_linear_everywhere():
    h = (0.1, 0.25)
    x = grid2d(9, 7, h)
    X, Y = x[:, 0:1], x[:, 1:2]
    f = 3 * X**2 + 2 * X * Y - Y + 1.0
    g = gradient(f, h)
    assert torch.allclose(g[:, 0, 0, 1:-1], (6 * X + 2 * Y)[:, 0, 1:-1], atol=1e-12)
    assert torch.allclose(g[:, 0, 1, :, 1:-1], (2 * X - 1)[:, 0, :, 1:-1], atol=1e-12)
    lin = 2 * X - 5 * Y
    gl = gradient(lin, h)
    assert torch.allclose(gl[:, 0, 0], torch.full_like(X[:, 0], 2.0))
    assert torch.allclose(gl[:, 0, 1], torch.full_like(X[:, 0], -5.0))


def test_identity_has_unit_jacobian_and_zero_divergence_of_rotation():
    h = (0.1, 0.2, 0.05)
    idm = identity_map((5, 6, 7), h, dtype=D)
    assert torch.allclose(jacobian_determinant(idm, h), torch.ones(1, 1, 5, 6, 7, dtype=D))
    rot = torch.cat([-idm[:, 1:2], idm[:, 0:1], torch.zeros_like(idm[:, :1])], 1)
    assert divergence(rot, h).abs().max() < 1e-12


def test_jacobian_determinant_is_full_determinant_for_shear():
    h = (0.1, 0.1)
    idm = grid2d(6, 6, h)
    A = torch.tensor([[1.0, 0.7], [0.4, 1.1]], dtype=D)  # det = 1.1 - 0.28 = 0.82
    phi = torch.einsum("ij,bj...->bi...", A, idm)
    det = jacobian_determinant(phi, h)
    assert torch.allclose(det, torch.full_like(det, 0.82))


def test_finite_differences_gradcheck():
    f = torch.randn(1, 2, 5, 4, dtype=D, requires_grad=True)
    assert gradcheck(lambda t: partial(t, 1, 0.3), (f,))
    v = torch.randn(1, 3, 4, 3, 5, dtype=D, requires_grad=True)
    assert gradcheck(lambda t: jacobian_determinant(t, (0.2, 0.3, 0.1)), (v,))


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_partial_backward_is_its_exact_transpose(n):
    """The hand-written backward D^T satisfies <D f, g> = <f, D^T g> on every axis length, and
    is itself differentiable (double backward: the Hessian-vector products of the objective)."""
    f = torch.randn(2, 3, n, 5, dtype=D, requires_grad=True)
    g = torch.randn(2, 3, n, 5, dtype=D)
    for axis, h in ((0, 0.3), (1, 0.7)):
        (Dt_g,) = torch.autograd.grad(partial(f, axis, h), f, g, create_graph=True)
        assert torch.allclose((partial(f, axis, h) * g).sum(), (f * Dt_g).sum(), rtol=1e-12, atol=1e-12)
        assert gradgradcheck(lambda t: partial(t, axis, h), (f,))
    # against autograd through the slicing definition
    ref = torch.cat([f[:, :, 1:2] - f[:, :, 0:1], (f[:, :, 2:] - f[:, :, :-2]) / 2, f[:, :, -1:] - f[:, :, -2:-1]], 2) \
        if n > 2 else None
    if ref is not None:
        (a,) = torch.autograd.grad(partial(f, 0, 1.0), f, g)
        (b,) = torch.autograd.grad(ref, f, g)
        assert torch.allclose(a, b)


def test_partial_is_second_order_in_the_interior():
    errs = []
    for n in (17, 33, 65):
        h = 1.0 / (n - 1)
        x = torch.linspace(0, 1, n, dtype=D).view(1, 1, n, 1).expand(1, 1, n, 2)
        d = partial(torch.sin(3 * x), 0, h)
        errs.append((d - 3 * torch.cos(3 * x))[:, :, 1:-1].abs().max().item())
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > 1.9


# ---------------------------------------------------------------- Gaussian filters
def test_gaussian_acts_on_fourier_mode_by_its_transfer_function():
    n, sigma = 256, 0.02
    h = 1.0 / (n - 1)
    k = 8.0
    x = torch.arange(n, dtype=D) * h
    f = torch.cos(2 * math.pi * k * x).view(1, 1, n, 1).expand(1, 1, n, 3).contiguous()
    out = gaussian_filter(f, (h, h), (sigma,))[0, 0, 0, :, 1]
    expected = math.exp(-0.5 * (2 * math.pi * k * sigma) ** 2) * f[0, 0, :, 1]
    interior = slice(int(4 * sigma / h), n - int(4 * sigma / h))
    # the 2nd axis has 3 samples: the kernel there is truncated at the grid, factor = its centre tap mass
    col = gaussian_filter(torch.ones(1, 1, 1, 3, dtype=D), (h, h), (sigma,))[0, 0, 0, 0, 1]
    assert torch.allclose(out[interior], col * expected[interior], atol=2e-4)


def test_gaussian_does_not_wrap_and_is_symmetric():
    h = (1 / 31, 1 / 23)
    e = torch.zeros(1, 1, 32, 24, dtype=D)
    e[0, 0, 0, 5] = 1.0
    out = gaussian_filter(e, h, (0.05,))[0, 0, 0]
    # 31 voxels away, sigma ~ 1.55 voxels: a circular FFT would put ~1e-3 here
    assert out[-1, 5].abs() < 1e-15
    a, b = torch.randn(2, 2, 3, 32, 24, dtype=D)
    Ka = gaussian_mixture(a[None], h, (0.05, 0.2), (0.4, 0.6))
    Kb = gaussian_mixture(b[None], h, (0.05, 0.2), (0.4, 0.6))
    assert torch.allclose((Ka * b).sum(), (a * Kb).sum(), rtol=1e-12)
    assert (Ka * a).sum() > 0


def test_gaussian_mixture_equals_weighted_sum_and_each_equals_filter():
    x = torch.randn(2, 3, 10, 12, dtype=D)
    h, s, w = (0.1, 0.08), (0.1, 0.3), (0.25, 0.75)
    per = gaussian_filter(x, h, s)
    assert torch.allclose(gaussian_mixture(x, h, s, w), 0.25 * per[:, 0] + 0.75 * per[:, 1])
    each = gaussian_filter_each(x.unsqueeze(1).expand(2, 2, 3, 10, 12), h, s)
    assert torch.allclose(each, per)


def test_preserving_smoother_keeps_constants_and_adjoint_identity():
    h = (0.05, 0.07, 0.1)
    c = torch.full((1, 2, 8, 7, 6), 0.3, dtype=D)
    assert torch.allclose(smooth_preserving(c, h, 0.1), c, atol=1e-14)
    a, b = torch.randn(2, 1, 2, 8, 7, 6, dtype=D)
    lhs = (smooth_preserving(a, h, 0.1) * b).sum()
    rhs = (a * smooth_preserving_adjoint(b, h, 0.1)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_gaussian_gradcheck():
    x = torch.randn(1, 2, 6, 5, dtype=D, requires_grad=True)
    assert gradcheck(lambda t: gaussian_mixture(t, (0.2, 0.25), (0.2, 0.5), (0.5, 0.5)), (x,))
    assert gradcheck(lambda t: smooth_preserving(t, (0.2, 0.25), 0.3), (x,))
    y = torch.randn(1, 2, 2, 4, 3, 5, dtype=D, requires_grad=True)
    assert gradcheck(lambda t: gaussian_filter_each(t, (0.2, 0.25, 0.3), (0.2, 0.5)), (y,))


# ---------------------------------------------------------------- interpolation
def test_sampling_at_identity_reproduces_field_and_at_shift_interpolates_linearly():
    h = (0.1, 0.2)
    f = torch.randn(1, 2, 6, 5, dtype=D)
    idm = grid2d(6, 5, h)
    assert torch.allclose(sample(f, idm, h), f, atol=1e-12)
    lin = 2 * idm[:, :1] + 3 * idm[:, 1:]
    shifted = idm + torch.tensor([0.03, -0.05], dtype=D).view(1, 2, 1, 1)
    out = sample(lin, shifted, h)
    expect = lin + 2 * 0.03 - 3 * 0.05
    assert torch.allclose(out[..., 1:-1, 1:-1], expect[..., 1:-1, 1:-1], atol=1e-12)


def test_sampling_axis_order_3d():
    f = torch.zeros(1, 1, 4, 5, 6, dtype=D)
    f[0, 0, 1, 2, 3] = 1.0
    pt = torch.tensor([1.0, 2.0, 3.0], dtype=D).view(1, 3, 1, 1, 1)
    assert sample_voxel(f, pt).item() == pytest.approx(1.0)
    assert sample_voxel(f, pt, mode="nearest").item() == pytest.approx(1.0)


def test_interpolation_gradcheck_in_field_and_coordinates():
    f = torch.randn(1, 1, 5, 4, dtype=D, requires_grad=True)
    c = (torch.rand(1, 2, 3, 3, dtype=D) * 3).requires_grad_()
    assert gradcheck(lambda a, b: sample_voxel(a, b), (f, c))
    f3 = torch.randn(1, 2, 4, 3, 4, dtype=D, requires_grad=True)
    c3 = (torch.rand(1, 3, 2, 2, 2, dtype=D) * 2.5).requires_grad_()
    assert gradcheck(lambda a, b: sample_voxel(a, b), (f3, c3))


def test_resize_keeps_extent():
    h = (0.1, 0.1)
    idm = grid2d(11, 11, h)
    big = resize_field(idm, (21, 21))
    assert torch.allclose(big, grid2d(21, 21, (0.05, 0.05)), atol=1e-12)


def test_bad_interpolation_arguments():
    with pytest.raises(ValueError, match="interpolation mode"):
        sample_voxel(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), mode="cubic")
    with pytest.raises(ValueError, match="must be"):
        sample_voxel(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, 3))
