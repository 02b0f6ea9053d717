"""The cohort report: summary plots and one HTML page.

* :func:`before_registration` - per pair, the Dice before registration (the moving labels on the
  fixed grid with no transform), taken once per pair from its rows.
* :func:`summarize` - per method: pairs, failed, mean/median Dice, gain over "before
  registration", folds, seconds; a "before registration" pseudo-method comes first.
* :func:`dice_figure` / :func:`plot_dice` - Dice per pair, a box and strip per method, with the
  "before registration" reference first.
* :func:`seconds_figure` / :func:`plot_seconds` - registration seconds per pair, a strip per
  method, on a log axis labelled in plain seconds (0.1, 0.3, 1, 3, 10, ...).
* :func:`write_cohort_report` - the HTML page: summary table, the plots embedded (base64), the
  failed pairs with their messages, and the pairs table, where each pair's QC figure is shown as
  a small image (``loading="lazy"``, relative path) linked to its QC page.

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
from urllib.parse import quote

from rdmm_pipelines.atomic import atomic_output, write_text_atomic

if ty.TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BEFORE",
    "before_registration",
    "dice_figure",
    "plot_dice",
    "plot_seconds",
    "seconds_figure",
    "summarize",
    "write_cohort_report",
]

#: the pseudo-method of the reference row: the Dice of the moving labels with no transform
BEFORE = "before registration"

DICE_TITLE = "Mean Dice per pair"
SECONDS_TITLE = "Registration time per pair"

_BEFORE_COLOR = "0.55"


def _num(value: ty.Any) -> float:
    try:
        return math.nan if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(values: ty.Iterable[ty.Any]) -> list[float]:
    return [v for v in (_num(x) for x in values) if math.isfinite(v)]


def _methods(rows: ty.Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def _pairs(rows: ty.Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["id"] for r in rows))


def before_registration(rows: ty.Sequence[dict]) -> dict[str, float]:
    """Pair id -> mean Dice before registration (``mean_dice_before``), once per pair.

    Every method's row of a pair carries the same number (it does not depend on the method); the
    first finite one is taken. Pairs without one (no label maps, or every registration of the
    pair failed) are left out.
    """
    out: dict[str, float] = {}
    for r in rows:
        value = _num(r.get("mean_dice_before"))
        if r["id"] not in out and math.isfinite(value):
            out[r["id"]] = value
    return out


def summarize(rows: ty.Sequence[dict]) -> list[dict[str, ty.Any]]:
    """Per method: pairs, failed, mean and median Dice, mean Dice gain over "before
    registration" (over the pairs that have both), total folds, mean and median seconds (over the
    pairs that have the number).

    When any pair has a Dice before registration, the first entry is the pseudo-method
    :data:`BEFORE` (one value per pair; its failed, folds and seconds are None).
    """
    before = before_registration(rows)
    out: list[dict[str, ty.Any]] = []
    if before:
        values = list(before.values())
        out.append({
            "method": BEFORE,
            "pairs": len(values),
            "failed": None,
            "mean_dice": statistics.fmean(values),
            "median_dice": statistics.median(values),
            "dice_gain": 0.0,
            "folds": None,
            "mean_seconds": None,
            "median_seconds": None,
        })
    for method in _methods(rows):
        mine = [r for r in rows if r["method"] == method]
        dice = _finite(r.get("mean_dice") for r in mine)
        gains = _finite(_num(r.get("mean_dice")) - before.get(r["id"], math.nan) for r in mine)
        secs = _finite(r.get("seconds") for r in mine)
        folds = _finite(r.get("folds") for r in mine)
        out.append({
            "method": method,
            "pairs": len(mine),
            "failed": sum(r.get("status") == "failed" for r in mine),
            "mean_dice": statistics.fmean(dice) if dice else math.nan,
            "median_dice": statistics.median(dice) if dice else math.nan,
            "dice_gain": statistics.fmean(gains) if gains else math.nan,
            "folds": sum(folds) if folds else math.nan,
            "mean_seconds": statistics.fmean(secs) if secs else math.nan,
            "median_seconds": statistics.median(secs) if secs else math.nan,
        })
    return out


# ------------------------------------------------------------------ plots
def _new_figure(n_strips: int) -> tuple["Figure", ty.Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.2 + 1.15 * max(n_strips, 1), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _strips(ax, labels: list[str], data: list[list[float]], colors: list[ty.Any], *, box: bool) -> None:
    positions = list(range(1, len(labels) + 1))
    if box and any(data):
        ax.boxplot([d if d else [math.nan] for d in data], positions=positions, widths=0.5, showfliers=False)
    for i, (values, color) in enumerate(zip(data, colors), start=1):
        jitter = [i + 0.08 * ((k % 5) - 2) for k in range(len(values))]
        ax.scatter(jitter, values, s=16, alpha=0.75, zorder=3, color=color)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.grid(axis="y", alpha=0.3)


def dice_figure(rows: ty.Sequence[dict]) -> "Figure":
    """The Dice plot as a matplotlib Figure (Agg canvas): the mean Dice of each pair, a box and
    strip per method (failed pairs have none), the "before registration" reference first (grey),
    titled :data:`DICE_TITLE`."""
    from matplotlib import rcParams

    methods = _methods(rows)
    before = before_registration(rows)
    labels = ([BEFORE] if before else []) + methods
    data = ([list(before.values())] if before else []) + [
        _finite(r.get("mean_dice") for r in rows if r["method"] == m) for m in methods]
    cycle = [c["color"] for c in rcParams["axes.prop_cycle"]]
    colors = ([_BEFORE_COLOR] if before else []) + [cycle[i % len(cycle)] for i in range(len(methods))]
    fig, ax = _new_figure(len(labels))
    _strips(ax, labels, data, colors, box=True)
    ax.set_title(DICE_TITLE)
    ax.set_ylabel("mean Dice (higher is better)")
    fig.tight_layout()
    return fig


#: tick values of the seconds axis (plain numbers, no powers of ten): 1 and 3 per decade, or
#: 1, 2, 3, 5 over a narrow range, or 1 per decade over a wide one
_DECADES = tuple(10.0**k for k in range(-3, 7))
_SECOND_TICKS = tuple(m * d for d in _DECADES for m in (1, 3))
_SECOND_TICKS_FINE = tuple(m * d for d in _DECADES for m in (1, 2, 3, 5))


def _plain_seconds(value: float) -> str:
    """0.001 -> "0.001", 0.3 -> "0.3", 3 -> "3", 3000 -> "3,000"."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _seconds_axis(ax, values: list[float]) -> None:
    """Log y axis over ``values`` (all > 0) with ticks at 1 and 3 (or 1, 2, 5) per decade,
    labelled as plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = min(values) / 1.8, max(values) * 1.8
    ticks = [t for t in _SECOND_TICKS if lo <= t <= hi]
    if len(ticks) < 3:
        ticks = [t for t in _SECOND_TICKS_FINE if lo <= t <= hi]
    if len(ticks) > 9:
        ticks = [t for t in _DECADES if lo <= t <= hi]
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _plain_seconds(v)))
    ax.yaxis.set_minor_locator(NullLocator())


def seconds_figure(rows: ty.Sequence[dict]) -> "Figure":
    """The time plot as a matplotlib Figure (Agg canvas): registration seconds of each pair, a
    strip per method, on a log axis whose ticks read as plain seconds (0.1, 0.3, 1, 3, 10),
    titled :data:`SECONDS_TITLE`."""
    from matplotlib import rcParams

    methods = _methods(rows)
    data = [[v for v in _finite(r.get("seconds") for r in rows if r["method"] == m) if v > 0] for m in methods]
    cycle = [c["color"] for c in rcParams["axes.prop_cycle"]]
    fig, ax = _new_figure(len(methods))
    _strips(ax, methods, data, [cycle[i % len(cycle)] for i in range(len(methods))], box=False)
    values = [v for d in data for v in d]
    if values:
        _seconds_axis(ax, values)
    ax.set_title(SECONDS_TITLE)
    ax.set_ylabel("seconds per pair (log scale)")
    fig.tight_layout()
    return fig


def _save_atomic(fig: "Figure", path: Path) -> Path:
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_dice(rows: ty.Sequence[dict], path: os.PathLike | str) -> Path:
    """Write :func:`dice_figure` as a PNG (atomically) and return its path."""
    return _save_atomic(dice_figure(rows), Path(path))


def plot_seconds(rows: ty.Sequence[dict], path: os.PathLike | str) -> Path:
    """Write :func:`seconds_figure` as a PNG (atomically) and return its path."""
    return _save_atomic(seconds_figure(rows), Path(path))


# ------------------------------------------------------------------ the page
def _fmt(value: ty.Any, digits: int = 3, *, signed: bool = False) -> str:
    v = _num(value)
    if not math.isfinite(v):
        return "&ndash;"
    if float(v).is_integer() and abs(v) < 1e9 and not signed:
        return str(int(v))
    text = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return text.replace("-", "&minus;")


def _href(relative: str) -> str:
    """A relative file path as an attribute value: percent-encoded, then HTML-escaped."""
    return html.escape(quote(relative))


def _embedded(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       margin: 1.5em auto; padding: 0 1em; max-width: 1340px; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin-bottom: 1.2em; font-size: 0.93em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: middle; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
tr.failed td { background: #fdd; }
tr.before td { background: #f4f4f4; color: #555; font-style: italic; }
tr.first td { border-top: 2px solid #999; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { max-width: calc(50% - 0.5em); height: auto; border: 1px solid #ddd; }
td.thumb { padding: 2px; text-align: center; }
td.thumb img { display: block; width: 300px; max-width: 300px; height: auto; border: 1px solid #ddd; }
code { white-space: pre-wrap; word-break: break-word; }
.note { color: #555; font-size: 0.9em; }
"""


