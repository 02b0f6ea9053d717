"""Progress that tells the truth: stages weighted by their cost, a remaining time from measured
rates, a rough time estimate before a long run, a command-line bar that appears only once the
inputs are checked, and cohort progress in pairs and registrations."""

import io
import logging
import math

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, register, save_image
from rdmm_pipelines.affine import AffineIterationRecord
from rdmm_pipelines.optim.multiscale import IterationRecord
from rdmm_pipelines.progress import (
    LONG_RUN_SECONDS,
    RegistrationProgress,
    Stage,
    TimeEstimate,
    estimate_seconds,
    format_duration,
    plan_stages,
    thread_factor,
)

MODELS = ("vsvf", "lddmm", "rdmm")


# ------------------------------------------------------------------ the plan and the estimate
def test_the_plan_weights_the_finest_scale_by_its_cost():
    stages = plan_stages((80, 96, 112), get_preset("default", "lddmm"))
    assert [s.kind for s in stages] == ["affine"] * 3 + ["deformable"] * 3 + ["final"]
    # the affine's finest level keeps within affine.max_voxels (2^18): 0.671 of 80x96x112
    assert [s.label for s in stages] == ["affine 0.25", "affine 0.5", "affine 0.671", "scale 0.25", "scale 0.5",
                                         "scale 1", "final shot"]
    coarse, mid, fine = stages[3:6]
    assert (coarse.iterations, mid.iterations, fine.iterations) == (30, 30, 5)  # the 3D defaults
    # measured on this brain (one thread, LDDMM): 0.10, 0.12 and 1.2-1.5 s per iteration
    assert 8 < fine.cost / coarse.cost < 20 and mid.cost > coarse.cost
    # the finest scale has the most work of the deformable stages, and in 2D most of all
    assert fine.work > max(coarse.work, mid.work)
    knee = plan_stages((160, 384), get_preset("default", "lddmm"))
    assert [s.iterations for s in knee if s.kind == "deformable"] == [30, 30, 30]
    total = sum(s.work for s in knee)
    assert sum(s.work for s in knee if s.kind == "affine") < 0.15 * total
    assert [s for s in knee if s.kind == "deformable"][-1].work > 0.4 * total  # measured: 59 %
    # no affine stage when it is given or disabled; a scale with no iterations is left out
    assert all(s.kind != "affine" for s in plan_stages((80, 96, 112), get_preset("default", "lddmm"), affine=False))
    cfg = get_preset("default", "lddmm").replace(optimizer=OptimizerConfig(iterations=(0, 10, 5)))
    assert [s.scale for s in plan_stages((64, 64), cfg) if s.kind == "deformable"] == [0.5, 1.0]


@pytest.mark.parametrize("shape, model, threads, measured", [
    ((160, 384), "lddmm", 1, 7.8),      # OAI knee slice (mean of 12 pairs)
    ((160, 384), "rdmm", 1, 30.1),
    ((160, 384), "vsvf", 1, 2.1),
    ((80, 96, 112), "lddmm", 1, 16.5),   # MNI152 -> Colin27 at 2 mm (the 3D defaults, 2026-12-07)
    ((80, 96, 112), "rdmm", 1, 39.6),
    ((80, 96, 112), "vsvf", 1, 7.7),
    ((160, 192, 224), "lddmm", 2, 231.2),  # at 1 mm, two threads
    ((160, 192, 224), "vsvf", 2, 106.3),
])
def test_the_estimate_is_within_a_factor_of_two_of_the_measured_times(shape, model, threads, measured):
    """The defaults, on the 2-core development CPU (docs/benchmarks.md)."""
    seconds = estimate_seconds(shape, get_preset("default", model), threads)
    assert measured / 2 < seconds < measured * 2, seconds


def test_the_estimate_grows_with_the_voxels_and_orders_the_models():
    for shapes in ([(32, 32), (64, 64), (96, 128), (160, 160), (256, 256), (512, 512)],
                   [(32, 32, 32), (48, 64, 48), (91, 109, 91), (128, 128, 128), (182, 218, 182), (256, 256, 256)]):
        for model in MODELS:
            cfg = get_preset("default", model)
            times = [estimate_seconds(s, cfg) for s in shapes]
            assert times == sorted(times) and len(set(times)) == len(times), (model, times)
        for s in shapes:
            vsvf, lddmm, rdmm = (estimate_seconds(s, get_preset("default", m)) for m in MODELS)
            assert vsvf < lddmm < rdmm, s


