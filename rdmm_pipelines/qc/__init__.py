"""Visual quality control: one PNG figure per registration (source, target, warped, differences
before/after, deformed grid, det J with folds, RDMM sigma maps, label contours) and a
self-contained HTML report. matplotlib is imported only when a figure is drawn.

* :func:`render_qc`: the figure from images and a map; :func:`render_result`: the same from a
  :class:`~rdmm_pipelines.result.RegistrationResult`; :func:`qc_figure`: the matplotlib Figure.
* :func:`flicker_svg`: the before/after reportlet (fixed and warped moving alternating under the
  fixed image's contours).
* :func:`write_html_report`: the HTML page; :func:`qc_report`: PNG + SVG + HTML for a result.
"""

from .display import format_value
from .figures import qc_figure, render_qc
from .html import html_report, write_html_report
from .report import qc_report, render_result, result_metrics
from .reportlet import flicker_svg

__all__ = [
    "render_qc",
    "render_result",
    "qc_figure",
    "qc_report",
    "result_metrics",
    "format_value",
    "write_html_report",
    "html_report",
    "flicker_svg",
]
