"""The package's shape: its rooms follow the request's journey, and no import runs back up it.

Every import counts, at module level, inside a function, or for type checking only: an import that runs back up
the journey is a dependency a reader has to hold in mind, wherever it is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wsgimirror"

# The rooms, in the order a request meets them; a module imports only from its own room or earlier ones.
JOURNEY = (
    ("util",),  # helpers that know nothing of mirroring
    ("errors", "stats", "metrics"),  # the exceptions and the books everyone writes to
    ("config",),
    ("capture",),
    ("send",),
    ("compare",),
    ("record",),
    ("agent",),
    ("middleware",),
    ("commands", "__main__", "__init__"),
)
RANK = {room: rank for rank, rooms in enumerate(JOURNEY) for room in rooms}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, wherever in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from .pkg import module" imports the module
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
                elif target in known:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
    found.discard(name)
    return found


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_lives_in_a_room_of_the_journey():
    assert sorted({room(name) for name in graph()} - set(RANK)) == []


def test_no_import_runs_back_up_the_journey():
    backwards = [
        f"{name} ({room(name)}) imports {target} ({room(target)})"
        for name, targets in sorted(graph().items())
        for target in sorted(targets)
        if RANK[room(target)] > RANK[room(name)]
    ]
    assert backwards == []


def test_the_modules_import_each_other_without_a_cycle():
    edges = {name: {t for t in targets if t != "wsgimirror"} for name, targets in graph().items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []
