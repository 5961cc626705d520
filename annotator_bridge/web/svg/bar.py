"""Bar charts (grouped, horizontal or vertical) and the inline progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .primitives import (
    CHAR_W,
    PALETTE,
    empty_chart,
    esc,
    finite,
    fmt_tick,
    legend_rows,
    nice_ticks,
    num,
    open_svg,
    value_at,
)


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
    vals = [float(v) for s in series for v in s.values if v is not None and finite(v)]
    if not categories or not vals:
        return empty_chart(width, height or 160, title or "bar chart", css_class, empty_text)
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
        legend, legend_h = legend_rows(legend_items, left, 14, width - left - 10) if multi else ([], 0.0)
        top = 10 + legend_h
        height = height or int(top + group_h * len(categories) + 34 + (14 if value_label else 0))
        plot_w = width - left - 56
        parts = open_svg(width, height, title or "bar chart", css_class)
        parts += legend

        def sx(v: float) -> float:
            return left + v / vmax * plot_w

        bottom = top + group_h * len(categories)
        parts.append('<g class="grid" stroke="#e5e7eb">')
        for t in ticks:
            parts.append(f'<line x1="{num(sx(t))}" y1="{num(top)}" x2="{num(sx(t))}" y2="{num(bottom)}"/>')
        parts.append('</g><g class="axes" fill="#4b5563">')
        for t in ticks:
            parts.append(f'<text x="{num(sx(t))}" y="{num(bottom + 16)}" text-anchor="middle">'
                         f"{esc(fmt_tick(t, step))}</text>")
        if value_label:
            parts.append(f'<text x="{num(left + plot_w / 2)}" y="{num(bottom + 32)}" text-anchor="middle" '
                         f'fill="#374151">{esc(value_label)}</text>')
        for ci, (cat, label) in enumerate(zip(categories, short)):
            gy = top + ci * group_h + 5
            parts.append(f'<text x="{num(left - 8)}" y="{num(gy + group_h / 2 + 1)}" text-anchor="end" '
                         f'fill="#111827"><title>{esc(cat)}</title>{esc(label)}</text>')
        parts.append(f'<line x1="{num(left)}" y1="{num(top)}" x2="{num(left)}" y2="{num(bottom)}" stroke="#9ca3af"/>')
        parts.append("</g>")
        for si, s in enumerate(series):
            color = s.color or PALETTE[si % len(PALETTE)]
            key = s.key or s.name
            parts.append(f'<g class="series" data-series="{esc(key)}">')
            for ci, cat in enumerate(categories):
                v = value_at(s.values, ci)
                if v is None:
                    continue
                y = top + ci * group_h + 5 + si * bar_h
                w = max(sx(min(v, vmax)) - left, 0.0)
                extra = s.extra[ci] if ci < len(s.extra) else ""
                tip = f"{cat} — {s.name}: {value_format.format(v)}{extra}" if multi else \
                    f"{cat}: {value_format.format(v)}{extra}"
                parts.append(
                    f'<rect class="bar" data-series="{esc(key)}" data-category="{esc(cat)}" data-value="{v:.6g}" '
                    f'x="{num(left)}" y="{num(y)}" width="{num(w)}" height="{num(bar_h - 2)}" fill="{esc(color)}" '
                    f'rx="2"><title>{esc(tip)}</title></rect>'
                )
                if show_values:
                    parts.append(f'<text x="{num(left + w + 4)}" y="{num(y + bar_h - 4)}" fill="#374151" '
                                 f'font-size="11">{esc(value_format.format(v))}</text>')
            parts.append("</g>")
        parts.append("</svg>")
        return "".join(parts)

    # vertical columns
    height = height or 220
    legend, legend_h = legend_rows(legend_items, 56, 14, width - 70) if multi else ([], 0.0)
    top = 12 + legend_h
    left, right = 48.0, 12.0
    bottom_margin = 40.0 + (14 if value_label else 0)
    plot_h = height - top - bottom_margin
    plot_w = width - left - right
    group_w = plot_w / len(categories)
    bar_w = max(min((group_w - 4) / len(series), 40.0), 1.5)

    def sy(v: float) -> float:
        return top + plot_h - v / vmax * plot_h

    parts = open_svg(width, height, title or "bar chart", css_class)
    parts += legend
    parts.append('<g class="grid" stroke="#e5e7eb">')
    for t in ticks:
        parts.append(f'<line x1="{num(left)}" y1="{num(sy(t))}" x2="{num(width - right)}" y2="{num(sy(t))}"/>')
    parts.append('</g><g class="axes" fill="#4b5563">')
    for t in ticks:
        parts.append(f'<text x="{num(left - 6)}" y="{num(sy(t) + 4)}" text-anchor="end">'
                     f"{esc(fmt_tick(t, step))}</text>")
    for ci, cat in enumerate(categories):
        if ci % max(label_every, 1) == 0 or ci == len(categories) - 1:
            parts.append(f'<text x="{num(left + group_w * (ci + 0.5))}" y="{num(top + plot_h + 16)}" '
                         f'text-anchor="middle" font-size="11">{esc(cat)}</text>')
    if value_label:
        parts.append(f'<text x="{num(left + plot_w / 2)}" y="{num(height - 6)}" text-anchor="middle" '
                     f'fill="#374151">{esc(value_label)}</text>')
    parts.append(f'<line x1="{num(left)}" y1="{num(top + plot_h)}" x2="{num(width - right)}" y2="{num(top + plot_h)}" '
                 f'stroke="#9ca3af"/></g>')
    for si, s in enumerate(series):
        color = s.color or PALETTE[si % len(PALETTE)]
        key = s.key or s.name
        parts.append(f'<g class="series" data-series="{esc(key)}">')
        for ci, cat in enumerate(categories):
            v = value_at(s.values, ci)
            if v is None:
                continue
            x = left + group_w * ci + (group_w - bar_w * len(series)) / 2 + si * bar_w
            y = sy(min(v, vmax))
            extra = s.extra[ci] if ci < len(s.extra) else ""
            parts.append(
                f'<rect class="bar" data-series="{esc(key)}" data-category="{esc(cat)}" data-value="{v:.6g}" '
                f'x="{num(x)}" y="{num(y)}" width="{num(max(bar_w - 1, 1))}" height="{num(top + plot_h - y)}" '
                f'fill="{esc(color)}" rx="1.5"><title>{esc(cat)}: {esc(value_format.format(v))}{esc(extra)}</title>'
                f"</rect>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def progress_bar(fraction: float, *, width: int = 120, height: int = 10, label: str = "") -> str:
    """A tiny inline progress bar (no inline CSS needed)."""
    frac = min(max(float(fraction) if finite(fraction) else 0.0, 0.0), 1.0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="progress" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(label or f"{frac:.0%}")}">'
        f'<rect width="{width}" height="{height}" rx="{height / 2:g}" fill="#e5e7eb"/>'
        f'<rect width="{num(width * frac)}" height="{height}" rx="{height / 2:g}" fill="#2563eb"/></svg>'
    )
