import io
import os

import pytest

from wsgimirror.capture import EXPECT_CONTINUE, INCOMPLETE, TOO_LARGE, BodyBuffer, TeeInput

BODY = b"line one\nline two\n" + os.urandom(5000) + b"\nlast"


def tee(body=BODY, length=None, terminated=False, memory=1 << 20, maximum=64 << 20):
    if length is None and not terminated:
        length = len(body)
    return TeeInput(io.BytesIO(body), length, terminated, BodyBuffer(memory, maximum))


def read_into(t: TeeInput) -> bytes:
    out = bytearray()
    buf = bytearray(100)
    while n := t.readinto(buf):
        out += buf[:n]
    return bytes(out)


def captured(t: TeeInput) -> bytes:
    return b"".join(t.buffer.chunks())


@pytest.mark.parametrize(
    "consume",
    [
        lambda t: t.read(),
        lambda t: t.read(None),
        lambda t: b"".join(iter(lambda: t.read(7), b"")),
        lambda t: b"".join(t),
        lambda t: b"".join(t.readlines()),
        lambda t: t.readline() + t.readline(3) + t.read(),
        read_into,
    ],
    ids=["read", "read-none", "read-7", "iter", "readlines", "mixed", "readinto"],
)
def test_every_way_of_reading_is_captured(consume):
    t = tee()
    assert consume(t) == BODY
    assert t.outcome(expect_continue=False) is None
    assert captured(t) == BODY


def test_what_the_app_reads_is_what_the_stream_holds():
    t = tee()
    assert t.readline() == b"line one\n"
    assert t.readline(4) == b"line"
    buf = bytearray(5)
    assert t.readinto(buf) == 5 and bytes(buf) == b" two\n"
    assert t.read() == BODY[len(b"line one\nline two\n") :]
    assert t.read() == b"" and t.readline() == b""


def test_unread_body_is_drained_when_the_response_ends():
    t = tee()
    t.read(10)
    assert t.outcome(expect_continue=False) is None
    assert captured(t) == BODY


def test_reads_never_pass_content_length():
    t = TeeInput(io.BytesIO(b"0123456789-next-request"), 10, False, BodyBuffer(100, 1000))
    assert t.read() == b"0123456789"
    assert t.read(5) == b""
    assert t.outcome(False) is None and captured(t) == b"0123456789"


def test_terminated_input_without_length_is_read_to_its_end():
    t = tee(length=None, terminated=True)
    assert t.read(100) == BODY[:100]
    assert t.outcome(False) is None and captured(t) == BODY


def test_no_length_and_no_termination_means_no_body():
    t = TeeInput(io.BytesIO(b"would block on a real server"), None, False, BodyBuffer(100, 1000))
    assert t.read() == b""
    assert t.outcome(False) is None and captured(t) == b""


def test_a_short_body_is_incomplete():
    t = TeeInput(io.BytesIO(b"abc"), 10, False, BodyBuffer(100, 1000))
    assert t.read() == b"abc"
    assert t.outcome(False) == INCOMPLETE


class Exploding(io.BytesIO):
    def read(self, size=-1):
        raise OSError("client gone")


def test_a_stream_error_is_raised_to_the_app_and_marks_the_body_incomplete():
    t = TeeInput(Exploding(b"abc"), 3, False, BodyBuffer(100, 1000))
    with pytest.raises(OSError, match="client gone"):
        t.read()
    assert t.outcome(False) == INCOMPLETE


def test_expect_continue_without_a_read_is_not_drained():
    stream = io.BytesIO(BODY)
    t = TeeInput(stream, len(BODY), False, BodyBuffer(100, 1000))
    assert t.outcome(expect_continue=True) == EXPECT_CONTINUE
    assert stream.tell() == 0  # nothing was read: no late "100 Continue" on the wire
    read_first = tee()
    read_first.read(1)
    assert read_first.outcome(expect_continue=True) is None


def test_expect_continue_with_an_empty_body_is_mirrored():
    assert tee(body=b"", length=0).outcome(expect_continue=True) is None


def test_the_body_spills_to_a_temporary_file_past_the_memory_limit():
    t = tee(memory=1000)
    t.read()
    assert t.buffer.spilled and t.buffer.size == len(BODY)
    assert t.buffer.in_memory() is None
    assert captured(t) == BODY
    assert captured(t) == BODY  # re-iterable: a retry or a second cluster reads it again
    t.buffer.release()


def test_a_body_over_the_maximum_is_dropped_but_still_read_by_the_app():
    t = tee(memory=100, maximum=1000)
    assert t.read() == BODY
    assert t.outcome(False) == TOO_LARGE
    assert not t.buffer.spilled and captured(t) == b""


def test_drain_stops_copying_once_the_body_is_too_large():
    big = os.urandom(300_000)
    stream = io.BytesIO(big)
    t = TeeInput(stream, len(big), False, BodyBuffer(100, 1000))
    assert t.outcome(False) == TOO_LARGE
    assert stream.tell() < len(big)  # the server discards the rest; we did not read it all


def test_the_last_release_removes_the_temporary_file():
    buffer = BodyBuffer(10, 1000)
    buffer.write(b"x" * 100)
    handle = buffer._file
    buffer.retain()
    buffer.release()
    assert not handle.closed
    buffer.release()
    assert handle.closed


def test_read_size_must_be_an_integer():
    with pytest.raises(TypeError, match="size must be an integer, got str"):
        tee().read("10")
