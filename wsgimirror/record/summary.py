"""What ``wsgimirror replay`` says before and after: the plan (``--dry-run``), the summary, its exit status and
its JSON form."""

from __future__ import annotations

import json
import typing as t
from collections import Counter
from dataclasses import replace

from ..compare.endpoints import Endpoints

if t.TYPE_CHECKING:
    pass
from .source import Options, Pacer, Source

# -- dry run ----------------------------------------------------------------------------------------


def plan(options: Options) -> dict[str, t.Any]:
    """What a replay would send: counts per method and endpoint, and how long it would take."""
    source = Source(replace(options, compare=False))  # counting needs no recorded answer: none is parsed or kept
    endpoints = Endpoints(options.compare_settings.endpoints)
    methods: Counter[str] = Counter()
    by_endpoint: Counter[str] = Counter()
    pacer = Pacer(options)
    due = 0.0
    for request in source.requests():
        methods[request.method] += 1
        by_endpoint[endpoints.name(request.method, request.target.partition("?")[0])] += 1
        due = pacer.next(request.timestamp)
        source.done(request)
    count = sum(methods.values())
    expected = due  # at --speed 0 the pacer gives every request 0
    if options.loop and options.duration is not None:
        expected = options.duration
    elif options.duration is not None:
        expected = min(expected, options.duration)
    return {
        "records": source.records,
        "requests": count,
        "filtered": source.filtered,
        "skipped_malformed": source.skipped_malformed,
        "skipped_cut": source.cut,
        "skipped_unknown_type": source.counts.unknown_type,
        "unreadable_files": source.counts.unreadable,
        "methods": dict(methods.most_common()),
        "endpoints": dict(by_endpoint.most_common()),
        "expected_seconds": round(expected, 3),
    }


def _pacing(options: Options) -> str:
    if options.rate:
        return f"{options.rate:g}/s"
    if options.speed == 0:
        return "as fast as possible"
    capped = f", gaps capped at {options.max_wait:g}s" if options.max_wait is not None else ", recorded gaps kept"
    return f"speed {options.speed:g}{capped}"


def _not_sent(figures: dict[str, t.Any]) -> str:
    """What was read and not sent, only what happened: '2 malformed, 1 cut, 3 filtered out'."""
    parts = [(figures["skipped_malformed"], "malformed"), (figures["skipped_cut"], "cut (shorter than framed)"),
             (figures["skipped_unknown_type"], "of an unknown type"),
             (figures["filtered"], "filtered out")]  # fmt: skip
    return ", ".join(f"{count} {what}" for count, what in parts if count)


def plan_text(figures: dict[str, t.Any], options: Options) -> str:
    skipped = _not_sent(figures)
    lines = [
        f"{figures['requests']} requests to replay of {figures['records']} recorded"
        + (f" ({skipped})" if skipped else ""),
        f"expected duration: {figures['expected_seconds']:.1f}s ({_pacing(options)})",
        "",
        "by method:",
        *(f"  {count:>8}  {method}" for method, count in figures["methods"].items()),
        "by endpoint:",
        *(f"  {count:>8}  {name}" for name, count in figures["endpoints"].items()),
    ]
    return "\n".join(lines)


def summary_text(summary: dict[str, t.Any]) -> str:
    """The summary in a few lines, each about something that happened."""
    lines = [f"records {summary['records']}  sent {summary['sent']}  succeeded {summary['succeeded']}  "
             f"failed {summary['failed']}"]  # fmt: skip
    skipped = _not_sent(summary)
    if skipped:
        lines.append(f"not sent: {skipped}")
    if summary["failures"]:
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["failures"].items())))
    if summary["statuses"]:
        lines.append("statuses: " + ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()))
    if summary["latency_ms"] is not None:
        lines.append(f"latency: p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms")
    if summary["sent"]:
        answered = f"{summary['succeeded']} answered at {summary['answered_rate']}/s" if summary["succeeded"] \
            else "none answered"  # fmt: skip
        lines.append(f"{summary['seconds']}s: {summary['sent']} sent at {summary['rate']}/s, {answered}")
    else:
        lines.append(f"{summary['seconds']}s: nothing sent")
    if summary["unreadable_files"]:
        lines.append(f"files skipped or damaged: {summary['unreadable_files']}")
        lines.extend(f"  {problem}" for problem in summary["file_problems"])
    if summary["partial_files"]:
        lines.append(f"files ending in a partial payload (ignored): {summary['partial_files']}")
    lines.extend(f"not sent, request {example}" for example in summary.get("malformed_examples", ()))
    if "compare" in summary:
        lines.extend(_compare_lines(summary["compare"]))
    return "\n".join(lines)


def _compare_lines(compare: dict[str, t.Any]) -> list[str]:
    """The comparison's totals, then each regressing endpoint with its fields and their rates."""
    from ..compare.report import regressing_fields

    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(compare["skipped"].items())) or "none"
    lines = [f"compared {compare['compared']}: {compare['different']} different, skipped: {skipped}; "
             f"{'REGRESSION' if compare['regression'] else 'no regression'}"]  # fmt: skip
    for endpoint, row in compare.get("by_endpoint", {}).items():
        if row.get("regression"):
            lines.append(f"  {endpoint} regresses:")
            lines.extend(regressing_fields(row, "    "))
    return lines


def exit_status(summary: dict[str, t.Any]) -> int:
    """0 when every request sent got an answer, no file was skipped and nothing regressed; else 1."""
    if summary["sent"] == 0 or summary["failed"] or summary.get("unreadable_files"):
        return 1
    return 1 if summary.get("compare", {}).get("regression") else 0


def dumps(value: t.Any) -> str:
    return json.dumps(value, indent=2)
