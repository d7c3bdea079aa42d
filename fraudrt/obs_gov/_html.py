"""`platform_run_report.html`: the run report as one self-contained page (inline CSS and SVG, no script,
no external resource), so it opens from a file, an object store or a mail attachment alike.

Plots: throughput over time (admitted / decided / outcome / audited per second), a latency
histogram per hop, the decision mix, and the confusion matrix against the oracle's truth. Every
text that comes from data goes through `html.escape`.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Final

from fraudrt.contracts import ACTIONS

_COLOURS: Final = {"admitted": "#4C78A8", "decided": "#F58518", "outcome": "#54A24B", "audited": "#B279A2"}
_STATE_COLOUR: Final = {"GREEN": "#2e7d32", "AMBER": "#ef6c00", "RED": "#c62828", "MISSING": "#757575"}
_CSS: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f5f5f5} td.l,th.l{text-align:left} .pill{color:#fff;padding:1px 7px;border-radius:8px;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:18px} .card{border:1px solid #e0e0e0;border-radius:6px;padding:8px}
small{color:#666} svg text{font-size:11px;fill:#333}
"""


def _pill(state: str) -> str:
    return f'<span class="pill" style="background:{_STATE_COLOUR.get(state, "#757575")}">{escape(state)}</span>'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c if isinstance(c, _Raw) else _fmt(c)}'
                                    "</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def line_chart(series: dict[str, list[int]], start: int | None, title: str, w: int = 760, h: int = 220) -> str:
    pad_l, pad_b, pad_t, pad_r = 46, 28, 22, 10
    n = max((len(v) for v in series.values()), default=0)
    top = max((max(v) for v in series.values() if v), default=0)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{escape(title)}">',
           f'<text x="{pad_l}" y="14" font-weight="bold">{escape(title)}</text>']
    x0, y0, pw, ph = pad_l, h - pad_b, w - pad_l - pad_r, h - pad_b - pad_t
    svg.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + pw}" y2="{y0}" stroke="#999"/>'
               f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - ph}" stroke="#999"/>')
    if n == 0 or top == 0:
        svg.append(f'<text x="{x0 + 10}" y="{y0 - ph / 2}">no events yet</text></svg>')
        return "".join(svg)
    for frac in (0.5, 1.0):
        y = y0 - ph * frac
        svg.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{top * frac:.0f}</text>')
    svg.append(f'<text x="{x0}" y="{h - 8}">0 s</text><text x="{x0 + pw}" y="{h - 8}" text-anchor="end">{n} s</text>')
    for i, (name, values) in enumerate(series.items()):
        pts = " ".join(f"{x0 + pw * (j + 0.5) / n:.1f},{y0 - ph * v / top:.1f}" for j, v in enumerate(values))
        colour = _COLOURS.get(name, "#333")
        svg.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{pts}"/>')
        svg.append(f'<rect x="{x0 + 10 + i * 95}" y="{pad_t - 2}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x0 + 24 + i * 95}" y="{pad_t + 7}">{escape(name)}/s</text>')
    svg.append("</svg>")
    return "".join(svg)


def bar_chart(bars: list[tuple[str, float]], title: str, w: int = 360, h: int = 200, colour: str = "#4C78A8") -> str:
    pad_l, pad_b, pad_t = 40, 34, 22
    top = max((v for _l, v in bars), default=0)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{escape(title)}">',
           f'<text x="{pad_l}" y="14" font-weight="bold">{escape(title)}</text>']
    x0, y0, pw, ph = pad_l, h - pad_b, w - pad_l - 10, h - pad_b - pad_t
    svg.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + pw}" y2="{y0}" stroke="#999"/>')
    if not bars or top <= 0:
        svg.append(f'<text x="{x0 + 10}" y="{y0 - ph / 2}">no data yet</text></svg>')
        return "".join(svg)
    bw = pw / len(bars)
    for i, (label, v) in enumerate(bars):
        bh = ph * v / top
        x = x0 + i * bw
        svg.append(f'<rect x="{x + 1:.1f}" y="{y0 - bh:.1f}" width="{max(bw - 2, 1):.1f}" height="{bh:.1f}" '
                   f'fill="{colour}"><title>{escape(label)}: {v:g}</title></rect>')
        if len(bars) <= 12:
            svg.append(f'<text x="{x + bw / 2:.1f}" y="{y0 + 13}" text-anchor="middle">{escape(label)}</text>'
                       f'<text x="{x + bw / 2:.1f}" y="{y0 - bh - 3:.1f}" text-anchor="middle">{v:g}</text>')
    if len(bars) > 12:
        svg.append(f'<text x="{x0}" y="{y0 + 13}">{escape(bars[0][0])}</text>'
                   f'<text x="{x0 + pw}" y="{y0 + 13}" text-anchor="end">{escape(bars[-1][0])}</text>')
    svg.append("</svg>")
    return "".join(svg)


