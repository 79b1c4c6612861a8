"""A line plot written as SVG by hand: the coordinator's environment has no matplotlib, and a
benchmark's one figure does not justify adding it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f")
W, H, LEFT, RIGHT, TOP, BOTTOM = 780, 420, 70, 250, 40, 60


def line_plot(title: str, x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]],
              y_label: str, *, hlines: Mapping[str, float] | None = None) -> str:
    """Series over categorical x positions (None: no point); `hlines` dashed reference lines."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    values += list((hlines or {}).values())
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.01, (hi - lo) * 0.1)
    lo, hi = lo - pad, hi + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(i: int) -> float:
        return LEFT + (pw * i / max(1, len(x_labels) - 1))

    def py(v: float) -> float:
        return TOP + ph * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
           f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>']
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<line x1="{LEFT - 4}" y1="{py(v):.1f}" x2="{LEFT}" y2="{py(v):.1f}" '
                   f'stroke="black"/><text x="{LEFT - 8}" y="{py(v) + 4:.1f}" '
                   f'text-anchor="end">{v:.3f}</text>')
    for i, lab in enumerate(x_labels):
        out.append(f'<text x="{px(i):.1f}" y="{TOP + ph + 18}" text-anchor="middle">'
                   f'{escape(lab)}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 15}" text-anchor="middle">epsilon</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {TOP + ph / 2})">{escape(y_label)}</text>')
    legend_y = TOP
    for j, (name, v) in enumerate((hlines or {}).items()):
        c = COLOURS[-1 - j % 2]
        out.append(f'<line x1="{LEFT}" y1="{py(v):.1f}" x2="{LEFT + pw}" y2="{py(v):.1f}" '
                   f'stroke="{c}" stroke-dasharray="6 4"/>')
        legend_y = _legend(out, legend_y, name, c, dashed=True)
    for j, (name, s) in enumerate(series.items()):
        c = COLOURS[j % (len(COLOURS) - 2)]
        pts = [(px(i), py(v)) for i, v in enumerate(s) if v is not None and math.isfinite(v)]
        if pts:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>' for a, b in pts]
        legend_y = _legend(out, legend_y, name, c)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(out: list[str], y: float, name: str, colour: str, *, dashed: bool = False) -> float:
    x = W - RIGHT + 12
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    out.append(f'<line x1="{x}" y1="{y}" x2="{x + 20}" y2="{y}" stroke="{colour}" '
               f'stroke-width="2"{dash}/><text x="{x + 26}" y="{y + 4}">{escape(name)}</text>')
    return y + 18
