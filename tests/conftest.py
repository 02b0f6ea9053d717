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
