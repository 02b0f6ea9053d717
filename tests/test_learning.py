"""Learnt registration: networks, loss, training, checkpoints, prediction."""

from __future__ import annotations

import math

import pytest
import torch

from rdmm_pipelines.config import ConfigError, KernelConfig, RegionalConfig
from rdmm_pipelines.core.interpolation import identity_map
from rdmm_pipelines.learning import (
    CheckpointError,
    NetworkConfig,
    RegistrationNetwork,
    TrainingConfig,
    load_checkpoint,
    register_with_network,
    save_checkpoint,
    synthetic_network_pairs,
    train,
)
from rdmm_pipelines.learning.affine_net import (
    compose_affine,
    identity_affine,
)
from rdmm_pipelines.learning.loss import inverse_consistency
from rdmm_pipelines.learning.unet import UNet
from rdmm_pipelines.spatial import Grid, Image

KERNEL = KernelConfig(sigmas=(0.1, 0.2, 0.3), weights=(0.3, 0.3, 0.4))


def tiny(model: str = "rdmm", shape=(32, 32), **changes) -> NetworkConfig:
    settings = {"features": (8, 16, 16), "kernel": KERNEL, "regional": RegionalConfig(smoothing_sigma=0.1), **changes}
    return NetworkConfig(model=model, image_shape=shape, **settings)


@pytest.fixture(scope="module")
def pairs():
    return synthetic_network_pairs(5, seed=3, size=32)