def test_what_the_estimate_says_shortens_a_run_does():
    shape, cfg = (182, 218, 182), get_preset("default", "lddmm")
    base = estimate_seconds(shape, cfg, threads=1)
    assert base > LONG_RUN_SECONDS  # the 1 mm brain of the issue is announced
    assert estimate_seconds(shape, get_preset("quick", "lddmm"), threads=1) < base
    assert estimate_seconds(shape, cfg.replace(optimizer=cfg.optimizer.replace(iterations=(30, 30, 3)))) < base
    assert estimate_seconds(shape, cfg.replace(optimizer=cfg.optimizer.replace(map_low_res_factor=0.25))) < base
    assert estimate_seconds(shape, cfg, threads=4) < estimate_seconds(shape, cfg, threads=2) < base
    assert estimate_seconds(shape, cfg, affine=False) < base
    assert estimate_seconds((160, 160), cfg) < 30  # a slice is not announced
    assert thread_factor(1) == 1.0 and 0.6 < thread_factor(2) < 0.8
    with pytest.raises(ValueError):
        thread_factor(0)
    with pytest.raises(ValueError):
        plan_stages((10,), cfg)


def test_the_long_run_message_names_the_options_and_says_it_is_rough():
    est = TimeEstimate(seconds=725.0, shape=(182, 218, 182), model="lddmm", threads=2, cpus=8)
    assert est.is_long() and not TimeEstimate(60.0, (64, 64), "lddmm", 1, 1).is_long()
    cli, api = est.message(cli=True), est.message()
    assert "12 min 05 s" in cli and "182x218x182" in cli and "rough estimate" in cli
    for option in ("--preset quick", "--iterations", "--map-resolution", "--threads", "--device cuda"):
        assert option in cli, option
    for option in ("preset='quick'", "optimizer.iterations", "map_low_res_factor", "threads", "device='cuda'"):
        assert option in api, option
    # no advice to add threads a machine does not have
    assert "--threads" not in TimeEstimate(725.0, (182, 218, 182), "lddmm", 2, 2).message(cli=True)


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 42, 65, 3599, 3600 * 2 + 60 * 5)] == [
        "0 s", "42 s", "1 min 05 s", "59 min 59 s", "2 h 05 min"]
    assert format_duration(math.inf) == "?"


# ------------------------------------------------------------------ the tracker, with a fake clock
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _deformable(scale: float) -> IterationRecord:
    return IterationRecord(scale=scale, iteration=0, total=1.0, similarity=1.0, regularity=0.0, omt=0.0,
                           range=0.0, seconds=0.0)


def _affine(scale: float) -> AffineIterationRecord:
    return AffineIterationRecord(scale=scale, iteration=0, total=0.5, seconds=0.0)


PLAN = (Stage("affine", 0.5, 10, 0.01), Stage("affine", 1.0, 10, 0.04),
        Stage("deformable", 0.25, 10, 0.1), Stage("deformable", 0.5, 10, 0.2), Stage("deformable", 1.0, 10, 2.0),
        Stage("final", 1.0, 1, 4.0))


def _run(tracker: RegistrationProgress, clock: Clock, schedule, speed: float = 1.0) -> list:
    """Feed ``(stage index, iterations)`` to the tracker, each iteration taking ``cost * speed``."""
    states = []
    tracker.on_update = states.append
    for index, iterations in schedule:
        stage = tracker.stages[index]
        for _ in range(iterations):
            clock.now += stage.cost * speed
            tracker(_affine(stage.scale) if stage.kind == "affine" else _deformable(stage.scale), 30)
    return states


def test_the_fraction_is_weighted_work_and_a_scale_that_stops_early_gives_up_its_budget():
    clock = Clock()
    tracker = RegistrationProgress(clock=clock)
    tracker.start(PLAN)
    total = sum(s.work for s in PLAN)
    states = _run(tracker, clock, [(0, 10), (1, 10), (2, 10), (3, 10)])
    # 40 of 51 iterations, but less than a fifth of the work: the finest scale is ahead
    assert states[-1].fraction == pytest.approx((0.1 + 0.4 + 1 + 2) / total)
    assert states[-1].fraction < 0.2 and states[-1].stage.label == "scale 0.5"
    # the affine level at full resolution converges after 3 of its 10 iterations, and the
    # coarse scale after 4: their budgets leave the plan, the fraction never goes back
    clock = Clock()
    tracker = RegistrationProgress(clock=clock)
    tracker.start(PLAN)
    states = _run(tracker, clock, [(0, 10), (1, 3), (2, 4), (3, 10), (4, 10)])
    fractions = [s.fraction for s in states]
    assert fractions == sorted(fractions)
    done = 0.1 + 3 * 0.04 + 4 * 0.1 + 2 + 20
    assert fractions[-1] == pytest.approx(done / (done + 4.0))  # the final shot is left
    tracker.finish()
    assert tracker.state.finished and tracker.state.fraction == 1.0 and tracker.state.remaining == 0.0
    assert tracker.state.stage.label == "final shot"


