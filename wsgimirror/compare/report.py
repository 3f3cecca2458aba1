"""``wsgimirror report``: the comparison results of one or more diff logs, on the terminal or as JSON.

Endpoints are listed with regressions first, then by difference rate; each regressing
endpoint's regressing fields follow. The exit status suits CI: 0 when nothing regresses,
1 when something does, 2 (with a one-line message) for a file that is missing or malformed.
"""

from __future__ import annotations

import json
import typing as t

from .._text import printable
from .analysis import summarize
from .difflog import Report


def endpoint_rows(report: Report) -> list[dict[str, t.Any]]:
    """Each endpoint's figures (as ``stats()["compare"]["by_endpoint"]`` has them, plus its rates), sorted."""
    relative, absolute = report.thresholds
    rows = []
    for name, figures in summarize(report.counts, relative, absolute).items():
        compared, baseline = figures["compared"], figures["baseline_compared"]
        worst = max(figures["fields"].items(), key=lambda item: (item[1]["regression"], item[1]["rate"]), default=None)
        rows.append(
            {
                "endpoint": name,
                **figures,
                "different_rate": round(figures["different"] / compared, 6) if compared else 0.0,
                "noise_rate": round(figures["baseline_different"] / baseline, 6) if baseline else 0.0,
                "worst_field": worst[0] if worst else None,
            }
        )
    rows.sort(key=lambda row: (not row["regression"], -row["different_rate"], row["endpoint"]))
    return rows


def as_json(report: Report) -> str:
    relative, absolute = report.thresholds
    return json.dumps(
        {
            "processes": report.processes,
            "damaged_lines": sum(report.damaged.values()),
            "thresholds": {"relative": relative, "absolute": absolute},
            "regression": any(row["regression"] for row in endpoint_rows(report)),
            "endpoints": endpoint_rows(report),
        },
        indent=2,
    )


def as_text(report: Report) -> str:
    rows = endpoint_rows(report)
    relative, absolute = report.thresholds
    regressing = [row for row in rows if row["regression"]]
    lines = [
        f"{report.processes} process{'es' if report.processes != 1 else ''}, {len(rows)} endpoints, "
        f"{len(regressing)} regressing (thresholds: relative {relative:g} %, absolute {absolute:g} %)",
        "",
    ]
    if not rows:
        return "\n".join([*lines, "no comparisons yet"])
    return "\n".join(printable(line) for line in _text_lines(rows, regressing, lines))


def _text_lines(rows: list[dict[str, t.Any]], regressing: list[dict[str, t.Any]], lines: list[str]) -> list[str]:
    """The table and the regressing fields; each line goes through ``printable`` (endpoints and fields come
    from traffic: an escape sequence in a path must never reach the terminal)."""
    width = max(len(row["endpoint"]) for row in rows)
    lines.append(f"  {'endpoint':<{width}}  {'compared':>8}  {'different':>9}  {'noise':>7}  worst field")
    for row in rows:
        mark = "!" if row["regression"] else " "
        worst = row["worst_field"]
        shown = f"{worst} ({row['fields'][worst]['rate']:.1%})" if worst else "-"
        lines.append(
            f"{mark} {row['endpoint']:<{width}}  {row['compared']:>8}  {row['different_rate']:>9.1%}  "
            f"{row['noise_rate']:>7.1%}  {shown}"
        )
    for row in regressing:
        lines += ["", f"{row['endpoint']} regresses:"]
        fields = sorted(
            ((f, v) for f, v in row["fields"].items() if v["regression"]), key=lambda item: -item[1]["rate"]
        )
        for field, values in fields:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(values["kinds"].items()))
            lines.append(f"  {field}  differs in {values['rate']:.1%} (noise {values['noise_rate']:.1%}); {kinds}")
    return lines
