"""A single self-contained HTML page for one registration: the QC figure (embedded as base64, so
the page can be moved or mailed on its own), the metrics as a table and the configuration in a
collapsible ``<details>`` block. Everything shown is HTML-escaped; the page is written atomically."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from .figures import _flatten, format_value

__all__ = ["write_html_report", "html_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.6em; }
h2 { font-size: 1.1em; margin-top: 1.4em; }
.figure { overflow-x: auto; border: 1px solid #ddd; padding: 4px; max-width: 100%; }
.figure img { display: block; max-width: none; }
table.metrics { border-collapse: collapse; font-size: 0.95em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 0.25em 0.8em; text-align: left; }
table.metrics th { background: #f2f2f2; }
table.metrics td.value { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: right; }
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


def html_report(png: bytes, metrics: dict, title: str, config: dict | None = None,
                image_name: str = "qc.png") -> str:
    """The report page as a string (the PNG bytes embedded as a data URI)."""
    from .. import __version__

    esc = html.escape
    rows = "\n".join(
        f'<tr><th scope="row">{esc(str(k))}</th><td class="value">{esc(format_value(v))}</td></tr>'
        for k, v in _flatten(metrics or {}).items())
    data = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title or 'registration QC')}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title or 'registration QC')}</h1>",
        '<div class="figure">',
        f'<img src="data:image/png;base64,{data}" alt="{esc("QC figure: " + (title or image_name))}" '
        f'title="{esc(image_name)}">',
        "</div>",
        "<h2>Metrics</h2>",
        '<table class="metrics">',
        '<thead><tr><th scope="col">metric</th><th scope="col">value</th></tr></thead>',
        f"<tbody>\n{rows}\n</tbody>" if rows else "<tbody><tr><td colspan=\"2\">none</td></tr></tbody>",
        "</table>",
    ]
    if config is not None:
        text = json.dumps(config, indent=2, sort_keys=False, default=_json_default)
        parts += ["<details>", "<summary>Configuration</summary>", f"<pre>{esc(text, quote=False)}</pre>", "</details>"]
    parts += [f"<footer>rdmm_pipelines {esc(__version__)}</footer>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_html_report(path: str | os.PathLike, png_path: str | os.PathLike, metrics: dict, title: str,
                      config: dict | None = None) -> Path:
    """Write a self-contained HTML report (atomically: temp file + ``os.replace``).

    Args:
        path: the HTML file to write (parent folders are created).
        png_path: the QC figure (e.g. from :func:`~rdmm_pipelines.qc.render_qc`); it is embedded.
        metrics: name -> value, shown as a table (nested dicts as dotted names).
        title: page title and heading.
        config: optional configuration (e.g. ``result.config.to_dict()``), shown as JSON in a
            ``<details>`` block.

    Returns:
        The path written.
    """
    path = Path(path)
    png_path = Path(png_path)
    png = png_path.read_bytes()
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{png_path} is not a PNG file")
    page = html_report(png, metrics, title, config, image_name=png_path.name)
    return write_text_atomic(path, page)
