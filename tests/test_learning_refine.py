"""Instance optimisation from a network's prediction (``register_with_network(..., refine=...)``)."""

from __future__ import annotations


import pytest
import torch

from rdmm_pipelines import register
from rdmm_pipelines.config import ConfigError, KernelConfig, RegionalConfig
from rdmm_pipelines.affine import AffineTransform
from rdmm_pipelines.evaluation import dice_per_label, mean_dice
from rdmm_pipelines.learning import NetworkConfig, RegistrationNetwork, register_with_network, synthetic_network_pairs
from rdmm_pipelines.learning.refine import RefineConfig, refine_config
from rdmm_pipelines.optim.initial import InitialConditions
from rdmm_pipelines.similarity import make_similarity
from rdmm_pipelines.spatial import Grid, Image

KERNEL = KernelConfig(sigmas=(0.1, 0.2, 0.3), weights=(0.3, 0.3, 0.4))


def tiny(model: str, **changes) -> RegistrationNetwork:
    cfg = NetworkConfig(model=model, image_shape=(32, 32), features=(8, 16, 16), kernel=KERNEL,
                        regional=RegionalConfig(smoothing_sigma=0.1), **changes)
    torch.manual_seed(0)
    net = RegistrationNetwork(cfg)
    with torch.no_grad():  # a prediction that moves: a constant momentum offset
        net.momentum_net.head.bias.copy_(torch.tensor([0.4, -0.3]))
    return net.eval()


@pytest.fixture(scope="module")
def pair():
    p = synthetic_network_pairs(1, seed=5, size=32)[0]
    grid = Grid.from_shape((32, 32), spacing=(1.5, 1.5))
    return (Image(p.target, grid), Image(p.source, grid),
            Image(p.target_labels[None], grid), Image(p.source_labels[None], grid))


def ncc_loss(result, fixed, moving) -> float:
    sim = make_similarity("ncc", fixed.grid.shape)
    return float(sim(result.apply(moving).data[None].float(), fixed.data[None].float()))


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_the_refinement_starts_exactly_at_the_prediction(model, pair):
    """Zero iterations of the refinement's optimisation give back the network's own map: same
    frame, kernel, grid and pre-weights, so the optimisation really starts from the prediction."""
    fixed, moving, _, _ = pair
    net = tiny(model)
    predicted = register_with_network(fixed, moving, net, device="cpu")
    cfg, first = refine_config(net, RefineConfig())
    cfg = cfg.replace(optimizer=cfg.optimizer.replace(iterations=(0,)))
    start = InitialConditions(m0=predicted.m0, h0=predicted.h0, iteration=first)
    again = register(fixed, moving, config=cfg, affine=AffineTransform.identity(2), device="cpu", initial=start)
    # the start is not changed in place: refining it twice gives the same result
    kept = [t.clone() for t in (start.m0, start.h0) if t is not None]
    runs = [register(fixed, moving, config=cfg.replace(optimizer=cfg.optimizer.replace(iterations=(3,))),
                     affine=AffineTransform.identity(2), device="cpu", initial=start) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(kept, [t for t in (start.m0, start.h0) if t is not None]))
    assert torch.equal(runs[0].m0, runs[1].m0) and not torch.equal(runs[0].m0, start.m0)
    assert float((predicted.phi - identity(fixed)).abs().max()) > 0.01  # the prediction moves
    assert torch.allclose(again.phi, predicted.phi, atol=1e-5)
    if model == "rdmm":
        assert torch.allclose(again.h0, predicted.h0, atol=1e-5)


def identity(fixed):
    from rdmm_pipelines.core.interpolation import identity_map

    return identity_map(fixed.grid.shape, fixed.grid.domain_spacing)


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_refinement_improves_on_the_prediction_and_records_it(model, pair, tmp_path):
    fixed, moving, fixed_labels, moving_labels = pair
    net = tiny(model)
    predicted = register_with_network(fixed, moving, net, device="cpu")
    refined = register_with_network(fixed, moving, net, device="cpu", refine=RefineConfig(iterations=10))
    totals = [r.total for r in refined.history]
    assert 1 <= len(totals) <= 10 and all(b <= a + 1e-9 for a, b in zip(totals, totals[1:]))
    assert ncc_loss(refined, fixed, moving) < ncc_loss(predicted, fixed, moving) - 0.01
    dice = lambda r: mean_dice(dice_per_label(r.apply(moving_labels).data[0], fixed_labels.data[0]))  # noqa: E731
    assert dice(refined) >= dice(predicted) - 0.005
    assert refined.inputs["initial"]["iteration"] == 60 and refined.inputs["refine"] == {"scales": 1, "iterations": 10}
    assert refined.inputs["network"]["model"] == model and "network" in refined.timings
    assert [s["scale"] for s in refined.scales] == [1.0]
    refined.save(tmp_path / "out")
    assert (tmp_path / "out" / "registration.json").is_file()


def test_refinement_refuses_what_it_cannot_start_from(pair):
    fixed, moving, _, _ = pair
    with pytest.raises(ValueError, match="refine_steps"):
        register_with_network(fixed, moving, tiny("lddmm", refine_steps=2), device="cpu", refine=True)
    with pytest.raises(ConfigError, match="refine.scales"):
        RefineConfig(scales=4)
    with pytest.raises(ValueError, match="initial momentum must be"):
        register(fixed, moving, "lddmm", device="cpu", initial=InitialConditions(m0=torch.zeros(1, 3, 8, 8)))
    with pytest.raises(ValueError, match="does not optimise RDMM pre-weights"):
        register(fixed, moving, "lddmm", device="cpu",
                 initial=InitialConditions(m0=torch.zeros(1, 2, 8, 8), h0=torch.ones(1, 5, 8, 8)))
    nan = torch.zeros(1, 2, 8, 8)
    nan[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        register(fixed, moving, "vsvf", device="cpu", initial=InitialConditions(m0=nan))

