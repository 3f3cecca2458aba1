"""What an example may show: the secrets in traffic masked before it reaches the diff log or a page.

An example (the diff log's ``example`` records, served live at ``/compare``) shows a request and two
answers. It never shows:

- ``Mirror.LoopToken``: wherever it appears (the mirror's ``X-Mirrored-By``, an answer that echoes
  the request's headers), it is replaced by ``(Mirror.LoopToken)``;
- a header of ``Mirror.RemoveHeaders``: left out of both answers (the request never had it), and its
  values left out of the differences;
- credentials: ``Authorization`` and ``Proxy-Authorization`` keep their scheme only; every
  ``Set-Cookie`` value, and ``Cookie`` values whose name is sensitive, are masked;
- values named sensitive (``Compare.SensitiveNames``: a name matches when it contains one of them,
  in any case): query parameters, form fields and JSON keys, in the target, the bodies (the
  16 KiB an example keeps) and the differing values.
"""

from __future__ import annotations

import base64
import re
import typing as t

from ..util.text import clean

MASK = "***"
LOOP_TOKEN = "(Mirror.LoopToken)"
REMOVED = "(removed: Mirror.RemoveHeaders)"
CREDENTIALS = frozenset({"authorization", "proxy-authorization"})


class Redactor:
    """The masking of one configuration: removed headers, sensitive names and the loop token."""

    def __init__(self, removed: t.AbstractSet[str] = frozenset(), names: t.Sequence[str] = (),
                 token: str | None = None) -> None:  # fmt: skip
        self.removed = frozenset(h.lower() for h in removed)
        self.token = token
        self._names = tuple(n.lower() for n in names if n)
        self._json: re.Pattern[str] | None = None
        self._pairs: re.Pattern[str] | None = None
        if self._names:
            words = "|".join(re.escape(n) for n in self._names)
            name = rf"[^\s\"'&=;:,{{}}\[\]?]*(?:{words})[^\s\"'&=;:,{{}}\[\]?]*"
            # "name": value  (JSON, a string or a bare scalar)
            self._json = re.compile(rf'("{name}"\s*:\s*)("(?:[^"\\]|\\.)*"|[^\s,}}\]]+)', re.I)
            # name=value  (a query, a form, a cookie)
            self._pairs = re.compile(rf"((?:^|(?<=[?&;\s\"'])){name}=)([^&;\s\"']*)", re.I)

    def sensitive(self, name: str) -> bool:
        lowered = name.lower()
        return any(n in lowered for n in self._names)

    def text(self, value: str) -> str:
        """Free text from traffic (a target, a body, a value) with the token and sensitive values masked."""
        if self.token and self.token in value:
            value = value.replace(self.token, LOOP_TOKEN)
        if self._json is not None and self._pairs is not None:
            value = self._json.sub(lambda m: m.group(1) + (f'"{MASK}"' if m.group(2)[:1] == '"' else MASK), value)
            value = self._pairs.sub(lambda m: m.group(1) + MASK, value)
        return clean(value)

    def header(self, name: str, value: str) -> str:
        lowered = name.lower()
        if lowered in CREDENTIALS:
            scheme = value.split(None, 1)[0] if value.strip() else ""
            return f"{scheme} {MASK}".strip()
        if lowered == "set-cookie":
            cookie, _, attributes = value.partition(";")
            return f"{cookie.partition('=')[0]}={MASK}" + (f";{attributes}" if attributes else "")
        if lowered == "cookie":
            return "; ".join(self._cookie(part.strip()) for part in value.split(";") if part.strip())
        return self.text(value)

    def _cookie(self, pair: str) -> str:
        name, equals, _ = pair.partition("=")
        return f"{name}={MASK}" if equals and self.sensitive(name) else self.text(pair)

    def headers(self, headers: t.Iterable[tuple[str, str]]) -> list[list[str]]:
        """Headers as an example shows them: removed ones left out, the rest masked."""
        return [[clean(k), self.header(k, v)] for k, v in headers if k.lower() not in self.removed]

    def body(self, data: bytes, length: int) -> dict[str, t.Any]:
        """A body's first bytes (base64) with sensitive values masked, and its whole length."""
        if self.token or self._json is not None:
            # Latin-1 maps every byte to one character and back: only the masked values change.
            data = self.text(data.decode("latin-1")).encode("latin-1")
        return {"body": base64.b64encode(data).decode("ascii"), "body_length": length}

    def value(self, field: str, value: t.Any) -> t.Any:
        """A differing value as an example shows it."""
        if field.startswith("headers."):
            name = field[len("headers.") :]
            if name in self.removed:
                return REMOVED
            if value is None:
                return None
            if isinstance(value, list):
                return [self.header(name, str(v)) for v in value]
            return self.header(name, str(value))
        if self._names and any(self.sensitive(part) for part in re.split(r"[.\[\]]+", field) if part):
            return None if value is None else MASK
        return self._masked(value, 0)

    def _masked(self, value: t.Any, depth: int) -> t.Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > 64:
            return value
        if isinstance(value, dict):
            return {clean(str(k)): (MASK if self.sensitive(str(k)) else self._masked(v, depth + 1))
                    for k, v in value.items()}  # fmt: skip
        if isinstance(value, list):
            return [self._masked(v, depth + 1) for v in value]
        return value
