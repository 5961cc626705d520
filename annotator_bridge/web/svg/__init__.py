"""Server-side SVG charts for the dashboard: no JavaScript chart library, works offline.

Each function returns a self-contained ``<svg>`` string (escape-safe: every text that comes
from data goes through :func:`html.escape`). Charts scale with the page (``viewBox`` +
``width="100%"``), carry an ``aria-label`` and ``<title>`` tooltips, and tag their marks with
``data-*`` attributes (series, x, y, value) so tests and scripts can read the plotted numbers.

The charts are built from ``primitives`` (colours, escaping, ticks, frame, legend) in one
module per kind: ``line`` (``Series``, ``line_chart``), ``bar`` (``BarSeries``, ``bar_chart``,
``progress_bar``), ``heatmap``. This package is the dashboard's chart API: ``svg.line_chart(...)``.
"""

from __future__ import annotations

from .bar import BarSeries, bar_chart, progress_bar
from .heatmap import heatmap
from .line import Series, line_chart
from .primitives import BASELINE_COLOR, PALETTE, esc, fmt_tick, nice_ticks

__all__ = ["BASELINE_COLOR", "PALETTE", "BarSeries", "Series", "bar_chart", "esc", "fmt_tick", "heatmap", "line_chart",
           "nice_ticks", "progress_bar"]