def write_cohort_report(
    rows: ty.Sequence[dict],
    path: os.PathLike | str,
    *,
    qc_links: ty.Mapping[tuple[str, str], str] | None = None,
    thumbnails: ty.Mapping[tuple[str, str], str] | None = None,
    title: str = "Registration cohort report",
) -> Path:
    """Write the cohort's HTML page (and its two PNG plots beside it), atomically.

    Args:
        rows: cohort table rows (id, method, status, message, mean_dice, mean_dice_before, folds,
            folding_voxels, tre_mean, seconds, device; numbers or their CSV strings).
        path: the HTML file; the plots are ``cohort_dice.png`` and ``cohort_seconds.png`` in its
            folder (also embedded, so the plots show wherever the page is opened).
        qc_links: (id, method) -> path of the pair's QC page relative to the HTML file.
        thumbnails: (id, method) -> path of the pair's QC figure (PNG) relative to the HTML file,
            shown small in the pairs table (linked to the QC page when there is one). These are
            not embedded: the page shows them beside the per-pair folders.
        title: the page heading.

    Returns:
        The HTML path.
    """
    path = Path(path)
    rows = list(rows)
    links = dict(qc_links or {})
    thumbs = dict(thumbnails or {})
    dice_png = plot_dice(rows, path.parent / "cohort_dice.png")
    secs_png = plot_seconds(rows, path.parent / "cohort_seconds.png")
    esc = html.escape
    before = before_registration(rows)

    summary = []
    for s in summarize(rows):
        cls = ' class="before"' if s["method"] == BEFORE else ""
        summary.append(
            f"<tr{cls}><td class=\"name\">{esc(s['method'])}</td><td>{s['pairs']}</td><td>{_fmt(s['failed'])}</td>"
            f"<td>{_fmt(s['mean_dice'])}</td><td>{_fmt(s['median_dice'])}</td>"
            f"<td>{_fmt(s['dice_gain'], signed=True) if s['method'] != BEFORE else '&ndash;'}</td>"
            f"<td>{_fmt(s['folds'])}</td><td>{_fmt(s['mean_seconds'], 2)}</td>"
            f"<td>{_fmt(s['median_seconds'], 2)}</td></tr>")
    failed = [r for r in rows if r.get("status") == "failed"]
    failed_html = ("<ul>" + "".join(
        f"<li><b>{esc(r['id'])}</b> ({esc(r['method'])}): <code>{esc(r.get('message') or '')}</code></li>"
        for r in failed) + "</ul>") if failed else "<p>None.</p>"

    pair_rows = []
    for pair_id in _pairs(rows):
        first = True
        if pair_id in before:
            pair_rows.append(
                f'<tr class="before first"><td class="name">{esc(pair_id)}</td><td class="name">{esc(BEFORE)}</td>'
                f'<td class="name">reference</td><td>{_fmt(before[pair_id])}</td><td>&ndash;</td><td>&ndash;</td>'
                f"<td>&ndash;</td><td>&ndash;</td><td>&ndash;</td><td></td><td></td></tr>")
            first = False
        for r in (r for r in rows if r["id"] == pair_id):
            key = (r["id"], r["method"])
            link, thumb = links.get(key), thumbs.get(key)
            name = f"{r['id']} {r['method']}"
            if thumb:
                img = (f'<img src="{_href(thumb)}" loading="lazy" width="300" '
                       f'alt="{esc("QC figure of " + name)}">')
                figure = f'<a href="{_href(link)}">{img}</a>' if link else img
            else:
                figure = f'<a href="{_href(link)}">QC page</a>' if link else "&ndash;"
            gain = _num(r.get("mean_dice")) - before.get(pair_id, math.nan)
            classes = " ".join(c for c in (str(r.get("status") or ""), "first" if first else "") if c)
            first = False
            pair_rows.append(
                f'<tr class="{esc(classes)}"><td class="name">{esc(r["id"])}</td>'
                f'<td class="name">{esc(r["method"])}</td><td class="name">{esc(str(r.get("status") or ""))}</td>'
                f"<td>{_fmt(r.get('mean_dice'))}</td><td>{_fmt(gain, signed=True)}</td>"
                f"<td>{_fmt(r.get('folding_voxels'))}</td><td>{_fmt(r.get('folds'))}</td>"
                f"<td>{_fmt(r.get('tre_mean'))}</td><td>{_fmt(r.get('seconds'), 2)}</td>"
                f'<td class="name">{esc(str(r.get("device") or ""))}</td><td class="thumb">{figure}</td></tr>')

    n_pairs, n_methods = len(_pairs(rows)), len(_methods(rows))
    before_note = ("<p class=\"note\"><i>before registration</i>: the Dice of the moving labels resampled "
                   "onto the fixed grid with no transform, one value per pair (the same for every method); "
                   "&Delta; Dice is a method's Dice minus it.</p>") if before else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p>{n_pairs} pairs, {n_methods} methods, {len(failed)} failed registrations.</p>
<h2>Summary per method</h2>
<table><tr><th class="name">method</th><th>pairs</th><th>failed</th><th>mean Dice</th><th>median Dice</th>
<th>&Delta; Dice vs before</th><th>folds (total)</th><th>mean s</th><th>median s</th></tr>
{''.join(summary)}</table>
{before_note}
<h2>Plots</h2>
<div class="plots">{_embedded(dice_png, DICE_TITLE)}{_embedded(secs_png, SECONDS_TITLE)}</div>
<h2>Failed pairs</h2>
{failed_html}
<h2>Pairs</h2>
<table><tr><th class="name">id</th><th class="name">method</th><th class="name">status</th><th>mean Dice</th>
<th>&Delta; Dice</th><th>folding voxels</th><th>folds</th><th>TRE mean (mm)</th><th>seconds</th>
<th class="name">device</th><th class="name">QC figure (click for the QC page)</th></tr>
{''.join(pair_rows)}</table>
</body></html>
"""
    return write_text_atomic(path, page)
