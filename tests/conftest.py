"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test problems are tiny: intra-op threads only add synchronisation cost (badly so on a busy
    2-core machine), so every test runs torch on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def three_cohort_pairs(root):
    """Three 32x32 synthetic pairs under ``root`` (sub-03's moving image is all zeros, which every
    method refuses) and a 2-iteration, one-scale LDDMM config file: ([PairSpec], config path)."""
    import json

    from rdmm_pipelines import OptimizerConfig, get_preset, load_image, save_image
    from rdmm_pipelines.demo import write_pair
    from rdmm_pipelines.synthetic import make_pair_2d
    from rdmm_pipelines.workflows.manifest import PairSpec

    pairs = []
    for seed, pid in ((1, "01"), (2, "02"), (3, "03")):
        f = write_pair(make_pair_2d(seed, 32), root / f"sub-{pid}")
        moving = f["source"]
        if pid == "03":
            img = load_image(f["source"])
            moving = save_image(type(img)(torch.zeros_like(img.data), img.grid), root / "sub-03" / "zeros.nii.gz")
        pairs.append(PairSpec(id=pid, fixed=f["target"], moving=moving, fixed_labels=f["target_labels"],
                              moving_labels=f["source_labels"], moving_regions=f["source_regions"]))
    cfg = get_preset("synthetic-optimized", "lddmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,), map_low_res_factor=None))
    config = root / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    return pairs, config


def synthetic_pair_manifest(root, n: int, size: int = 32):
    """``n`` synthetic pairs (seeds 0..n-1, ``size`` x ``size``) as NIfTI under ``root/p<seed>``
    and a CSV manifest of them (id, fixed, moving, fixed_labels, moving_labels): (rows, manifest)."""
    import csv

    from rdmm_pipelines.demo import write_pair
    from rdmm_pipelines.synthetic import make_pair_2d

    rows = []
    for seed in range(n):
        f = write_pair(make_pair_2d(seed, size), root / f"p{seed}")
        rows.append({"id": f"p{seed}", "fixed": f["target"], "moving": f["source"],
                     "fixed_labels": f["target_labels"], "moving_labels": f["source_labels"]})
    manifest = root / "pairs.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows, manifest


def blob(shift: float, n: int = 24) -> torch.Tensor:
    """(1, n, n) smooth Gaussian blob, moved down by ``shift`` voxels: the CLI tests' images."""
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return torch.exp(-(((y - n / 2 - shift) / 4) ** 2 + ((x - n / 2) / 5) ** 2))[None]


def blob_pair_files(folder) -> dict:
    """A 24x24 blob pair (moving shifted by 1.5 voxels) with label maps, and a 3-iteration vSVF
    configuration, written under ``folder``: {fixed, moving, fixed_labels, moving_labels, config}."""
    import json

    from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, save_image

    grid = Grid.from_shape((24, 24))
    files = {
        "fixed": save_image(Image(blob(0.0), grid), folder / "fixed.nii.gz"),
        "moving": save_image(Image(blob(1.5), grid), folder / "moving.nii.gz"),
        "fixed_labels": save_image(Image((blob(0.0) > 0.5).long(), grid), folder / "fl.nii.gz"),
        "moving_labels": save_image(Image((blob(1.5) > 0.5).long(), grid), folder / "ml.nii.gz"),
    }
    cfg = get_preset("default", "vsvf")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(1.0,), iterations=(3,), map_low_res_factor=None))
    files["config"] = folder / "cfg.json"
    files["config"].write_text(json.dumps(cfg.to_dict()))
    return files
