"""The affine stage's finest level: its time and result with and without ``affine.max_voxels``.

    python benchmarks/affine_levels.py --cases brain-2mm brain-1mm
    python benchmarks/affine_levels.py --cases oai-x01 --caps 0 65536

For each real pair (``real_pairs.py``) and each cap (0: no limit, every level at its factor), one
``affine_register`` with the default settings otherwise, one after the other in this process:
prints the levels it ran (``rdmm_pipelines.affine.pyramid.level_factors``), the iterations, the seconds, the NCC loss
at full resolution of the result and how far the result's matrix is from the uncapped one's (the
largest entry difference; the translation column in mm).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_pairs import REAL_CASES, make_real_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["brain-2mm", "brain-1mm"], choices=list(REAL_CASES))
    ap.add_argument("--caps", nargs="+", type=int, default=[0, 2 ** 18, 2 ** 19, 2 ** 20])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="runs/real_data_ras")
    args = ap.parse_args()

    import torch

    from rdmm_pipelines.affine import affine_register
    from rdmm_pipelines.config import AffineConfig
    from rdmm_pipelines.spatial.io import load_image

    torch.set_num_threads(args.threads)
    for case in args.cases:
        files = make_real_pair(case, Path(args.data))
        fixed, moving = load_image(str(files["fixed"])), load_image(str(files["moving"]))
        reference = None
        for cap in args.caps:
            cfg = AffineConfig(max_voxels=cap)
            t0 = time.perf_counter()
            res = affine_register(fixed, moving, cfg)
            seconds = time.perf_counter() - t0
            matrix = np.asarray(res.transform.to_list())
            reference = matrix if reference is None else reference
            print(f"{case:14s} max_voxels {cap:8d}  levels {list(res.scales)}  iterations "
                  f"{list(res.iterations_per_scale)}  {seconds:6.2f} s  NCC loss {res.final_loss:.5f}  "
                  f"matrix change {np.abs(matrix - reference).max():.3f}", flush=True)


if __name__ == "__main__":
    main()
