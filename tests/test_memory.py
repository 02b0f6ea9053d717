"""What an evaluation keeps for backward, the prediction for the next scale, and the automatic
checkpointing of the time steps when the prediction does not fit."""

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, register
from rdmm_pipelines import memory
from rdmm_pipelines.config import ConfigError, IntegratorConfig
from rdmm_pipelines.memory import CheckpointPlanner, available_bytes, predicted_bytes, saved_storages


def test_the_graph_walk_counts_each_saved_storage_once():
    x = torch.randn(1000, requires_grad=True)
    y = (x * x).sum()  # mul saves x twice: one storage
    assert sum(saved_storages([y]).values()) == x.untyped_storage().nbytes() == 4000
    z = torch.exp(x)  # exp saves its output
    w = (z * 3.0).sum()  # a product by a number saves only the (0-dim) number
    assert 4000 <= sum(saved_storages([w]).values()) <= 4008
    assert saved_storages([z.detach()]) == {}
    # what the shooting keeps, apart from what the rest of an objective keeps on top of it
    a = torch.exp(x)
    b = torch.exp(a) * a
    inner, whole = saved_storages([b]), saved_storages([(b * b).sum()])
    assert sum(inner.values()) == 2 * 4000  # a (saved by exp and by the product: one storage) and exp(a)
    assert sum(v for k, v in whole.items() if k not in inner) == 4000  # b, saved by b * b


def test_custom_functions_are_read_too():
    """The EPDiff node (a custom autograd Function) keeps m and v; a linear operator keeps nothing."""
    from rdmm_pipelines.core.linear import apply_linear
    from rdmm_pipelines.models.transport import epdiff

    m = torch.randn(1, 2, 8, 8, requires_grad=True)
    v = torch.randn(1, 2, 8, 8, requires_grad=True)
    kept = saved_storages([epdiff(m, v, (1.0, 1.0))])
    assert {(m.untyped_storage().data_ptr(), "cpu"), (v.untyped_storage().data_ptr(), "cpu")} <= set(kept)
    assert saved_storages([apply_linear(m, lambda t: 2.0 * t)]) == {}


def test_the_prediction_scales_the_grids_and_the_steps():
    # a 2x finer map in 3D (8x voxels) at the same speed in physical units: twice the voxels per
    # unit time, so Courant 0.9 over 6 steps needs ceil(0.9 * 6 * 2 / 1) = 11 steps there
    need = predicted_bytes(shooting=600, similarity=100, steps=6, courant=0.9, map_ratio=8, image_ratio=8,
                           refinement=2.0, min_steps=5, max_cfl=1.0)
    assert need == 600 * 8 * 11 // 6 + 800
    # slow flows keep the minimum; fixed steps keep theirs
    assert predicted_bytes(600, 0, 5, 0.1, 8, 8, 2.0, 5, 1.0) == 600 * 8
    assert predicted_bytes(600, 0, 10, 3.0, 8, 8, 2.0, 10, None) == 600 * 8


def test_available_memory_is_known_here():
    free = available_bytes("cpu")
    assert free is None or free > 0


def test_the_setting_is_validated():
    for bad in (1, 0, "yes", None):
        with pytest.raises(ConfigError, match="integrator.checkpointed"):
            IntegratorConfig(checkpointed=bad)
    assert IntegratorConfig().checkpointed == "auto"
    assert IntegratorConfig().options()["checkpointed"] is False  # "auto" is decided per scale
    assert IntegratorConfig(checkpointed=True).options()["checkpointed"] is True


def test_the_planner_checkpoints_only_what_would_not_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000)
    plan = CheckpointPlanner("auto", 5, 1.0, torch.device("cpu"))
    assert plan.decide((8, 8), (16, 16), (0.1, 0.1)) == (False, None)  # nothing measured yet
    plan.observe(1000, 100, 5, 0.5, (8, 8), (16, 16), (0.1, 0.1))
    assert plan.decide((8, 8), (16, 16), (0.1, 0.1))[0] is False  # 1100 of 4000
    on, note = plan.decide((32, 32), (64, 64), (0.025, 0.025))  # 16x the voxels, 10 steps: 33 600
    assert on and "checkpointed" in note and "GiB" in note
    assert plan.decide((8, 8), (16, 16), (0.1, 0.1))[0] is True  # stays on
    assert CheckpointPlanner(False, 5, 1.0, torch.device("cpu")).decide((512, 512), (512, 512), (1, 1)) == (False, None)
    assert CheckpointPlanner(True, 5, 1.0, torch.device("cpu")).decide((8, 8), (8, 8), (1, 1)) == (True, None)


def _pair(n: int = 32):
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    fixed = torch.exp(-(((y - 15) / 6) ** 2 + ((x - 16) / 8) ** 2))[None]
    moving = torch.exp(-(((y - 17) / 7) ** 2 + ((x - 15) / 7) ** 2))[None]
    grid = Grid.from_shape((n, n))
    return Image(fixed, grid), Image(moving, grid)


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_short_of_memory_the_finer_scales_are_checkpointed_with_the_same_result(monkeypatch, model):
    fixed, moving = _pair()
    cfg = get_preset("default", model)
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(4, 4), window=0))
    roomy = register(fixed, moving, config=cfg, device="cpu")
    assert [s["checkpointed"] for s in roomy.scales] == [False, False] and not roomy.warnings
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)  # 1 kB free
    tight = register(fixed, moving, config=cfg, device="cpu")
    assert [s["checkpointed"] for s in tight.scales] == [False, True]
    assert any("checkpointed" in w for w in tight.warnings)
    # recomputing a step gives the values it stored: the same optimisation
    assert torch.allclose(tight.map_phi, roomy.map_phi, atol=1e-5)
    never = register(fixed, moving, device="cpu",
                     config=cfg.replace(integrator=cfg.integrator.replace(checkpointed=False)))
    assert [s["checkpointed"] for s in never.scales] == [False, False]


def test_a_control_group_limit_caps_the_free_memory(tmp_path):
    """Inside a container or a SLURM job the limit, not the machine, decides (v2 and v1 layouts)."""
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text("8000000000\n")
    (v2 / "job" / "memory.current").write_text("3000000000\n")
    (tmp_path / "v2.cgroup").write_text("0::/job\n")
    assert memory._cgroup_headroom(v2, tmp_path / "v2.cgroup") == 5_000_000_000
    (v2 / "job" / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(v2, tmp_path / "v2.cgroup") is None
    v1 = tmp_path / "v1"
    (v1 / "memory" / "slurm" / "job_7").mkdir(parents=True)
    (v1 / "memory" / "slurm" / "job_7" / "memory.limit_in_bytes").write_text("4000000000\n")
    (v1 / "memory" / "slurm" / "job_7" / "memory.usage_in_bytes").write_text("1000000000\n")
    (tmp_path / "v1.cgroup").write_text("5:cpu,cpuacct:/slurm\n4:memory:/slurm/job_7\n")
    assert memory._cgroup_headroom(v1, tmp_path / "v1.cgroup") == 3_000_000_000
    assert memory._cgroup_headroom(v1, tmp_path / "missing") is None