def test_the_remaining_time_comes_from_the_measured_rate_of_the_work():
    """On a machine 3x slower than the calibration, once the finest scale has run a few
    iterations the time left is the true time left; before anything ran, the estimate."""
    clock = Clock()
    tracker = RegistrationProgress(clock=clock)
    estimate = sum(s.work for s in PLAN)
    tracker.start(PLAN, estimate=estimate)
    assert tracker.remaining() == pytest.approx(estimate)
    states = _run(tracker, clock, [(0, 10), (1, 10), (2, 10), (3, 10), (4, 4)], speed=3.0)
    true_left = 3.0 * (6 * 2.0 + 4.0)
    assert states[-1].remaining == pytest.approx(true_left, rel=1e-6)
    # iteration counting would have said 44 of 51 iterations done: 86 %
    assert states[-1].fraction < 0.45
    # during the affine stage, a few seconds of affine iterations do not predict the deformable
    # rate (first-call costs): the calibrated estimate does
    clock = Clock()
    tracker = RegistrationProgress(clock=clock)
    tracker.start(PLAN, estimate=estimate)
    states = _run(tracker, clock, [(0, 5)], speed=50.0)
    deformable_left = sum(s.work for s in PLAN[2:])
    affine_left = 5 * 0.01 * 50 + 10 * 0.04 * 50
    assert states[-1].remaining == pytest.approx(affine_left + deformable_left, rel=1e-6)


def test_records_are_matched_to_their_stage_and_skipped_stages_are_closed():
    clock = Clock()
    tracker = RegistrationProgress(clock=clock)
    tracker.start(PLAN)
    # the affine stage at 0.5 ran no iteration at all (converged at once): it closes when the next comes
    states = _run(tracker, clock, [(1, 2)])
    assert states[-1].stage_index == 1 and states[-1].stage_iteration == 2
    assert tracker._closed[0]
    tracker(_deformable(1.0), 30)  # straight to the finest scale
    assert tracker.state.stage.label == "scale 1" and all(tracker._closed[:4])
    # a record of no planned stage, or before start(), changes nothing
    before = tracker.fraction
    tracker(_affine(0.5), 30)
    assert tracker.fraction == before
    RegistrationProgress()(_deformable(1.0), 30)


def test_register_reports_both_stages_through_one_tracker_and_keeps_the_plain_callback(caplog):
    torch.manual_seed(0)
    n = 24
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    fixed = Image(torch.exp(-(((y - 12) / 4) ** 2 + ((x - 12) / 5) ** 2))[None], Grid.from_shape((n, n)))
    moving = Image(torch.exp(-(((y - 13.5) / 4) ** 2 + ((x - 12) / 5) ** 2))[None], Grid.from_shape((n, n)))
    cfg = get_preset("default", "lddmm").replace(optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(3, 3)))
    states = []
    tracker = RegistrationProgress(on_update=states.append)
    result = register(fixed, moving, config=cfg, progress=tracker, threads=1)
    kinds = [s.stage.kind for s in states]
    assert kinds[0] == "affine" and "deformable" in kinds and kinds[-1] == "final"
    assert kinds.index("deformable") > max(i for i, k in enumerate(kinds) if k == "affine")
    assert [s.fraction for s in states] == sorted(s.fraction for s in states) and states[-1].fraction == 1.0
    assert sum(k == "deformable" for k in kinds) == len(result.history)
    assert all(s.remaining is not None and s.remaining >= 0 for s in states)
    # the plain progress(record, total): deformable iterations only, with their budget, as before
    seen = []
    register(fixed, moving, config=cfg, progress=lambda record, total: seen.append((record, total)), threads=1)
    assert seen and all(isinstance(r, IterationRecord) and t == 6 for r, t in seen)
    assert [r.stage for r, _ in seen] == ["deformable"] * len(seen)


