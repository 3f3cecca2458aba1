"""Compare two answers field by field: the differences, each with its field path, kind and both values.

Field paths: ``status``, ``headers.<lower-case name>``, ``body`` for a body that is not JSON,
``body.<key>`` nested with dots, and ``[]`` for an array's elements with the index dropped,
so that every element aggregates under one path (``body.items[].price``). A key that is not
valid text (JSON's ``"\\ud800"``) is named by its escape, so a field path can always be shown.

Kinds: ``value``; ``type`` (a string and a number, ``null`` and a value, ``true`` and ``1``; numbers
are compared by value, ``12.0`` equal to ``12``, unless ``strict_types``); ``missing`` (a key or
header only in the app's answer); ``added`` (only in the mirror's); ``size`` (arrays of different
lengths); ``order`` (the same elements in another order, reported only when arrays are ``ordered``);
``bytes`` (a body that is not JSON differs); ``mirror`` (mirror-made: the mirror's value is what the
mirror itself changed in the request, its ``Host``, ``X-Forwarded-*`` or ``X-Mirrored-By``, echoed
back; see :class:`MirrorMade`).
"""

from __future__ import annotations

import json
import re
import typing as t
from functools import lru_cache

from ..util.text import clean
from .trees import Comparable, Digest

KINDS = ("value", "type", "missing", "added", "size", "order", "bytes", "mirror")
PERMUTATION_PAIRS = 64  # past this many moved elements, match them by sorting their canonical JSON
# JSON text with sorted keys, by the C encoder: equal for equal values of equal types (1, 1.0 and true differ).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


class Difference(t.NamedTuple):
    field: str
    kind: str
    app: t.Any  # the app's value (absent: missing on that side)
    mirror: t.Any


class MirrorMade:
    """What the mirror changed in the request: ``(original, sent)`` pairs of header values, either side None
    for a header the mirror added or removed.

    A difference is mirror-made when the mirror's value is one the mirror sent and the app's value is the
    original or absent (an app that echoes ``X-Mirrored-By``, ``Host`` or ``X-Forwarded-For``), when the
    app's value is one the mirror removed and the mirror has none, or when the mirror's value is the app's
    with an original replaced by what was sent (an absolute URL naming the mirror's host).
    """

    def __init__(self, pairs: t.Iterable[tuple[str | None, str | None]]) -> None:
        self.pairs = [(old, new) for old, new in pairs if old != new]
        self.sent = {new for _, new in self.pairs if new}
        self.removed = {old for old, new in self.pairs if old and not new}

    def explains(self, app: t.Any, mirror: t.Any) -> bool:
        if mirror is None:
            return isinstance(app, str) and app in self.removed
        if not isinstance(mirror, str):
            return False
        if mirror in self.sent and (app is None or any(app == old for old, new in self.pairs if new == mirror)):
            return True
        if isinstance(app, str):
            return any(old and new and old in app and app.replace(old, new) == mirror for old, new in self.pairs)
        return False


