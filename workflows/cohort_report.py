"""The cohort report: summary plots and one self-contained HTML page.

* :func:`plot_dice` - Dice per pair, one strip (and box) per method, PNG.
* :func:`plot_seconds` - registration seconds per pair, one strip per method, PNG.
* :func:`summarize` - per method: pairs, failed, mean/median Dice, folds, seconds.
* :func:`write_cohort_report` - the HTML page: summary table, the plots embedded (base64),
  the failed pairs with their messages, and relative links to every pair's QC page.

matplotlib is imported inside the functions (Agg canvas, no display needed).
"""

from __future__ import annotations

import base64
import html
import math
import os
import statistics
import typing as ty
from pathlib import Path

from rdmm_pipelines.atomic import atomic_output, write_text_atomic

__all__ = ["plot_dice", "plot_seconds", "summarize", "write_cohort_report"]


def _num(value: ty.Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(values) -> list[float]:
    return [v for v in (_num(x) for x in values) if math.isfinite(v)]


def _methods(rows: ty.Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def summarize(rows: ty.Sequence[dict]) -> list[dict[str, ty.Any]]:
    """Per method: pairs, failed, mean and median Dice, total folds, mean and median seconds
    (over the pairs that have the number)."""
    out = []
    for method in _methods(rows):
        mine = [r for r in rows if r["method"] == method]
        dice = _finite(r.get("mean_dice") for r in mine)
        secs = _finite(r.get("seconds") for r in mine)
        folds = _finite(r.get("folds") for r in mine)
        out.append({
            "method": method,
            "pairs": len(mine),
            "failed": sum(r.get("status") == "failed" for r in mine),
            "mean_dice": statistics.fmean(dice) if dice else math.nan,
            "median_dice": statistics.median(dice) if dice else math.nan,
            "folds": sum(folds) if folds else math.nan,
            "mean_seconds": statistics.fmean(secs) if secs else math.nan,
            "median_seconds": statistics.median(secs) if secs else math.nan,
        })
    return out


def _strip_plot(rows, column: str, ylabel: str, path: Path, *, box: bool, log: bool = False) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = _methods(rows)
    fig = Figure(figsize=(1.6 + 1.2 * len(methods), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    data = [_finite(r.get(column) for r in rows if r["method"] == m) for m in methods]
    if box and any(data):
        ax.boxplot([d if d else [math.nan] for d in data], positions=range(1, len(methods) + 1), widths=0.5,
                   showfliers=False)
    for i, values in enumerate(data, start=1):
        jitter = [i + 0.08 * ((k % 5) - 2) for k in range(len(values))]
        ax.scatter(jitter, values, s=14, alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(methods) + 1))
    ax.set_xticklabels(methods, rotation=20)
    ax.set_ylabel(ylabel)
    if log and any(v > 0 for d in data for v in d):
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_atomic(fig, path)


def _save_atomic(fig, path: Path) -> Path:
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_dice(rows: ty.Sequence[dict], path: os.PathLike | str) -> Path:
    """Mean Dice of each pair, a box and strip per method (failed pairs have none), PNG."""
    return _strip_plot(rows, "mean_dice", "mean Dice", Path(path), box=True)


def plot_seconds(rows: ty.Sequence[dict], path: os.PathLike | str) -> Path:
    """Registration seconds of each pair, a strip per method (log scale), PNG."""
    return _strip_plot(rows, "seconds", "seconds per pair", Path(path), box=False, log=True)


def _fmt(value: ty.Any, digits: int = 3) -> str:
    v = _num(value)
    if not math.isfinite(v):
        return "&ndash;"
    if float(v).is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.{digits}f}"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def write_cohort_report(
    rows: ty.Sequence[dict],
    path: os.PathLike | str,
    *,
    qc_links: ty.Mapping[tuple[str, str], str] | None = None,
    title: str = "Registration cohort report",
) -> Path:
    """Write the cohort's HTML page (and its two PNG plots beside it), atomically.

    Args:
        rows: cohort table rows (id, method, status, message, mean_dice, folds, seconds, ...).
        path: the HTML file; the plots are ``cohort_dice.png`` and ``cohort_seconds.png`` in its
            folder (also embedded, so the page stands alone).
        qc_links: (id, method) -> path of the pair's QC page relative to the HTML file.
        title: the page heading.

    Returns:
        The HTML path.
    """
    path = Path(path)
    rows = list(rows)
    links = dict(qc_links or {})
    dice_png = plot_dice(rows, path.parent / "cohort_dice.png")
    secs_png = plot_seconds(rows, path.parent / "cohort_seconds.png")
    esc = html.escape

    summary = "".join(
        f"<tr><td>{esc(s['method'])}</td><td>{s['pairs']}</td><td>{s['failed']}</td>"
        f"<td>{_fmt(s['mean_dice'])}</td><td>{_fmt(s['median_dice'])}</td><td>{_fmt(s['folds'])}</td>"
        f"<td>{_fmt(s['mean_seconds'], 2)}</td><td>{_fmt(s['median_seconds'], 2)}</td></tr>"
        for s in summarize(rows))
    failed = [r for r in rows if r.get("status") == "failed"]
    failed_html = ("<ul>" + "".join(
        f"<li><b>{esc(r['id'])}</b> ({esc(r['method'])}): <code>{esc(r.get('message') or '')}</code></li>"
        for r in failed) + "</ul>") if failed else "<p>None.</p>"
    pair_rows = []
    for r in rows:
        link = links.get((r["id"], r["method"]))
        qc = f'<a href="{esc(link)}">QC</a>' if link else "&ndash;"
        pair_rows.append(
            f"<tr class=\"{esc(r.get('status', ''))}\"><td>{esc(r['id'])}</td><td>{esc(r['method'])}</td>"
            f"<td>{esc(r.get('status', ''))}</td><td>{_fmt(r.get('mean_dice'))}</td>"
            f"<td>{_fmt(r.get('folds'))}</td><td>{_fmt(r.get('tre_mean'))}</td>"
            f"<td>{_fmt(r.get('seconds'), 2)}</td><td>{esc(r.get('device') or '')}</td><td>{qc}</td></tr>")

    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
tr.failed {{ background: #fdd; }}
img {{ max-width: 48%; margin-right: 1%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{len({r['id'] for r in rows})} pairs, {len(_methods(rows))} methods, {len(failed)} failed.</p>
<h2>Summary per method</h2>
<table><tr><th>method</th><th>pairs</th><th>failed</th><th>mean Dice</th><th>median Dice</th>
<th>folds (total)</th><th>mean s</th><th>median s</th></tr>
{summary}</table>
<h2>Plots</h2>
{_img(dice_png)}{_img(secs_png)}
<h2>Failed pairs</h2>
{failed_html}
<h2>Pairs</h2>
<table><tr><th>id</th><th>method</th><th>status</th><th>mean Dice</th><th>folds</th><th>TRE mean</th>
<th>seconds</th><th>device</th><th>QC</th></tr>
{''.join(pair_rows)}</table>
</body></html>
"""
    return write_text_atomic(path, page)