def test_a_long_run_is_announced_before_it_starts(monkeypatch, caplog):
    import rdmm_pipelines.registration as registration

    n = 16
    img = Image(torch.rand(1, n, n, generator=torch.Generator().manual_seed(0)), Grid.from_shape((n, n)))
    cfg = get_preset("default", "vsvf").replace(affine=get_preset("default").affine.replace(enabled=False),
                                                optimizer=OptimizerConfig(scales=(1.0,), iterations=(1,)))
    monkeypatch.setattr(registration, "LONG_RUN_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.registration"):
        register(img, img, config=cfg, threads=1, device="cpu")
    warnings = [r.getMessage() for r in caplog.records if "rough estimate" in r.getMessage()]
    assert len(warnings) == 1 and "preset='quick'" in warnings[0] and "16x16" in warnings[0]
    caplog.clear()
    heard = []
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.registration"):
        register(img, img, config=cfg, threads=1, device="cpu", progress=RegistrationProgress(on_long_run=heard.append))
    assert len(heard) == 1 and heard[0].model == "vsvf" and heard[0].shape == (16, 16)
    assert not [r for r in caplog.records if "rough estimate" in r.getMessage()]
    monkeypatch.setattr(registration, "LONG_RUN_SECONDS", 1e9)
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.registration"):
        register(img, img, config=cfg, threads=1, device="cpu")
    assert not [r for r in caplog.records if "rough estimate" in r.getMessage()]


