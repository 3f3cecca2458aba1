"""Turn an answer into something comparable: status, headers, and the body as a JSON tree, text or bytes.

The body is decoded from ``Content-Encoding`` gzip, deflate, or br when a Brotli decoder (``brotli`` or
``brotlicffi``) is installed, first, within the size limit: a body that inflates past it is compared by
the hash of what arrived; without a decoder a br body is compared as it came. It becomes a JSON
tree when the content type says JSON or the body parses as a JSON object or array; else
text when it is UTF-8; else bytes. A body that was too large to keep is a :class:`Digest`
(its length and SHA-256), and compares equal only to the same digest. A HEAD answer has no body.
"""

from __future__ import annotations

import json
import typing as t
import zlib

if t.TYPE_CHECKING:
    from ..capture.answer import Answer


class Digest(t.NamedTuple):
    """A body too large to keep: compared by its length and SHA-256."""

    length: int
    sha256: str


class Text(str):
    """A body that is UTF-8 text (not JSON)."""


Body = t.Union[t.Any, Text, bytes, Digest]  # JSON values are plain dict / list / str / int / float / bool / None


class Comparable(t.NamedTuple):
    status: int
    headers: dict[str, list[str]]  # lower-case name -> values, sorted
    body: Body
    is_json: bool


def comparable(
    answer: Answer, ignore_headers: t.Container[str], head_request: bool, limit: int, digest: bool = False
) -> Comparable:
    """The answer as compared; ``digest``: its body by length and SHA-256 whatever its size (so that two answers
    are compared on equal terms when the other one is too large to keep)."""
    headers: dict[str, list[str]] = {}
    for name, value in answer.headers:
        lower = name.lower()
        if lower not in ignore_headers:
            headers.setdefault(lower, []).append(value)
    for values in headers.values():
        values.sort()
    if head_request:
        return Comparable(answer.status, headers, b"", False)
    if digest or not answer.whole:
        return Comparable(answer.status, headers, Digest(answer.length, answer.digest), False)
    data = _decoded(bytes(answer.body), answer.header("content-encoding"), limit)
    if data is None:  # inflates past the limit: the hash of the bytes as they came
        return Comparable(answer.status, headers, Digest(answer.length, answer.digest), False)
    tree, is_json = body_tree(data, answer.header("content-type"))
    return Comparable(answer.status, headers, tree, is_json)


def _decoded(data: bytes, encoding: str, limit: int) -> bytes | None:
    """The body without its content coding; as is when not gzip, deflate or br, or when it does not decode;
    None when it decodes past ``limit``."""
    coding = encoding.strip().lower()
    if coding == "br":
        return _unbrotli(data, limit)
    if coding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        wbits = zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped, or raw as some send
    else:
        return data
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return data
    if len(out) > limit or inflater.unconsumed_tail:
        return None
    return out


def _brotli() -> t.Any:
    """The Brotli module installed (``brotli``, else ``brotlicffi``), or None."""
    for name in ("brotli", "brotlicffi"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def _unbrotli(data: bytes, limit: int) -> bytes | None:
    """A br body decoded, never past ``limit + 1`` bytes of output (each step is bounded by it)."""
    module = _brotli()
    if module is None:
        return data
    decoder = module.Decompressor()
    out = bytearray()
    try:
        piece = decoder.process(data, output_buffer_limit=limit + 1)
        while piece:
            out += piece
            if len(out) > limit or decoder.is_finished():
                break
            piece = decoder.process(b"", output_buffer_limit=limit + 1 - len(out))
    except (module.error, TypeError):  # not Brotli after all, or a module too old to bound its output
        return data
    if len(out) > limit:
        return None
    return bytes(out) if decoder.is_finished() else data


def body_tree(data: bytes, content_type: str) -> tuple[Body, bool]:
    """(the body as a JSON value, text or bytes, whether it is JSON)."""
    says_json = "json" in content_type.lower()
    stripped = data.lstrip()[:1]
    if says_json or stripped in (b"{", b"["):
        try:
            return json.loads(data), True
        except (ValueError, RecursionError):
            pass
    try:
        return Text(data.decode("utf-8")), False
    except UnicodeDecodeError:
        return data, False
