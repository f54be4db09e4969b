"""Small SVG charts drawn on the server, for reports that print well and need no script."""

from __future__ import annotations

from html import escape


def bar_chart(
    rows: list[tuple[str, float]],
    title: str,
    unit: str = "",
    width: int = 640,
    bar_height: int = 22,
    max_value: float | None = None,
) -> str:
    """Horizontal bars, one per row, labelled with their value."""
    if not rows:
        return f'<p class="empty">{escape(title)}: nothing in this period.</p>'
    top = max_value if max_value is not None else max(v for _, v in rows) or 1.0
    label_w, value_w = 190, 70
    plot_w = width - label_w - value_w
    height = 28 + bar_height * len(rows)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="16" class="title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(rows):
        y = 26 + i * bar_height
        w = max(0.0, plot_w * value / top) if top else 0.0
        parts += [
            f'<text x="{label_w - 6}" y="{y + bar_height * 0.7:.1f}" text-anchor="end">'
            f"{escape(label)}</text>",
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_height - 6}" '
            'class="bar"/>',
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height * 0.7:.1f}">'
            f"{value:g}{escape(unit)}</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)
