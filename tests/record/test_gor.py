"""Reading GoReplay files in-process: the payloads, what is skipped, and the HTTP messages inside."""

from __future__ import annotations

import gzip

import pytest

from tests.helpers import ROOT
from wsgimirror.record.gor import (
    SEPARATOR,
    BadMessage,
    ReadCounts,
    Unreadable,
    merged,
    new_id,
    parse_message,
    parse_payload,
    payload_header,
    read_payloads,
)

FIXTURE = ROOT / "tests" / "data" / "goreplay.gor"


def test_the_fixture_reads_as_goreplay_reads_it():
    counts = ReadCounts()
    found = list(read_payloads(str(FIXTURE), counts))
    assert [(p.kind, p.id, p.timestamp, p.latency) for p in found] == [
        ("1", "4a2c1b7e9f0d3c5a6b8e1f2a", 1764160000000000000, -1),
        ("2", "4a2c1b7e9f0d3c5a6b8e1f2a", 1764160000001000000, 1523000),
        ("1", "0123456789abcdef0123456789abcdef01234567", 1764160000250000000, -1),
        ("3", "0123456789abcdef0123456789abcdef01234567", 1764160000260000000, 900000),
        ("1", "5b3d9a0c1e2f4a6b8c0d2e4f", 1764160000500000000, -1),
    ]
    assert (counts.malformed, counts.partial, counts.files) == (1, 1, 1)
    assert (
        found[1].message
        == b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"id": "o-1"}'
    )
    assert found[2].message == b"GET /items/42 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n"


def test_a_payload_written_is_read_back_exactly_whatever_its_last_bytes(tmp_path):
    messages = [b"GET / HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab\n", b"X\n\n", b""]
    data = b"".join(payload_header("1", f"{i:024x}", 10 + i) + m + SEPARATOR for i, m in enumerate(messages))
    path = tmp_path / "t.gor.gz"
    path.write_bytes(gzip.compress(data))
    found = list(read_payloads(str(path)))
    assert [p.message for p in found] == messages
    assert [p.timestamp for p in found] == [10, 11, 12, 13]


@pytest.mark.parametrize("record", [b"1 id\nGET / HTTP/1.1", b"1 id 1 -1", b"\nGET /", b"1\tid\t1\nGET /"])
def test_a_header_without_a_line_break_or_three_space_separated_fields_is_malformed(record):
    assert parse_payload(record) is None


@pytest.mark.parametrize(
    ("header", "fields"),
    [
        (b"1 id 7 -1", ("1", "id", 7, -1)),
        (b"1 id x -1", ("1", "id", 0, -1)),  # a timestamp that is not a number reads as 0, as Go's ParseInt
        (b"1 id 7 y", ("1", "id", 7, -1)),  # a latency that is not a number is unknown
        (b"1  id 7", ("1", "", 0, 7)),  # a double space shifts the fields, as bytes.Split does
        (b"1 id 7 5 extra", ("1", "id", 7, 5)),  # fields past the fourth are ignored
        (b"1 id 7 5\r", ("1", "id", 7, 5)),  # a CRLF line end
        (b"4 id 7 -1", ("4", "id", 7, -1)),  # a type nobody knows is read; the reader skips and counts it
        (b"12 id 7", ("1", "id", 7, -1)),  # the type is the first byte, as GoReplay's isRequestPayload
    ],
)
def test_odd_header_lines_read_as_goreplay_reads_them(header, fields):
    payload = parse_payload(header + b"\nGET / HTTP/1.1\r\n\r\n")
    assert payload is not None and (payload.kind, payload.id, payload.timestamp, payload.latency) == fields
    assert payload.message == b"GET / HTTP/1.1\r\n\r\n"


def test_a_header_of_three_fields_has_an_unknown_latency():
    payload = parse_payload(b"2 ab 5\nHTTP/1.1 200 OK\r\n\r\n")
    assert payload is not None and (payload.kind, payload.id, payload.timestamp, payload.latency) == ("2", "ab", 5, -1)


def test_several_files_merge_by_timestamp_and_counts_add_up(tmp_path):
    for name, stamps in (("a.gor", [1, 4, 6]), ("b.gor", [2, 3, 9])):
        (tmp_path / name).write_bytes(b"".join(payload_header("1", name, s) + b"GET / HTTP/1.1\r\n\r\n" + SEPARATOR
                                               for s in stamps) + b"1 cut")  # fmt: skip
    counts = ReadCounts()
    found = list(merged([str(tmp_path / "a.gor"), str(tmp_path / "b.gor")], counts))
    assert [(p.timestamp, p.id) for p in found] == [(1, "a.gor"), (2, "b.gor"), (3, "b.gor"), (4, "a.gor"),
                                                    (6, "a.gor"), (9, "b.gor")]  # fmt: skip
    assert (counts.files, counts.partial, counts.malformed) == (2, 2, 0)


