"""Configuration: strict keys, validation, round trips, presets."""

import json

import pytest

from rdmm_pipelines.config import ConfigError, OptimizerConfig, RegistrationConfig
from rdmm_pipelines.presets import PRESETS, get_preset


def test_round_trip_through_json():
    cfg = get_preset("synthetic-predefined", "rdmm")
    again = RegistrationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("data,match", [
    ({"modle": "rdmm"}, "unknown configuration key.*modle"),
    ({"optimizer": {"scale": [1.0]}}, "optimizer.scale"),
    ({"kernel": {"sigmas": [0.1, 0.05], "weights": [0.5, 0.5]}}, "increasing"),
    ({"kernel": {"sigmas": [0.1, 0.2], "weights": [0.5, 0.6]}}, "sum to 1"),
    ({"model": "syn"}, "model must be one of"),
    ({"integrator": {"method": "rk4", "adjoint": True}}, "adaptive"),
    ({"optimizer": {"scales": [0.5, 0.25, 1.0], "iterations": [1, 1, 1]}}, "increase"),
    ({"optimizer": {"iterations": [1, 2]}}, "one non-negative integer per scale"),
    ({"regional": {"source": "learnt"}}, "regional.source"),
    ({"regional": {"source": "predefined"}}, "region_weights"),
    ({"similarity": {"name": "nmi"}}, "similarity.name"),
    ({"regularity_weight": -1}, "regularity_weight"),
])
def test_bad_configurations_are_rejected_with_the_key_named(data, match):
    with pytest.raises(ConfigError, match=match):
        RegistrationConfig.from_dict(data)


def test_frozen():
    cfg = RegistrationConfig()
    with pytest.raises(Exception):
        cfg.model = "lddmm"  # type: ignore[misc]
    assert cfg.replace(model="lddmm").model == "lddmm"
    with pytest.raises(ConfigError):
        OptimizerConfig(scales=(1.0,), iterations=(-1,))


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("model", ["vsvf", "lddmm", "rdmm"])
def test_every_preset_is_valid_for_every_model(name, model):
    cfg = get_preset(name, model)
    assert cfg.model == model
    assert RegistrationConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_settings():
    c = get_preset("lung-predefined")
    assert c.kernel.sigmas == (0.04, 0.06, 0.08, 0.2)
    assert c.regional.region_weights[1] == (0.1, 0.4, 0.5, 0.0)
    k = get_preset("knee-optimized")
    assert (k.regional.c_range, k.regional.c_omt, k.regional.decay_k, k.regional.smoothing_sigma) == (1.0, 0.25, 6.0, 0.06)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")
