"""The defaults that depend on the image's dimension: "auto" iterations and preconditioner."""

import json

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, RegistrationConfig, get_preset, register
from rdmm_pipelines.config import AUTO_FINEST_3D, AUTO_FLOOR_3D, AUTO_ITERATIONS, ConfigError


def test_auto_resolves_by_dimension():
    o = OptimizerConfig()
    assert o.iterations == "auto" and o.preconditioner_floor == "auto"
    two, three = o.resolved(2), o.resolved(3)
    assert two.iterations == (AUTO_ITERATIONS,) * 3 == (30, 30, 30) and two.preconditioner_floor == 0.0
    assert three.iterations == (30, 30, AUTO_FINEST_3D) == (30, 30, 5) and three.preconditioner_floor == AUTO_FLOOR_3D
    # the rule follows the number of scales; one scale in 3D keeps its full budget
    assert OptimizerConfig(scales=(0.5, 1.0)).resolved(3).iterations == (30, 5)
    assert OptimizerConfig(scales=(1.0,)).resolved(3).iterations == (30,)
    # explicit values are kept as given, in either dimension
    mine = OptimizerConfig(iterations=(3, 2, 1), preconditioner_floor=0.01)
    assert mine.resolved(3) == mine == mine.resolved(2)
    assert OptimizerConfig(preconditioner_floor=0.0).resolved(3).preconditioner_floor == 0.0


def test_the_brain_preset_states_the_3d_defaults():
    for model in ("lddmm", "rdmm", "vsvf"):
        assert get_preset("brain", model).optimizer == get_preset("default", model).optimizer.resolved(3)


def test_auto_round_trips_and_bad_values_are_refused():
    cfg = RegistrationConfig()
    again = RegistrationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.optimizer.iterations == "auto"
    for bad in ("all", (30, 30), (30, -1, 5), "30"):
        with pytest.raises(ConfigError, match="optimizer.iterations"):
            OptimizerConfig(iterations=bad)
    for bad in ("on", -1.0, True):
        with pytest.raises(ConfigError, match="optimizer.preconditioner_floor"):
            OptimizerConfig(preconditioner_floor=bad)


def _blobs(shape, shift):
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=torch.float32) for n in shape], indexing="ij")
    r2 = sum((a - (shift if k == 0 else 0.0)) ** 2 for k, a in enumerate(axes))
    return torch.exp(-r2 / 0.18)[None]


@pytest.mark.parametrize("shape", [(24, 20, 16), (24, 20)])
def test_a_registration_records_the_resolved_values(shape):
    """register() resolves "auto" for its images: the recorded configuration and the scales run
    are the dimension's, and the saved configuration reproduces the run."""
    grid = Grid.from_shape(shape)
    cfg = get_preset("default", "lddmm")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=cfg.optimizer.replace(scales=(0.5, 1.0)))
    r = register(Image(_blobs(shape, 0.0), grid), Image(_blobs(shape, 0.15), grid), config=cfg, device="cpu")
    want = (30, 5) if len(shape) == 3 else (30, 30)
    assert r.config.optimizer.iterations == want
    assert r.config.optimizer.preconditioner_floor == (1e-3 if len(shape) == 3 else 0.0)
    assert [s["max_iterations"] for s in r.scales] == list(want)
    assert r.scales[-1]["iterations"] <= want[-1]
