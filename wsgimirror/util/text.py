"""Text taken from traffic, made safe to render, export or print.

Paths, header values and JSON keys come from clients and destinations. Two things in them break
what shows them: a lone surrogate (JSON's ``"\\ud800"`` decodes to one) cannot be encoded as UTF-8,
so a page or an exposition that holds one fails whole; and control characters (an ESC in a path)
drive a terminal. :func:`clean` replaces the first, :func:`printable` both, each with a visible escape.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls: what a terminal may act on. Tab stays out of it (harmless, and common).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# The same but line breaks: what a page (HTML, text with lines of its own) must not hold.
_CONTROL_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` encodable as UTF-8: a lone surrogate becomes its escape (``\\ud800``)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def printable(text: str) -> str:
    """``text`` safe on a terminal: :func:`clean`, and every control character as ``\\xNN``."""
    text = clean(text)
    if text.isprintable():
        return text
    return _CONTROL.sub(_escaped, text)


def page(text: str) -> str:
    """A whole page (HTML) safe to encode and show: :func:`clean`, and control characters but line breaks
    and tabs as ``\\xNN``."""
    return _CONTROL_IN_LINES.sub(_escaped, clean(text))


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"
