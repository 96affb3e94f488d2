"""A small SVG line chart for the perf reports (standard library only)."""

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def line_chart(path, series, x_label, y_label, hline=None, y_cap=None):
    """series: [(label, [(x, y, filled)])]; hline: (y, label) drawn dashed; y_cap clips
    tall points so one outlier does not flatten the rest."""
    w, h, pad = 640, 360, 56
    pts = [(x, y) for _, s in series for x, y, _ in s]
    ys = [min(y, y_cap) if y_cap else y for _, y in pts] + ([hline[0]] if hline else [])
    xmax = max([x for x, _ in pts] + [1]) * 1.05
    ymax = max(ys + [1]) * 1.1
    X = lambda x: pad + (w - 2 * pad) * x / xmax
    Y = lambda y: h - pad - (h - 2 * pad) * min(y, ymax) / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<text x="{w/2-60}" y="{h-12}">{x_label}</text>',
           f'<text x="8" y="{pad-16}">{y_label}</text>',
           f'<text x="{pad-4}" y="{h-pad+14}" text-anchor="end">0</text>',
           f'<text x="{w-pad}" y="{h-pad+14}" text-anchor="end">{xmax:.0f}</text>',
           f'<text x="{pad-4}" y="{pad+4}" text-anchor="end">{ymax:.3g}</text>']
    if hline:
        out.append(f'<line x1="{pad}" y1="{Y(hline[0]):.1f}" x2="{w-pad}" y2="{Y(hline[0]):.1f}" stroke="grey" stroke-dasharray="4"/>')
        out.append(f'<text x="{w-pad-170}" y="{Y(hline[0])-4:.1f}" fill="grey">{hline[1]}</text>')
    for i, (label, s) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        s = sorted(s)
        line = " ".join(f'{X(x):.1f},{Y(y):.1f}' for x, y, _ in s)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, filled in s:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{colour if filled else "white"}" stroke="{colour}"/>')
        out.append(f'<text x="{pad+10}" y="{pad + 16 * i}" fill="{colour}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