def test_unet_shapes_and_size_check():
    assert UNet(2, 2, 3, (4, 8, 8), output_level=1)(torch.zeros(1, 2, 16, 24)).shape == (1, 3, 8, 12)
    assert UNet(3, 2, 5, (4, 8), output_level=0)(torch.zeros(2, 2, 8, 6, 4)).shape == (2, 5, 8, 6, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        UNet(2, 2, 3, (4, 8, 8))(torch.zeros(1, 2, 16, 18))


def test_config_rejects_what_a_network_cannot_take():
    with pytest.raises(ConfigError, match="multiple of 4"):
        tiny(shape=(32, 30))
    with pytest.raises(ConfigError, match="unknown configuration key"):
        NetworkConfig.from_dict({"model": "rdmm", "layers": 3})
    with pytest.raises(ConfigError, match="optimized"):
        tiny(regional=RegionalConfig(source="predefined", region_weights=((0, 0, 1), (1, 0, 0))))
    assert NetworkConfig.from_dict(tiny().to_dict()) == tiny()


@pytest.mark.parametrize("model", ["vsvf", "lddmm", "rdmm"])
def test_untrained_network_is_the_identity(model, pairs):
    net = RegistrationNetwork(tiny(model, affine_steps=2))
    p = pairs[0]
    pred = net(p.source[None], p.target[None], p.spacing)
    ident = identity_map((32, 32), p.spacing)
    assert torch.allclose(pred.full_map, ident, atol=1e-6)
    assert torch.allclose(pred.warped, p.source[None], atol=1e-5)
    if model == "rdmm":  # h0 starts at the kernel's weights: h0^2 = omega
        h2 = pred.steps[0].h0.pow(2)
        assert torch.allclose(h2, torch.tensor(KERNEL.normalized_weights).view(1, 3, 1, 1).expand_as(h2), atol=1e-6)


def test_3d_network_runs_and_backpropagates():
    net = RegistrationNetwork(tiny("rdmm", shape=(16, 16, 8), features=(4, 8)))
    torch.manual_seed(0)
    with torch.no_grad():
        net.momentum_net.head.bias.normal_(0, 0.05)
    src, tgt = torch.rand(1, 1, 16, 16, 8), torch.rand(1, 1, 16, 16, 8)
    pred = net(src, tgt, (1 / 15,) * 3)
    assert pred.phi.shape == (1, 3, 16, 16, 8) and pred.map_phi.shape == (1, 3, 8, 8, 4)
    pred.warped.sum().backward()
    assert net.momentum_net.head.weight.grad.abs().sum() > 0


def test_inverse_consistency_is_zero_for_inverse_maps_only():
    h = (1 / 31, 1 / 31)
    ident = identity_map((32, 32), h)
    assert float(inverse_consistency(ident, ident, h)) == pytest.approx(0, abs=1e-12)
    shifted = ident + 0.02
    back = ident - 0.02
    # inverse shifts are consistent except where the border clamps them (one voxel row per side)
    assert float(inverse_consistency(shifted, back, h)) < 0.01 * float(inverse_consistency(shifted, shifted, h))


def test_affine_composition():
    a = identity_affine(1, 2)
    a[0, :, 2] = torch.tensor([0.1, -0.2])
    b = identity_affine(1, 2)
    b[0, :, :2] = torch.tensor([[1.1, 0.2], [0.0, 0.9]])
    x = torch.tensor([0.3, 0.7])
    ab = compose_affine(a, b)[0]
    expect = a[0, :, :2] @ (b[0, :, :2] @ x + b[0, :, 2]) + a[0, :, 2]
    assert torch.allclose(ab[:, :2] @ x + ab[:, 2], expect)


def test_result_applies_the_networks_own_warp(pairs):
    """The world-space result (affine + deformation) warps the moving image exactly as the network did."""
    net = RegistrationNetwork(tiny("lddmm", affine_steps=1))
    torch.manual_seed(1)
    with torch.no_grad():
        net.momentum_net.head.bias.copy_(torch.tensor([0.3, -0.2]))
        net.affine_net.encoder.fc.bias.copy_(torch.tensor([0.05, 0.02, -0.03, 0.04, 0.03, -0.02]))
    p = pairs[1]
    grid = Grid.from_shape((32, 32), spacing=(1.5, 1.5))
    fixed, moving = Image(p.target, grid), Image(p.source, grid)
    result = register_with_network(fixed, moving, net, device="cpu")
    pred = net(p.source[None], p.target[None], tuple(grid.domain_spacing))
    assert result.affine is not None and not result.affine.allclose(type(result.affine).identity(2))
    warped = result.apply(moving).data
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(warped[inner], pred.warped[0][inner], atol=1e-4)


def test_training_lowers_the_loss_and_the_checkpoint_reloads_identically(pairs, tmp_path):
    run = train(tiny("rdmm"), TrainingConfig(epochs=12, learning_rate=3e-3, validation_fraction=0.0, seed=0),
                pairs[:2], tmp_path / "run", progress=False, device="cpu")
    losses = [h["train_total"] for h in run.history]
    assert max(losses[-3:]) < 0.85 * losses[0], losses  # measured: 0.56 -> 0.45
    for name in ("last.pt", "best.pt", "training.json", "history.csv", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    p = pairs[4]
    again = load_checkpoint(tmp_path / "run" / "best.pt", model="rdmm", ndim=2)
    with torch.no_grad():
        a = run.network(p.source[None], p.target[None], p.spacing)
        b = again.network(p.source[None], p.target[None], p.spacing)
    assert torch.equal(a.phi, b.phi) and torch.equal(a.steps[0].h0, b.steps[0].h0)
    assert not torch.allclose(a.phi, identity_map((32, 32), p.spacing))


def test_training_resumes_and_refuses_to_overwrite(pairs, tmp_path):
    cfg = tiny("vsvf")
    first = TrainingConfig(epochs=1, validation_fraction=0.25, seed=2)
    run = train(cfg, first, pairs, tmp_path, progress=False, device="cpu")
    assert len(run.history) == 1 and math.isfinite(run.history[0]["val_dice"])
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, first, pairs, tmp_path, progress=False, device="cpu")
    more = train(cfg, first.replace(epochs=2), pairs, tmp_path, resume=True, progress=False, device="cpu")
    assert [h["epoch"] for h in more.history] == [1, 2]
    assert more.history[0] == run.history[0]
    with pytest.raises(CheckpointError, match="network configuration differs"):
        train(tiny("lddmm"), first.replace(epochs=3), pairs, tmp_path, resume=True, progress=False, device="cpu")


def test_bad_checkpoints_get_clear_errors(tmp_path, pairs):
    net = RegistrationNetwork(tiny("rdmm"))
    good = save_checkpoint(tmp_path / "rdmm.pt", net, epoch=0)
    with pytest.raises(CheckpointError, match="rdmm network, not lddmm"):
        load_checkpoint(good, model="lddmm")
    with pytest.raises(CheckpointError, match="2D network"):
        load_checkpoint(good, ndim=3)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(junk)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an rdmm_pipelines network checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    data = torch.load(good, weights_only=True)
    data["network"]["features"] = [8, 16, 32]
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    p = pairs[0]
    big = Image(torch.rand(1, 40, 40), Grid.from_shape((40, 40)))
    with pytest.raises(ValueError, match=r"does not fit the network's input size \(32, 32\)"):
        register_with_network(big, big, good, device="cpu")
    result = register_with_network(big, big, good, resample=True, device="cpu")
    assert result.phi.shape == (1, 2, 40, 40) and result.warnings
    with pytest.raises(ValueError, match="does not fit this 2D network"):
        net(p.source[None, :, :16], p.target[None, :, :16], p.spacing)


def test_version_1_checkpoints_keep_the_numerics_they_were_trained_with(tmp_path):
    """A checkpoint written before the border taper and the composed map loads with those off."""
    good = save_checkpoint(tmp_path / "rdmm.pt", RegistrationNetwork(tiny("rdmm")), epoch=0)
    data = torch.load(good, weights_only=True)
    assert load_checkpoint(good).network.cfg.kernel.border > 0  # a current one: today's numerics
    data["format_version"] = 1
    del data["network"]["kernel"]["border"]
    for key in ("map_update", "max_cfl", "max_steps"):
        del data["network"]["integrator"][key]
    torch.save(data, tmp_path / "v1.pt")
    cfg = load_checkpoint(tmp_path / "v1.pt").network.cfg
    assert cfg.kernel.border == 0.0
    assert cfg.integrator.map_update == "advection" and cfg.integrator.max_cfl == 0.0
    data["format_version"] = 7
    torch.save(data, tmp_path / "v7.pt")
    with pytest.raises(CheckpointError, match="format version 7"):
        load_checkpoint(tmp_path / "v7.pt")
