"""The comparison report as one self-contained HTML page: no network, inline CSS and JS.

An endpoint table with bars (regressions first), then for each endpoint its fields and
its examples: the request, then the app's answer and the mirror's side by side, with the
values that differ highlighted. Everything taken from traffic is escaped.
"""

from __future__ import annotations

import base64
import json
import typing as t
from html import escape

from .._text import page
from .difflog import Report
from .report import endpoint_rows
from .trees import Text, _decoded, body_tree

SHOWN_TEXT = 4000  # characters of a non-JSON body shown in an example

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em 2em;color:#1d2330;background:#fbfbfd}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:2em 0 .4em;border-bottom:1px solid #ccd}
h3{font-size:1em;margin:1.2em 0 .3em}.muted{color:#667}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#eef0f5;font-weight:600}tr:nth-child(even) td{background:#f4f5f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:.8em;background:#c9352b;vertical-align:middle;margin-right:.4em}
.bar.noise{background:#8a94a8}.badge{font-weight:700;color:#fff;background:#c9352b;border-radius:3px;padding:0 .4em}
.ok{color:#1f7a3a;font-weight:600}code,.tree{font:12.5px/1.4 ui-monospace,monospace}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1em}.side{background:#fff;border:1px solid #dde;padding:.6em;
overflow:auto;max-height:32em}.tree div{padding-left:1.2em}.tree>div{padding-left:0}
.diff{background:#ffd8d3;outline:1px solid #e0766b}.absent{color:#99a;font-style:italic}
input{font:inherit;padding:.2em .4em;margin:.3em 0 .6em}
"""

JS = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('#endpoints tbody tr').forEach(function (row) {
    row.style.display = row.dataset.endpoint.toLowerCase().indexOf(q) < 0 ? 'none' : '';
  });
});
"""


def render(report: Report) -> str:
    rows = endpoint_rows(report)
    relative, absolute = report.thresholds
    regressing = sum(row["regression"] for row in rows)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>wsgimirror comparison: {regressing} regressing</title><style>{CSS}</style></head><body>",
        "<h1>Is the new version answering like the old one?</h1>",
        f"<p class=muted>{report.processes} process{'es' if report.processes != 1 else ''}, {len(rows)} endpoints, "
        f"<span id=verdict class={'badge' if regressing else 'ok'}>{regressing} regressing</span>. A field regresses "
        f"when it differs more often against the candidate than against the baseline by more than {relative:g} % "
        f"relative and {absolute:g} % absolute.</p>",
        _endpoint_table(rows),
    ]
    examples: dict[str, list[dict[str, t.Any]]] = {}
    for example in report.examples:
        examples.setdefault(str(example.get("endpoint")), []).append(example)
    for number, row in enumerate(rows):
        parts.append(_endpoint_section(number, row, examples.get(row["endpoint"], [])))
    parts.append(f"<script>{JS}</script></body></html>")
    return page("\n".join(parts))  # traffic's invalid Unicode would fail the page whole, its controls break it


def _bar(rate: float, cls: str = "") -> str:
    return f"<span class='bar {cls}' style='width:{max(rate * 120, 1 if rate else 0):.0f}px'></span>{rate:.1%}"


def _endpoint_table(rows: list[dict[str, t.Any]]) -> str:
    out = [
        "<input id=filter placeholder='filter endpoints' aria-label='filter endpoints'>",
        "<table id=endpoints><thead><tr><th>endpoint</th><th>compared</th><th>different</th><th>noise</th>"
        "<th>worst field</th></tr></thead><tbody>",
    ]
    for number, row in enumerate(rows):
        badge = " <span class=badge>regression</span>" if row["regression"] else ""
        worst = escape(row["worst_field"] or "-")
        out.append(
            f"<tr data-endpoint='{escape(row['endpoint'])}' class='{'regression' if row['regression'] else ''}'>"
            f"<td><a href='#ep{number}'>{escape(row['endpoint'])}</a>{badge}</td><td class=num>{row['compared']}</td>"
            f"<td>{_bar(row['different_rate'])}</td><td>{_bar(row['noise_rate'], 'noise')}</td>"
            f"<td><code>{worst}</code></td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _endpoint_section(number: int, row: dict[str, t.Any], examples: list[dict[str, t.Any]]) -> str:
    out = [
        f"<section id='ep{number}' class=endpoint data-endpoint='{escape(row['endpoint'])}'>",
        f"<h2>{escape(row['endpoint'])}{' <span class=badge>regression</span>' if row['regression'] else ''}</h2>",
        f"<p class=muted>{row['compared']} compared with the candidate, {row['different']} different; "
        f"{row['baseline_compared']} with the baseline, {row['baseline_different']} different.</p>",
    ]
    fields = sorted(row["fields"].items(), key=lambda item: (not item[1]["regression"], -item[1]["rate"], item[0]))
    if fields:
        out.append("<table class=fields><thead><tr><th>field</th><th>kinds</th><th>differs</th><th>noise</th>"
                   "<th></th></tr></thead><tbody>")  # fmt: skip
        for field, values in fields:
            kinds = ", ".join(f"{escape(k)} {n}" for k, n in sorted(values["kinds"].items()))
            verdict = "<span class=badge>regression</span>" if values["regression"] else ""
            out.append(
                f"<tr data-field='{escape(field)}' class='{'regression' if values['regression'] else ''}'>"
                f"<td><code>{escape(field)}</code></td><td>{kinds}</td><td>{_bar(values['rate'])}</td>"
                f"<td>{_bar(values['noise_rate'], 'noise')}</td><td>{verdict}</td></tr>"
            )
        out.append("</tbody></table>")
    regressing = {field for field, values in fields if values["regression"]}

    def shows_regression(example: dict[str, t.Any]) -> bool:
        return any(d.get("field") in regressing for d in example.get("differences") or [])

    for example in sorted(examples, key=lambda e: (not shows_regression(e), e.get("source") != "candidate")):
        out.append(_example(example, regressing))
    out.append("</section>")
    return "".join(out)


def _example(example: dict[str, t.Any], regressing: set[str]) -> str:
    """One comparison: its differences (those of regressing fields first and marked), and both answers."""
    request = example.get("request") or {}
    differences = example.get("differences") or []
    fields = {str(d.get("field")) for d in differences}
    out = [
        f"<div class=example data-fields='{escape(' '.join(sorted(fields)))}'>",
        f"<h3>{escape(str(request.get('method', '')))} <code>{escape(str(request.get('target', '')))}</code> "
        f"<span class=muted>({escape(str(example.get('source', '')))} cluster "
        f"{escape(str(example.get('cluster', '')))})</span></h3>",
        "<table class=differences><thead><tr><th>field</th><th>kind</th><th>app</th><th>mirror</th></tr></thead>"
        "<tbody>",
    ]
    for d in sorted(differences, key=lambda d: d.get("field") not in regressing):
        verdict = " <span class=badge>regression</span>" if d.get("field") in regressing else ""
        out.append(
            f"<tr><td><code>{escape(str(d.get('field')))}</code>{verdict}</td><td>{escape(str(d.get('kind')))}</td>"
            f"<td class=diff><code>{_value(d.get('app'))}</code></td>"
            f"<td class=diff><code>{_value(d.get('mirror'))}</code></td></tr>"
        )
    out.append("</tbody></table><div class=sides>")
    app, mirror = example.get("app") or {}, example.get("mirror") or {}
    left, right = _answers(app, mirror, fields)
    out.append(f"<div class='side app'><b>app</b>{left}</div><div class='side mirror'><b>mirror</b>{right}</div>")
    out.append("</div></div>")
    return "".join(out)


def _value(value: t.Any) -> str:
    return escape(json.dumps(value, ensure_ascii=False, default=str))


def _answers(app: dict[str, t.Any], mirror: dict[str, t.Any], fields: set[str]) -> tuple[str, str]:
    """Both answers as HTML, side by side, with what differs highlighted."""
    left, right = [], []
    marked = " class=diff" if "status" in fields else ""
    left.append(f"<div class=tree><div{marked}>status {escape(str(app.get('status')))}</div>")
    right.append(f"<div class=tree><div{marked}>status {escape(str(mirror.get('status')))}</div>")
    for side, answer in ((left, app), (right, mirror)):
        for name, value in answer.get("headers") or []:
            marked = " class=diff" if f"headers.{str(name).lower()}" in fields else ""
            side.append(f"<div{marked}>{escape(str(name))}: {escape(str(value))}</div>")
    a, b = _body(app), _body(mirror)
    if isinstance(a, tuple) and isinstance(b, tuple):
        html_a, html_b = _pair(a[0], b[0], True, True)
    else:
        marked = " class=diff" if "body" in fields else ""
        html_a = f"<pre{marked}>{escape(str(a)[:SHOWN_TEXT])}</pre>"
        html_b = f"<pre{marked}>{escape(str(b)[:SHOWN_TEXT])}</pre>"
    left.append(f"<div class=body>{html_a}</div></div>")
    right.append(f"<div class=body>{html_b}</div></div>")
    return "".join(left), "".join(right)


def _body(answer: dict[str, t.Any]) -> t.Any:
    """A JSON body as a one-tuple (so that a JSON null stays distinct), else the text to show."""
    try:
        data = base64.b64decode(str(answer.get("body", "")))
    except ValueError:
        return "(unreadable body)"
    headers = {str(k).lower(): str(v) for k, v in answer.get("headers") or []}
    decoded = _decoded(data, headers.get("content-encoding", ""), 1 << 24) or data
    if len(data) < int(answer.get("body_length", len(data))):
        return f"({answer.get('body_length')} bytes; the first {len(data)} are kept)\n" + decoded.decode(
            "utf-8", "replace"
        )
    tree, is_json = body_tree(decoded, headers.get("content-type", ""))
    if is_json:
        return (tree,)
    if isinstance(tree, Text):
        return str(tree)
    return f"({len(decoded)} bytes of binary data)"


def _pair(a: t.Any, b: t.Any, has_a: bool, has_b: bool, key: str = "") -> tuple[str, str]:
    """Two JSON values rendered in parallel; a node whose values differ (or that one side lacks) is highlighted."""
    label = f"{escape(key)}: " if key else ""
    if has_a and has_b and isinstance(a, dict) and isinstance(b, dict):
        rows_a, rows_b = [f"<div>{label}{{"], [f"<div>{label}{{"]
        for k in [*a, *(k for k in b if k not in a)]:
            x, y = _pair(a.get(k), b.get(k), k in a, k in b, json.dumps(k, ensure_ascii=False))
            rows_a.append(x)
            rows_b.append(y)
        return "".join(rows_a) + "}</div>", "".join(rows_b) + "}</div>"
    if has_a and has_b and isinstance(a, list) and isinstance(b, list):
        rows_a, rows_b = [f"<div>{label}["], [f"<div>{label}["]
        for i in range(max(len(a), len(b))):
            x, y = _pair(a[i] if i < len(a) else None, b[i] if i < len(b) else None, i < len(a), i < len(b))
            rows_a.append(x)
            rows_b.append(y)
        return "".join(rows_a) + "]</div>", "".join(rows_b) + "]</div>"
    same = has_a and has_b and type(a) is type(b) and a == b
    cls = "" if same else " class=diff"
    shown_a = f"{label}{_value(a)}" if has_a else "<span class=absent>(absent)</span>"
    shown_b = f"{label}{_value(b)}" if has_b else "<span class=absent>(absent)</span>"
    return f"<div{cls}>{shown_a}</div>", f"<div{cls}>{shown_b}</div>"
