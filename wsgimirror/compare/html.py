"""The comparison report as one self-contained HTML page: no network, inline CSS and JS.

A summary of the verdicts and of the comparisons not made (by reason); an endpoint table, regressions first
by how far the candidate exceeds the noise, with each side's sample size, the worst field's magnitude and
the latency verdict; endpoints within the noise are folded away (a checkbox shows them). Then a section per
endpoint: each field's rate against the noise, sample sizes, p-value and verdict (fields within the noise
folded), and a few examples: the request (method, target, headers after removal, body), then the app's
answer and the mirror's side by side, with the values that differ highlighted. Everything taken from
traffic is escaped; a JSON body is drawn up to ``SHOWN_NODES`` nodes a side, so that hundreds of endpoints
still make a page of a few hundred KiB.
"""

from __future__ import annotations

import base64
import json
import typing as t
from html import escape

from ..util.text import page
from .difflog import Report
from .report import endpoint_rows, slower_text
from .trees import Text, _decoded, body_tree
from .verdicts import LEARNING, SLOWER

SHOWN_TEXT = 4000  # characters of a non-JSON body shown in an example
SHOWN_NODES = 200  # JSON nodes drawn per side of an example (equal subtrees are one each); past it, "... more"
EXAMPLES_SHOWN = 3  # examples per endpoint on the page (regressing fields' first)
OPEN = ("regression", "slower", LEARNING)  # endpoints shown unfolded

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em 2em;color:#1d2330;background:#fbfbfd}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:2em 0 .4em;border-bottom:1px solid #ccd}
h3{font-size:1em;margin:1.2em 0 .3em}.muted{color:#667}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#eef0f5;font-weight:600}tr:nth-child(even) td{background:#f4f5f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:.8em;background:#c9352b;vertical-align:middle;margin-right:.4em}
.bar.noise{background:#8a94a8}.badge{font-weight:700;color:#fff;background:#c9352b;border-radius:3px;padding:0 .4em}
.badge.slower{background:#b5651d}.badge.learning{background:#6b7a99}.badge.quiet{background:#9aa3b5}
.ok{color:#1f7a3a;font-weight:600}code,.tree{font:12.5px/1.4 ui-monospace,monospace}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1em}.side{background:#fff;border:1px solid #dde;padding:.6em;
overflow:auto;max-height:32em}.tree div{padding-left:1.2em}.tree>div{padding-left:0}
.diff{background:#ffd8d3;outline:1px solid #e0766b}.absent{color:#99a;font-style:italic}
input{font:inherit;padding:.2em .4em;margin:.3em 0 .6em}tr.folded{display:none}body.all tr.folded{display:table-row}
details>summary{cursor:pointer;color:#445}.request{background:#fff;border:1px solid #dde;padding:.4em .6em;
margin:.4em 0;overflow:auto;max-height:14em}
"""

JS = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('#endpoints tbody tr').forEach(function (row) {
    row.style.display = row.dataset.endpoint.toLowerCase().indexOf(q) < 0 ? 'none' : '';
  });
});
document.getElementById('all').addEventListener('change', function (e) {
  document.body.classList.toggle('all', e.target.checked);
});
"""


def render(report: Report, dropped: dict[str, int] | None = None) -> str:
    """The page; ``dropped``: the copies dropped before they were sent, by reason (the live page has them)."""
    rows = endpoint_rows(report)
    settings = report.settings
    regressing = sum(row["regression"] for row in rows)
    slower = sum(row["shown"] == SLOWER for row in rows)
    learning = sum(row["shown"] == LEARNING for row in rows)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>wsgimirror comparison: {regressing} regressing</title><style>{CSS}</style></head><body>",
        "<h1>Is the new version answering like the old one?</h1>",
        f"<p class=muted>{report.processes} process{'es' if report.processes != 1 else ''}, {len(rows)} endpoints: "
        f"<span id=verdict class={'badge' if regressing else 'ok'}>{regressing} regressing</span>, "
        f"<span id=slower>{slower} slower</span>, <span id=learning>{learning} learning</span>, "
        f"{len(rows) - regressing - slower - learning} within the noise or the same. A field regresses when the "
        f"candidate differs more often than the baseline by more than {settings.relative:g} % relative and "
        f"{settings.absolute:g} % absolute, with {settings.confidence * 100:g} % confidence; an endpoint learns "
        f"until each side has {settings.min_samples} comparisons.</p>",
        _not_made(report.skipped, dropped),
        _endpoint_table(rows),
    ]
    examples: dict[str, list[dict[str, t.Any]]] = {}
    for example in report.examples:
        examples.setdefault(str(example.get("endpoint")), []).append(example)
    for number, row in enumerate(rows):
        parts.append(_endpoint_section(number, row, examples.get(row["endpoint"], [])))
    parts.append(f"<script>{JS}</script></body></html>")
    return page("\n".join(parts))  # traffic's invalid Unicode would fail the page whole, its controls break it


def _not_made(skipped: dict[str, int], dropped: dict[str, int] | None) -> str:
    """Comparisons skipped and copies dropped, by reason: a count of comparisons means little without them."""
    out = []
    for what, counts in (("comparisons not made", skipped), ("copies dropped before they were sent", dropped or {})):
        if counts:
            listed = ", ".join(f"{escape(reason)} {n}" for reason, n in sorted(counts.items(), key=lambda i: -i[1]))
            out.append(f"<p id='{'skipped' if what.startswith('comp') else 'dropped'}'><b>{what}:</b> {listed}</p>")
    return "".join(out)


def _bar(rate: float, cls: str = "") -> str:
    return f"<span class='bar {cls}' style='width:{max(rate * 120, 1 if rate else 0):.0f}px'></span>{rate:.1%}"


def _badge(verdict: str) -> str:
    cls = {"regression": "", SLOWER: " slower", LEARNING: " learning"}.get(verdict, " quiet")
    return f"<span class='badge{cls}'>{escape(verdict)}</span>"


def _endpoint_table(rows: list[dict[str, t.Any]]) -> str:
    folded = sum(row["shown"] not in OPEN for row in rows)
    out = [
        "<input id=filter placeholder='filter endpoints' aria-label='filter endpoints'> ",
        f"<label><input type=checkbox id=all> show the {folded} endpoints within the noise or the same</label>",
        "<table id=endpoints><thead><tr><th>endpoint</th><th>verdict</th><th>compared</th><th>baseline</th>"
        "<th>worst field</th><th>its rate over the noise</th><th>latency p50</th></tr></thead><tbody>",
    ]
    for number, row in enumerate(rows):
        worst = row["worst_field"]
        values = row["fields"].get(worst) if worst else None
        magnitude = f"{_bar(values['rate'])} over {_bar(values['noise_rate'], 'noise')}" if values else "-"
        latency = row["latency"]
        p50 = latency["candidate"]["p50_ms"]
        shown_latency = f"{p50:g} ms" if p50 is not None else "-"
        if latency["slower_p50"] is not None:
            shown_latency += f" ({latency['slower_p50']:+g} %)"
        cls = "regression" if row["regression"] else "" if row["shown"] in OPEN else "folded"
        out.append(
            f"<tr data-endpoint='{escape(row['endpoint'])}' class='{cls}'>"
            f"<td><a href='#ep{number}'>{escape(row['endpoint'])}</a></td><td>{_badge(row['shown'])}</td>"
            f"<td class=num>{row['compared']}</td><td class=num>{row['baseline_compared']}</td>"
            f"<td><code>{escape(worst or '-')}</code></td><td>{magnitude}</td><td>{shown_latency}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _endpoint_section(number: int, row: dict[str, t.Any], examples: list[dict[str, t.Any]]) -> str:
    opened = row["shown"] in OPEN
    out = [
        f"<section id='ep{number}' class=endpoint data-endpoint='{escape(row['endpoint'])}'>",
        f"<details{' open' if opened else ''}><summary><h2 style='display:inline'>{escape(row['endpoint'])}</h2> "
        f"{_badge(row['shown'])}</summary>",
        f"<p class=muted>{row['compared']} compared with the candidate, {row['different']} different; "
        f"{row['baseline_compared']} with the baseline, {row['baseline_different']} different.</p>",
    ]
    if row["latency"]["verdict"] == SLOWER:
        out.append(f"<p class=latency><b>slower:</b> {escape(slower_text(row['latency']))}</p>")
    fields = sorted(row["fields"].items(), key=lambda item: (not item[1]["regression"], -item[1]["excess"], item[0]))
    loud = [(f, v) for f, v in fields if v["regression"] or v["verdict"] in ("added", "mirror-made", LEARNING)]
    quiet = [(f, v) for f, v in fields if (f, v) not in loud]
    if loud:
        out.append(_field_table(loud, row))
    if quiet:
        out.append(f"<details><summary>{len(quiet)} fields within the noise</summary>{_field_table(quiet, row)}"
                   "</details>")  # fmt: skip
    regressing = {field for field, values in fields if values["regression"]}

    def shows_regression(example: dict[str, t.Any]) -> bool:
        return any(d.get("field") in regressing for d in example.get("differences") or [])

    if opened:
        chosen = sorted(examples, key=lambda e: (not shows_regression(e), e.get("source") != "candidate"))
        for example in chosen[:EXAMPLES_SHOWN]:
            out.append(_example(example, regressing))
    out.append("</details></section>")
    return "".join(out)


def _field_table(fields: list[tuple[str, dict[str, t.Any]]], row: dict[str, t.Any]) -> str:
    out = ["<table class=fields><thead><tr><th>field</th><th>verdict</th><th>candidate</th><th>noise</th>"
           "<th>p-value</th><th>kinds</th></tr></thead><tbody>"]  # fmt: skip
    for field, values in fields:
        kinds = ", ".join(f"{escape(k)} in {n}" for k, n in sorted(values["kinds"].items(), key=lambda i: -i[1]))
        noise = f"{_bar(values['noise_rate'], 'noise')} of {row['baseline_compared']}" if row["baseline_compared"] \
            else "<span class=muted>no baseline</span>"  # fmt: skip
        out.append(
            f"<tr data-field='{escape(field)}' class='{'regression' if values['regression'] else ''}'>"
            f"<td><code>{escape(field)}</code></td><td>{_badge(values['verdict'])}</td>"
            f"<td>{_bar(values['rate'])} of {row['compared']}</td><td>{noise}</td>"
            f"<td class=num>{values['p_value']:.2g}</td><td>{kinds}</td></tr>"
        )
    out.append("</tbody></table>")
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
    out.append("</tbody></table>")
    out.append(_request(request))
    out.append("<div class=sides>")
    app, mirror = example.get("app") or {}, example.get("mirror") or {}
    left, right = _answers(app, mirror, fields)
    out.append(f"<div class='side app'><b>app</b>{left}</div><div class='side mirror'><b>mirror</b>{right}</div>")
    out.append("</div></div>")
    return "".join(out)


def _request(request: dict[str, t.Any]) -> str:
    """The request as the mirror received it (headers after removal, sensitive values masked), and its body."""
    lines = [f"{request.get('method', '')} {request.get('target', '')}"]
    lines += [f"{name}: {value}" for name, value in request.get("headers") or []]
    body = _body(request)
    if isinstance(body, tuple):
        body = json.dumps(body[0], ensure_ascii=False, indent=1, default=str)
    if body:
        lines += ["", str(body)[:SHOWN_TEXT]]
    shown = escape("\n".join(lines))
    return f"<details class=request-box><summary>the request</summary><pre class=request>{shown}</pre></details>"


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
        html_a, html_b = _pair(a[0], b[0], True, True, budget=[SHOWN_NODES])
    else:  # one side JSON and the other not, or neither: each as text (a JSON one indented)
        marked = " class=diff" if "body" in fields else ""
        html_a = f"<pre{marked}>{escape(_as_text(a)[:SHOWN_TEXT])}</pre>"
        html_b = f"<pre{marked}>{escape(_as_text(b)[:SHOWN_TEXT])}</pre>"
    left.append(f"<div class=body>{html_a}</div></div>")
    right.append(f"<div class=body>{html_b}</div></div>")
    return "".join(left), "".join(right)


def _as_text(body: t.Any) -> str:
    if isinstance(body, tuple):
        return json.dumps(body[0], ensure_ascii=False, indent=1, default=str)
    return str(body)


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


def _pair(a: t.Any, b: t.Any, has_a: bool, has_b: bool, key: str = "", budget: list[int] | None = None
          ) -> tuple[str, str]:  # fmt: skip
    """Two JSON values rendered in parallel; a node whose values differ (or that one side lacks) is highlighted.
    ``budget`` (one count, shared): nodes left to draw; past it, the rest of a container is counted, not drawn."""
    budget = budget if budget is not None else [SHOWN_NODES]
    budget[0] -= 1
    label = f"{escape(key)}: " if key else ""
    if has_a and has_b and isinstance(a, (dict, list)) and type(a) is type(b) and a == b:
        opening, closing, what = ("{", "}", "keys") if isinstance(a, dict) else ("[", "]", "items")
        folded = f"<div class=muted>{label}{opening}&hellip; {len(a)} {what}, the same{closing}</div>"
        return folded, folded  # an equal subtree is one line: only the way to what differs is drawn
    if has_a and has_b and isinstance(a, dict) and isinstance(b, dict):
        keys = [*a, *(k for k in b if k not in a)]
        return _container(label, "{", "}", [(a.get(k), b.get(k), k in a, k in b, json.dumps(k, ensure_ascii=False))
                                            for k in keys], budget)  # fmt: skip
    if has_a and has_b and isinstance(a, list) and isinstance(b, list):
        items = [(a[i] if i < len(a) else None, b[i] if i < len(b) else None, i < len(a), i < len(b), "")
                 for i in range(max(len(a), len(b)))]  # fmt: skip
        return _container(label, "[", "]", items, budget)
    same = has_a and has_b and type(a) is type(b) and a == b
    cls = "" if same else " class=diff"
    shown_a = f"{label}{_value(a)}" if has_a else "<span class=absent>(absent)</span>"
    shown_b = f"{label}{_value(b)}" if has_b else "<span class=absent>(absent)</span>"
    return f"<div{cls}>{shown_a}</div>", f"<div{cls}>{shown_b}</div>"


def _container(label: str, opening: str, closing: str, items: list[tuple[t.Any, t.Any, bool, bool, str]],
               budget: list[int]) -> tuple[str, str]:  # fmt: skip
    rows_a, rows_b = [f"<div>{label}{opening}"], [f"<div>{label}{opening}"]
    for number, (x, y, has_x, has_y, key) in enumerate(items):
        if budget[0] <= 0:
            more = f"<div class=muted>... {len(items) - number} more</div>"
            rows_a.append(more)
            rows_b.append(more)
            break
        left, right = _pair(x, y, has_x, has_y, key, budget)
        rows_a.append(left)
        rows_b.append(right)
    return "".join(rows_a) + f"{closing}</div>", "".join(rows_b) + f"{closing}</div>"
