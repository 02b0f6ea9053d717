"""Tests for rdmm_pipelines.similarity."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import rdmm_pipelines.core.box as box
import rdmm_pipelines.similarity as similarity
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
        "lncc-even": LNCC(4),
        "mk-lncc": MultiKernelLNCC((3, 6), (0.4, 0.6)),
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


@pytest.mark.parametrize("name", ["ncc", "lncc", "lncc-even", "mk-lncc", "mk-lncc-for-shape"])
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
    """A window of >= 2n - 1 voxels covers the whole image from every voxel: lncc = ncc^2 everywhere."""
    a, b = _rand(shape, torch.float64, 5), _rand(shape, torch.float64, 6)
    b = 0.3 * a + b
    full = 2 * max(shape[2:]) - 1
    torch.testing.assert_close(LNCC(full)(a, b), NCC()(a, b), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(LNCC(full - 1)(a, b), NCC()(a, b), rtol=1e-7, atol=1e-9)  # even: + 1
    torch.testing.assert_close(LNCC(1000)(a, b), NCC()(a, b), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(MultiKernelLNCC((full, 500), (0.25, 0.5))(a, b), 0.75 * NCC()(a, b),
                               rtol=1e-7, atol=1e-9)
    # one voxel short of the whole image (from the corners) is no longer NCC
    assert (LNCC(max(shape[2:]))(a, b) - NCC()(a, b)).abs().max() > 1e-4


def test_lncc_effective_window_and_output_size():
    m = LNCC((4, 50))
    assert m.effective_window((12, 7)) == (5, 13)  # even -> next odd; at most 2n - 1
    assert LNCC(3).effective_window((1, 9, 2)) == (1, 3, 3)
    lncc = m.local_ncc(_rand((2, 3, 12, 7)), _rand((2, 3, 12, 7), seed=1))
    assert lncc.shape == (2, 3, 12, 7) and lncc.dtype == torch.float32  # one value per voxel
    assert torch.all((lncc >= 0) & (lncc <= 1 + 1e-6))


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
    # a window with a constant target has nothing to match: lncc = 1 (no loss offset that depends on
    # the window and the scale); a constant warped window against a textured target: lncc = 0
    assert LNCC(3)(b.detach(), b.detach()).item() == pytest.approx(0.0)
    textured = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    assert LNCC(3)(b.detach(), textured).item() == pytest.approx(1.0)
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
    assert mk.windows == (13, 25, 51)  # nearest odd to 12.5, 25, 50
    assert mk.weights == (0.1, 0.3, 0.6)
    assert MultiKernelLNCC.for_shape((100, 100)).windows == (7, 13, 25)
    assert MultiKernelLNCC.for_shape((127, 127)).windows == (7, 15, 31)  # no jump at 128
    assert MultiKernelLNCC.for_shape((128, 128)).windows == (9, 17, 33)
    assert MultiKernelLNCC.for_shape((160, 192, 128)).windows == (9, 17, 33)  # m = min(shape)
    assert MultiKernelLNCC.for_shape((80, 96, 112)).windows == (5, 11, 21)
    assert MultiKernelLNCC.for_shape((4, 4)).windows == (5, 9, 13)  # at least (5, 9, 13)
    assert MultiKernelLNCC.for_shape((50, 50)).windows == (5, 9, 13)
    assert MultiKernelLNCC.for_shape((50, 50), sigma=0.5).sigma == 0.5


def test_mk_lncc_for_shape_continuous_in_size():
    """Windows are odd, >= 3, non-decreasing in the size, and move by <= 2 voxels per voxel of size."""
    prev = None
    for n in range(20, 301):
        mk = MultiKernelLNCC.for_shape((n, n + 7))
        assert mk.weights == (0.1, 0.3, 0.6)
        assert len(mk.windows) == 3
        assert all(w % 2 == 1 and w >= 3 for w in mk.windows)
        assert all(abs(w - n * f) <= 1 or w == lo for w, f, lo in zip(mk.windows, (1 / 16, 1 / 8, 1 / 4), (5, 9, 13)))
        if prev is not None:
            assert all(0 <= w - p <= 2 for w, p in zip(mk.windows, prev)), (n, prev, mk.windows)
        prev = mk.windows


def _brute_box_mean(x: torch.Tensor, window) -> torch.Tensor:
    """Reference: the mean of the in-image part of [i - w//2, i + w//2] per axis, voxel by voxel."""
    out = torch.empty(x.shape, dtype=torch.float64)
    spatial = x.shape[2:]
    for idx in itertools.product(*(range(n) for n in spatial)):
        box = tuple(slice(max(i - w // 2, 0), i + w // 2 + 1) for i, w in zip(idx, window))
        out[(...,) + idx] = x[(..., *box)].double().flatten(2).mean(2)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_box_mean_matches_brute_force(dtype):
    cases = [((2, 3, 7, 6), w) for w in itertools.product((1, 2, 3, 4, 7, 13, 40), repeat=2)]
    cases += [((1, 2, 5, 4, 6), w) for w in ((1, 1, 1), (3, 2, 5), (4, 7, 2), (9, 9, 9), (2, 3, 11))]
    cases += [((1, 1, 1, 9), (3, 4)), ((1, 1, 2, 1, 3), (5, 5, 5))]
    for i, (shape, window) in enumerate(cases):
        x = _rand(shape, dtype, seed=i) - 0.3
        got = similarity._box_mean(x, window)
        assert got.dtype == torch.float64 and got.shape == x.shape
        torch.testing.assert_close(got, _brute_box_mean(x, window), rtol=0, atol=1e-14)


def test_box_mean_slice_loop_equals_cumsum(monkeypatch):
    """The CPU slice-loop prefix sums (large tensors) and torch.cumsum give the same box means."""
    x = _rand((2, 3, 9, 10, 11), torch.float64, 3)
    windows = [(3, 5, 7), (4, 1, 30), (19, 2, 3)]
    monkeypatch.setattr(box, "_SLICE_LOOP_MIN_NUMEL", 0)
    loop = [similarity._box_mean(x, w) for w in windows]
    monkeypatch.setattr(box, "_SLICE_LOOP_MIN_NUMEL", 1 << 62)
    for w, got in zip(windows, loop):
        torch.testing.assert_close(got, similarity._box_mean(x, w), rtol=0, atol=1e-13)
        torch.testing.assert_close(got[:1, :1, :4, :3, :5], _brute_box_mean(x, w)[:1, :1, :4, :3, :5],
                                   rtol=0, atol=1e-13)


def _flip_cases():
    for d in (2, 3):
        shape = (2, 2, 23, 18) if d == 2 else (1, 2, 11, 9, 8)
        for axes in [(k,) for k in range(2, 2 + d)] + [tuple(range(2, 2 + d))]:
            yield d, shape, axes


@pytest.mark.parametrize("d,shape,axes", list(_flip_cases()))
def test_flip_equivariance(d, shape, axes):
    """Flipping both images along any axis flips the lncc map and leaves every loss unchanged."""
    a, b = _rand(shape, torch.float64, 11), _rand(shape, torch.float64, 12)
    b = 0.6 * a + b
    fa, fb = a.flip(axes), b.flip(axes)
    for window in (3, 4, 7, (5, 2, 9)[:d]):
        m = LNCC(window)
        torch.testing.assert_close(m.local_ncc(fa, fb), m.local_ncc(a, b).flip(axes), rtol=0, atol=1e-6)
        torch.testing.assert_close(m(fa, fb), m(a, b), rtol=1e-6, atol=0)
    for m in (MultiKernelLNCC.for_shape(shape[2:]), MultiKernelLNCC((3, 6, 9), (0.2, 0.3, 0.5))):
        torch.testing.assert_close(m(fa, fb), m(a, b), rtol=1e-6, atol=0)
        torch.testing.assert_close(m(fa.float(), fb.float()), m(a.float(), b.float()), rtol=1e-5, atol=0)


def test_axis_permutation_equivariance():
    """Cubic windows: swapping two axes of both images swaps them in the lncc map."""
    a, b = _rand((1, 1, 13, 10, 7), torch.float64, 13), _rand((1, 1, 13, 10, 7), torch.float64, 14)
    m = LNCC(5)
    p = (0, 1, 4, 2, 3)
    torch.testing.assert_close(m.local_ncc(a.permute(p), b.permute(p)), m.local_ncc(a, b).permute(p),
                               rtol=0, atol=1e-12)


def test_mk_lncc_gradient_reaches_every_voxel():
    """200x200: the gradient is far from zero on the last row and column and on odd/odd voxels.

    The former dilated, strided windows (dilation 2, strides 6 and 12) sampled only even/even
    voxels and none past row/column 194, so this failed there: those voxels got only the
    round-off of the global-mean subtraction (measured: |g| / max|g| = 2.5e-19 on this pair).
    """
    a, b = _rand((1, 1, 200, 200), torch.float64, 15), _rand((1, 1, 200, 200), torch.float64, 16)
    w = (0.5 * a + 0.5 * b).requires_grad_()
    mk = MultiKernelLNCC.for_shape((200, 200))
    (g,) = torch.autograd.grad(mk(w, a).sum(), w)
    g = g[0, 0].abs() / g.abs().max()
    assert g[-1, :].min() > 1e-8 and g[:, -1].min() > 1e-8
    assert g[1::2, 1::2].min() > 1e-8
    assert g.min() > 1e-8  # measured: 5e-5


def test_lncc_gradcheck_even_and_truncated_windows():
    """float64 gradcheck on a tiny 2D input, including an even window and windows wider than the image."""
    w = _rand((1, 2, 6, 5), torch.float64, 17).requires_grad_()
    t = _rand((1, 2, 6, 5), torch.float64, 18).requires_grad_()
    for m in (LNCC(2), LNCC((5, 8)), LNCC(30), MultiKernelLNCC((3, 4, 9), (0.2, 0.3, 0.5))):
        assert torch.autograd.gradcheck(m, (w, t), eps=1e-6, atol=1e-5)
    # the box mean's hand-written adjoint (the box sum itself) is checked twice over
    x = _rand((1, 2, 5, 4, 3), torch.float64, 19).requires_grad_()
    for window in ((3, 2, 5), (1, 9, 4)):
        assert torch.autograd.gradcheck(lambda v: similarity._box_mean(v, window), (x,), eps=1e-6, atol=1e-7)
        assert torch.autograd.gradgradcheck(lambda v: similarity._box_mean(v, window), (x,), eps=1e-6, atol=1e-7)
    # the backward skips the target's terms when the target needs no gradient: same warped gradient
    mk = MultiKernelLNCC((3, 4), (0.5, 0.5))
    (g_both, _) = torch.autograd.grad(mk(w, t).sum(), (w, t))
    (g_w,) = torch.autograd.grad(mk(w, t.detach()).sum(), w)
    torch.testing.assert_close(g_w, g_both, rtol=1e-12, atol=0)
    # float32 input: gradients come back in float32
    w32 = w.detach().float().requires_grad_()
    (g,) = torch.autograd.grad(LNCC(3)(w32, t.detach().float()).sum(), w32)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


def test_float32_matches_float64():
    """float64 accumulation: a float32 pair with a large offset scores as its float64 copy."""
    a = _rand((1, 1, 64, 48), torch.float64, 19) * 10 + 1000
    b = a + _rand((1, 1, 64, 48), torch.float64, 20)
    af, bf = a.float(), b.float()
    mk = MultiKernelLNCC.for_shape((64, 48))
    loss32 = mk(af, bf)
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), mk(af.double(), bf.double()), rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a, b = _rand((2, 1, 20, 16, 12), torch.float32, 21), _rand((2, 1, 20, 16, 12), torch.float32, 22)
    mk = MultiKernelLNCC.for_shape((20, 16, 12))
    wc = a.clone().requires_grad_()
    wg = a.cuda().requires_grad_()
    lc, lg = mk(wc, b), mk(wg, b.cuda())
    (gc,) = torch.autograd.grad(lc.sum(), wc)
    (gg,) = torch.autograd.grad(lg.sum(), wg)
    torch.testing.assert_close(lg.cpu(), lc, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gg.cpu(), gc, rtol=1e-4, atol=1e-8)


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
    # measured from the loss at the true shift: the local measures keep a constant offset there, from
    # windows inside the flat strips that border padding creates (lncc = 0 in a constant window)
    floor = m(_translate(source, torch.full((d,), 0.2)), target).sum().item()
    assert losses[-1] - floor < 0.5 * (losses[0] - floor), (losses, floor)
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
    assert isinstance(mk, MultiKernelLNCC) and mk.windows == (7, 13, 25) and mk.sigma == 0.5
    assert set(SIMILARITIES) == {"ssd", "ncc", "lncc", "mk-lncc", "mi"}
    with pytest.raises(ValueError, match="valid: lncc, mi, mk-lncc, ncc, ssd"):
        make_similarity("nmi", (8, 8))


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
    with pytest.raises(TypeError):
        LNCC(3, dilation=2)  # windows are centred on every voxel: no dilation or stride any more
    with pytest.raises(ValueError, match="window"):
        LNCC((3, 3))(torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5))  # 2 entries for 3D
    with pytest.raises(ValueError, match="equal length"):
        MultiKernelLNCC((3, 5), (1.0,))
    with pytest.raises(ValueError, match="windows"):
        MultiKernelLNCC((3, 0), (0.5, 0.5))
    with pytest.raises(ValueError, match="weights"):
        MultiKernelLNCC((3, 5), (0.5, -0.5))


@pytest.mark.parametrize("make", [lambda: LNCC(7), lambda: MultiKernelLNCC.for_shape((20, 24))])
def test_lncc_reuses_the_target_moments_only_for_the_same_unchanged_target(make):
    g = torch.Generator().manual_seed(5)
    target = torch.rand(1, 1, 20, 24, generator=g, dtype=torch.float64)
    other = torch.rand(1, 1, 20, 24, generator=g, dtype=torch.float64)
    warped = torch.rand(1, 1, 20, 24, generator=g, dtype=torch.float64, requires_grad=True)
    sim = make()

    def loss_and_grad(module, t):
        (grad,) = torch.autograd.grad(module(warped, t).sum(), warped)
        return module(warped, t).detach(), grad

    first = loss_and_grad(sim, target)
    again = loss_and_grad(sim, target)  # from the cache
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for t in (other, target):  # another tensor, then the first one back
        cached, fresh = loss_and_grad(sim, t), loss_and_grad(make(), t)
        assert torch.equal(cached[0], fresh[0]) and torch.equal(cached[1], fresh[1])
    target.mul_(0.5).add_(other)  # changed in place: its version moves, the moments are recomputed
    cached, fresh = loss_and_grad(sim, target), loss_and_grad(make(), target)
    assert torch.equal(cached[0], fresh[0]) and torch.equal(cached[1], fresh[1])
    assert not torch.equal(cached[0], first[0])
