"""The heatmap (confusion matrix): a blue shade per count, the diagonal outlined."""

from __future__ import annotations

from collections.abc import Sequence

from .primitives import CHAR_W, empty_chart, esc, finite, num, open_svg


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
        return empty_chart(400, 120, title, css_class, "no matrix")
    short_r = [r if len(r) <= 22 else r[:21] + "…" for r in map(str, row_labels)]
    short_c = [c if len(c) <= 22 else c[:21] + "…" for c in map(str, col_labels)]
    cell = float(max_cell if len(col_labels) <= 12 else max(18, 520 // len(col_labels)))
    left = max(len(r) for r in short_r) * CHAR_W + 34
    top = max(len(c) for c in short_c) * CHAR_W * 0.72 + 34
    width = left + cell * len(col_labels) + 16
    height = top + cell * len(row_labels) + 12
    vmax = max((float(v) for row in matrix for v in row if finite(v)), default=0.0) or 1.0
    parts = open_svg(width, height, title, css_class, fluid=False)
    parts.append(f'<text x="{num(left + cell * len(col_labels) / 2)}" y="14" text-anchor="middle" fill="#374151">'
                 f"{esc(col_title)} →</text>")
    parts.append(f'<text x="12" y="{num(top + cell * len(row_labels) / 2)}" text-anchor="middle" fill="#374151" '
                 f'transform="rotate(-90 12 {num(top + cell * len(row_labels) / 2)})">{esc(row_title)} →</text>')
    for j, c in enumerate(short_c):
        x = left + cell * (j + 0.5)
        parts.append(f'<text x="{num(x)}" y="{num(top - 6)}" transform="rotate(-40 {num(x)} {num(top - 6)})" '
                     f'fill="#111827" font-size="11"><title>{esc(col_labels[j])}</title>{esc(c)}</text>')
    for i, r in enumerate(short_r):
        parts.append(f'<text x="{num(left - 6)}" y="{num(top + cell * (i + 0.5) + 4)}" text-anchor="end" '
                     f'fill="#111827" font-size="11"><title>{esc(row_labels[i])}</title>{esc(r)}</text>')
        for j in range(len(col_labels)):
            v = matrix[i][j] if i < len(matrix) and j < len(matrix[i]) else 0
            v = float(v) if finite(v) else 0.0
            t = v / vmax
            # white -> blue-600
            rgb = tuple(round(a + (b - a) * t) for a, b in zip((255, 255, 255), (37, 99, 235)))
            fill = "#{:02x}{:02x}{:02x}".format(*rgb)
            x, y = left + cell * j, top + cell * i
            txt = "#ffffff" if t > 0.55 else "#111827"
            parts.append(
                f'<g class="cell" data-row="{esc(row_labels[i])}" data-col="{esc(col_labels[j])}" data-value="{v:g}">'
                f'<rect x="{num(x)}" y="{num(y)}" width="{num(cell)}" height="{num(cell)}" fill="{fill}" '
                f'stroke="#e5e7eb"/>'
                f'<text x="{num(x + cell / 2)}" y="{num(y + cell / 2 + 4)}" text-anchor="middle" fill="{txt}" '
                f'font-size="11">{v:g}</text><title>gold {esc(row_labels[i])}, predicted {esc(col_labels[j])}: '
                f"{v:g}</title></g>"
            )
    for i in range(min(len(row_labels), len(col_labels))):  # outline the diagonal (correct answers)
        parts.append(f'<rect x="{num(left + cell * i + 0.75)}" y="{num(top + cell * i + 0.75)}" '
                     f'width="{num(cell - 1.5)}" height="{num(cell - 1.5)}" fill="none" stroke="#111827" '
                     f'stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)
