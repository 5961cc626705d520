"""Server-side SVG charts for the dashboard: no JavaScript chart library, works offline.

Each function returns a self-contained ``<svg>`` string (escape-safe: every text that comes
from data goes through :func:`html.escape`). Charts scale with the page (``viewBox`` +
``width="100%"``), carry an ``aria-label`` and ``<title>`` tooltips, and tag their marks with
``data-*`` attributes (series, x, y, value) so tests and scripts can read the plotted numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#db2777", "#ca8a04", "#4b5563")
"""Series colours (blue, orange, green, purple, cyan, pink, amber, grey)."""

BASELINE_COLOR = "#6b7280"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
CHAR_W = 6.6  # average glyph width at 12px, for layout estimates


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _f(v: float) -> str:
    """Compact coordinate."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1/2/2.5/5 x 10^k steps)."""
    if not _finite(lo, hi):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    if len(ticks) < 2:
        ticks.append(round(start + step, 10))
    return ticks


def fmt_tick(v: float, step: float) -> str:
    """Tick text with as many decimals as the step needs."""
    if step >= 1 and float(v).is_integer():
        return f"{round(v):,}"
    exp = math.floor(math.log10(step))
    mant = step / 10**exp
    decimals = max(0, -exp + (1 if abs(mant - 2.5) < 1e-9 else 0))
    return f"{v:.{decimals}f}"


def _val(values: Sequence[float | None], i: int) -> float | None:
    """values[i] as a finite float, else None (missing, None, NaN)."""
    v = values[i] if i < len(values) else None
    return float(v) if v is not None and _finite(v) else None


@dataclass(frozen=True)
class Series:
    """One line of a line chart.

    ``points`` are (x, y); ``band`` optional (x, low, high) drawn as a shaded area (e.g. min/max
    over repeats); ``labels`` optional per-point tooltip texts; ``key`` the value of the
    points' ``data-series`` attribute (defaults to ``name``).
    """

    name: str
    points: Sequence[tuple[float, float]]
    band: Sequence[tuple[float, float, float]] = ()
    color: str | None = None
    dashed: bool = False
    labels: Sequence[str] | None = None
    key: str | None = None
    width: float = 2.0
    markers: bool = True


@dataclass(frozen=True)
class _Frame:
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def pw(self) -> float:
        return self.width - self.left - self.right

    @property
    def ph(self) -> float:
        return self.height - self.top - self.bottom

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0 or 1) * self.pw

    def sy(self, y: float) -> float:
        return self.top + self.ph - (y - self.y0) / (self.y1 - self.y0 or 1) * self.ph


def _open(width: float, height: float, title: str, css_class: str, fluid: bool = True) -> list[str]:
    """``fluid`` charts fill their container's width; others keep their natural size (CSS caps them at 100%)."""
    size = 'width="100%"' if fluid else f'width="{_f(width)}" height="{_f(height)}"'
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{esc(css_class)}" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'{size} preserveAspectRatio="xMidYMid meet" role="img" aria-label="{esc(title)}" {FONT} '
        f'font-size="12">',
        f"<title>{esc(title)}</title>",
    ]


def _legend(items: Sequence[tuple[str, str, bool]], x: float, y: float, max_w: float) -> tuple[list[str], float]:
    """Legend rows starting at (x, y); returns the SVG parts and the height used."""
    parts = ['<g class="legend">']
    cx, cy = x, y
    for name, color, dashed in items:
        w = 28 + len(name) * CHAR_W + 16
        if cx > x and cx + w > x + max_w:
            cx, cy = x, cy + 18
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{_f(cx)}" y1="{_f(cy)}" x2="{_f(cx + 22)}" y2="{_f(cy)}" stroke="{esc(color)}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text x="{_f(cx + 28)}" y="{_f(cy + 4)}" fill="#374151">{esc(name)}</text>'
        )
        cx += w
    parts.append("</g>")
    return parts, cy - y + 18