def confusion_matrix(quality: dict[str, Any]) -> str:
    if not quality.get("available"):
        return f"<p><small>{escape(str(quality.get('note', 'truth not available')))}</small></p>"
    rows = [("fraud", quality["confusion"]["fraud"]), ("legit", quality["confusion"]["legit"])]
    rows += [(f"  {k}", v["by_action"]) for k, v in sorted(quality["per_campaign_type"].items())]
    top = max((n for _l, r in rows[:2] for n in r.values()), default=0) or 1
    cw, ch, x0, y0 = 90, 26, 150, 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{x0 + cw * len(ACTIONS) + 10}" '
           f'height="{y0 + ch * len(rows) + 10}" role="img" aria-label="confusion matrix">',
           '<text x="0" y="14" font-weight="bold">Confusion matrix: truth (rows) x action (columns)</text>']
    for j, action in enumerate(ACTIONS):
        svg.append(f'<text x="{x0 + cw * j + cw / 2}" y="{y0 - 6}" text-anchor="middle">{action}</text>')
    for i, (label, row) in enumerate(rows):
        y = y0 + ch * i
        svg.append(f'<text x="{x0 - 6}" y="{y + ch / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        for j, action in enumerate(ACTIONS):
            n = int(row.get(action, 0))
            shade = int(255 - 180 * min(1.0, n / top)) if i < 2 else 245
            svg.append(f'<rect x="{x0 + cw * j}" y="{y}" width="{cw - 2}" height="{ch - 2}" '
                       f'fill="rgb({shade},{shade},255)"/><text x="{x0 + cw * j + cw / 2}" y="{y + ch / 2 + 4}" '
                       f'text-anchor="middle" style="fill:{"#fff" if shade < 150 else "#222"}">{n}</text>')
    svg.append("</svg>")
    return "".join(svg)


def render(report: dict[str, Any]) -> str:
    run = escape(str(report.get("platform_run_id")))
    comp = report.get("run_completed", {})
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run report {run}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Platform run report — {run}</h1>",
             f"<p><small>generated {escape(str(report.get('generated_at_utc')))} · profile "
             f"{escape(str(report.get('basis', {}).get('profile')))}</small></p>",
             f"<p>run completed: {_pill('GREEN' if comp.get('run_completed') else 'AMBER')} "
             + "".join(f"<br><small>{escape(r)}</small>" for r in comp.get("reasons", [])) + "</p>"]
    tp = report.get("throughput", {})
    parts.append("<h2>Throughput over time</h2>" + line_chart(tp.get("per_second", {}), tp.get("start_epoch_s"),
                                                                  "events per second (wall clock)"))
    lat = report.get("latency_ms", {})
    charts = []
    rows = []
    for hop, v in lat.items():
        buckets = v.get("buckets_ms", [])
        prev = 0
        bars = []
        for upper, cum in buckets:
            bars.append((f"{upper:g}", cum - prev))
            prev = cum
        charts.append(f'<div class="card">{bar_chart(bars, f"{hop} (ms, log buckets)", w=380)}</div>')
        o = v.get("observed", {})
        cm = v.get("component_metrics") or {}
        rows.append([hop, o.get("count"), o.get("p50"), o.get("p95"), o.get("p99"), o.get("max"),
                     cm.get("p50"), cm.get("p95"), cm.get("p99")])
    parts.append("<h2>Latency</h2>" + _table(["hop", "n", "p50", "p95", "p99", "max", "component p50",
                                               "component p95", "component p99"], rows)
                 + f'<div class="grid">{"".join(charts)}</div>')
    rtdl = report.get("rtdl", {})
    mix = [(a, float(n)) for a, n in rtdl.get("decision_mix", {}).items()]
    quality = report.get("quality", {})
    parts.append("<h2>Decisions</h2><div class=\"grid\">"
                 f'<div class="card">{bar_chart(mix, "decision mix", colour="#F58518")}</div>'
                 f'<div class="card">{confusion_matrix(quality)}</div></div>')
    parts.append(_table(["events", "count"], [[k, rtdl.get(k)] for k in
                                               ("decisions", "intents", "outcomes", "audits", "case_triggers")]))
    if quality.get("available"):
        qrows = [[a, s["precision"], s["recall"], s["false_positive_rate"], s["true_positives"], s["false_positives"]]
                 for a, s in quality["per_action"].items()]
        f = quality["flagged"]
        qrows.append(["REVIEW or DECLINE", f["precision"], f["recall"], f["false_positive_rate"], f["true_positives"],
                      f["false_positives"]])
        parts.append("<h2>Decision quality against the oracle's truth</h2>" + _table(
            ["action", "precision", "recall", "FPR", "TP", "FP"], qrows) + _table(
            ["campaign type", "flows", "recall (REVIEW or DECLINE)"],
            [[k, v["flows"], v["recall_flagged"]] for k, v in quality["per_campaign_type"].items()]))
    ing = report.get("ingress", {})
    if ing.get("available"):
        parts.append("<h2>Ingress (IG decisions)</h2>" + _table(
            ["output", "ADMIT", "DUPLICATE", "QUARANTINE", "PENDING"],
            [[k, v.get("ADMIT", 0), v.get("DUPLICATE", 0), v.get("QUARANTINE", 0), v.get("PENDING", 0)]
             for k, v in ing.get("by_output", {}).items()]) + _table(
            ["producer", "ADMIT", "DUPLICATE", "QUARANTINE"],
            [[k, v.get("ADMIT", 0), v.get("DUPLICATE", 0), v.get("QUARANTINE", 0)]
             for k, v in ing.get("by_producer", {}).items()]))
    comps = report.get("components", {})
    parts.append("<h2>Components</h2>" + _table(
        ["component", "pack", "health", "reasons"],
        [[name, c.get("pack_id"), _Raw(_pill(c.get("health_state", "MISSING"))),
          "; ".join(c.get("reasons", []))[:300]] for name, c in comps.items()], left=4))
    refs = report.get("evidence_refs", {})
    parts.append("<h2>Evidence</h2><pre style=\"font-size:12px;white-space:pre-wrap\">"
                 + escape(json.dumps(refs, indent=1, sort_keys=True)) + "</pre>")
    parts.append("</body></html>")
    return "".join(parts)
