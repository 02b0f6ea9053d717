"""A cohort through pydra's SLURM worker on a real SLURM cluster.

Needs a running cluster whose commands (sbatch, squeue, sacct) are on PATH, e.g. the private one
of ``.ci/slurm/start.sh`` (``source <dir>/env.sh``). Without one the test is skipped, with the
reason; with ``RDMM_REQUIRE_SLURM=1`` (what ``.ci/run`` sets) its absence is a failure.

Four 32 px pairs x (LDDMM, SimpleITK demons): the jobs really ran under SLURM (their ids, logged
from inside each job, are in the run's provenance and SLURM reports them COMPLETED), only the
LDDMM registration jobs were given a GPU (a fake ``gpu`` gres on the test cluster), and the table
equals the one the concurrent (cf) worker gives for the same pairs.
"""

import os

os.environ.setdefault("NO_ET", "1")  # pydra's online version check: not offline

import json
import re
import shutil
import subprocess

import pytest

from rdmm_pipelines import get_preset
from rdmm_pipelines.config import OptimizerConfig
from rdmm_pipelines.demo import write_pair
from rdmm_pipelines.synthetic import make_pair_2d

pytestmark = pytest.mark.filterwarnings("ignore")

REQUIRED = os.environ.get("RDMM_REQUIRE_SLURM", "") == "1"


def _cluster_problem() -> str | None:
    missing = [c for c in ("sbatch", "squeue", "sacct", "sinfo") if shutil.which(c) is None]
    if missing:
        return f"SLURM commands not on PATH: {', '.join(missing)} (start one with .ci/slurm/start.sh)"
    probe = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode:
        return f"no SLURM controller answers: {probe.stderr.strip()}"
    if "gpu" not in probe.stdout:
        return f"the cluster advertises no 'gpu' gres (sinfo %G: {probe.stdout.strip()!r}); .ci/slurm/start.sh does"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = _cluster_problem()
    if problem:
        if REQUIRED:
            pytest.fail(f"RDMM_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four 32x32 pairs and a 2-iteration LDDMM configuration."""
    from rdmm_pipelines.workflows.manifest import PairSpec

    root = tmp_path_factory.mktemp("slurm_cohort")
    pairs = []
    for seed in (1, 2, 3, 4):
        f = write_pair(make_pair_2d(seed, 32), root / f"sub-{seed:02d}")
        pairs.append(PairSpec(id=f"{seed:02d}", fixed=f["target"], moving=f["source"],
                              fixed_labels=f["target_labels"], moving_labels=f["source_labels"]))
    cfg = get_preset("synthetic-optimized", "lddmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,), map_low_res_factor=None))
    config = root / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    return pairs, config


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split()
    return out[1] if len(out) >= 2 and out[0] == job_id else f"unknown ({out})"


def test_cohort_on_slurm_matches_cf_and_asks_gpus_only_for_our_registrations(slurm, cohort, tmp_path):
    from rdmm_pipelines.workflows.cohort import run_cohort

    pairs, config = cohort
    methods = ["lddmm", "sitk-demons"]
    common = {"methods": methods, "config_json": config, "threads": 1, "report": False, "progress": False,
              "method_options": {"sitk-demons": {"levels": 1, "iterations": 5}}}
    on_slurm = run_cohort(pairs, tmp_path / "slurm", worker="slurm", gpu_args="--gres=gpu:1", poll_delay=0.2,
                          **common)
    on_cf = run_cohort(pairs, tmp_path / "cf", worker="cf", n_procs=2, **common)

    # the same table, but for the timings
    def comparable(rows):
        return [{k: re.sub("0x[0-9a-f]+", "0x", v) for k, v in r.items() if k != "seconds"} for r in rows]

    assert [(r["id"], r["method"], r["status"]) for r in on_slurm.rows] == [
        (p.id, m, "ok") for p in pairs for m in methods]
    assert comparable(on_slurm.rows) == comparable(on_cf.rows)
    assert all(0 < float(r["mean_dice"]) <= 1 for r in on_slurm.rows)

    # every task ran as its own SLURM job, logged from inside the job
    jobs = json.loads((tmp_path / "slurm" / "cohort_provenance.json").read_text())["slurm_jobs"]
    by_task: dict[str, list[dict]] = {}
    for job in jobs:
        by_task.setdefault(job["task"], []).append(job)
    assert {t: len(j) for t, j in by_task.items()} == {
        "RdmmRegistration": 4, "SimpleITKDemons": 4, "Evaluate": 8, "CohortTable": 1}
    ids = [job["job_id"] for job in jobs]
    assert len(set(ids)) == len(ids) and all(i.isdigit() for i in ids)
    for job_id in ids:
        assert _sacct_state(job_id) == "COMPLETED", job_id

    # a GPU was asked for, and granted (SLURM set CUDA_VISIBLE_DEVICES), for our registrations only
    for job in by_task["RdmmRegistration"]:
        assert job["gpu_args"] == "--gres=gpu:1" and job["cuda_visible_devices"] != "", job
    for task in ("SimpleITKDemons", "Evaluate", "CohortTable"):
        for job in by_task[task]:
            assert job["gpu_args"] == "" and job["cuda_visible_devices"] == "", job
    cf_provenance = json.loads((tmp_path / "cf" / "cohort_provenance.json").read_text())
    assert cf_provenance["slurm_jobs"] == [] and cf_provenance["worker"] == "cf"
