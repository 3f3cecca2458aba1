"""Compare two answers field by field: the differences, each with its field path, kind and both values.

Field paths: ``status``, ``headers.<lower-case name>``, ``body`` for a body that is not JSON,
``body.<key>`` nested with dots, and ``[]`` for an array's elements with the index dropped,
so that every element aggregates under one path (``body.items[].price``). A key that is not
valid text (JSON's ``"\\ud800"``) is named by its escape, so a field path can always be shown.

Kinds: ``value``; ``type`` (1 and 1.0 differ in type, and so do null and a value);
``missing`` / ``extra`` (a key or header only in the app's answer / only in the mirror's);
``size`` (arrays of different lengths); ``order`` (the same elements in another order,
reported only when arrays are ``ordered``); ``bytes`` (a body that is not JSON differs).
"""

from __future__ import annotations

import json
import re
import typing as t
from functools import lru_cache

from .._text import clean
from .trees import Comparable, Digest

KINDS = ("value", "type", "missing", "extra", "size", "order", "bytes")
# JSON text with sorted keys, by the C encoder: equal for equal values of equal types (1, 1.0 and true differ).
PERMUTATION_PAIRS = 64  # past this many moved elements, match them by sorting their canonical JSON
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


class Difference(t.NamedTuple):
    field: str
    kind: str
    app: t.Any  # the app's value (absent: missing on that side)
    mirror: t.Any


def compare(
    app: Comparable, mirror: Comparable, ordered: bool = True, ignore: t.Sequence[str] = ()
) -> list[Difference]:
    """The differences between the app's answer and a mirror's, leaving out the ``ignore`` field patterns."""
    found: list[Difference] = []
    if app.status != mirror.status:
        found.append(Difference("status", "value", app.status, mirror.status))
    _headers(app.headers, mirror.headers, found)
    if app.is_json and mirror.is_json:
        _tree(app.body, mirror.body, "body", ordered, found)
    elif app.is_json != mirror.is_json:
        found.append(Difference("body", "type", _shown(app.body), _shown(mirror.body)))
    elif app.body != mirror.body or type(app.body) is not type(mirror.body):
        found.append(Difference("body", "bytes", _shown(app.body), _shown(mirror.body)))
    if ignore:
        matcher = ignored_matcher(tuple(ignore))
        found = [d for d in found if not matcher(d.field)]
    return _first_of_each(found)


def _first_of_each(found: list[Difference]) -> list[Difference]:
    """One difference per field and kind (the first): an array of 40,000 changed prices is one finding,
    counted once per comparison, and shown once in an example."""
    seen: dict[tuple[str, str], Difference] = {}
    for d in found:
        seen.setdefault((d.field, d.kind), d)
    return list(seen.values())


def _headers(app: dict[str, list[str]], mirror: dict[str, list[str]], found: list[Difference]) -> None:
    for name, values in app.items():
        other = mirror.get(name)
        if other is None:
            found.append(Difference(f"headers.{name}", "missing", _one(values), None))
        elif other != values:
            found.append(Difference(f"headers.{name}", "value", _one(values), _one(other)))
    for name, values in mirror.items():
        if name not in app:
            found.append(Difference(f"headers.{name}", "extra", None, _one(values)))


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _tree(a: t.Any, b: t.Any, path: str, ordered: bool, found: list[Difference]) -> None:
    if type(a) is not type(b):
        found.append(Difference(path, "type", a, b))
    elif isinstance(a, dict):
        if a == b and _strictly_equal(a, b):
            return  # the common case, in C: no path is built for an unchanged subtree
        for key, value in a.items():
            if key in b:
                _tree(value, b[key], f"{path}.{clean(key)}", ordered, found)
            else:
                found.append(Difference(f"{path}.{clean(key)}", "missing", value, None))
        for key, value in b.items():
            if key not in a:
                found.append(Difference(f"{path}.{clean(key)}", "extra", None, value))
    elif isinstance(a, list):
        _array(a, b, path, ordered, found)
    elif a != b:
        found.append(Difference(path, "value", a, b))


def _array(a: list[t.Any], b: list[t.Any], path: str, ordered: bool, found: list[Difference]) -> None:
    if a == b and _strictly_equal(a, b):
        return
    if len(a) != len(b):
        found.append(Difference(path, "size", len(a), len(b)))
    if ordered:
        if len(a) == len(b) and _permutation(a, b):
            found.append(Difference(path, "order", a, b))
            return
        pairs = zip(a, b)
    else:
        pairs = zip(*_unmatched(a, b))
    element = path + "[]"
    for x, y in pairs:
        _tree(x, y, element, ordered, found)


def _permutation(a: list[t.Any], b: list[t.Any]) -> bool:
    """Arrays of one length holding the same elements in another order.

    Only the positions that differ are matched, so an array with one changed element costs one
    pass of C-level ``==``; many moved elements are matched by their canonical JSON instead.
    """
    moved = [i for i, (x, y) in enumerate(zip(a, b)) if not x == y]
    if not moved:
        return False  # equal but for number types: a type difference, not an order one
    if len(moved) > PERMUTATION_PAIRS:
        return sorted(_canonical(a[i]) for i in moved) == sorted(_canonical(b[i]) for i in moved)
    rest = [b[i] for i in moved]
    for i in moved:
        x = a[i]
        for j, y in enumerate(rest):
            if x == y and _strictly_equal(x, y):
                del rest[j]
                break
        else:
            return False
    return True


def _unmatched(a: list[t.Any], b: list[t.Any]) -> tuple[list[t.Any], list[t.Any]]:
    """The elements of each array without a twin in the other, each in a stable order for pairing."""
    left: dict[str, list[t.Any]] = {}
    for x in a:
        left.setdefault(_canonical(x), []).append(x)
    rest_b = []
    for y in b:
        twins = left.get(_canonical(y))
        if twins:
            twins.pop()
        else:
            rest_b.append(y)
    rest_a = [x for key in sorted(left) for x in left[key]]
    rest_b.sort(key=_canonical)
    return rest_a, rest_b


def _canonical(value: t.Any) -> str:
    """A key equal for equal JSON values of equal types (1 and 1.0 and true differ)."""
    return _ENCODER.encode(value)


def _strictly_equal(a: t.Any, b: t.Any) -> bool:
    """For values Python finds equal: equal as JSON too? (Python's == says 1 == 1.0 == True.)

    ``repr`` (all in C) tells 1, 1.0 and True apart; only when it differs, which may be key order
    alone, does the canonical JSON decide.
    """
    return repr(a) == repr(b) or _ENCODER.encode(a) == _ENCODER.encode(b)


def _shown(body: t.Any) -> t.Any:
    """A body as the diff log shows it: JSON values as they are, text as text, bytes by size and digest."""
    if isinstance(body, Digest):
        return {"length": body.length, "sha256": body.sha256}
    if isinstance(body, bytes):
        return {"length": len(body), "bytes": body[:64].hex()}
    return body


@lru_cache(maxsize=256)
def ignored_matcher(patterns: tuple[str, ...]) -> t.Callable[[str], bool]:
    """A test for field paths matching one of the patterns, or lying under one.

    ``*`` matches one path segment (a key, with its ``[]`` if any): ``body.meta.*``
    silences ``body.meta.x`` and everything under it.
    """
    parts = []
    for pattern in patterns:
        escaped = re.escape(pattern).replace(r"\*", r"[^.\[]+(?:\[\])*")
        parts.append(f"(?:{escaped})")
    regex = re.compile("(?:" + "|".join(parts) + r")(?=$|[.\[])")
    return lambda field: regex.match(field) is not None
