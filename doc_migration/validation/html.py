"""The validation report as ONE self-contained HTML page (inline CSS and SVG; no scripts, no external assets).

Operators open it from a Dagster metadata link, a CI artifact or a Kubernetes volume, often offline,
so nothing may be fetched. Key numbers sit in elements with stable ids (``total-rows``,
``total-documents``, ``total-quarantined``, ``checks-passed``, ``checks-failed``, ``recall-at-1``,
``overall-status``) so tests and scrapers read them without parsing prose.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#656d76}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:600}.card .l{color:#656d76;font-size:12px}
.badge{display:inline-block;border-radius:12px;padding:2px 10px;font-weight:600;font-size:12px}
.ok{background:#dafbe1;color:#116329}.err{background:#ffebe9;color:#a40e26}.warn{background:#fff8c5;color:#7d4e00}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border-bottom:1px solid #eaeef2;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
details{margin:2px 0}summary{cursor:pointer;color:#0969da}code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:360px}.charts{display:flex;flex-wrap:wrap;gap:24px}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}
"""

COLORS = {"rows": "#0969da", "failures": "#cf222e", "quarantined": "#bf8700", "throughput": "#1a7f37"}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def bar_chart(title: str, items: list[tuple[str, float]], color: str, chart_id: str, width: int = 460) -> str:
    """A horizontal bar chart as inline SVG (labels left, values right)."""
    bar_h, gap, label_w, value_w = 16, 6, 150, 70
    height = 28 + max(1, len(items)) * (bar_h + gap)
    top = max((v for _, v in items), default=0.0) or 1.0
    span = width - label_w - value_w - 10
    parts = [f'<svg id="{escape(chart_id)}" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
             f'<text x="0" y="14" font-weight="600">{escape(title)}</text>']
    if not items:
        parts.append('<text x="0" y="40" class="muted">no data</text>')
    for i, (label, value) in enumerate(items):
        y = 24 + i * (bar_h + gap)
        w = max(0.0, value / top * span)
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(short)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}" rx="2">'
                     f'<title>{escape(label)}: {escape(_fmt(value))}</title></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{escape(_fmt(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _card(label: str, value: Any, element_id: str, cls: str = "") -> str:
    return (f'<div class="card"><div class="v {cls}" id="{escape(element_id)}">{escape(_fmt(value))}</div>'
            f'<div class="l">{escape(label)}</div></div>')


