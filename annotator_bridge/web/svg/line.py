"""The line chart (learning curves): series of points, optional shaded bands, a reference line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .primitives import (
    BASELINE_COLOR,
    CHAR_W,
    PALETTE,
    Frame,
    empty_chart,
    esc,
    finite,
    fmt_tick,
    legend_rows,
    nice_ticks,
    num,
    open_svg,
)


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
    usable = [s for s in series if any(finite(x, y) for x, y in s.points)]
    if not usable:
        return empty_chart(width, height, title or "chart", css_class, empty_text)
    xs = [x for s in usable for x, y in s.points if finite(x, y)]
    ys = [y for s in usable for x, y in s.points if finite(x, y)]
    for s in usable:
        for x, lo, hi in s.band:
            if finite(x, lo, hi):
                xs.append(x)
                ys.extend((lo, hi))
    if hline is not None and finite(hline[0]):
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
    legend, legend_h = legend_rows(legend_items, 60, 14, width - 80)
    y_label_w = max(len(fmt_tick(t, y_step)) for t in yt) * CHAR_W
    frame = Frame(width, height, left=max(52.0, y_label_w + 30), right=18, top=14 + legend_h + 6,
                   bottom=46 if x_label else 30, x0=xt[0], x1=xt[-1], y0=min(yt[0], lo_y), y1=max(yt[-1], hi_y))
    parts = open_svg(width, height, title or "line chart", css_class)
    parts += legend
    # grid + ticks
    parts.append('<g class="grid" stroke="#e5e7eb" stroke-width="1">')
    for t in yt:
        y = frame.sy(t)
        parts.append(f'<line x1="{num(frame.left)}" y1="{num(y)}" x2="{num(width - frame.right)}" y2="{num(y)}"/>')
    for t in xt:
        x = frame.sx(t)
        parts.append(f'<line x1="{num(x)}" y1="{num(frame.top)}" x2="{num(x)}" y2="{num(frame.top + frame.ph)}"/>')
    parts.append("</g>")
    parts.append('<g class="axes" fill="#4b5563">')
    for t in yt:
        parts.append(f'<text x="{num(frame.left - 8)}" y="{num(frame.sy(t) + 4)}" text-anchor="end">'
                     f"{esc(fmt_tick(t, y_step))}</text>")
    for t in xt:
        parts.append(f'<text x="{num(frame.sx(t))}" y="{num(frame.top + frame.ph + 18)}" text-anchor="middle">'
                     f"{esc(fmt_tick(t, x_step))}</text>")
    parts.append(
        f'<line x1="{num(frame.left)}" y1="{num(frame.top + frame.ph)}" x2="{num(width - frame.right)}" '
        f'y2="{num(frame.top + frame.ph)}" stroke="#9ca3af"/>'
        f'<line x1="{num(frame.left)}" y1="{num(frame.top)}" x2="{num(frame.left)}" y2="{num(frame.top + frame.ph)}" '
        f'stroke="#9ca3af"/>'
    )
    if x_label:
        parts.append(f'<text class="x-label" x="{num(frame.left + frame.pw / 2)}" y="{num(height - 8)}" '
                     f'text-anchor="middle" fill="#374151">{esc(x_label)}</text>')
    if y_label:
        cy = frame.top + frame.ph / 2
        parts.append(f'<text class="y-label" x="14" y="{num(cy)}" text-anchor="middle" fill="#374151" '
                     f'transform="rotate(-90 14 {num(cy)})">{esc(y_label)}</text>')
    parts.append("</g>")
    if hline is not None and finite(hline[0]):
        y = frame.sy(hline[0])
        parts.append(f'<line class="hline" x1="{num(frame.left)}" y1="{num(y)}" x2="{num(width - frame.right)}" '
                     f'y2="{num(y)}" stroke="{BASELINE_COLOR}" stroke-dasharray="3 3"><title>{esc(hline[1])}: '
                     f"{esc(round(hline[0], 4))}</title></line>")
    # bands first, then lines, then markers on top
    for i, s in enumerate(usable):
        band = sorted((x, lo, hi) for x, lo, hi in s.band if finite(x, lo, hi))
        if len(band) >= 2:
            color = s.color or PALETTE[i % len(PALETTE)]
            top = " L".join(f"{num(frame.sx(x))},{num(frame.sy(hi))}" for x, _, hi in band)
            bottom = " L".join(f"{num(frame.sx(x))},{num(frame.sy(lo))}" for x, lo, _ in reversed(band))
            parts.append(f'<path class="band" d="M{top} L{bottom} Z" fill="{esc(color)}" fill-opacity="0.13" '
                         f'stroke="none"/>')
    for i, s in enumerate(usable):
        color = s.color or PALETTE[i % len(PALETTE)]
        key = s.key or s.name
        pts = [(j, x, y) for j, (x, y) in enumerate(s.points) if finite(x, y)]
        pts.sort(key=lambda p: p[1])
        d = " L".join(f"{num(frame.sx(x))},{num(frame.sy(y))}" for _, x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<g class="series" data-series="{esc(key)}">')
        if len(pts) > 1:
            parts.append(f'<path d="M{d}" fill="none" stroke="{esc(color)}" stroke-width="{num(s.width)}" '
                         f'stroke-linejoin="round"{dash}/>')
        if s.markers or len(pts) == 1:
            for j, x, y in pts:
                tip = s.labels[j] if s.labels and j < len(s.labels) else f"{s.name}: {x:g} → {y:.4g}"
                parts.append(
                    f'<circle class="pt" data-series="{esc(key)}" data-x="{x:g}" data-y="{y:.6g}" '
                    f'cx="{num(frame.sx(x))}" cy="{num(frame.sy(y))}" r="3.5" fill="#fff" stroke="{esc(color)}" '
                    f'stroke-width="2"><title>{esc(tip)}</title></circle>'
                )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