def compare(
    app: Comparable,
    mirror: Comparable,
    ordered: bool = True,
    ignore: t.Sequence[str] = (),
    strict_types: bool = False,
    made: MirrorMade | None = None,
) -> list[Difference]:
    """The differences between the app's answer and a mirror's, leaving out the ``ignore`` field patterns;
    ``made``: what the mirror changed in the request, whose echoes are of kind ``mirror``."""
    walk = _Walk(ordered, strict_types)
    found = walk.found
    if app.status != mirror.status:
        found.append(Difference("status", "value", app.status, mirror.status))
    _headers(app.headers, mirror.headers, found)
    if app.is_json and mirror.is_json:
        walk.tree(app.body, mirror.body, "body")
    elif app.is_json != mirror.is_json:
        found.append(Difference("body", "type", _shown(app.body), _shown(mirror.body)))
    elif app.body != mirror.body or type(app.body) is not type(mirror.body):
        found.append(Difference("body", "bytes", _shown(app.body), _shown(mirror.body)))
    if ignore:
        matcher = ignored_matcher(tuple(ignore))
        found = [d for d in found if not matcher(d.field)]
    if made is not None and made.pairs:
        found = [d._replace(kind="mirror") if d.kind in ("value", "missing", "added") and made.explains(d.app, d.mirror)
                 else d for d in found]  # fmt: skip
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
            found.append(Difference(f"headers.{name}", "added", None, _one(values)))


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _number(value: t.Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Walk:
    """One comparison of two JSON trees: how arrays and numbers are compared, and what was found."""

    __slots__ = ("ordered", "strict", "found", "equal", "canonical")

    def __init__(self, ordered: bool, strict: bool) -> None:
        self.ordered, self.strict = ordered, strict
        self.found: list[Difference] = []
        self.equal = _strictly_equal if strict else _equal_by_value
        self.canonical = _canonical if strict else _canonical_by_value

    def tree(self, a: t.Any, b: t.Any, path: str) -> None:
        found = self.found
        if type(a) is not type(b):
            if not self.strict and _number(a) and _number(b):
                if a != b:
                    found.append(Difference(path, "value", a, b))
                return
            found.append(Difference(path, "type", a, b))
        elif isinstance(a, dict):
            if a == b and self.equal(a, b):
                return  # the common case, in C: no path is built for an unchanged subtree
            for key, value in a.items():
                if key in b:
                    self.tree(value, b[key], f"{path}.{clean(key)}")
                else:
                    found.append(Difference(f"{path}.{clean(key)}", "missing", value, None))
            for key, value in b.items():
                if key not in a:
                    found.append(Difference(f"{path}.{clean(key)}", "added", None, value))
        elif isinstance(a, list):
            self.array(a, b, path)
        elif a != b:
            found.append(Difference(path, "value", a, b))

    def array(self, a: list[t.Any], b: list[t.Any], path: str) -> None:
        if a == b and self.equal(a, b):
            return
        if len(a) != len(b):
            self.found.append(Difference(path, "size", len(a), len(b)))
        if self.ordered:
            if len(a) == len(b) and _permutation(a, b, self.equal, self.canonical):
                self.found.append(Difference(path, "order", a, b))
                return
            pairs: t.Iterable[tuple[t.Any, t.Any]] = zip(a, b)
        else:
            pairs = zip(*_unmatched(a, b, self.canonical))
        element = path + "[]"
        for x, y in pairs:
            self.tree(x, y, element)


Equal = t.Callable[[t.Any, t.Any], bool]
Canonical = t.Callable[[t.Any], str]


def _permutation(a: list[t.Any], b: list[t.Any], equal: Equal, canonical: Canonical) -> bool:
    """Arrays of one length holding the same elements in another order.

    Only the positions that differ are matched, so an array with one changed element costs one
    pass of C-level ``==``; many moved elements are matched by their canonical JSON instead.
    """
    moved = [i for i, (x, y) in enumerate(zip(a, b)) if not (x == y and equal(x, y))]
    if not moved:
        return False
    if len(moved) > PERMUTATION_PAIRS:
        return sorted(canonical(a[i]) for i in moved) == sorted(canonical(b[i]) for i in moved)
    rest = [b[i] for i in moved]
    for i in moved:
        x = a[i]
        for j, y in enumerate(rest):
            if x == y and equal(x, y):
                del rest[j]
                break
        else:
            return False
    return True


def _unmatched(a: list[t.Any], b: list[t.Any], canonical: Canonical) -> tuple[list[t.Any], list[t.Any]]:
    """The elements of each array without a twin in the other, each in a stable order for pairing."""
    left: dict[str, list[t.Any]] = {}
    for x in a:
        left.setdefault(canonical(x), []).append(x)
    rest_b = []
    for y in b:
        twins = left.get(canonical(y))
        if twins:
            twins.pop()
        else:
            rest_b.append(y)
    rest_a = [x for key in sorted(left) for x in left[key]]
    rest_b.sort(key=canonical)
    return rest_a, rest_b


def _canonical(value: t.Any) -> str:
    """A key equal for equal JSON values of equal types (1 and 1.0 and true differ)."""
    return _ENCODER.encode(value)


def _canonical_by_value(value: t.Any) -> str:
    """A key equal for equal JSON values, numbers by value (1 and 1.0 alike; true still apart)."""
    return _ENCODER.encode(_by_value(value))


def _by_value(value: t.Any) -> t.Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _by_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_value(v) for v in value]
    return value


def _strictly_equal(a: t.Any, b: t.Any) -> bool:
    """For values Python finds equal: equal as JSON too? (Python's == says 1 == 1.0 == True.)

    ``repr`` (all in C) tells 1, 1.0 and True apart; only when it differs, which may be key order
    alone, does the canonical JSON decide.
    """
    return repr(a) == repr(b) or _ENCODER.encode(a) == _ENCODER.encode(b)


def _equal_by_value(a: t.Any, b: t.Any) -> bool:
    """For values Python finds equal: equal as JSON with numbers by value? (``true`` is still not ``1``.)"""
    return repr(a) == repr(b) or _canonical_by_value(a) == _canonical_by_value(b)


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
