"""Name the endpoint of a request: ``METHOD template``, so that results aggregate per endpoint.

The template is the first of ``Compare.Endpoints`` that matches the path (``{name}``
matches one segment). Failing that, it is the path with each segment that looks like an
identifier replaced by ``{id}``: all digits, a UUID, or a token of 16 characters or more
that is hexadecimal, or base64url with both letters and digits (so that long words such
as ``notification-settings`` stay). The query is never part of an endpoint.
"""

from __future__ import annotations

import re
import typing as t
from functools import lru_cache

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")


class Endpoints:
    """The endpoint names of one configuration's ``Compare.Endpoints``."""

    def __init__(self, templates: t.Sequence[str]) -> None:
        self._templates = [(_template_regex(template), template) for template in templates]

    def name(self, method: str, path: str) -> str:
        path = path or "/"
        for regex, template in self._templates:
            if regex.fullmatch(path):
                return f"{method} {template}"
        return f"{method} {generic_template(path)}"


def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


@lru_cache(maxsize=4096)
def generic_template(path: str) -> str:
    return "/".join("{id}" if is_identifier(segment) else segment for segment in path.split("/"))


def is_identifier(segment: str) -> bool:
    if not segment:
        return False
    if segment.isdigit() and segment.isascii():
        return True
    if _UUID.fullmatch(segment) or _HEX.fullmatch(segment):
        return True
    return bool(_TOKEN.fullmatch(segment) and _LETTER.search(segment) and _DIGIT.search(segment))
