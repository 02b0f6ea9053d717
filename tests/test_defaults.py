"""The defaults a user gets: the stopping rule, the threads, the kernel's stretch to the map grid."""

import json
import os

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, register
from rdmm_pipelines.config import ConfigError, KernelConfig
from rdmm_pipelines.core.gaussian import gaussian_filter
from rdmm_pipelines.core.interpolation import identity_map, sample_voxel
from rdmm_pipelines.optim.lbfgs import minimize
from rdmm_pipelines.registration import kernel_sigmas
from rdmm_pipelines.threads import (
    THREAD_VARIABLES,
    VOXELS_PER_THREAD,
    available_cpus,
    registration_threads,
    thread_limits,
    threads_per_job,
)

D = torch.float64


# ------------------------------------------------------------------ the stopping rule
def _evaluate(fn, x):
    def evaluate(k):
        f = fn(x)
        f.backward()
        return f

    return evaluate


def test_converged_quadratic_stops_early_with_the_reason():
    x = torch.full((20,), 3.0, dtype=D, requires_grad=True)
    r = minimize(_evaluate(lambda v: ((v - 1) ** 2).sum(), x), [x], max_iter=100, window=5,
                 relative_decrease=1e-3, relative_gradient=1e-6)
    assert r.iterations < 10 and r.reason.startswith("converged")


def test_steady_progress_is_not_stopped():
    """Rosenbrock from far away: the objective keeps falling by more than 0.1 % per 5 iterations."""
    x = torch.full((10,), -1.0, dtype=D, requires_grad=True)
    r = minimize(_evaluate(lambda v: (100 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2).sum(), x), [x],
                 max_iter=15, max_evals=500, window=5, relative_decrease=1e-3, relative_gradient=1e-6)
    assert r.iterations == 15 and r.reason == "max_iter"


def test_without_a_window_every_iteration_runs():
    x = torch.full((20,), 3.0, dtype=D, requires_grad=True)
    r = minimize(_evaluate(lambda v: ((v - 1) ** 2).sum() + 1.0, x), [x], max_iter=30, relative_decrease=1.0,
                 relative_gradient=1.0)
    assert not r.reason.startswith("converged")  # window = 0: the tolerances are not consulted


def _blob(shift: float, n: int = 48) -> torch.Tensor:
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    c = n / 2
    return torch.exp(-(((y - c - shift) / 6) ** 2 + ((x - c) / 9) ** 2))[None]


def _texture_pair(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture and the same texture under a smooth warp of up to 4 pixels: many
    features to match, so the objective keeps falling for many iterations."""
    g = torch.Generator().manual_seed(0)
    tex = gaussian_filter(torch.randn(1, 1, n, n, generator=g, dtype=D), (1.0, 1.0), (2.0,))[:, 0]
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    u = gaussian_filter(torch.randn(1, 2, n, n, generator=g, dtype=D), (1.0, 1.0), (6.0,))[:, 0]
    u = u * (4.0 / u.abs().max())
    moving = sample_voxel(tex, identity_map((n, n), (1.0, 1.0), dtype=D) + u)[0]
    return tex[0].float(), moving.float()


def _register(fixed: torch.Tensor, moving: torch.Tensor, iterations: int = 30):
    cfg = get_preset("default", "lddmm")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(iterations, iterations)))
    grid = Grid.from_shape(tuple(fixed.shape[1:]))
    return register(Image(fixed, grid), Image(moving, grid), config=cfg, device="cpu")


@pytest.fixture(scope="module")
def easy_and_hard():
    return _register(_blob(0.0), _blob(0.3)), _register(*_texture_pair())


def test_an_easy_pair_stops_early_and_a_hard_one_continues(easy_and_hard, tmp_path):
    easy, hard = easy_and_hard
    assert all(s["iterations"] < s["max_iterations"] for s in easy.scales), easy.scales
    assert all(s["stopped"].startswith("converged") for s in easy.scales), easy.scales
    assert all(s["iterations"] == s["max_iterations"] == 30 and s["stopped"] == "max_iter" for s in hard.scales)
    assert sum(s["evaluations"] for s in easy.scales) == easy.evaluations
    record = json.loads(easy.save(tmp_path / "easy")["record"].read_text())
    assert [s["scale"] for s in record["scales"]] == [0.5, 1.0]
    assert {"iterations", "evaluations", "max_iterations", "seconds", "stopped"} <= set(record["scales"][0])


def test_the_stopping_rule_is_validated():
    with pytest.raises(ConfigError, match="optimizer.window"):
        OptimizerConfig(window=-1)
    with pytest.raises(ConfigError, match="optimizer.tolerance"):
        OptimizerConfig(tolerance=float("nan"))


# ------------------------------------------------------------------ threads
def test_registration_threads_follow_the_image_size():
    assert registration_threads(160 * 384, limit=16) == 1  # a 2D slice: one thread
    assert registration_threads(80 * 96 * 112, limit=16) == 1  # a 2 mm brain: one thread (measured)
    big = 160 * 192 * 224
    assert registration_threads(big, limit=16) == max(1, min(big // VOXELS_PER_THREAD, available_cpus()))
    assert registration_threads(10**9, limit=1) == 1
    with pytest.raises(ValueError):
        registration_threads(0)


def test_threads_per_job_divide_the_cpus():
    cpus = available_cpus()
    assert threads_per_job(None) == 1
    assert threads_per_job(1) == cpus
    assert threads_per_job(cpus * 4) == 1
    with pytest.raises(ValueError):
        threads_per_job(0)


def test_thread_limits_restore_torch_and_leave_the_environment_when_asked(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with thread_limits(1, environment=False) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert all(k not in os.environ or k != "OMP_NUM_THREADS" for k in THREAD_VARIABLES)
    assert torch.get_num_threads() == before


def test_register_runs_a_small_image_on_one_thread_and_restores_the_count(easy_and_hard):
    easy, _ = easy_and_hard
    assert easy.device == "cpu (1 threads)"
    # the conftest runs every test on one thread; a registration given more restores it after
    torch.set_num_threads(1)
    grid = Grid.from_shape((16, 16))
    cfg = get_preset("quick", "lddmm")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,)))
    r = register(Image(_blob(0.0, 16), grid), Image(_blob(1.0, 16), grid), config=cfg, device="cpu", threads=2)
    assert r.device == "cpu (2 threads)" and torch.get_num_threads() == 1


# ------------------------------------------------------------------ the kernel on the map grid
def test_the_narrowest_sigma_is_raised_to_two_map_voxels_on_a_coarse_grid_only():
    cfg = get_preset("default", "lddmm")  # sigma = 0.01 .. 0.16 of the longest side, map at half resolution
    assert kernel_sigmas(cfg, Grid.from_shape((1000, 1000))) == pytest.approx(cfg.kernel.sigmas)  # 2 h = 0.004
    coarse = kernel_sigmas(cfg, Grid.from_shape((40, 40, 40)))  # map 20^3: 2 h = 2/19
    assert coarse[0] == pytest.approx(2 / 19) and coarse[-1] == pytest.approx(0.16)
    ratios = [b / a for a, b in zip(coarse, coarse[1:])]
    assert ratios == pytest.approx([ratios[0]] * 4) and ratios[0] > 1  # still geometric, increasing
    off = cfg.replace(kernel=cfg.kernel.replace(min_voxels=0.0))
    assert kernel_sigmas(off, Grid.from_shape((40, 40, 40))) == pytest.approx(cfg.kernel.sigmas)
    tiny = kernel_sigmas(cfg, Grid.from_shape((8, 8)))  # map 8^2 (min_map_size): floor 2/7 above the widest
    assert tiny == pytest.approx(tuple(s * (2 / 7) / 0.01 for s in cfg.kernel.sigmas))
    mm = cfg.replace(kernel=KernelConfig(sigmas=(5.0, 10.0), weights=(0.5, 0.5), units="mm", min_voxels=0.0))
    assert kernel_sigmas(mm, Grid.from_shape((101, 51), spacing=(2.0, 2.0))) == pytest.approx((5 / 200, 10 / 200))


def test_registration_json_gives_the_sigmas_used_in_mm(easy_and_hard, tmp_path):
    easy, _ = easy_and_hard
    record = json.loads(easy.save(tmp_path / "r")["record"].read_text())
    sig = record["kernel_sigmas_mm"]
    # 48 px, map 24 px (h = 47/23 mm): the narrowest is raised to 2 map voxels, the widest kept
    assert sig[0] == pytest.approx(2 * 47 / 23, rel=1e-4)
    assert sig[-1] == pytest.approx(0.16 * 47, rel=1e-4)
    assert sig == sorted(sig) and len(sig) == 5


def test_a_bad_thread_count_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="threads must be"):
        register(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), "lddmm", threads=-1)
    from rdmm_pipelines.cli import main

    assert main(["register", "a.nii.gz", "b.nii.gz", "--out", str(tmp_path / "o"), "--threads", "-2"]) == 2
    assert "threads must be" in capsys.readouterr().err


def test_deterministic_reruns_are_bit_identical_and_recorded(tmp_path):
    from rdmm_pipelines.synthetic import make_phantom_3d

    p = make_phantom_3d(3, (20, 20, 20))
    grid = Grid.from_shape((20, 20, 20), spacing=p.spacing)
    cfg = get_preset("default", "lddmm")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(4, 4)))
    runs = [register(Image(p.target, grid), Image(p.source, grid), config=cfg, device="cpu", deterministic=True)
            for _ in range(2)]
    assert torch.equal(runs[0].phi, runs[1].phi)
    assert runs[0].device == "cpu (1 threads)" and runs[0].deterministic
    assert not torch.are_deterministic_algorithms_enabled()  # restored
    record = json.loads(runs[0].save(tmp_path / "r")["record"].read_text())
    assert record["deterministic"] is True
    with pytest.raises(ValueError, match="one thread"):
        register(Image(p.target, grid), Image(p.source, grid), config=cfg, deterministic=True, threads=2)
