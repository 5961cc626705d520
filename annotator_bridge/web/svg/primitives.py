"""The pieces every chart is drawn with: colours, escaping, coordinates, ticks, the frame, legend, empty state."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#db2777", "#ca8a04", "#4b5563")
"""Series colours (blue, orange, green, purple, cyan, pink, amber, grey)."""

BASELINE_COLOR = "#6b7280"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
CHAR_W = 6.6  # average glyph width at 12px, for layout estimates


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def num(v: float) -> str:
    """Compact coordinate."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1/2/2.5/5 x 10^k steps)."""
    if not finite(lo, hi):
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


def value_at(values: Sequence[float | None], i: int) -> float | None:
    """values[i] as a finite float, else None (missing, None, NaN)."""
    v = values[i] if i < len(values) else None
    return float(v) if v is not None and finite(v) else None


@dataclass(frozen=True)
class Frame:
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


def open_svg(width: float, height: float, title: str, css_class: str, fluid: bool = True) -> list[str]:
    """``fluid`` charts fill their container's width; others keep their natural size (CSS caps them at 100%)."""
    size = 'width="100%"' if fluid else f'width="{num(width)}" height="{num(height)}"'
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{esc(css_class)}" viewBox="0 0 {num(width)} {num(height)}" '
        f'{size} preserveAspectRatio="xMidYMid meet" role="img" aria-label="{esc(title)}" {FONT} '
        f'font-size="12">',
        f"<title>{esc(title)}</title>",
    ]


def legend_rows(items: Sequence[tuple[str, str, bool]], x: float, y: float, max_w: float) -> tuple[list[str], float]:
    """Legend rows starting at (x, y); returns the SVG parts and the height used."""
    parts = ['<g class="legend">']
    cx, cy = x, y
    for name, color, dashed in items:
        w = 28 + len(name) * CHAR_W + 16
        if cx > x and cx + w > x + max_w:
            cx, cy = x, cy + 18
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{num(cx)}" y1="{num(cy)}" x2="{num(cx + 22)}" y2="{num(cy)}" stroke="{esc(color)}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text x="{num(cx + 28)}" y="{num(cy + 4)}" fill="#374151">{esc(name)}</text>'
        )
        cx += w
    parts.append("</g>")
    return parts, cy - y + 18


def empty_chart(width: float, height: float, title: str, css_class: str, text: str) -> str:
    parts = open_svg(width, height, title, css_class)
    parts.append(
        f'<rect x="0.5" y="0.5" width="{num(width - 1)}" height="{num(height - 1)}" fill="#f9fafb" stroke="#e5e7eb" '
        f'rx="6"/><text x="{num(width / 2)}" y="{num(height / 2)}" text-anchor="middle" fill="#6b7280">'
        f"{esc(text)}</text></svg>"
    )
    return "".join(parts)
