"""The two implementations of the Gaussian operators (banded axis matrices, padded FFT) are the
same linear operator: same results, same adjoint, no wrap-around, on 2D and 3D grids."""

from __future__ import annotations

import pytest
import torch

from rdmm_pipelines.core import gaussian as G

D = torch.float64


def _both(monkeypatch, fn):
    """fn() with the matrices (the default on small grids) and with the FFT forced."""
    G._axis_matrices.cache_clear()
    by_matrices = fn()
    monkeypatch.setattr(G, "MATMUL_MAX_AXIS", 0)
    by_fft = fn()
    monkeypatch.undo()
    return by_matrices, by_fft


@pytest.mark.parametrize("shape", [(17, 30), (1, 25), (9, 11, 14), (6, 1, 13)])
def test_matrices_and_fft_give_the_same_filters(monkeypatch, shape):
    g = torch.Generator().manual_seed(3)
    spacing = tuple(0.9 / (n - 1) if n > 1 else 1.0 for n in shape)
    sigmas = (0.04, 0.11, 0.5)
    x = torch.randn((2, 2) + shape, generator=g, dtype=D)
    each_in = torch.randn((2, 3, 2) + shape, generator=g, dtype=D)
    a, b = _both(monkeypatch, lambda: (
        G.gaussian_filter(x, spacing, sigmas),
        G.gaussian_filter_each(each_in, spacing, sigmas),
        G.gaussian_mixture(x, spacing, sigmas, (0.2, 0.3, 0.5)),
        G.smooth_preserving(x, spacing, 0.07),
    ))
    for p, q in zip(a, b):
        assert p.shape == q.shape
        assert torch.allclose(p, q, rtol=0, atol=1e-13)


def test_matrix_path_is_used_below_the_limit_and_fft_above(monkeypatch):
    calls = []
    real = G._convolve_matrices
    monkeypatch.setattr(G, "_convolve_matrices", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(1, 1, 8, 9, 10, dtype=D)
    G.gaussian_filter(x, (0.1,) * 3, (0.2,))
    G.gaussian_mixture(x, (0.1,) * 3, (0.1, 0.2), (0.5, 0.5))
    assert len(calls) == 3  # one filter, two Gaussians of the 3D mixture
    monkeypatch.setattr(G, "MATMUL_MAX_AXIS", 9)
    G.gaussian_filter(x, (0.1,) * 3, (0.2,))
    assert len(calls) == 3


@pytest.mark.parametrize("shape", [(17, 30), (1, 25), (9, 11, 14), (6, 1, 13)])
@pytest.mark.parametrize("slices", [1, 3])
def test_batched_gaussians_equal_one_at_a_time(monkeypatch, shape, slices):
    """All Gaussians in shared products (small fields) give exactly what one Gaussian at a time
    gives (large fields), also for one input shared by every Gaussian and a batch of two."""
    g = torch.Generator().manual_seed(5)
    spacing = tuple(0.9 / (n - 1) if n > 1 else 1.0 for n in shape)
    sigmas = (0.04, 0.11, 0.5)
    x = torch.randn((2, slices, len(shape)) + shape, generator=g, dtype=D)
    batched = []
    real = G._convolve_matrices_each
    monkeypatch.setattr(G, "_convolve_matrices_each", lambda *a, **k: batched.append(1) or real(*a, **k))
    def both():
        return (G.gaussian_filter_each(x.expand(2, 3, *x.shape[2:]), spacing, sigmas),
                G.gaussian_filter(x[:, 0], spacing, sigmas))

    together = both()
    assert batched == [1, 1]
    monkeypatch.setattr(G, "BATCHED_MAX_BYTES", 0)
    apart = both()
    assert batched == [1, 1]
    for p, q in zip(together, apart):
        assert p.shape == q.shape == (2, 3, len(shape)) + shape
        assert torch.equal(p, q)


def test_matrix_filter_is_linear_symmetric_and_does_not_wrap():
    shape, spacing = (24, 20, 16), (1 / 23, 1 / 19, 1 / 15)
    e = torch.zeros((1, 1) + shape, dtype=D)
    e[0, 0, 0, 3, 4] = 1.0
    out = G.gaussian_filter(e, spacing, (0.05,))[0, 0, 0]
    assert out[-1, 3, 4] == 0 and out[0, 3, 4] > 0  # 23 voxels away, sigma ~1.2 voxels: nothing
    e = torch.zeros((1, 1) + shape, dtype=D)
    e[0, 0, 12, 10, 8] = 1.0
    inner = G.gaussian_filter(e, spacing, (0.05,))
    assert torch.allclose(inner.sum(), torch.tensor(1.0, dtype=D))  # mass kept away from the border
    x = torch.randn(1, 2, 7, 6, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: G.gaussian_mixture(t, (0.2, 0.2, 0.25), (0.2, 0.5), (0.5, 0.5)), (x,))
    a, b = torch.randn(2, 1, 2, *shape, dtype=D)
    Ka = G.gaussian_filter(a, spacing, (0.1,))[:, 0]
    Kb = G.gaussian_filter(b, spacing, (0.1,))[:, 0]
    assert torch.allclose((Ka * b).sum(), (a * Kb).sum(), rtol=1e-12)