def _findings_table(findings: list[dict[str, Any]], total: int) -> str:
    if not findings:
        return ""
    cols: list[str] = []
    for f in findings:
        for k in f:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for f in findings[:100]:
        cells = []
        for c in cols:
            v = f.get(c)
            text = json.dumps(v, default=str, ensure_ascii=False) if isinstance(v, dict | list) else _fmt(v)
            cells.append(f"<td><code>{escape(text[:400])}</code></td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = f" (showing {min(len(findings), 100)} of {total})" if total > min(len(findings), 100) else ""
    return (f"<details><summary>{total} finding(s){escape(more)}</summary><table><tr>{head}</tr>"
            f"{''.join(body)}</table></details>")


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML document (string)."""
    totals = report.get("totals", {})
    checks: dict[str, dict[str, Any]] = report.get("checks", {})
    passed = bool(report.get("passed"))
    status = "PASSED" if passed else "FAILED"
    warn_count = len(report.get("warnings", []))
    title = f"doc_migration validation — run {report.get('run_id') or 'manual'}"

    cards = "".join([
        _card("overall", status, "overall-status", "ok" if passed else "err"),
        _card("rows in documents", totals.get("rows"), "total-rows"),
        _card("documents loaded", totals.get("documents_loaded"), "total-documents"),
        _card("files quarantined", totals.get("quarantined"), "total-quarantined"),
        _card("checks passed", totals.get("checks_passed"), "checks-passed"),
        _card("checks failed", totals.get("checks_failed"), "checks-failed"),
        _card("errors", len(report.get("errors", [])), "checks-errors"),
        _card("warnings", warn_count, "checks-warnings"),
        _card("recall@1", totals.get("recall_at_1"), "recall-at-1"),
        _card("partitions", totals.get("partitions"), "total-partitions"),
    ])

    rows = []
    for name, c in checks.items():
        if c.get("passed"):
            badge = '<span class="badge ok">passed</span>'
        elif c.get("severity") == "ERROR":
            badge = '<span class="badge err">ERROR</span>'
        else:
            badge = '<span class="badge warn">WARN</span>'
        rows.append(
            f'<tr id="check-{escape(name)}"><td><b>{escape(name)}</b></td><td>{escape(str(c.get("severity")))}</td>'
            f'<td>{badge}</td><td class="n">{escape(_fmt(c.get("total_findings")))}</td>'
            f'<td class="n">{escape(_fmt(c.get("seconds")))}</td>'
            f'<td>{escape(str(c.get("message", "")))}'
            f'{_findings_table(c.get("findings") or [], int(c.get("total_findings") or 0))}</td></tr>')
    checks_table = ("<table><tr><th>check</th><th>severity</th><th>status</th><th>findings</th><th>s</th>"
                    f"<th>message</th></tr>{''.join(rows)}</table>")

    per_type: list[dict[str, Any]] = report.get("per_doc_type", [])
    charts = "".join([
        bar_chart("Rows per doc type", [(t["doc_type"], t["rows"]) for t in per_type], COLORS["rows"],
                  "chart-rows"),
        bar_chart("Check failures per doc type", [(t["doc_type"], t["failures"]) for t in per_type],
                  COLORS["failures"], "chart-failures"),
        bar_chart("Quarantined files per doc type", [(t["doc_type"], t["quarantined"]) for t in per_type],
                  COLORS["quarantined"], "chart-quarantined"),
        bar_chart("Load throughput (rows/s) per run",
                  [(str(r["run_id"])[:8], r["rows_per_second"]) for r in report.get("throughput", {}).get("runs", [])],
                  COLORS["throughput"], "chart-throughput"),
    ])
    type_rows = "".join(
        f'<tr id="doc-type-{escape(t["doc_type"])}"><td>{escape(t["doc_type"])}</td>'
        f'<td class="n">{_fmt(t["partitions"])}</td><td class="n">{_fmt(t["rows"])}</td>'
        f'<td class="n">{_fmt(t["documents"])}</td><td class="n">{_fmt(t["files"])}</td>'
        f'<td class="n">{_fmt(t["quarantined"])}</td><td class="n">{_fmt(t["failures"])}</td>'
        f'<td>{escape(", ".join(t["failed_checks"]))}</td></tr>' for t in per_type)
    types_table = ("<table><tr><th>doc type</th><th>partitions</th><th>rows</th><th>documents</th><th>files</th>"
                   f"<th>quarantined</th><th>failures</th><th>failed checks</th></tr>{type_rows}</table>")
    runs = report.get("throughput", {}).get("runs", [])
    run_rows = "".join(
        f'<tr><td><code>{escape(str(r["run_id"]))}</code></td><td class="n">{_fmt(r["partitions"])}</td>'
        f'<td class="n">{_fmt(r["rows_written"])}</td><td class="n">{_fmt(r["seconds"])}</td>'
        f'<td class="n">{_fmt(r["rows_per_second"])}</td><td>{escape(r["committed_at"])}</td></tr>' for r in runs)
    runs_table = ("<table><tr><th>run</th><th>partitions</th><th>rows written</th><th>seconds</th><th>rows/s</th>"
                  f"<th>committed</th></tr>{run_rows}</table>") if runs else "<p class='muted'>no loads yet</p>"
    quarantined = report.get("quarantined", [])
    q_rows = "".join(f"<tr><td>{escape(str(q.get('doc_type')))}</td><td><code>{escape(str(q.get('path')))}</code></td>"
                     f"<td>{escape(str(q.get('reason')))}</td><td>{escape(str(q.get('hint', '')))}</td></tr>"
                     for q in quarantined[:200])
    q_table = ("<table><tr><th>doc type</th><th>file</th><th>reason</th><th>hint</th></tr>"
               f"{q_rows}</table>") if quarantined else "<p class='muted'>nothing quarantined</p>"
    settings = json.dumps({"settings": report.get("settings"), "config": report.get("config")}, indent=2,
                          default=str)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><div class=\"muted\">generated {escape(str(report.get('generated_at', '')))}"
        f" in {escape(_fmt(report.get('seconds')))} s · errors: "
        f"<span id=\"error-checks\">{escape(', '.join(report.get('errors', [])) or 'none')}</span> · warnings: "
        f"<span id=\"warning-checks\">{escape(', '.join(report.get('warnings', [])) or 'none')}</span></div>"
        f"<div class=\"cards\">{cards}</div>"
        f"<h2>Checks</h2>{checks_table}"
        f"<h2>Per doc type</h2><div class=\"charts\">{charts}</div>{types_table}"
        f"<h2>Load throughput</h2>{runs_table}"
        f"<h2>Quarantined files</h2>{q_table}"
        f"<h2>Settings</h2><pre>{escape(settings)}</pre>"
        "</body></html>\n"
    )
