"""The README says what the code does: its outputs table lists who writes which file, its
command lines parse, and its Python snippets run when pasted into a script."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    start = text.index(heading)
    rest = text[start + len(heading):]
    following = re.search(r"^#{1,6} ", rest, flags=re.M)
    return rest[:following.start()] if following else rest


def _table(section: str) -> list[list[str]]:
    """The rows of the first markdown table in ``section`` (header and separator left out)."""
    lines = [ln.strip() for ln in section.splitlines()]
    first = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[first:]:
        if not ln.startswith("|"):
            break
        rows.append([cell.strip() for cell in ln.strip("|").split("|")])
    assert len(rows) > 2 and set(rows[1][0]) <= {"-", ":"}, rows[:2]
    return rows[2:]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def test_the_outputs_table_says_which_files_save_writes_and_which_the_command_adds():
    from rdmm_pipelines.result import OUTPUT_FILES, QC_FILES

    section = _section(README.read_text(), "### Outputs")
    header_row = next(ln for ln in section.splitlines() if ln.startswith("|"))
    assert [c.strip() for c in header_row.strip("|").split("|")] == ["file", "written by", "content"]
    by_save, by_command, everything = set(), set(), []
    for row in _table(section):
        names = re.findall(r"`([^`]+)`", row[0])
        assert names, row
        everything += names
        if row[1] == "`save()`":
            by_save.update(names)
        elif row[1] == "`rdmm register`":
            by_command.update(names)
        else:
            pytest.fail(f"{row[0]}: written by {row[1]!r}, neither `save()` nor `rdmm register`")
    assert len(everything) == len(set(everything))
    assert by_save == set(OUTPUT_FILES.values())
    assert by_command == set(QC_FILES)


def _commands(text: str) -> list[str]:
    """Every ``rdmm ...`` command line of the README's bash blocks (continuations joined)."""
    found = []
    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("rdmm "):
                found.append(line)
    return found


def test_every_rdmm_command_line_in_the_readme_parses():
    from rdmm_pipelines.cli import build_parser

    commands = _commands(README.read_text())
    assert any(c.startswith("rdmm evaluate") and "--fixed-labels" not in c for c in commands)
    for line in commands:
        argv = shlex.split(line, comments=True)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README: `{line}` does not parse (exit {exc.code})")


def _python(text: str, needle: str) -> str:
    found = [b for b in _blocks(text, "python") if needle in b]
    assert len(found) == 1, f"{len(found)} python blocks of the README hold {needle!r}"
    return found[0]


def _run_script(code: str, folder: Path, timeout: float) -> subprocess.CompletedProcess:
    script = folder / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "NO_ET": "1"}  # pydra's online version check: not offline
    return subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_the_pydra_snippet_runs_as_it_is_pasted_into_a_script(tmp_path):
    """The snippet of "Pipelines": a synthetic pair, RdmmRegistration and Evaluate on the cf worker
    (spawned processes: the script needs its ``__main__`` guard), progress lines as jobs run."""
    code = _python(README.read_text(), "interfaces._pydra import run")
    assert 'if __name__ == "__main__":' in code
    done = _run_script(code, tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    status, device, seconds, displacement = done.stdout.splitlines()[0].split()
    assert (status, device) == ("ok", "cpu") and float(seconds) > 0 and Path(displacement).is_file()
    assert 0.0 < float(done.stdout.splitlines()[1]) <= 1.0  # the mean Dice
    for line in ("RdmmRegistration sub01: started", "RdmmRegistration sub01: finished", "Evaluate sub01: finished"):
        assert line in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_the_register_and_ants_snippets_run_on_small_files(tmp_path):
    """The quick-start Python snippet on a small synthetic pair saved under the names it uses (with
    the quick preset for the test's time), then the antspyx snippet on the field it saved."""
    from rdmm_pipelines.demo import write_pair
    from rdmm_pipelines.synthetic import make_pair_2d

    pair = write_pair(make_pair_2d(seed=1, size=32), tmp_path / "pair")
    for key, name in (("target", "fixed.nii.gz"), ("source", "moving.nii.gz"), ("source_labels", "moving_labels.nii.gz")):
        shutil.copy(pair[key], tmp_path / name)
    text = README.read_text()
    code = _python(text, "from rdmm_pipelines import register")
    assert 'preset="knee-optimized"' in code
    done = _run_script(code.replace('preset="knee-optimized"', 'preset="quick"'), tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "registration.json").is_file() and "folding_voxels" in done.stdout
    pytest.importorskip("ants")
    done = _run_script(_python(text, "ants.apply_transforms"), tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_multimodal_snippet_runs_on_small_files(tmp_path):
    """The README's masked mutual-information snippet, verbatim, on a small synthetic pair saved
    under its names (the moving image with its contrast inverted, a mask of the fixed image)."""
    from rdmm_pipelines import Image, load_image, save_image
    from rdmm_pipelines.demo import write_pair
    from rdmm_pipelines.synthetic import make_pair_2d

    pair = write_pair(make_pair_2d(seed=2, size=32), tmp_path / "pair")
    fixed, moving = load_image(pair["target"]), load_image(pair["source"])
    save_image(fixed, tmp_path / "t1.nii.gz")
    save_image(moving.with_data(moving.data.max() - moving.data), tmp_path / "t2.nii.gz")
    save_image(Image((fixed.data > 0).float(), fixed.grid), tmp_path / "t1_brain_mask.nii.gz")
    code = _python(README.read_text(), 'get_preset("multimodal"')
    done = _run_script(code + "\nprint(result.fold_statistics())\n", tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "folding_voxels" in done.stdout
