"""Small inline SVG charts for the fleet page: drawn on the server from numbers only (no script, no
library), every label escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 720, 160, 28


def bars(
    values: Sequence[float | None], labels: Sequence[str], *, title: str, unit: str = "", top: float | None = None
) -> str:
    """A bar chart (``None``: no bar, "no data"), each bar titled with its label and value."""
    count = max(len(values), 1)
    peak = top if top is not None else max([v for v in values if v is not None] or [0]) or 1
    slot = (WIDTH - 2 * PAD) / count
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
    ]
    for index, (value, label) in enumerate(zip(values, labels, strict=True)):
        x = PAD + index * slot
        text = "no data" if value is None else f"{value:g}{unit}"
        if value is None:
            parts.append(
                f'<text class="label" x="{x + slot / 2:.1f}" y="{HEIGHT - PAD - 4}" text-anchor="middle">'
                f"<title>{escape(label)}: no data</title>&#8211;</text>"
            )
        else:
            height = (HEIGHT - 2 * PAD) * (value / peak)
            parts.append(
                f'<rect class="bar" x="{x + 2:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{max(slot - 4, 1):.1f}" '
                f'height="{height:.1f}"><title>{escape(label)}: {escape(text)}</title></rect>'
            )
        if count <= 12 or index % max(count // 12, 1) == 0:
            parts.append(
                f'<text class="label" x="{x + slot / 2:.1f}" y="{HEIGHT - PAD + 14}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append(f'<text class="label" x="{PAD}" y="{PAD - 10}">max {peak:g}{escape(unit)}</text></svg>')
    return "".join(parts)


def meter(used: int, limit: int | None) -> str:
    """A quota bar: used of limit (no limit: the count alone)."""
    if limit is None:
        return f'<span class="meter-text">{used} (no limit)</span>'
    share = min(used / limit, 1.0) if limit else 1.0
    level = "full" if used >= limit else "high" if share >= 0.8 else "ok"
    return (
        f'<span class="meter {level}" title="{used} of {limit}"><span style="width:{share * 100:.0f}%"></span></span>'
        f'<span class="meter-text">{used} / {limit}</span>'
    )
