"""Which baseline tools the tests may use.

A test that needs a baseline tool (antspyx, SimpleITK, NiftyReg) skips, with the reason, where the
tool is not installed, so that the README's test command passes for a user without one. CI
installs every tool and sets RDMM_REQUIRE_BASELINES=1: there a missing tool fails the test.
"""

import os

import pytest


def require_baseline(method: str) -> None:
    """Skip (or, under RDMM_REQUIRE_BASELINES=1, fail) unless baseline ``method`` can run here."""
    from rdmm_pipelines.interfaces.baselines import available

    ok, why = available(method)
    if ok:
        return
    if os.environ.get("RDMM_REQUIRE_BASELINES", "") == "1":
        pytest.fail(f"RDMM_REQUIRE_BASELINES=1 but {why}")
    pytest.skip(why)