def _empty(width: float, height: float, title: str, css_class: str, text: str) -> str:
    parts = _open(width, height, title, css_class)
    parts.append(
        f'<rect x="0.5" y="0.5" width="{_f(width - 1)}" height="{_f(height - 1)}" fill="#f9fafb" stroke="#e5e7eb" '
        f'rx="6"/><text x="{_f(width / 2)}" y="{_f(height / 2)}" text-anchor="middle" fill="#6b7280">'
        f"{esc(text)}</text></svg>"
    )
    return "".join(parts)


def line_chart(
    series: Sequence[Series],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 720,
    height: int = 340,
    y_min: float | None = None,
    y_max: float | None = None,
    x_min: float | None = None,
    hline: tuple[float, str] | None = None,
    css_class: str = "chart line-chart",
    empty_text: str = "no data yet",
) -> str:
    """Several series (lines with point markers, optional shaded bands) on shared axes, with a legend.

    ``y_min``/``y_max`` clamp the automatic y range (e.g. 0 and 1 for scores); ``hline`` draws a
    labelled horizontal reference line (value, label).
    """
    usable = [s for s in series if any(_finite(x, y) for x, y in s.points)]
    if not usable:
        return _empty(width, height, title or "chart", css_class, empty_text)
    xs = [x for s in usable for x, y in s.points if _finite(x, y)]
    ys = [y for s in usable for x, y in s.points if _finite(x, y)]
    for s in usable:
        for x, lo, hi in s.band:
            if _finite(x, lo, hi):
                xs.append(x)
                ys.extend((lo, hi))
    if hline is not None and _finite(hline[0]):
        ys.append(hline[0])
    lo_y, hi_y = min(ys), max(ys)
    pad = (hi_y - lo_y) * 0.08 or 0.05
    lo_y, hi_y = lo_y - pad, hi_y + pad
    if y_min is not None:
        lo_y = max(lo_y, y_min)
    if y_max is not None:
        hi_y = min(hi_y, y_max)
    yt = nice_ticks(lo_y, hi_y, 5)
    if y_min is not None:
        yt = [t for t in yt if t >= y_min - 1e-9] or [y_min]
    if y_max is not None:
        yt = [t for t in yt if t <= y_max + 1e-9] or [y_max]
    lo_x = min(xs) if x_min is None else min(x_min, min(xs))
    xt = nice_ticks(lo_x, max(xs), 6)
    y_step = (yt[1] - yt[0]) if len(yt) > 1 else 1.0
    x_step = (xt[1] - xt[0]) if len(xt) > 1 else 1.0

    legend_items = [(s.name, s.color or PALETTE[i % len(PALETTE)], s.dashed) for i, s in enumerate(usable)]
    if hline is not None:
        legend_items.append((hline[1], BASELINE_COLOR, True))
    legend, legend_h = _legend(legend_items, 60, 14, width - 80)
    y_label_w = max(len(fmt_tick(t, y_step)) for t in yt) * CHAR_W
    frame = _Frame(width, height, left=max(52.0, y_label_w + 30), right=18, top=14 + legend_h + 6,
                   bottom=46 if x_label else 30, x0=xt[0], x1=xt[-1], y0=min(yt[0], lo_y), y1=max(yt[-1], hi_y))
    parts = _open(width, height, title or "line chart", css_class)
    parts += legend
    # grid + ticks
    parts.append('<g class="grid" stroke="#e5e7eb" stroke-width="1">')
    for t in yt:
        y = frame.sy(t)
        parts.append(f'<line x1="{_f(frame.left)}" y1="{_f(y)}" x2="{_f(width - frame.right)}" y2="{_f(y)}"/>')
    for t in xt:
        x = frame.sx(t)
        parts.append(f'<line x1="{_f(x)}" y1="{_f(frame.top)}" x2="{_f(x)}" y2="{_f(frame.top + frame.ph)}"/>')
    parts.append("</g>")
    parts.append('<g class="axes" fill="#4b5563">')
    for t in yt:
        parts.append(f'<text x="{_f(frame.left - 8)}" y="{_f(frame.sy(t) + 4)}" text-anchor="end">'
                     f"{esc(fmt_tick(t, y_step))}</text>")
    for t in xt:
        parts.append(f'<text x="{_f(frame.sx(t))}" y="{_f(frame.top + frame.ph + 18)}" text-anchor="middle">'
                     f"{esc(fmt_tick(t, x_step))}</text>")
    parts.append(
        f'<line x1="{_f(frame.left)}" y1="{_f(frame.top + frame.ph)}" x2="{_f(width - frame.right)}" '
        f'y2="{_f(frame.top + frame.ph)}" stroke="#9ca3af"/>'
        f'<line x1="{_f(frame.left)}" y1="{_f(frame.top)}" x2="{_f(frame.left)}" y2="{_f(frame.top + frame.ph)}" '
        f'stroke="#9ca3af"/>'
    )
    if x_label:
        parts.append(f'<text class="x-label" x="{_f(frame.left + frame.pw / 2)}" y="{_f(height - 8)}" '
                     f'text-anchor="middle" fill="#374151">{esc(x_label)}</text>')
    if y_label:
        cy = frame.top + frame.ph / 2
        parts.append(f'<text class="y-label" x="14" y="{_f(cy)}" text-anchor="middle" fill="#374151" '
                     f'transform="rotate(-90 14 {_f(cy)})">{esc(y_label)}</text>')
    parts.append("</g>")
    if hline is not None and _finite(hline[0]):
        y = frame.sy(hline[0])
        parts.append(f'<line class="hline" x1="{_f(frame.left)}" y1="{_f(y)}" x2="{_f(width - frame.right)}" '
                     f'y2="{_f(y)}" stroke="{BASELINE_COLOR}" stroke-dasharray="3 3"><title>{esc(hline[1])}: '
                     f"{esc(round(hline[0], 4))}</title></line>")
    # bands first, then lines, then markers on top
    for i, s in enumerate(usable):
        band = sorted((x, lo, hi) for x, lo, hi in s.band if _finite(x, lo, hi))
        if len(band) >= 2:
            color = s.color or PALETTE[i % len(PALETTE)]
            top = " L".join(f"{_f(frame.sx(x))},{_f(frame.sy(hi))}" for x, _, hi in band)
            bottom = " L".join(f"{_f(frame.sx(x))},{_f(frame.sy(lo))}" for x, lo, _ in reversed(band))
            parts.append(f'<path class="band" d="M{top} L{bottom} Z" fill="{esc(color)}" fill-opacity="0.13" '
                         f'stroke="none"/>')
    for i, s in enumerate(usable):
        color = s.color or PALETTE[i % len(PALETTE)]
        key = s.key or s.name
        pts = [(j, x, y) for j, (x, y) in enumerate(s.points) if _finite(x, y)]
        pts.sort(key=lambda p: p[1])
        d = " L".join(f"{_f(frame.sx(x))},{_f(frame.sy(y))}" for _, x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<g class="series" data-series="{esc(key)}">')
        if len(pts) > 1:
            parts.append(f'<path d="M{d}" fill="none" stroke="{esc(color)}" stroke-width="{_f(s.width)}" '
                         f'stroke-linejoin="round"{dash}/>')
        if s.markers or len(pts) == 1:
            for j, x, y in pts:
                tip = s.labels[j] if s.labels and j < len(s.labels) else f"{s.name}: {x:g} → {y:.4g}"
                parts.append(
                    f'<circle class="pt" data-series="{esc(key)}" data-x="{x:g}" data-y="{y:.6g}" '
                    f'cx="{_f(frame.sx(x))}" cy="{_f(frame.sy(y))}" r="3.5" fill="#fff" stroke="{esc(color)}" '
                    f'stroke-width="2"><title>{esc(tip)}</title></circle>'
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class BarSeries:
    name: str
    values: Sequence[float | None]
    color: str | None = None
    key: str | None = None
    extra: Sequence[str] = field(default_factory=tuple)  # optional per-bar tooltip suffix


def bar_chart(
    categories: Sequence[str],
    series: Sequence[BarSeries],
    *,
    title: str = "",
    horizontal: bool = True,
    width: int = 560,
    height: int | None = None,
    value_max: float | None = None,
    value_format: str = "{:,.0f}",
    value_label: str = "",
    show_values: bool = True,
    label_every: int = 1,
    css_class: str = "chart bar-chart",
    empty_text: str = "no data yet",
) -> str:
    """Grouped bars: one group per category, one bar per series.

    ``horizontal`` (default) suits named categories (labels, per-label F1); vertical suits a
    time axis (annotations per hour; ``label_every`` thins the category labels). Missing values
    (None) leave a gap. ``value_max`` fixes the value axis (e.g. 1.0 for F1).
    """
    vals = [float(v) for s in series for v in s.values if v is not None and _finite(v)]
    if not categories or not vals:
        return _empty(width, height or 160, title or "bar chart", css_class, empty_text)
    vmax = value_max if value_max is not None else max(max(vals), 0) or 1.0
    ticks = [t for t in nice_ticks(0.0, vmax, 4) if t <= vmax * 1.0001 or value_max is None]
    vmax = max(vmax, ticks[-1]) if value_max is None else vmax
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    multi = len(series) > 1
    legend_items = [(s.name, s.color or PALETTE[i % len(PALETTE)], False) for i, s in enumerate(series)]
    if horizontal:
        short = [c if len(c) <= 26 else c[:25] + "…" for c in map(str, categories)]
        left = min(220.0, max(60.0, max(len(c) for c in short) * CHAR_W + 16))
        bar_h = 14.0
        group_h = bar_h * len(series) + 10
        legend, legend_h = _legend(legend_items, left, 14, width - left - 10) if multi else ([], 0.0)
        top = 10 + legend_h
        height = height or int(top + group_h * len(categories) + 34 + (14 if value_label else 0))
        plot_w = width - left - 56
        parts = _open(width, height, title or "bar chart", css_class)
        parts += legend

        def sx(v: float) -> float:
            return left + v / vmax * plot_w

        bottom = top + group_h * len(categories)
        parts.append('<g class="grid" stroke="#e5e7eb">')
        for t in ticks:
            parts.append(f'<line x1="{_f(sx(t))}" y1="{_f(top)}" x2="{_f(sx(t))}" y2="{_f(bottom)}"/>')
        parts.append('</g><g class="axes" fill="#4b5563">')
        for t in ticks:
            parts.append(f'<text x="{_f(sx(t))}" y="{_f(bottom + 16)}" text-anchor="middle">'
                         f"{esc(fmt_tick(t, step))}</text>")
        if value_label:
            parts.append(f'<text x="{_f(left + plot_w / 2)}" y="{_f(bottom + 32)}" text-anchor="middle" '
                         f'fill="#374151">{esc(value_label)}</text>')
        for ci, (cat, label) in enumerate(zip(categories, short)):
            gy = top + ci * group_h + 5
            parts.append(f'<text x="{_f(left - 8)}" y="{_f(gy + group_h / 2 + 1)}" text-anchor="end" '
                         f'fill="#111827"><title>{esc(cat)}</title>{esc(label)}</text>')
        parts.append(f'<line x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(bottom)}" stroke="#9ca3af"/>')
        parts.append("</g>")
        for si, s in enumerate(series):
            color = s.color or PALETTE[si % len(PALETTE)]
            key = s.key or s.name
            parts.append(f'<g class="series" data-series="{esc(key)}">')
            for ci, cat in enumerate(categories):
                v = _val(s.values, ci)
                if v is None:
                    continue
                y = top + ci * group_h + 5 + si * bar_h
                w = max(sx(min(v, vmax)) - left, 0.0)
                extra = s.extra[ci] if ci < len(s.extra) else ""
                tip = f"{cat} — {s.name}: {value_format.format(v)}{extra}" if multi else \
                    f"{cat}: {value_format.format(v)}{extra}"
                parts.append(
                    f'<rect class="bar" data-series="{esc(key)}" data-category="{esc(cat)}" data-value="{v:.6g}" '
                    f'x="{_f(left)}" y="{_f(y)}" width="{_f(w)}" height="{_f(bar_h - 2)}" fill="{esc(color)}" '
                    f'rx="2"><title>{esc(tip)}</title></rect>'
                )
                if show_values:
                    parts.append(f'<text x="{_f(left + w + 4)}" y="{_f(y + bar_h - 4)}" fill="#374151" '
                                 f'font-size="11">{esc(value_format.format(v))}</text>')
            parts.append("</g>")
        parts.append("</svg>")
        return "".join(parts)

    # vertical columns
    height = height or 220
    legend, legend_h = _legend(legend_items, 56, 14, width - 70) if multi else ([], 0.0)
    top = 12 + legend_h
    left, right = 48.0, 12.0
    bottom_margin = 40.0 + (14 if value_label else 0)
    plot_h = height - top - bottom_margin
    plot_w = width - left - right
    group_w = plot_w / len(categories)
    bar_w = max(min((group_w - 4) / len(series), 40.0), 1.5)

    def sy(v: float) -> float:
        return top + plot_h - v / vmax * plot_h

    parts = _open(width, height, title or "bar chart", css_class)
    parts += legend
    parts.append('<g class="grid" stroke="#e5e7eb">')
    for t in ticks:
        parts.append(f'<line x1="{_f(left)}" y1="{_f(sy(t))}" x2="{_f(width - right)}" y2="{_f(sy(t))}"/>')
    parts.append('</g><g class="axes" fill="#4b5563">')
    for t in ticks:
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(sy(t) + 4)}" text-anchor="end">{esc(fmt_tick(t, step))}</text>')
    for ci, cat in enumerate(categories):
        if ci % max(label_every, 1) == 0 or ci == len(categories) - 1:
            parts.append(f'<text x="{_f(left + group_w * (ci + 0.5))}" y="{_f(top + plot_h + 16)}" '
                         f'text-anchor="middle" font-size="11">{esc(cat)}</text>')
    if value_label:
        parts.append(f'<text x="{_f(left + plot_w / 2)}" y="{_f(height - 6)}" text-anchor="middle" '
                     f'fill="#374151">{esc(value_label)}</text>')
    parts.append(f'<line x1="{_f(left)}" y1="{_f(top + plot_h)}" x2="{_f(width - right)}" y2="{_f(top + plot_h)}" '
                 f'stroke="#9ca3af"/></g>')
    for si, s in enumerate(series):
        color = s.color or PALETTE[si % len(PALETTE)]
        key = s.key or s.name
        parts.append(f'<g class="series" data-series="{esc(key)}">')
        for ci, cat in enumerate(categories):
            v = _val(s.values, ci)
            if v is None:
                continue
            x = left + group_w * ci + (group_w - bar_w * len(series)) / 2 + si * bar_w
            y = sy(min(v, vmax))
            extra = s.extra[ci] if ci < len(s.extra) else ""
            parts.append(
                f'<rect class="bar" data-series="{esc(key)}" data-category="{esc(cat)}" data-value="{v:.6g}" '
                f'x="{_f(x)}" y="{_f(y)}" width="{_f(max(bar_w - 1, 1))}" height="{_f(top + plot_h - y)}" '
                f'fill="{esc(color)}" rx="1.5"><title>{esc(cat)}: {esc(value_format.format(v))}{esc(extra)}</title>'
                f"</rect>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    matrix: Sequence[Sequence[float]],
    *,
    title: str = "confusion matrix",
    row_title: str = "gold",
    col_title: str = "predicted",
    css_class: str = "chart heatmap",
    max_cell: int = 44,
) -> str:
    """A matrix of counts (confusion matrix): blue shade by value, diagonal outlined, count in each cell."""
    if not row_labels or not col_labels or not matrix:
        return _empty(400, 120, title, css_class, "no matrix")
    short_r = [r if len(r) <= 22 else r[:21] + "…" for r in map(str, row_labels)]
    short_c = [c if len(c) <= 22 else c[:21] + "…" for c in map(str, col_labels)]
    cell = float(max_cell if len(col_labels) <= 12 else max(18, 520 // len(col_labels)))
    left = max(len(r) for r in short_r) * CHAR_W + 34
    top = max(len(c) for c in short_c) * CHAR_W * 0.72 + 34
    width = left + cell * len(col_labels) + 16
    height = top + cell * len(row_labels) + 12
    vmax = max((float(v) for row in matrix for v in row if _finite(v)), default=0.0) or 1.0
    parts = _open(width, height, title, css_class, fluid=False)
    parts.append(f'<text x="{_f(left + cell * len(col_labels) / 2)}" y="14" text-anchor="middle" fill="#374151">'
                 f"{esc(col_title)} →</text>")
    parts.append(f'<text x="12" y="{_f(top + cell * len(row_labels) / 2)}" text-anchor="middle" fill="#374151" '
                 f'transform="rotate(-90 12 {_f(top + cell * len(row_labels) / 2)})">{esc(row_title)} →</text>')
    for j, c in enumerate(short_c):
        x = left + cell * (j + 0.5)
        parts.append(f'<text x="{_f(x)}" y="{_f(top - 6)}" transform="rotate(-40 {_f(x)} {_f(top - 6)})" '
                     f'fill="#111827" font-size="11"><title>{esc(col_labels[j])}</title>{esc(c)}</text>')
    for i, r in enumerate(short_r):
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(top + cell * (i + 0.5) + 4)}" text-anchor="end" '
                     f'fill="#111827" font-size="11"><title>{esc(row_labels[i])}</title>{esc(r)}</text>')
        for j in range(len(col_labels)):
            v = matrix[i][j] if i < len(matrix) and j < len(matrix[i]) else 0
            v = float(v) if _finite(v) else 0.0
            t = v / vmax
            # white -> blue-600
            rgb = tuple(round(a + (b - a) * t) for a, b in zip((255, 255, 255), (37, 99, 235)))
            fill = "#{:02x}{:02x}{:02x}".format(*rgb)
            x, y = left + cell * j, top + cell * i
            txt = "#ffffff" if t > 0.55 else "#111827"
            parts.append(
                f'<g class="cell" data-row="{esc(row_labels[i])}" data-col="{esc(col_labels[j])}" data-value="{v:g}">'
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(cell)}" height="{_f(cell)}" fill="{fill}" stroke="#e5e7eb"/>'
                f'<text x="{_f(x + cell / 2)}" y="{_f(y + cell / 2 + 4)}" text-anchor="middle" fill="{txt}" '
                f'font-size="11">{v:g}</text><title>gold {esc(row_labels[i])}, predicted {esc(col_labels[j])}: '
                f"{v:g}</title></g>"
            )
    for i in range(min(len(row_labels), len(col_labels))):  # outline the diagonal (correct answers)
        parts.append(f'<rect x="{_f(left + cell * i + 0.75)}" y="{_f(top + cell * i + 0.75)}" width="{_f(cell - 1.5)}" '
                     f'height="{_f(cell - 1.5)}" fill="none" stroke="#111827" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def progress_bar(fraction: float, *, width: int = 120, height: int = 10, label: str = "") -> str:
    """A tiny inline progress bar (no inline CSS needed)."""
    frac = min(max(float(fraction) if _finite(fraction) else 0.0, 0.0), 1.0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="progress" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(label or f"{frac:.0%}")}">'
        f'<rect width="{width}" height="{height}" rx="{height / 2:g}" fill="#e5e7eb"/>'
        f'<rect width="{_f(width * frac)}" height="{height}" rx="{height / 2:g}" fill="#2563eb"/></svg>'
    )


__all__ = ["PALETTE", "BarSeries", "Series", "bar_chart", "esc", "heatmap", "line_chart", "nice_ticks", "progress_bar"]
