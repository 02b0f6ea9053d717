"""Packaging and layering: the library is pure, layers import one way, setup.cfg lists every package."""

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "rdmm_pipelines"

# module (relative to rdmm_pipelines) -> internal subpackages/modules it must not import
FORBIDDEN = {
    "core": {"spatial", "metric", "models", "integrators", "optim", "registration", "result", "similarity",
             "config", "presets", "demo", "cli", "evaluation", "qc", "affine", "synthetic"},
    "spatial": {"metric", "models", "integrators", "optim", "registration", "result", "demo", "cli", "qc"},
    "metric": {"models", "optim", "registration", "result", "demo", "cli"},
    "models": {"optim", "registration", "result", "demo", "cli"},
    "similarity": {"models", "optim", "registration", "result", "demo", "cli"},
    "mutual_information": {"models", "optim", "registration", "result", "demo", "cli"},
    "optim": {"registration", "result", "demo", "cli"},
    "evaluation": {"registration", "demo", "cli", "optim"},
    "learning": {"demo", "cli", "qc"},  # beside register(): it may build RegistrationResults
}
for _names in FORBIDDEN.values():  # the command line is split over cli.py and cli_train.py
    if "cli" in _names:
        _names.add("cli_train")
EXTERNAL_FORBIDDEN = {"pydra", "nipype", "ants", "SimpleITK", "fileformats"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(LIB).parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module or "")
            else:
                base = list(pkg[: len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
                mod = ".".join(["rdmm_pipelines", *base, *(node.module.split(".") if node.module else [])])
                names.add(mod)
                if not node.module:
                    names.update(".".join(["rdmm_pipelines", *base, a.name]) for a in node.names)
    return names


def test_layers_import_one_way():
    problems = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).parts
        layer = rel[0][:-3] if rel[0].endswith(".py") else rel[0]
        for name in _imports(path):
            top = name.split(".")[0]
            if top in EXTERNAL_FORBIDDEN:
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            if name.startswith("rdmm_pipelines.") and layer in FORBIDDEN:
                target = name.split(".")[1]
                if target in FORBIDDEN[layer]:
                    problems.append(f"{path.relative_to(ROOT)} ({layer}) imports {name}")
    assert not problems, "\n".join(problems)


def test_import_does_not_pull_in_pydra_or_nipype():
    code = "import sys, rdmm_pipelines; print(','.join(m for m in ('pydra', 'nipype', 'ants') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_setup_cfg_lists_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"rdmm_pipelines." + ".".join(p.parent.relative_to(LIB).parts) if p.parent != LIB else "rdmm_pipelines"
             for p in LIB.rglob("__init__.py")}
    for top in ("interfaces", "workflows"):
        found |= {".".join(["rdmm_pipelines", top, *p.parent.relative_to(ROOT / top).parts])
                  for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"missing from setup.cfg: {sorted(found - listed)}"
    assert listed <= found, f"listed but absent: {sorted(listed - found)}"


@pytest.mark.parametrize("sub", ["interfaces", "workflows"])
def test_interfaces_and_workflows_install_under_the_package_namespace(sub):
    mod = __import__(f"rdmm_pipelines.{sub}", fromlist=["_"])
    assert Path(mod.__file__).resolve().parent == (ROOT / sub).resolve() or "site-packages" in mod.__file__
