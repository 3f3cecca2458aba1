"""JSON as .NET's configuration reads ``appsettings.json``: comments, trailing commas, case-insensitive keys.

A user of the seed proxy pastes the file they have. :func:`loads` accepts ``//`` and
``/* */`` comments and a trailing comma before ``}`` or ``]``, and reports a real syntax
error with its line and column (they are those of the original text: comments are blanked,
not removed). :class:`Section` reads an object with case-insensitive keys, as the .NET
binder does, and refuses two keys that differ only by case.
"""

from __future__ import annotations

import json
import typing as t

from ..errors import ConfigError
from ..util.text import clean


def loads(text: str, source: str) -> t.Any:
    """Parse ``text`` (named ``source`` in errors); a syntax error is a ConfigError with line and column."""
    try:
        return json.loads(_blank_comments_and_trailing_commas(text, source))
    except json.JSONDecodeError as err:
        raise ConfigError(source, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except RecursionError:
        raise ConfigError(source, "the JSON is nested too deeply") from None


def _blank_comments_and_trailing_commas(text: str, source: str) -> str:
    """The same text with comments and trailing commas turned into spaces (line breaks kept)."""
    out = list(text)
    i, end = 0, len(text)
    last_comma = -1  # where the last significant character was a comma after a value, else -1
    previous = ""  # the last significant character
    while i < end:
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
            last_comma, previous = -1, '"'
            continue
        if text.startswith("//", i):
            stop = text.find("\n", i)
            stop = end if stop < 0 else stop
            out[i:stop] = " " * (stop - i)
            i = stop
            continue
        if text.startswith("/*", i):
            stop = text.find("*/", i + 2)
            if stop < 0:
                line = text.count("\n", 0, i) + 1
                column = i - text.rfind("\n", 0, i)
                raise ConfigError(source, f"invalid JSON at line {line} column {column}: unterminated /* comment")
            out[i : stop + 2] = [c if c == "\n" else " " for c in text[i : stop + 2]]
            i = stop + 2
            continue
        if char in "}]" and last_comma >= 0:
            out[last_comma] = " "
        if not char.isspace():
            # Only a comma that follows a value can be a trailing one: ",," and "[," stay errors.
            last_comma = i if char == "," and previous not in ("", ",", "[", "{", ":") else -1
            previous = char
        i += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    """The index just past the JSON string that opens at ``start`` (or the end of an unterminated one)."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return len(text)


class Section(t.Mapping[str, t.Any]):
    """A JSON object whose keys are case-insensitive; iteration gives them as written."""

    __slots__ = ("_items",)

    def __init__(self, value: t.Mapping[str, t.Any], path: str) -> None:
        self._items: dict[str, tuple[str, t.Any]] = {}
        for key, item in value.items():
            if isinstance(key, str) and clean(key) != key:  # "\ud800" in the JSON: it could be shown nowhere
                raise ConfigError(path, f"key {clean(key)!r} is not valid Unicode text")
            lower = key.lower()
            if lower in self._items:
                first = self._items[lower][0]
                raise ConfigError(path, f"keys {first!r} and {key!r} differ only by case; keys are case-insensitive")
            self._items[lower] = (key, item)

    def __getitem__(self, key: str) -> t.Any:
        return self._items[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> t.Iterator[str]:
        return (key for key, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