# ------------------------------------------------------------------ the command line
@pytest.fixture()
def cli_files(tmp_path):
    n = 24
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    blob = lambda s: torch.exp(-(((y - 12 - s) / 4) ** 2 + ((x - 12) / 5) ** 2))[None]  # noqa: E731
    grid = Grid.from_shape((n, n))
    cfg = get_preset("default", "lddmm").replace(optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(2, 2)))
    config = tmp_path / "cfg.json"
    config.write_text(__import__("json").dumps(cfg.to_dict()))
    volume = torch.rand(1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    return {"fixed": save_image(Image(blob(0.0), grid), tmp_path / "fixed.nii.gz"),
            "moving": save_image(Image(blob(1.5), grid), tmp_path / "moving.nii.gz"),
            "volume": save_image(Image(volume, Grid.from_shape((12, 12, 12))), tmp_path / "volume.nii.gz"),
            "config": config}


def test_the_bar_shows_stages_and_no_bar_is_drawn_before_an_input_error(cli_files, tmp_path, capsys, monkeypatch):
    from rdmm_pipelines.cli import main

    # a 2D fixed and a 3D moving image: refused by register(), no bar drawn before it
    rc = main(["register", str(cli_files["fixed"]), str(cli_files["volume"]), "--out", str(tmp_path / "bad"),
               "--no-qc", "--config", str(cli_files["config"])])
    err = capsys.readouterr().err
    assert rc == 2 and "2D" in err and "3D" in err
    assert err.count("\n") == 1 and "%|" not in err and "\r" not in err, repr(err)
    # a corrupt input file
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    rc = main(["register", str(cli_files["fixed"]), str(broken), "--out", str(tmp_path / "bad2"), "--no-qc",
               "--config", str(cli_files["config"])])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "%|" not in err, repr(err)
    # a good run: the bar names the affine stage and the scales, in percent of the work; and a
    # run estimated long is announced first, with the command line's options
    import rdmm_pipelines.registration as registration

    monkeypatch.setattr(registration, "LONG_RUN_SECONDS", 0.0)
    rc = main(["register", str(cli_files["fixed"]), str(cli_files["moving"]), "--out", str(tmp_path / "ok"),
               "--no-qc", "--config", str(cli_files["config"])])
    err = capsys.readouterr().err
    assert rc == 0
    assert err.startswith("rdmm register: note: this lddmm registration of a 24x24 image may take about")
    assert "--preset quick" in err and "--map-resolution" in err
    shown = [line for line in err.replace("\r", "\n").splitlines() if "%|" in line]
    assert any("lddmm affine" in line for line in shown) and any("lddmm scale 1" in line for line in shown)
    assert all("elapsed" in line for line in shown)
    # quiet: no bar, but still the note
    rc = main(["register", str(cli_files["fixed"]), str(cli_files["moving"]), "--out", str(tmp_path / "q"),
               "--no-qc", "-q", "--config", str(cli_files["config"])])
    err = capsys.readouterr().err
    assert rc == 0 and "%|" not in err and err.count("rdmm register: note:") == 1


# ------------------------------------------------------------------ a cohort's progress, from job events
class _Outputs:
    def __init__(self, status: str) -> None:
        self.status = status


def _task(name: str, **fields):
    return type(name, (), fields)()


def test_a_cohort_counts_pairs_and_registrations_not_tasks():
    from rdmm_pipelines.workflows.progress import CohortProgress

    log = io.StringIO()
    monitor = CohortProgress(["01", "02"], ["lddmm", "sitk-demons"], stream=log, min_interval=0.0, slots=2)
    ok, failed = _Outputs("ok"), _Outputs("failed")
    lddmm = {p: _task("RdmmRegistration", subject_id=p, model="lddmm", regularizer=None) for p in ("01", "02")}
    demons = {p: _task("SimpleITKDemons", subject_id=p) for p in ("01", "02")}
    affine = _task("AffineRegistration", subject_id="01")
    for task in (affine, lddmm["01"], demons["01"], lddmm["02"]):
        monitor("started", task, None)
    assert monitor.line.startswith("cohort: 0/2 pairs done (0/4 registrations, 0 failed, 2 running, 2 waiting) [")
    monitor("finished", demons["01"], ok)
    monitor("started", _task("Evaluate", subject_id="01", method="sitk-demons"), None)  # not a registration
    monitor("finished", affine, _Outputs("ok"))
    assert monitor.line.startswith("cohort: 0/2 pairs done (1/4 registrations, 0 failed, 2 running) [")
    monitor("finished", lddmm["01"], ok)
    assert monitor.line.startswith("cohort: 1/2 pairs done (2/4 registrations, 0 failed, 1 running) [")
    # a registration whose evaluation fails is a failed row; so is one whose job crashed
    monitor("finished", _task("Evaluate", subject_id="01", method="lddmm"), failed)
    monitor("finished", _task("PairQc", subject_id="01", method="sitk-demons"), failed)  # the report: not the row
    monitor("errored", lddmm["02"], None)
    monitor("errored", _task("CohortTable"), None)  # belongs to no pair
    assert monitor.line.startswith("cohort: 1/2 pairs done (3/4 registrations, 2 failed, 0 running) [")
    # the second pair's demons was found whole in the cache and never heard: the table counts it
    rows = [{"id": "01", "method": "lddmm", "status": "failed"}, {"id": "01", "method": "sitk-demons", "status": "ok"},
            {"id": "02", "method": "lddmm", "status": "failed"}, {"id": "02", "method": "sitk-demons", "status": "ok"}]
    monitor.close(rows)
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("cohort: 2/2 pairs done (4/4 registrations, 2 failed, 0 running) [")
    assert len(lines) == len(set(line.rsplit(" [", 1)[0] for line in lines))  # a line when something changed
    assert monitor.summary(2, 2) == "4 registrations: 2 ok, 2 failed; 3 run now, 1 re-used from the cache"


def test_cached_registrations_count_and_methods_are_named_as_the_cohort_names_them():
    from rdmm_pipelines.workflows.progress import CohortProgress

    monitor = CohortProgress(["a"], ["rdmm-optimized", "rdmm-net", "vsvf"], stream=None)
    monitor("cached", _task("RdmmRegistration", subject_id="a", model="rdmm", regularizer="optimized"), _Outputs("ok"))
    monitor("started", _task("NetworkRegistration", subject_id="a", method="rdmm-net"), None)
    monitor("finished", _task("NetworkRegistration", subject_id="a", method="rdmm-net"), _Outputs("failed"))
    monitor("cached", _task("Evaluate", subject_id="a", method="vsvf"), _Outputs("ok"))  # its registration unheard
    monitor("finished", _task("RdmmRegistration", subject_id="zz", model="vsvf"), _Outputs("ok"))  # not a pair of it
    assert monitor.status == {("a", "rdmm-optimized"): "ok", ("a", "rdmm-net"): "failed", ("a", "vsvf"): "ok"}
    assert monitor.reused == {("a", "rdmm-optimized")} and monitor.ran == {("a", "rdmm-net")}
    assert monitor.line.startswith("cohort: 1/1 pairs done (3/3 registrations, 1 failed, 0 running) [")
