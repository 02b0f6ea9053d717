"""A single HTML page for one registration: the QC figure (embedded as base64, so the page can be
moved or mailed on its own), the metrics as a table under human-readable names (the raw key in
each name's ``title``), the Dice per label before and after registration, optional extra figures
(relative file names, e.g. the before/after flicker SVG beside the page) and the configuration
in a collapsible ``<details>`` block. The layout fits a 1400 px wide window: the figures scale
down to the page width. Everything shown is HTML-escaped; the page is written atomically."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..atomic import write_text_atomic
from .display import _flatten, format_value
from .names import METRIC_NAMES, metric_name

__all__ = ["METRIC_NAMES", "html_report", "metric_name", "write_html_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       margin: 1.5em auto; padding: 0 1em; max-width: 1340px; }
h1 { font-size: 1.4em; margin-bottom: 0.6em; overflow-wrap: anywhere; }
h2 { font-size: 1.1em; margin-top: 1.4em; }
figure { margin: 0 0 1em 0; border: 1px solid #ddd; padding: 4px; max-width: 100%; box-sizing: border-box; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; padding-top: 0.3em; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.8em; text-align: left; }
thead th { background: #f2f2f2; }
td.value { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: right; }
td.message { max-width: 40em; overflow-wrap: anywhere; text-align: left; font-family: inherit; }
details { margin-top: 1em; }
summary { cursor: pointer; font-weight: bold; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
footer { margin-top: 2em; font-size: 0.8em; color: #777; }
"""


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def _number(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _label_key(label: Any) -> tuple[int, float, str]:
    """Sort labels numerically where they are numbers ("10" after "2"), the others after them."""
    try:
        return (0, float(label), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(label))


def _dice_cell(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "&ndash;"
    return (f"{value:+.3f}" if signed else f"{value:.3f}").replace("-", "&minus;")


def _dice_table(after: Mapping[Any, Any], before: Mapping[Any, Any] | None) -> list[str]:
    """Rows of the per-label Dice table: label, Dice before registration (when given), Dice, change."""
    esc = html.escape
    before = {str(k): _number(v) for k, v in (before or {}).items()}
    with_before = bool(before)
    head = '<th scope="col">label</th>'
    if with_before:
        head += '<th scope="col">Dice before</th>'
    head += '<th scope="col">Dice</th>'
    if with_before:
        head += '<th scope="col">change</th>'
    rows = []
    for label in sorted(after, key=_label_key):
        d = _number(after[label])
        cells = f'<th scope="row">{esc(str(label))}</th>'
        if with_before:
            b = before.get(str(label), math.nan)
            cells += f'<td class="value">{_dice_cell(b)}</td><td class="value">{_dice_cell(d)}</td>'
            cells += f'<td class="value">{_dice_cell(d - b, signed=True)}</td>'
        else:
            cells += f'<td class="value">{_dice_cell(d)}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return ['<table class="dice">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>"]


def html_report(
    png: bytes,
    metrics: dict,
    title: str,
    config: dict | None = None,
    image_name: str = "qc.png",
    *,
    label_dice: Mapping[Any, float] | None = None,
    label_dice_before: Mapping[Any, float] | None = None,
    figures: Sequence[tuple[str, str]] = (),
) -> str:
    """The report page as a string (the PNG bytes embedded as a data URI).

    Args:
        png: the QC figure (PNG bytes), shown first at the page width.
        metrics: name -> value (nested dicts as dotted keys), shown under :func:`metric_name`
            names with the raw key as the name's ``title``.
        title: page title and heading.
        config: optional configuration, shown as JSON in a ``<details>`` block.
        image_name: the figure's file name (its ``title``).
        label_dice: label -> Dice after registration: a per-label table (none when empty).
        label_dice_before: label -> Dice before registration, a column of that table.
        figures: (caption, file name relative to the page) of further images shown under the
            figure (e.g. the before/after flicker SVG); linked, not embedded.
    """
    from .. import __version__

    esc = html.escape
    heading = title or "registration QC"
    rows = "\n".join(
        f'<tr><th scope="row" title="{esc(str(k))}">{esc(metric_name(str(k)))}</th>'
        f'<td class="{"value message" if str(k) == "message" else "value"}">{esc(format_value(v))}</td></tr>'
        for k, v in _flatten(metrics or {}).items())
    data = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(heading)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(heading)}</h1>",
        '<figure class="figure">',
        f'<img src="data:image/png;base64,{data}" alt="{esc("QC figure: " + (title or image_name))}" '
        f'title="{esc(image_name)}">',
        "</figure>",
    ]
    for caption, name in figures:
        name = str(name)
        src = name if name.startswith("data:") else quote(name)  # embedded, or a file beside the page
        shown = caption if name.startswith("data:") else name
        parts += [
            '<figure class="extra">',
            f'<img src="{esc(src)}" alt="{esc(str(caption))}" title="{esc(str(shown))}" loading="lazy">',
            f"<figcaption>{esc(str(caption))}</figcaption>",
            "</figure>",
        ]
    parts += [
        '<div class="tables">',
        "<section>",
        "<h2>Metrics</h2>",
        '<table class="metrics">',
        '<thead><tr><th scope="col">metric</th><th scope="col">value</th></tr></thead>',
        f"<tbody>\n{rows}\n</tbody>" if rows else "<tbody><tr><td colspan=\"2\">none</td></tr></tbody>",
        "</table>",
        "</section>",
    ]
    if label_dice:
        parts += ["<section>", "<h2>Dice per label</h2>", *_dice_table(label_dice, label_dice_before), "</section>"]
    parts.append("</div>")
    if config is not None:
        text = json.dumps(config, indent=2, sort_keys=False, default=_json_default)
        parts += ["<details>", "<summary>Configuration</summary>", f"<pre>{esc(text, quote=False)}</pre>", "</details>"]
    parts += [f"<footer>rdmm_pipelines {esc(__version__)}</footer>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _data_uri(file: Path) -> str:
    """A PNG or SVG file as a data URI."""
    kinds = {".png": "image/png", ".svg": "image/svg+xml"}
    if file.suffix.lower() not in kinds:
        raise ValueError(f"{file}: only PNG and SVG figures can be embedded in the page")
    return f"data:{kinds[file.suffix.lower()]};base64," + base64.b64encode(file.read_bytes()).decode("ascii")


def write_html_report(
    path: str | os.PathLike,
    png_path: str | os.PathLike,
    metrics: dict,
    title: str,
    config: dict | None = None,
    *,
    label_dice: Mapping[Any, float] | None = None,
    label_dice_before: Mapping[Any, float] | None = None,
    figures: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the HTML report (atomically: temp file + ``os.replace``).

    Args:
        path: the HTML file to write (parent folders are created).
        png_path: the QC figure (e.g. from :func:`~rdmm_pipelines.qc.render_qc`); it is embedded.
        metrics: name -> value, shown as a table (nested dicts as dotted keys) under readable
            names (:func:`metric_name`).
        title: page title and heading.
        config: optional configuration (e.g. ``result.config.to_dict()``), shown as JSON in a
            ``<details>`` block.
        label_dice: label -> Dice (e.g. an evaluation record's ``dice``): the per-label table.
        label_dice_before: label -> Dice before registration (the record's ``dice_before``).
        figures: (caption, file) of further images under the figure, e.g.
            ``[("before/after flicker", "qc_flicker.svg")]`` (a PNG or SVG; a relative name is
            relative to ``path``'s folder); they are embedded, so the page stands alone.

    Returns:
        The path written.
    """
    path = Path(path)
    png_path = Path(png_path)
    png = png_path.read_bytes()
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{png_path} is not a PNG file")
    embedded = [(caption, _data_uri(Path(name) if Path(name).is_absolute() else path.parent / name))
                for caption, name in figures]
    page = html_report(png, metrics, title, config, image_name=png_path.name, label_dice=label_dice,
                       label_dice_before=label_dice_before, figures=embedded)
    return write_text_atomic(path, page)
