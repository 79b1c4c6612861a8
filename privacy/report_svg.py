"""Plots of the red team's page as inline SVG written by hand (the page must open without
Python, JavaScript or a network fetch; the coordinator's environment has no matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
           "#bcbd22", "#e377c2", "#7f7f7f")
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 400, 60, 210, 36, 50

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def xy_plot(title: str, series: Series, *, x_label: str, y_label: str,
            x_range: tuple[float, float], y_range: tuple[float, float], log_x: bool = False,
            dashed: Series | None = None, x_ticks: Sequence[tuple[float, str]] = ()) -> str:
    """Lines through (x, y) points; `dashed` series drawn dashed (ceilings, chance)."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    fx = (lambda v: math.log10(max(v, x_range[0]))) if log_x else (lambda v: v)
    x0, x1 = fx(x_range[0]), fx(x_range[1])

    def px(v: float) -> float:
        return float(LEFT + pw * (fx(v) - x0) / (x1 - x0))

    def py(v: float) -> float:
        return TOP + ph * (1 - (v - y_range[0]) / (y_range[1] - y_range[0]))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11" role="img">',
           f'<title>{escape(title)}</title><rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{LEFT + pw / 2}" y="20" text-anchor="middle" font-size="13">'
           f'{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>']
    for k in range(6):
        yv = y_range[0] + (y_range[1] - y_range[0]) * k / 5
        out.append(f'<text x="{LEFT - 6}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.2f}</text>'
                   f'<line x1="{LEFT}" y1="{py(yv):.1f}" x2="{LEFT + pw}" y2="{py(yv):.1f}" '
                   'stroke="#eee"/>')
    ticks = list(x_ticks) or [(x_range[0] + (x_range[1] - x_range[0]) * k / 5,
                               f"{x_range[0] + (x_range[1] - x_range[0]) * k / 5:g}")
                              for k in range(6)]
    for v, lab in ticks:
        out.append(f'<text x="{px(v):.1f}" y="{TOP + ph + 15}" text-anchor="middle">'
                   f'{escape(lab)}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {TOP + ph / 2})">{escape(y_label)}</text>')
    ly = TOP + 6.0
    for j, (name, (xs, ys)) in enumerate((dashed or {}).items()):
        ly = _line(out, name, xs, ys, ("#000", "#888", "#bbb")[min(j, 2)], px, py, ly, True)
    for j, (name, (xs, ys)) in enumerate(series.items()):
        ly = _line(out, name, xs, ys, COLOURS[j % len(COLOURS)], px, py, ly, False)
    out.append("</svg>")
    return "\n".join(out)


def _line(out: list[str], name: str, xs: Sequence[float], ys: Sequence[float], colour: str,
          px: Callable[[float], float], py: Callable[[float], float], ly: float,
          dashed: bool) -> float:
    pts = [(px(x), py(y)) for x, y in zip(xs, ys, strict=True)
           if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    if pts:
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash} '
                   'points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        if len(pts) < 12:
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>'
                    for a, b in pts]
    x = W - RIGHT + 10
    out.append(f'<line x1="{x}" y1="{ly}" x2="{x + 18}" y2="{ly}" stroke="{colour}" '
               f'stroke-width="2"{dash}/><text x="{x + 23}" y="{ly + 4}">{escape(name)}</text>')
    return ly + 15
