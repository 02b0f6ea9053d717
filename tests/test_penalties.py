"""RDMM penalties, their schedule, and the pre-weight parametrisation."""

import math

import pytest
import torch

from rdmm_pipelines.optim.penalties import decay, omt_penalty, penalty_weights, range_penalty
from rdmm_pipelines.optim.preweights import (
    constant_preweights,
    logits_from_preweights,
    preweights_from_logits,
    preweights_from_regions,
    resize_preweights,
)

D = torch.float64
SIGMAS = (0.05, 0.1, 0.2)


def test_omt_is_zero_on_the_largest_gaussian_and_one_on_the_smallest():
    h = (0.1, 0.1)
    shape = (1, 3, 11, 11)
    on_largest = torch.zeros(shape, dtype=D)
    on_largest[:, 2] = 1
    on_smallest = torch.zeros(shape, dtype=D)
    on_smallest[:, 0] = 1
    area = 11 * 11 * 0.01
    assert omt_penalty(on_largest, SIGMAS, 1.0, h).item() == pytest.approx(0.0)
    assert omt_penalty(on_smallest, SIGMAS, 1.0, h).item() == pytest.approx(area)
    mid = torch.zeros(shape, dtype=D)
    mid[:, 1] = 1
    expected = area * (math.log(2) / math.log(4)) ** 2
    assert omt_penalty(mid, SIGMAS, 2.0, h).item() == pytest.approx(expected)


def test_range_penalty_and_schedule():
    w = torch.full((1, 3, 4, 5), 0.5, dtype=D)
    assert range_penalty(w, w, (0.1, 0.1)).item() == 0.0
    assert range_penalty(w + 0.1, w, (0.1, 0.1)).item() == pytest.approx(3 * 20 * 0.01 * 0.01)
    K = 10.0
    assert decay(0, K) == pytest.approx(K / (K + 1))
    assert decay(50, K) == pytest.approx(K / (K + math.exp(5)))
    lam_r, lam_o = penalty_weights(30, K, 10.0, 0.05)
    assert lam_r == pytest.approx(10 * decay(30, K)) and lam_o == pytest.approx(0.05 * (1 - decay(30, K)))
    assert decay(1e6, K) == pytest.approx(0.0)  # no overflow


def test_preweights_are_normalised_and_invertible():
    z = torch.randn(2, 4, 6, 5, dtype=D)
    h = preweights_from_logits(z)
    assert (h >= 0).all() and torch.allclose(h.pow(2).sum(1), torch.ones(2, 6, 5, dtype=D))
    assert torch.allclose(preweights_from_logits(logits_from_preweights(h)), h, atol=1e-6)
    c = constant_preweights((0.1, 0.3, 0.6), (3, 4))
    assert torch.allclose(c[0, :, 0, 0].pow(2), torch.tensor([0.1, 0.3, 0.6]))
    r = resize_preweights(torch.cat([c, c.flip(1)], dim=3), (5, 9))
    assert torch.allclose(r.pow(2).sum(1), torch.ones(1, 5, 9), atol=1e-6)


def test_preweights_from_regions_and_bad_labels():
    regions = torch.tensor([[0, 1], [1, 0]])
    h = preweights_from_regions(regions, ((0, 0, 1), (0.2, 0.8, 0)))
    assert torch.allclose(h[0, :, 0, 1].pow(2), torch.tensor([0.2, 0.8, 0.0]))
    assert torch.allclose(h[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        preweights_from_regions(torch.tensor([[0, 2]]), ((0, 0, 1), (0.2, 0.8, 0)))