def test_a_missing_file_and_a_corrupt_gzip_are_unreadable(tmp_path):
    with pytest.raises(Unreadable, match="No such file"):
        list(read_payloads(str(tmp_path / "none.gor")))
    bad = tmp_path / "bad.gor.gz"
    bad.write_bytes(b"\x1f\x8bnot really gzip at all")
    with pytest.raises(Unreadable, match="bad.gor.gz"):
        list(read_payloads(str(bad)))


def test_a_gzip_file_cut_short_keeps_what_came_before(tmp_path):
    data = b"".join(payload_header("1", f"{i:024x}", i) + b"GET / HTTP/1.1\r\n\r\n" + SEPARATOR for i in range(200))
    packed = gzip.compress(data)
    path = tmp_path / "cut.gor.gz"
    path.write_bytes(packed[: len(packed) - 20])  # the writer was killed before the gzip trailer
    counts = ReadCounts()
    found = list(read_payloads(str(path), counts))
    assert 150 <= len(found) <= 200 and counts.partial == 1


def test_a_chunked_message_is_decoded_and_its_framing_is_dropped_from_the_body():
    message = parse_message(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n")  # fmt: skip
    assert (message.start, message.body, message.cut) == (("POST", "/x", "HTTP/1.1"), b"hello world", False)
    assert message.header("transfer-encoding") == "chunked"


def test_a_chunked_body_cut_off_is_marked_cut():
    cut = parse_message(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert (cut.body, cut.cut) == (b"hel", True)
    no_end = parse_message(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert (no_end.body, no_end.cut) == (b"hello", True)


def test_content_length_frames_the_body_and_a_short_one_is_cut():
    whole = parse_message(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")
    assert (whole.start, whole.body, whole.cut) == (("HTTP/1.1", "200", "OK"), b"abc", False)
    short = parse_message(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
    assert (short.body, short.cut) == (b"abc", True)
    unframed = parse_message(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nto the end")
    assert (unframed.body, unframed.cut) == (b"to the end", False)


def test_header_values_are_trimmed_and_a_bare_lf_message_is_read():
    message = parse_message(b"GET /a HTTP/1.1\nHost:  h.example \nX-Empty:\n\nbody")
    assert message.headers == [("Host", "h.example"), ("X-Empty", "")]
    assert message.body == b"body"
    assert parse_message(b"HTTP/1.1 204\r\n\r\n").start == ("HTTP/1.1", "204", "")


@pytest.mark.parametrize(
    "raw",
    [b"nonsense\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
     b"GET / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
)  # fmt: skip
def test_what_is_not_an_http_message_is_a_bad_message(raw):
    with pytest.raises(BadMessage):
        parse_message(raw)


def test_ids_are_24_lower_case_hex_characters_and_differ():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 24 and i == i.lower() and int(i, 16) >= 0 for i in ids)


def test_every_malformed_payload_and_every_cut_file_is_counted(tmp_path):
    good = payload_header("1", "a" * 24, 1) + b"GET / HTTP/1.1\r\n\r\n" + SEPARATOR
    (tmp_path / "m.gor").write_bytes(b"1 x\nGET /\r\n\r\n" + SEPARATOR + good + b"junk\n" + SEPARATOR)
    counts = ReadCounts()
    assert len(list(read_payloads(str(tmp_path / "m.gor"), counts))) == 1 and counts.malformed == 2
    packed = gzip.compress(good * 100)
    for name in ("a.gor.gz", "b.gor.gz"):
        (tmp_path / name).write_bytes(packed[:-20])
    counts = ReadCounts()
    list(merged([str(tmp_path / "a.gor.gz"), str(tmp_path / "b.gor.gz")], counts))
    assert counts.partial == 2


def test_a_missing_file_is_named_with_the_reason_only(tmp_path):
    missing = tmp_path / "none.gor"
    with pytest.raises(Unreadable) as err:
        list(read_payloads(str(missing)))
    assert str(err.value) == f"{missing}: No such file or directory"


def test_a_start_line_keeps_a_reason_phrase_of_several_words():
    assert parse_message(b"HTTP/1.1 404 Not Found Here\r\n\r\n").start == ("HTTP/1.1", "404", "Not Found Here")


def test_a_bare_lf_message_ends_its_head_at_the_first_blank_line():
    message = parse_message(b"POST / HTTP/1.1\nContent-Length: 4\n\na\n\nb")
    assert message.body == b"a\n\nb"[:4] and message.headers == [("Content-Length", "4")]


def test_a_header_value_keeps_its_colons_and_a_stray_blank_line_is_skipped():
    message = parse_message(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\nX-After: 1\r\n\r\n")
    assert message.headers == [("Host", "a.example:8080"), ("X-After", "1")]


def test_a_body_of_exactly_its_content_length_is_whole():
    message = parse_message(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert (message.body, message.cut) == (b"abc", False)


def test_chunk_sizes_are_hexadecimal_and_extensions_are_ignored():
    raw = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10;a=1;b=2\r\n" + b"x" * 16 + b"\r\n"
           b"a\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n")  # fmt: skip
    message = parse_message(raw)
    assert (message.body, message.cut) == (b"x" * 16 + b"y" * 10, False)


def test_a_chunked_body_cut_inside_a_later_chunk_keeps_the_earlier_ones():
    message = parse_message(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n9\r\nwor")
    assert (message.body, message.cut) == (b"hellowor", True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"X" * 90 + b"\r\n\r\n", f"not an HTTP start line: {'X' * 80!r}"),
        (b"GET / HTTP/1.1\r\n" + b"n" * 90 + b"\r\n\r\n", f"not a header line: {'n' * 80!r}"),
        (b"GET / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", "Content-Length is not a number: 'ten'"),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"z" * 30 + b"\r\n",
            f"bad chunk size {b'z' * 20!r}",
        ),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "bad chunk size b''"),
    ],
)
def test_a_bad_message_says_what_is_wrong_in_a_bounded_line(raw, message):
    with pytest.raises(BadMessage) as err:
        parse_message(raw)
    assert str(err.value) == message


EMOJI = "🐵🙈🙉".encode()


def post(body: bytes, target: str = "/orders") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n%s" % (target.encode(), len(body), body)


def goreplay_file(path, *messages: bytes) -> str:
    """Payloads written as GoReplay writes them: verbatim, nothing escaped."""
    path.write_bytes(
        b"".join(payload_header("1", f"{i:024x}", 100 + i) + m + SEPARATOR for i, m in enumerate(messages))
    )
    return str(path)


def test_a_forged_payload_hidden_in_a_body_stays_in_that_body(tmp_path):
    """GoReplay's reader would send the forged DELETE and the real request cut; the framing joins them back."""
    forged = b"1 %024x 150 -1\nDELETE /admin/users/1 HTTP/1.1\r\nAuthorization: Bearer forged\r\n\r\n" % 7
    body = b"note=" + SEPARATOR + forged + SEPARATOR + b"&rest=1"
    counts = ReadCounts()
    found = list(read_payloads(goreplay_file(tmp_path / "a.gor", post(body), post(b"ok", "/next")), counts))
    assert [p.message for p in found] == [post(body), post(b"ok", "/next")]
    assert counts.malformed == 0


def test_a_body_ending_with_the_separators_text_keeps_its_end_and_the_next_payload(tmp_path):
    body = b"tail:\n" + EMOJI
    found = list(read_payloads(goreplay_file(tmp_path / "a.gor", post(body), post(b"next"))))
    assert [p.message for p in found] == [post(body), post(b"next")]


def test_a_separator_line_alone_is_skipped_at_the_start_and_when_doubled(tmp_path):
    data = SEPARATOR[1:] + payload_header("1", "a" * 24, 1) + post(b"first") + SEPARATOR + SEPARATOR[1:]
    data += payload_header("1", "b" * 24, 2) + post(b"second") + SEPARATOR
    path = tmp_path / "a.gor"
    path.write_bytes(data)
    counts = ReadCounts()
    assert [p.message for p in read_payloads(str(path), counts)] == [post(b"first"), post(b"second")]
    assert counts.malformed == 0


def test_a_payload_cut_at_goreplays_copy_buffer_stays_cut_and_the_rest_is_read(tmp_path):
    cut = b"POST /big HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300
    found = list(read_payloads(goreplay_file(tmp_path / "a.gor", cut, post(b"b"), post(b"c"), cut)))
    assert [p.message for p in found] == [cut, post(b"b"), post(b"c"), cut]  # the last one too: nothing to join
    assert parse_message(found[0].message).cut


def test_a_chunked_body_with_the_separator_inside_is_joined_back(tmp_path):
    chunk = b"line\n" + EMOJI + b"\nmore"
    message = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    found = list(read_payloads(goreplay_file(tmp_path / "a.gor", message, post(b"after"))))
    assert [p.message for p in found] == [message, post(b"after")]
    assert parse_message(found[0].message).body == chunk
