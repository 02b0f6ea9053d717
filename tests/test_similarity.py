"""Tests for rdmm_pipelines.similarity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rdmm_pipelines.similarity import (
    LNCC,
    NCC,
    SIMILARITIES,
    SSD,
    MultiKernelLNCC,
    make_similarity,
)


def _measures(d: int):
    """One instance of every measure, sized for small test images."""
    return {
        "ssd": SSD(),
        "ncc": NCC(),
        "lncc": LNCC(3),
        "lncc-dil-stride": LNCC(3, dilation=2, stride=2),
        "mk-lncc": MultiKernelLNCC((3, 5), (0.4, 0.6), (1, 2), strides=(1, 2)),
        "mk-lncc-for-shape": MultiKernelLNCC.for_shape((16,) * d),
    }


def _rand(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", list(_measures(2)))
def test_zero_for_identical_positive_for_different(name, d):
    m = _measures(d)[name]
    shape = (2, 2) + (16,) * d
    a, b = _rand(shape, seed=1), _rand(shape, seed=2)
    same = m(a, a.clone())
    diff = m(a, b)
    assert same.shape == (2,) and diff.shape == (2,)
    assert torch.all(same.abs() < 1e-5), same
    assert torch.all(same >= 0)
    assert torch.all(diff > 1e-2), diff


@pytest.mark.parametrize("name", ["ncc", "lncc", "lncc-dil-stride", "mk-lncc", "mk-lncc-for-shape"])
def test_affine_intensity_invariance(name):
    m = _measures(2)[name]
    a, b = _rand((2, 1, 20, 18), torch.float64, 3), _rand((2, 1, 20, 18), torch.float64, 4)
    b = 0.5 * a + 0.5 * b  # correlated, so the loss is neither 0 nor 1
    ref = m(a, b)
    for scale, shift in ((2.5, 0.3), (0.2, -1.0)):
        torch.testing.assert_close(m(scale * a + shift, b), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m(a, scale * b + shift), ref, rtol=1e-5, atol=1e-6)


def test_ssd_hand_computed():
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.tensor([[[[1.0, 0.0], [5.0, 4.0]]]])
    # squared differences 0, 4, 4, 0 -> mean 2; sigma = 2 -> 0.5
    torch.testing.assert_close(SSD()(w, t), torch.tensor([2.0]))
    torch.testing.assert_close(SSD(sigma=2.0)(w, t), torch.tensor([0.5]))
    # batch of 2, 2 channels: per-element mean over channels and voxels
    wb = torch.stack([torch.cat([w[0], w[0]]), torch.cat([w[0], t[0]])])
    tb = torch.stack([torch.cat([t[0], t[0]]), torch.cat([t[0], t[0]])])
    torch.testing.assert_close(SSD()(wb, tb), torch.tensor([2.0, 1.0]))


def test_ncc_hand_computed_and_sigma():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(NCC()(a, 3 * a + 1), torch.zeros(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(NCC()(a, -a), torch.zeros(1), atol=1e-6, rtol=0)  # ncc^2: sign-blind
    b = torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    # centred a = (-1.5, -.5, .5, 1.5), b = (-.5, .5, -.5, .5): cov = .25, var_a = 1.25, var_b = .25
    expected = 1 - 0.25**2 / (1.25 * 0.25)
    torch.testing.assert_close(NCC()(a, b), torch.tensor([expected]), atol=1e-6, rtol=0)
    torch.testing.assert_close(NCC(sigma=0.5)(a, b), torch.tensor([expected / 0.25]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 2, 20, 17), (1, 1, 9, 8, 7)])
def test_lncc_full_window_equals_ncc(shape):
    a, b = _rand(shape, torch.float64, 5), _rand(shape, torch.float64, 6)
    b = 0.3 * a + b
    full = max(shape[2:])
    torch.testing.assert_close(LNCC(full)(a, b), NCC()(a, b), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(LNCC(100)(a, b), NCC()(a, b), rtol=1e-7, atol=1e-9)  # clamped


def test_lncc_window_clamp_and_output_size():
    m = LNCC((5, 50), dilation=2, stride=(1, 3))
    assert m.effective_window((12, 7)) == (5, 4)
    lncc = m.local_ncc(_rand((1, 1, 12, 7)), _rand((1, 1, 12, 7), seed=1))
    # axis 0: 12 - 2*4 = 4 positions; axis 1: extent 7 -> 1 position
    assert lncc.shape == (1, 1, 4, 1)


def test_lncc_constant_regions_finite():
    a = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    a[..., :, 6:] = torch.rand(12, 6, dtype=torch.float64)
    b = torch.full_like(a, 0.7).requires_grad_()
    for m in (LNCC(3), NCC(), MultiKernelLNCC.for_shape((12, 12))):
        for w, t in ((a, a.clone()), (a, b), (b, a), (b, b)):
            loss = m(w, t)
            assert torch.isfinite(loss).all()
            if loss.requires_grad:
                (g,) = torch.autograd.grad(loss.sum(), b)
                assert torch.isfinite(g).all()
    # constant-vs-constant and constant-vs-textured windows score as uncorrelated: lncc = 0
    assert LNCC(3)(b.detach(), b.detach()).item() == pytest.approx(1.0)
    assert NCC()(b.detach(), a).item() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(1, 2, 7, 6), (1, 2, 5, 5, 4)])
@pytest.mark.parametrize("name", list(_measures(2)))
def test_gradcheck(name, shape):
    m = _measures(len(shape) - 2)[name]
    w = _rand(shape, torch.float64, 7).requires_grad_()
    t = _rand(shape, torch.float64, 8).requires_grad_()
    assert torch.autograd.gradcheck(m, (w, t), eps=1e-6, atol=1e-5)


def test_mk_lncc_for_shape_windows():
    mk = MultiKernelLNCC.for_shape((200, 200))
    assert mk.windows == (12, 25, 50)
    assert mk.weights == (0.1, 0.3, 0.6)
    assert mk.dilations == (2, 2, 2)
    assert mk.strides == (3, 6, 12)
    mk = MultiKernelLNCC.for_shape((100, 100))
    assert (mk.windows, mk.weights, mk.dilations, mk.strides) == ((25, 50), (0.3, 0.7), (2, 2), (6, 12))
    mk = MultiKernelLNCC.for_shape((50, 50))
    assert (mk.windows, mk.weights, mk.dilations, mk.strides) == ((25,), (1.0,), (1,), (6,))
    assert MultiKernelLNCC.for_shape((160, 192, 128)).windows == (8, 16, 32)  # m = min(shape)
    assert MultiKernelLNCC.for_shape((4, 4)).windows == (3,)  # at least 3


def _blob(d: int, n: int, center: float = 0.0) -> torch.Tensor:
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n)] * d, indexing="ij")
    r2 = sum((x - center) ** 2 for x in axes)
    return torch.exp(-r2 / (2 * 0.25**2))[None, None]


def _translate(img: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    d = img.dim() - 2
    theta = torch.cat([torch.eye(d), shift.reshape(d, 1)], dim=1)[None]
    grid = F.affine_grid(theta, list(img.shape), align_corners=True)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_gradient_descent_on_translation_reduces_loss(name, d):
    n = 32 if d == 2 else 16
    target = _blob(d, n)
    source = _blob(d, n, center=0.2)  # blob shifted by 0.2 along every axis
    m = make_similarity(name, (n,) * d, window=7)
    shift = torch.zeros(d, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.03)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = m(_translate(source, shift), target).sum()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.all(shift.detach() > 0.05)  # moving towards the true shift (+0.2)


def test_make_similarity():
    assert isinstance(make_similarity("ssd", (8, 8), sigma=2.0), SSD)
    assert make_similarity("ssd", (8, 8), sigma=2.0).sigma == 2.0
    assert isinstance(make_similarity("ncc", (8, 8)), NCC)
    lncc = make_similarity("lncc", (64, 64))
    assert isinstance(lncc, LNCC) and lncc.window == 9
    assert make_similarity("lncc", (320, 400)).window == 20
    assert make_similarity("lncc", (64, 64), window=5).window == 5
    mk = make_similarity("mk-lncc", (100, 100), sigma=0.5)
    assert isinstance(mk, MultiKernelLNCC) and mk.windows == (25, 50) and mk.sigma == 0.5
    assert set(SIMILARITIES) == {"ssd", "ncc", "lncc", "mk-lncc"}
    with pytest.raises(ValueError, match="valid: lncc, mk-lncc, ncc, ssd"):
        make_similarity("mi", (8, 8))


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_bad_inputs(name):
    m = make_similarity(name, (8, 8), window=3)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\).*\(1, 1, 8, 7\)"):
        m(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 7))
    with pytest.raises(ValueError, match="2 or 3 spatial dims"):
        m(torch.rand(1, 1, 8), torch.rand(1, 1, 8))
    with pytest.raises(ValueError, match="2 or 3 spatial dims"):
        m(torch.rand(1, 1, 2, 2, 2, 2), torch.rand(1, 1, 2, 2, 2, 2))


def test_bad_parameters():
    with pytest.raises(ValueError, match="sigma"):
        SSD(sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        NCC(sigma=-1.0)
    with pytest.raises(ValueError, match="window"):
        LNCC(0)
    with pytest.raises(ValueError, match="dilation"):
        LNCC(3, dilation=0)
    with pytest.raises(ValueError, match="window"):
        LNCC((3, 3))(torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5))  # 2 entries for 3D
    with pytest.raises(ValueError, match="equal length"):
        MultiKernelLNCC((3, 5), (1.0,), (1, 1))
