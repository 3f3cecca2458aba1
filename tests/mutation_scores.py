"""The mutation score of each module after ``tests/mutation_run.py`` (``tox -e mutate`` runs both).

    python3 tests/mutation_scores.py [--survivors]

Reads mutmut's results in ``.mutation/<module>/mutants/``. A mutant is *killed* when a test failed or timed out
with it in place. Mutants that cannot change behaviour are listed, each with its reason, in
``tests/mutation_equivalents.txt`` and left out of the score. Prints one line per module and
exits 1 when a module is below the target (97 %) or a survivor is not yet judged.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 97.0
KILLED = {1, 3, 36, 37, 24, -24, 152, 255, -9, -11}  # a failing test, a timeout, a crash
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalents() -> dict[str, str]:
    """Mutant name -> why it cannot change what a user sees."""
    listed = {}
    for line in (ROOT / "tests" / "mutation_equivalents.txt").read_text().splitlines():
        name, sep, reason = line.partition(" ")
        if name and not name.startswith("#") and sep:
            listed[name] = reason.strip()
    return listed


def results() -> dict[str, dict[str, int | None]]:
    """Module path -> mutant name -> exit code, for each module mutated in its own tree."""
    by_module = {}
    for work in sorted((ROOT / ".mutation").glob("*")):
        relative = work.name.replace(".", "/")  # compare.diff -> compare/diff
        meta = work / "mutants" / "wsgimirror" / f"{relative}.py.meta"
        if meta.exists():
            try:
                by_module[f"wsgimirror/{relative}.py"] = json.loads(meta.read_text())["exit_code_by_key"]
            except json.JSONDecodeError:  # mutmut is writing it right now
                print(f"{work.name}: results are being written; run this again", file=sys.stderr)
    return by_module


def main(argv: list[str]) -> int:
    judged = equivalents()
    failing = False
    print(f"{'module':28} {'mutants':>7} {'killed':>6} {'survived':>8} {'equivalent':>10} {'no tests':>8} "
          f"{'unrun':>5} {'score':>7}")  # fmt: skip
    unjudged: list[str] = []
    stale: list[str] = []
    for module, codes in results().items():
        count = Counter()
        for name, code in codes.items():
            if name in judged and code in KILLED:
                stale.append(name)  # listed as equivalent, yet a test kills it: the list is out of date
            if name in judged and code not in KILLED:
                count["equivalent"] += 1
            elif code is None:
                count["unrun"] += 1  # mutmut has not run it yet (an interrupted run)
            elif code in KILLED:
                count["killed"] += 1
            elif code in SURVIVED:
                count["survived"] += 1
                unjudged.append(name)
            else:
                count["no tests"] += 1
                unjudged.append(name)
        scored = count["killed"] + count["survived"] + count["no tests"]
        score = 100.0 * count["killed"] / scored if scored else 100.0
        failing |= score < TARGET or count["unrun"] > 0
        print(f"{module:28} {len(codes):>7} {count['killed']:>6} {count['survived']:>8} {count['equivalent']:>10} "
              f"{count['no tests']:>8} {count['unrun']:>5} {score:>6.1f}%")  # fmt: skip
    if stale:
        print("\nListed as equivalent but killed (renumbered? remove them from the list):")
        print("\n".join(f"  {name}" for name in stale))
    if "--survivors" in argv:
        print("\nSurvivors not yet judged (see them with `mutmut show NAME`):")
        print("\n".join(f"  {name}" for name in unjudged))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
