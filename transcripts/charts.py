"""Small inline SVG charts for the HTML report: no JavaScript, no CDN, readable when printed.

Every text that reaches the SVG is escaped here; callers pass plain strings."""

from __future__ import annotations

from html import escape

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def grouped_bars(categories: list[str], series: dict[str, list[float | None]], *, title: str,
                 percent: bool = True, peak: float | None = None, label_width: int = 170,
                 bar_width: int = 360) -> str:
    """Horizontal bars: one group per category, one bar per series (e.g. jury vs population, pre vs post).

    Values are shares in [0, 1] when `percent` (bars scaled to 100%, or to `peak` when given), else any
    non-negative numbers scaled to the largest."""
    names = list(series)
    bar_h, gap = 14, 10
    group_h = bar_h * len(names) + gap
    top = 28 + (18 if len(names) > 1 else 0)
    height = top + group_h * len(categories) + 6
    width = label_width + bar_width + 60
    largest = max([v for vs in series.values() for v in vs if v is not None] or [1.0]) or 1.0
    peak = peak or (1.0 if percent else largest)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}>',
           f"<title>{escape(title)}</title>",
           f'<text x="0" y="16" font-weight="bold" font-size="13">{escape(title)}</text>']
    if len(names) > 1:
        x = label_width
        for i, name in enumerate(names):
            out.append(f'<rect x="{x}" y="26" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>')
            out.append(f'<text x="{x + 16}" y="36">{escape(name)}</text>')
            x += 24 + 7 * len(name)
    for c, category in enumerate(categories):
        y0 = top + c * group_h
        out.append(f'<text x="{label_width - 8}" y="{y0 + bar_h * len(names) / 2 + 4:.1f}" text-anchor="end">'
                   f"{escape(category)}</text>")
        for i, name in enumerate(names):
            value = series[name][c]
            y = y0 + i * bar_h
            if value is None:
                out.append(f'<text x="{label_width + 4}" y="{y + 11}" fill="#888">n/a</text>')
                continue
            w = bar_width * max(0.0, value) / peak
            shown = _pct(value) if percent else f"{value:g}"
            out.append(f'<rect x="{label_width}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {shown}</title></rect>')
            out.append(f'<text x="{label_width + w + 4:.1f}" y="{y + 11}">{shown}</text>')
    out.append("</svg>")
    return "".join(out)


def interval_bars(labels: list[str], values: list[float | None], lows: list[float | None],
                  highs: list[float | None], *, title: str, signed: bool = False, label_width: int = 220,
                  bar_width: int = 360) -> str:
    """Horizontal bars with error bars (a 95% interval as a whisker): probabilities or shares in [0, 1], or, when
    `signed`, changes drawn left (negative) and right (positive) of a zero line, scaled to the largest bound."""
    bar_h, gap, top = 14, 8, 30
    height = top + (bar_h + gap) * len(labels) + 20
    width = label_width + bar_width + 70
    if signed:
        reach = max([abs(v) for v in (*values, *lows, *highs) if v is not None] or [0.0])
        reach = max(0.05, reach)
        lo_end, hi_end = -reach, reach
    else:
        lo_end, hi_end = 0.0, 1.0

    def x(v: float) -> float:
        return label_width + bar_width * (min(max(v, lo_end), hi_end) - lo_end) / (hi_end - lo_end)

    zero = x(0.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}>',
           f"<title>{escape(title)}</title>",
           f'<text x="0" y="16" font-weight="bold" font-size="13">{escape(title)}</text>',
           f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - 16}" stroke="#999"/>']
    for end in (lo_end, hi_end):
        shown = f"{end:+.2f}" if signed else _pct(end)
        out.append(f'<text x="{x(end):.1f}" y="{height - 4}" text-anchor="middle" fill="#777">{shown}</text>')
    for i, label in enumerate(labels):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_width - 8}" y="{y + 11}" text-anchor="end">{escape(label)}</text>')
        value, low, high = values[i], lows[i], highs[i]
        if value is None:
            out.append(f'<text x="{label_width + 4}" y="{y + 11}" fill="#888">n/a</text>')
            continue
        left, right = sorted((zero, x(value)))
        colour = PALETTE[3] if signed and value < 0 else PALETTE[0]
        shown = f"{value:+.2f}" if signed else _pct(value)
        span = "" if low is None or high is None else (
            f" [{low:+.2f}, {high:+.2f}]" if signed else f" [{_pct(low)}, {_pct(high)}]")
        out.append(f'<rect x="{left:.1f}" y="{y + 1}" width="{max(right - left, 1):.1f}" height="{bar_h - 2}" '
                   f'fill="{colour}" fill-opacity="0.8"><title>{escape(label)}: {shown}{span}</title></rect>')
        if low is not None and high is not None:
            mid = y + bar_h / 2
            out.append(f'<path d="M{x(low):.1f} {mid:.1f}H{x(high):.1f}M{x(low):.1f} {mid - 4:.1f}V{mid + 4:.1f}'
                       f'M{x(high):.1f} {mid - 4:.1f}V{mid + 4:.1f}" stroke="#222" stroke-width="1.5" fill="none"/>')
        out.append(f'<text x="{max(x(value), x(high) if high is not None else 0) + 6:.1f}" y="{y + 11}">'
                   f"{shown}</text>")
    out.append("</svg>")
    return "".join(out)


def transition_matrix(options: list[str], counts: dict[tuple[str, str], int], *, title: str) -> str:
    """Pre (rows) to post (columns) ballot counts as a shaded grid; the diagonal is 'kept their choice'."""
    cell, label = 46, 110
    n = len(options)
    top = 66
    width, height = label + cell * n + 10, top + cell * n + 4
    peak = max(counts.values(), default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}>',
           f"<title>{escape(title)}</title>",
           f'<text x="0" y="16" font-weight="bold" font-size="13">{escape(title)}</text>',
           f'<text x="{label + cell * n / 2:.0f}" y="34" text-anchor="middle" fill="#555">after (post)</text>']
    for j, option in enumerate(options):
        x = label + j * cell + cell / 2
        out.append(f'<text x="{x:.0f}" y="{top - 6}" text-anchor="middle">{escape(option[:8])}</text>')
    for i, pre in enumerate(options):
        y = top + i * cell
        out.append(f'<text x="{label - 8}" y="{y + cell / 2 + 4:.0f}" text-anchor="end">{escape(pre[:14])}</text>')
        for j, post in enumerate(options):
            k = counts.get((pre, post), 0)
            shade = 0.08 + 0.85 * k / peak if k else 0.0
            colour = "#55A868" if i == j else "#4C72B0"
            out.append(f'<rect x="{label + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                       f'fill="{colour}" fill-opacity="{shade:.2f}" stroke="#ddd">'
                       f"<title>{escape(pre)} → {escape(post)}: {k}</title></rect>")
            if k:
                out.append(f'<text x="{label + j * cell + cell / 2 - 1:.0f}" y="{y + cell / 2 + 4:.0f}" '
                           f'text-anchor="middle">{k}</text>')
    out.append(f'<text x="4" y="{top + cell * n / 2:.0f}" fill="#555" '
               f'transform="rotate(-90 4 {top + cell * n / 2:.0f})" text-anchor="middle" dy="10">before (pre)</text>')
    out.append("</svg>")
    return "".join(out)
