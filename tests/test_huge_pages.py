"""The huge pages the package asks torch for (``THP_MEM_ALLOC_ENABLE``), in fresh processes."""

import os
import subprocess
import sys

import pytest

from rdmm_pipelines.huge_pages import HUGE_PAGES_VARIABLE


def test_the_package_asks_torch_for_huge_pages_unless_told_otherwise():
    code = ("import os, rdmm_pipelines; import torch; x = torch.ones(8 * 2 ** 20 // 4); "
            f"print(os.environ.get('{HUGE_PAGES_VARIABLE}'))")
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_VARIABLE}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    out = subprocess.run([sys.executable, "-c", code], env={**env, HUGE_PAGES_VARIABLE: "0"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"  # the user's choice is kept


def _thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "unavailable"
    return text[text.index("[") + 1:text.index("]")] if "[" in text else "unavailable"


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"), reason="transparent huge pages are off here")
def test_a_large_tensor_lands_on_huge_pages():
    """torch honours the variable the package sets: a 64 MiB tensor is backed by huge pages (in
    ``madvise`` mode only because torch advised it so)."""
    code = ("import rdmm_pipelines, torch; x = torch.ones(2 ** 24); "
            "print([l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')][0])")
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_VARIABLE}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) >= 32 * 1024  # kB: at least half of the tensor
    if _thp_mode() == "madvise":
        off = subprocess.run([sys.executable, "-c", code], env={**env, HUGE_PAGES_VARIABLE: "0"},
                             capture_output=True, text=True, check=True)
        assert int(off.stdout.strip()) == 0
