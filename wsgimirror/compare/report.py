"""``wsgimirror report``: the comparison results of one or more diff logs, on the terminal or as JSON.

Regressions come first, ordered by how far the candidate's difference rate exceeds the noise; then
endpoints whose candidate is slower, then those still learning (too few comparisons on a side to judge).
Endpoints that are only noise, or the same, are folded away unless ``--all``. Each regressing field shows its
rate against the noise rate, both sample sizes and its p-value; comparisons not made are listed by reason.
The exit status suits CI: 0 when nothing regresses, 1 when something does (or, with ``--fail-slower``, is
slower), 2 (with a one-line message) for a file that is missing or malformed.
"""

from __future__ import annotations

import json
import typing as t

from ..util.text import printable
from .analysis import summarize
from .difflog import Report
from .verdicts import LEARNING, SLOWER, Settings

ORDER = {"regression": 0, "slower": 1, LEARNING: 2, "noise": 3, "same": 4}


def endpoint_rows(report: Report) -> list[dict[str, t.Any]]:
    """Each endpoint's figures (as ``stats()["compare"]["by_endpoint"]`` has them, plus its rates), in the
    report's order: regressions by excess, slower endpoints, learning ones, then the rest."""
    rows = []
    for name, figures in summarize(report.counts, report.settings).items():
        compared, baseline = figures["compared"], figures["baseline_compared"]
        worst = max(((f, v) for f, v in figures["fields"].items() if v["regression"]),
                    key=lambda item: item[1]["excess"], default=None)  # fmt: skip
        slower = figures["latency"]["verdict"] == SLOWER
        rows.append(
            {
                "endpoint": name,
                **figures,
                "different_rate": round(figures["different"] / compared, 6) if compared else 0.0,
                "noise_rate": round(figures["baseline_different"] / baseline, 6) if baseline else 0.0,
                "worst_field": worst[0] if worst else None,
                "shown": "regression" if figures["regression"] else "slower" if slower else figures["verdict"],
            }
        )
    rows.sort(key=lambda row: (ORDER.get(row["shown"], 5), -row["excess"], -row["different_rate"], row["endpoint"]))
    return rows


def as_json(report: Report, dropped: dict[str, int] | None = None) -> str:
    rows = endpoint_rows(report)
    return json.dumps(
        {
            "processes": report.processes,
            "damaged_lines": sum(report.damaged.values()),
            "settings": report.settings._asdict(),
            "skipped": report.skipped,
            **({"dropped": dropped} if dropped is not None else {}),
            "regression": any(row["regression"] for row in rows),
            "slower": any(row["shown"] == "slower" for row in rows),
            "endpoints": rows,
        },
        indent=2,
    )


def _settings_text(settings: Settings) -> str:
    return (f"thresholds: relative {settings.relative:g} %, absolute {settings.absolute:g} %, confidence "
            f"{settings.confidence * 100:g} %, at least {settings.min_samples} comparisons a side")  # fmt: skip


def as_text(report: Report, show_all: bool = False) -> str:
    rows = endpoint_rows(report)
    counted = {key: sum(1 for row in rows if row["shown"] == key) for key in ORDER}
    lines = [
        f"{report.processes} process{'es' if report.processes != 1 else ''}, {len(rows)} endpoints: "
        f"{counted['regression']} regressing, {counted['slower']} slower, {counted[LEARNING]} learning, "
        f"{counted['noise'] + counted['same']} within the noise or the same",
        f"({_settings_text(report.settings)})",
    ]
    if report.skipped:
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(report.skipped.items(), key=lambda i: -i[1]))
        lines.append(f"comparisons not made: {skipped}")
    if not rows:
        return "\n".join([*lines, "", "no comparisons yet"])
    return "\n".join(printable(line) for line in _text_lines(rows, lines, show_all))


def _text_lines(rows: list[dict[str, t.Any]], lines: list[str], show_all: bool) -> list[str]:
    """The table and each verdict's details; each line goes through ``printable`` (endpoints and fields come from
    traffic: an escape sequence in a path must never reach the terminal)."""
    shown = [row for row in rows if show_all or row["shown"] in ("regression", "slower", LEARNING)]
    folded = len(rows) - len(shown)
    if shown:
        width = max(len(row["endpoint"]) for row in shown)
        lines += [
            "",
            f"  {'endpoint':<{width}}  {'compared':>8}  {'baseline':>8}  {'different':>9}  {'noise':>7}  verdict",
        ]
        for row in shown:
            mark = "!" if row["shown"] in ("regression", "slower") else " "
            lines.append(
                f"{mark} {row['endpoint']:<{width}}  {row['compared']:>8}  {row['baseline_compared']:>8}  "
                f"{row['different_rate']:>9.1%}  {row['noise_rate']:>7.1%}  {row['shown']}"
            )
    if folded:
        lines.append(f"  ({folded} endpoints within the noise or the same are folded away: --all shows them)")
    for row in rows:
        if row["regression"]:
            lines += ["", f"{row['endpoint']} regresses:", *regressing_fields(row)]
        if row["latency"]["verdict"] == SLOWER:
            lines += ["", f"{row['endpoint']} is slower: {slower_text(row['latency'])}"]
    return lines


def regressing_fields(row: dict[str, t.Any], indent: str = "  ") -> list[str]:
    """One line per regressing field of an endpoint, the furthest above its noise first, then the fields that
    differ harmlessly (added keys, what the mirror itself changed)."""
    fields = sorted(((f, v) for f, v in row["fields"].items() if v["regression"]), key=lambda item: -item[1]["excess"])
    lines = [f"{indent}{field_line(field, values, row)}" for field, values in fields]
    benign = [(f, v) for f, v in row["fields"].items() if v["verdict"] in ("added", "mirror-made")]
    if benign:
        listed = ", ".join(f"{field} ({values['verdict']})" for field, values in benign[:8])
        more = f" and {len(benign) - 8} more" if len(benign) > 8 else ""
        lines.append(f"{indent}not regressions: {listed}{more}")
    return lines


def field_line(field: str, values: dict[str, t.Any], row: dict[str, t.Any]) -> str:
    kinds = ", ".join(f"{kind} in {n}" for kind, n in sorted(values["kinds"].items(), key=lambda item: -item[1]))
    noise = f"noise {values['noise_rate']:.1%} of {row['baseline_compared']}" if row["baseline_compared"] else \
        "no baseline"  # fmt: skip
    return (f"{field}: differs in {values['rate']:.1%} of {row['compared']} ({noise}), "
            f"p {values['p_value']:.2g}; kinds: {kinds}")  # fmt: skip


def slower_text(latency: dict[str, t.Any]) -> str:
    """'p50 +85 % (12.1 ms against 6.5 ms of the baseline), p99 +40 % (...); p 1e-09; 40 answers against 38'."""
    candidate, reference = latency["candidate"], latency["reference"]
    whose = "the baseline" if latency["against"] == "baseline" else "the app"
    p99 = f"{latency['slower_p99']:+g} %" if latency["slower_p99"] is not None else "?"
    return (f"p50 {latency['slower_p50']:+g} % ({candidate['p50_ms']:g} ms against {reference['p50_ms']:g} ms of "
            f"{whose}), p99 {p99} ({candidate['p99_ms']:g} ms against {reference['p99_ms']:g} ms); "
            f"p {latency['p_value']:.2g}; {candidate['n']} answers against {reference['n']}")  # fmt: skip
