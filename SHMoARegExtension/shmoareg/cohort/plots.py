"""Distribution plots for the report as inline SVG: per metric a box (quartiles, median, whiskers to the extremes)
under one dot per pair, whose tooltip names the pair."""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

WIDTH, HEIGHT, MARGIN = 440, 78, 22
MIDDLE = 38


def strip_plot(title: str, points: Sequence[tuple[str, float]], digits: int) -> str:
    """An SVG element for ``points`` (pair id, value), values formatted with ``digits`` decimals."""
    values = np.array([value for _, value in points], dtype=float)
    low, high = float(values.min()), float(values.max())
    if high == low:  # one value: put it in the middle
        low, high = low - (abs(low) or 1.0) / 2, high + (abs(high) or 1.0) / 2

    def x(value: float) -> float:
        return MARGIN + (value - low) / (high - low) * (WIDTH - 2 * MARGIN)

    q1, median, q3 = np.percentile(values, [25, 50, 75])
    smallest, largest = values.min(), values.max()
    parts = [
        f'<svg class="plot" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="{MARGIN}" y="12" class="plot-title">{escape(title)}</text>',
        f'<line x1="{x(smallest):.1f}" x2="{x(largest):.1f}" y1="{MIDDLE}" y2="{MIDDLE}" class="whisker"/>',
        f'<rect x="{x(q1):.1f}" y="{MIDDLE - 12}" width="{max(x(q3) - x(q1), 1):.1f}" height="24" class="box"/>',
        f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{MIDDLE - 12}" y2="{MIDDLE + 12}" class="median"/>',
    ]
    for index, (identifier, value) in enumerate(points):
        jitter = ((index * 7) % 11 - 5) * 1.6  # spread equal values apart, the same on every run
        parts.append(f'<circle cx="{x(value):.1f}" cy="{MIDDLE + jitter:.1f}" r="3.5" class="dot">'
                     f'<title>{escape(identifier)}: {value:.{digits}f}</title></circle>')
    parts += [f'<text x="{x(smallest):.1f}" y="{HEIGHT - 4}" text-anchor="middle">{smallest:.{digits}f}</text>',
              f'<text x="{x(largest):.1f}" y="{HEIGHT - 4}" text-anchor="middle">{largest:.{digits}f}</text>'
              if largest != smallest else "", "</svg>"]
    return "".join(parts)
