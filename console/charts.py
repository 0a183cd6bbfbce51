"""Inline SVG charts rendered on the server: no JavaScript, no CDN, readable in a screenshot.

Pure functions from data to SVG markup; every text is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3f}".rstrip("0").rstrip(".")


def line_chart(x_labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str,
               width: int = 560, height: int = 200, markers: Sequence[int] = (), y_min: float | None = None,
               y_max: float | None = None, marker_label: str = "alert") -> str:
    """Lines over shared x positions; ``markers`` are x indexes drawn as red dashed lines."""
    left, right, top, bottom = 48, 12, 26, 34
    w, h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    if not values or not x_labels:
        out.append(f'<text x="{left}" y="{top + h / 2:.0f}" class="chart-empty">no data yet</text></svg>')
        return "".join(out)
    lo = min(values) if y_min is None else y_min
    hi = max(values) if y_max is None else y_max
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: float) -> float:
        return top + h - (v - lo) / (hi - lo) * h

    for frac in (0, 0.5, 1):
        gv = lo + (hi - lo) * frac
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(gv):.1f}" y2="{y(gv):.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y(gv) + 4:.1f}" class="axis" text-anchor="end">{_fmt(gv)}</text>')
    for i in sorted(set(markers)):
        if 0 <= i < n:
            out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + h}" class="marker">'
                       f'<title>{escape(marker_label)} at {escape(x_labels[i])}</title></line>')
    for k, (name, vs) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(x(i), y(v)) for i, v in enumerate(vs) if v is not None]
        if len(pts) == 1:
            out.append(f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="3" fill="{color}"/>')
        elif pts:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        lx = left + 8 + k * 130
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="{height - 5}" class="legend">{escape(name)}</text>')
    out.append(f'<text x="{left}" y="{top + h + 13}" class="axis">{escape(x_labels[0])}</text>')
    if n > 1:
        out.append(f'<text x="{left + w}" y="{top + h + 13}" class="axis" text-anchor="end">'
                   f'{escape(x_labels[-1])}</text>')
    out.append("</svg>")
    return "".join(out)


def stacked_bars(categories: Sequence[str], stacks: dict[str, Sequence[float]], *, title: str,
                 width: int = 560, height: int = 200) -> str:
    """One bar per category, stacked by series, with the total on top."""
    left, right, top, bottom = 48, 12, 26, 34
    w, h = width - left - right, height - top - bottom
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    totals = [sum(vs[i] for vs in stacks.values()) for i in range(len(categories))]
    if not categories or not any(totals):
        out.append(f'<text x="{left}" y="{top + h / 2:.0f}" class="chart-empty">no data yet</text></svg>')
        return "".join(out)
    hi = max(totals)
    slot = w / len(categories)
    bw = min(48.0, slot * 0.7)
    for i, cat in enumerate(categories):
        x0 = left + slot * i + (slot - bw) / 2
        acc = 0.0
        for k, (name, vs) in enumerate(stacks.items()):
            v = vs[i]
            if v <= 0:
                continue
            y1 = top + h - (acc + v) / hi * h
            out.append(f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{bw:.1f}" height="{v / hi * h:.1f}" '
                       f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(cat)}: {escape(name)} {_fmt(v)}</title></rect>')
            acc += v
        out.append(f'<text x="{x0 + bw / 2:.1f}" y="{top + h - acc / hi * h - 3:.1f}" class="axis" '
                   f'text-anchor="middle">{_fmt(totals[i])}</text>'
                   f'<text x="{x0 + bw / 2:.1f}" y="{top + h + 13}" class="axis" text-anchor="middle">{escape(cat)}</text>')
    for k, name in enumerate(stacks):
        lx = left + 8 + k * 120
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{lx + 14}" y="{height - 5}" class="legend">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbars(rows: Sequence[tuple[str, float, float | None, str]], *, title: str, width: int = 560) -> str:
    """Horizontal bars of scores in [0, 1]: (name, score, baseline or None, status) per row; the
    baseline is a black tick, a regressed row is red."""
    left, top, row_h = 130, 26, 22
    height = top + row_h * max(len(rows), 1) + 10
    w = width - left - 60
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="8" y="16" class="chart-title">{escape(title)}</text>']
    if not rows:
        out.append(f'<text x="8" y="{top + 14}" class="chart-empty">no gate verdict yet</text></svg>')
        return "".join(out)
    for i, (name, score, base, status) in enumerate(rows):
        y0 = top + i * row_h
        cls = "bar-bad" if status in ("regressed", "insufficient") else "bar-ok"
        out.append(f'<text x="{left - 6}" y="{y0 + 14}" class="axis" text-anchor="end">{escape(name)}</text>'
                   f'<rect x="{left}" y="{y0 + 3}" width="{max(score, 0) * w:.1f}" height="{row_h - 8}" class="{cls}"/>'
                   f'<text x="{left + max(score, 0) * w + 4:.1f}" y="{y0 + 14}" class="axis">{score:.3f} {escape(status)}</text>')
        if base is not None:
            bx = left + base * w
            out.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{y0 + 1}" y2="{y0 + row_h - 3}" class="baseline">'
                       f'<title>baseline {base:.3f}</title></line>')
    out.append("</svg>")
    return "".join(out)
