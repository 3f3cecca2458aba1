import io
import logging
import os
import re
import tempfile

import pytest

from wsgimirror.capture.body import (
    CAPTURE_ERROR,
    DRAIN_CHUNK,
    EXPECT_CONTINUE,
    INCOMPLETE,
    SPILL_BUDGET,
    TOO_LARGE,
    BodyBuffer,
    CaptureBudget,
    SeekableTeeInput,
    TeeInput,
    tee_input,
)

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
    t.buffer.release()


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


class SocketLike(io.BytesIO):
    """A server's input: it cannot seek back, so what was read is gone."""

    def seekable(self):
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek")


class CountingStream(io.BytesIO):
    """Counts reads; optionally fails the first one, or refuses read(None) as PEP 3333 allows."""

    def __init__(self, data, fail=False, strict=False):
        super().__init__(data)
        self.reads, self.fail, self.strict = 0, fail, strict

    def read(self, size=-1):
        self.reads += 1
        if self.strict and size is None:
            raise TypeError("read() takes a size, or nothing")
        if self.fail:
            raise OSError("client gone")
        return super().read(size)

    def readline(self, size=-1):
        if self.strict and size is None:
            raise TypeError("readline() takes a size, or nothing")
        return super().readline(size)


def test_a_stream_that_failed_or_ended_early_is_not_read_again():
    failing = CountingStream(b"abc", fail=True)
    t = TeeInput(failing, 3, False, BodyBuffer(100, 1000))
    with pytest.raises(OSError):
        t.read()
    assert t.outcome(False) == INCOMPLETE and failing.reads == 1
    short = CountingStream(b"abc")
    t = TeeInput(short, 10, False, BodyBuffer(100, 1000))
    assert t.read(5) == b"abc" and t.read(5) == b""
    assert t.outcome(False) == INCOMPLETE and short.reads == 2  # the drain did not ask a third time


def test_a_stream_that_takes_no_none_is_read_without_a_size():
    strict = CountingStream(BODY, strict=True)
    t = TeeInput(strict, None, True, BodyBuffer(1 << 20, 1 << 20))
    assert t.readline() + t.read() == BODY
    assert t.outcome(False) is None and captured(t) == BODY


def test_a_failed_copy_takes_no_more_memory_or_disk():
    budget = CaptureBudget(memory_limit=1000, disk_limit=0)
    buffer = BodyBuffer(10, 1000, budget)
    buffer.write(b"x" * 20)  # past the buffer's memory, and no disk: dropped
    assert buffer.failure == SPILL_BUDGET
    buffer.write(b"y" * 5)
    assert (buffer.size, budget.memory, budget.disk) == (0, 0, 0)
    buffer.release()


def test_drain_stops_copying_once_the_body_is_too_large():
    big = os.urandom(300_000)
    stream = SocketLike(big)
    t = TeeInput(stream, len(big), False, BodyBuffer(100, 1000))
    assert t.outcome(False) == TOO_LARGE
    assert stream.tell() < len(big)  # the server discards the rest; we did not read it all


@pytest.mark.parametrize("terminated", [False, True], ids=["content-length", "read-to-the-end"])
def test_drain_puts_a_seekable_input_back_where_the_app_left_it(terminated):
    stream = io.BytesIO(BODY)
    t = tee_input(stream, None if terminated else len(BODY), terminated, BodyBuffer(100, 1 << 20))
    assert t.read(10) == BODY[:10]
    assert t.outcome(False) is None and captured(t) == BODY
    assert stream.tell() == 10 and t.tell() == 10 and t.read() == BODY[10:]
    t.buffer.release()


class Unseekable:
    """A server's input that can only be read (gevent's, gunicorn's)."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size=-1):
        return self._stream.read(size)

    def readline(self, size=-1):
        return self._stream.readline(size)


def test_only_a_seekable_input_gets_a_seekable_tee():
    assert type(tee_input(Unseekable(BODY), len(BODY), False, BodyBuffer(1 << 20, 1 << 30))) is TeeInput
    assert not hasattr(tee_input(Unseekable(BODY), len(BODY), False, BodyBuffer(1 << 20, 1 << 30)), "seek")
    seekable = tee_input(io.BytesIO(BODY), len(BODY), False, BodyBuffer(1 << 20, 1 << 30))
    assert type(seekable) is SeekableTeeInput and seekable.seekable()


@pytest.mark.parametrize("terminated", [False, True], ids=["content-length", "read-to-the-end"])
def test_a_body_read_again_after_seeking_back_is_copied_once(terminated):
    t = tee_input(io.BytesIO(BODY), None if terminated else len(BODY), terminated, BodyBuffer(100, 1 << 20))
    assert t.read() == BODY
    assert t.seek(0) == 0 and t.tell() == 0
    assert t.readline() == b"line one\n" and t.read() == BODY[len(b"line one\n") :]
    assert t.tell() == len(BODY)
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_seeking_past_what_was_read_leaves_a_gap_that_the_drain_fills():
    t = tee_input(io.BytesIO(BODY), len(BODY), False, BodyBuffer(100, 1 << 20))
    assert t.read(10) == BODY[:10]
    assert t.seek(100) == 100 and t.read(50) == BODY[100:150]
    assert t.seek(-20, 1) == 130 and t.read(5) == BODY[130:135]
    assert t.outcome(False) is None and captured(t) == BODY
    assert t.tell() == 135  # the app's position is kept
    t.buffer.release()


def test_a_seekable_body_is_bounded_by_content_length_and_starts_where_the_stream_stood():
    stream = io.BytesIO(b"12345" + BODY + b"trailing bytes that are not the body")
    stream.seek(5)
    t = tee_input(stream, len(BODY), False, BodyBuffer(100, 1 << 20))
    assert t.read() == BODY
    assert t.seek(0, 2) == len(BODY) and t.read() == b""
    assert t.seek(-4, 2) == len(BODY) - 4 and t.read() == b"last"
    assert t.seek(-1) == 0 and t.read(4) == b"line"  # never before the body's start
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_a_short_seekable_body_is_incomplete_however_it_is_read():
    t = tee_input(io.BytesIO(BODY[:100]), len(BODY), False, BodyBuffer(100, 1 << 20))
    assert t.read() == BODY[:100]
    t.seek(0)
    assert t.read(10) == BODY[:10]
    assert t.outcome(False) == INCOMPLETE


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


# -- boundaries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, whole", [(1000, True), (1001, False)])
def test_a_body_of_exactly_max_body_bytes_is_mirrored_and_one_more_byte_is_not(size, whole):
    body = os.urandom(size)
    t = TeeInput(io.BytesIO(body), size, False, BodyBuffer(100, 1000))
    assert t.read() == body
    assert t.outcome(False) == (None if whole else TOO_LARGE)
    assert captured(t) == (body if whole else b"")
    t.buffer.release()


@pytest.mark.parametrize("size", [99, 100, 101])
def test_a_body_around_the_memory_limit_loses_nothing(size):
    body = os.urandom(size)
    t = TeeInput(io.BytesIO(body), size, False, BodyBuffer(100, 1000))
    assert t.read(size - 1) + t.read() == body
    assert t.outcome(False) is None and captured(t) == body
    assert t.buffer.spilled == (size > 100)
    assert (t.buffer.in_memory() == body) == (size <= 100)
    t.buffer.release()


def test_an_unread_body_just_over_one_drain_chunk_is_mirrored_whole():
    body = os.urandom(DRAIN_CHUNK + 1)
    t = TeeInput(io.BytesIO(body), len(body), False, BodyBuffer(1 << 20, 1 << 20))
    assert t.outcome(False) is None
    assert captured(t) == body


def test_a_spilled_body_is_read_back_in_bounded_pieces():
    body = os.urandom(10_000)
    buffer = BodyBuffer(1000, 1 << 20)
    for start in range(0, len(body), 700):
        buffer.write(body[start : start + 700])
    pieces = list(buffer.chunks(3000))
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces] == [700, 3000, 3000, 3000, 300]  # memory first, then the file
    buffer.release()


def test_a_body_that_spills_then_grows_too_large_frees_memory_file_and_budget():
    budget = CaptureBudget()
    buffer = BodyBuffer(100, 1000, budget)
    buffer.write(b"x" * 80)
    buffer.write(b"y" * 500)
    handle = buffer._file
    assert buffer.spilled and (budget.memory, budget.disk) == (80, 500)
    buffer.write(b"z" * 500)
    assert buffer.failure == TOO_LARGE and handle.closed
    assert (budget.memory, budget.disk) == (0, 0)
    assert list(buffer.chunks()) == []
    buffer.release()
    assert (budget.memory, budget.disk) == (0, 0)


def test_reading_zero_bytes_returns_nothing_and_consumes_nothing():
    t = tee()
    assert t.read(0) == b"" and t.readline(0) == b""
    assert t.read() == BODY


@pytest.mark.parametrize("hint, count", [(None, 3), (-1, 3), (0, 3), (1, 1), (9, 1), (10, 2), (18, 2), (19, 3)])
def test_readlines_stops_at_the_line_that_reaches_the_hint(hint, count):
    body = b"line one\nline two\nline three\n"
    t = TeeInput(io.BytesIO(body), len(body), False, BodyBuffer(100, 1000))
    assert t.readlines(hint) == body.splitlines(keepends=True)[:count]


# -- the process's budget ---------------------------------------------------------------------------------


def test_past_the_memory_budget_a_capture_spills_to_disk_and_everything_is_given_back():
    budget = CaptureBudget(memory_limit=150)
    first, second = BodyBuffer(100, 1000, budget), BodyBuffer(100, 1000, budget)
    first.write(b"x" * 100)
    second.write(b"y" * 100)
    assert (first.spilled, second.spilled) == (False, True)
    assert (budget.memory, budget.disk) == (100, 100)
    assert b"".join(second.chunks()) == b"y" * 100
    first.release()
    second.release()
    assert (budget.memory, budget.disk) == (0, 0)


def test_the_memory_budget_is_the_sum_of_all_captures_and_its_exact_size_fits():
    budget = CaptureBudget(memory_limit=300)
    buffers = [BodyBuffer(100, 1000, budget) for _ in range(4)]
    for buffer in buffers:
        buffer.write(b"x" * 100)
    assert [b.spilled for b in buffers] == [False, False, False, True]  # 300 bytes fit in memory, not 400
    assert (budget.memory, budget.disk) == (300, 100)
    for buffer in buffers:
        buffer.release()
    assert (budget.memory, budget.disk) == (0, 0)


def test_the_disk_budget_is_the_sum_of_all_spills_and_its_exact_size_fits():
    budget = CaptureBudget(memory_limit=0, disk_limit=300)
    buffers = [BodyBuffer(0, 1000, budget) for _ in range(4)]
    for buffer in buffers:
        buffer.write(b"x" * 100)
    assert [b.failure for b in buffers] == [None, None, None, SPILL_BUDGET]  # 300 bytes fit, not 400
    assert budget.disk == 300
    for buffer in buffers:
        buffer.release()
    assert budget.disk == 0


def test_past_the_disk_budget_the_copy_is_dropped_and_the_app_still_reads_its_body():
    budget = CaptureBudget(memory_limit=0, disk_limit=150)
    held = BodyBuffer(0, 1000, budget)
    held.write(b"x" * 100)
    t = TeeInput(io.BytesIO(BODY), len(BODY), False, BodyBuffer(0, 1 << 20, budget))
    assert t.read() == BODY
    assert t.outcome(False) == SPILL_BUDGET
    assert (budget.memory, budget.disk) == (0, 100)
    held.release()
    assert budget.disk == 0


def test_a_temp_file_that_cannot_be_created_drops_copies_logs_once_and_recovers(tmp_path, monkeypatch, caplog):
    budget = CaptureBudget()

    def capture() -> TeeInput:
        t = TeeInput(io.BytesIO(BODY), len(BODY), False, BodyBuffer(100, 1 << 20, budget))
        assert t.read() == BODY  # the app reads its body whatever happens to the copy
        return t

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # the temp directory vanished
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        for _ in range(3):
            failed = capture()
            assert failed.outcome(False) == CAPTURE_ERROR and list(failed.buffer.chunks()) == []
        assert (budget.memory, budget.disk) == (0, 0)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        recovered = capture()
        assert recovered.outcome(False) is None and captured(recovered) == BODY
        recovered.buffer.release()
        capture().buffer.release()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone again"))
        assert capture().outcome(False) == CAPTURE_ERROR  # a new streak is logged again
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    failing = re.compile(
        r"wsgimirror cannot write a request body copy to a temporary file \(\[Errno 2\] No such file or directory: "
        r".*\); such copies are dropped as capture_error, the requests themselves are served as usual"
    )
    assert failing.fullmatch(messages[0]) and failing.fullmatch(messages[2])
    assert messages[1] == "wsgimirror can write request body copies to temporary files again"


@pytest.mark.parametrize("memory", [0, 7, 100, 1 << 20], ids=["all-spilled", "split-7", "split-100", "in-memory"])
@pytest.mark.parametrize("limit", [0, 1, 7, 50, 100, 5000, len(BODY), len(BODY) + 10])
def test_head_bytes_are_the_first_bytes_of_the_body_wherever_they_live(private_tempdir, memory, limit):
    """What a diff log example shows of a request body: its first ``limit`` bytes, from memory and the temp file."""
    buffer = BodyBuffer(memory, 1 << 30)
    for i in range(0, len(BODY), 33):  # written in pieces, as the app reads
        buffer.write(BODY[i : i + 33])
    assert buffer.head_bytes(limit) == BODY[:limit]
    assert b"".join(buffer.chunks(10)) == BODY  # reading the head moved nothing
    buffer.release()


class Counting(io.BytesIO):
    """A seekable server input that remembers every size asked of it and every byte it gave."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int | None] = []
        self.given = 0

    def read(self, size=-1):
        self.asked.append(size)
        data = super().read(size)
        self.given += len(data)
        return data


def test_a_seekable_body_read_to_its_end_seeks_from_the_end_of_the_stream():
    t = tee_input(io.BytesIO(BODY), None, True, BodyBuffer(100, 1 << 20))
    assert t.seek(-4, 2) == len(BODY) - 4 and t.read() == b"last"
    assert t.seek(0, 2) == len(BODY) and t.read() == b""
    assert t.seek(-50) == 0 and t.read(4) == BODY[:4]  # never before the body's start
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_sizes_read_from_a_seekable_body_behave_as_a_file_s():
    t = tee_input(io.BytesIO(BODY + b"NEXT REQUEST"), len(BODY), False, BodyBuffer(100, 1 << 20))
    with pytest.raises(TypeError, match="^size must be an integer, got str$"):
        t.read("10")
    assert t.read(0) == b"" and t.tell() == 0
    assert t.read(5) == BODY[:5] and t.read(-1) == BODY[5:]  # a negative size reads the rest
    t.seek(0)
    assert t.read(len(BODY) + 100) == BODY  # never past CONTENT_LENGTH, into what follows the body
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_a_seekable_input_without_length_or_termination_has_no_body():
    t = tee_input(io.BytesIO(BODY), None, False, BodyBuffer(100, 1 << 20))
    assert t.read() == b"" and t.read(10) == b""
    assert t.outcome(False) is None and captured(t) == b""
    t.buffer.release()


def test_a_seekable_body_shorter_than_its_length_is_incomplete():
    t = tee_input(io.BytesIO(BODY[:100]), len(BODY), False, BodyBuffer(100, 1 << 20))
    assert t.read() == BODY[:100]
    assert t.outcome(False) == INCOMPLETE
    t.buffer.release()


def test_a_seekable_body_read_whole_then_read_again_at_its_end_is_complete():
    t = tee_input(io.BytesIO(BODY), len(BODY), False, BodyBuffer(100, 1 << 20))
    assert t.read() == BODY and t.read() == b"" and t.read(10) == b""
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_a_gap_left_by_seeking_past_the_mark_is_filled_when_read_to_the_end_too():
    t = tee_input(io.BytesIO(BODY), None, True, BodyBuffer(100, 1 << 20))
    assert t.seek(100) == 100 and t.read(50) == BODY[100:150]
    assert t.outcome(False) is None and captured(t) == BODY
    t.buffer.release()


def test_the_drain_of_a_seekable_input_reads_in_bounded_chunks_and_stops_once_the_body_is_too_large():
    big = os.urandom(5 * DRAIN_CHUNK)
    stream = Counting(big)
    t = tee_input(stream, len(big), False, BodyBuffer(100, 1 << 20))
    assert t.outcome(False) is None and captured(t) == big
    assert max(stream.asked) <= DRAIN_CHUNK  # never the whole rest at once
    t.buffer.release()
    stream = Counting(big)
    t = tee_input(stream, len(big), False, BodyBuffer(100, DRAIN_CHUNK))
    assert t.outcome(False) == TOO_LARGE
    assert stream.given <= 2 * DRAIN_CHUNK and stream.tell() == 0  # stopped early, and put back for the server
    t.buffer.release()


class Unseekable2(Unseekable):
    """An input that says it cannot seek, though its tell() answers (a buffered socket file)."""

    def seekable(self):
        return False

    def tell(self):
        return 0


def test_an_input_that_cannot_seek_gets_the_plain_tee_and_its_whole_body():
    for stream in (Unseekable(BODY), Unseekable2(BODY)):
        t = tee_input(stream, len(BODY), False, BodyBuffer(1 << 20, 1 << 30))
        assert type(t) is TeeInput and t.read() == BODY
        assert t.outcome(False) is None and captured(t) == BODY
        t.buffer.release()


@pytest.mark.parametrize("memory", [0, 100, 1 << 20], ids=["all-spilled", "split", "in-memory"])
def test_a_body_handed_to_the_agent_is_adopted_whole_and_counted_until_released(private_tempdir, memory):
    """The hand-off sends a body's memory part and passes its file's descriptor; the agent adopts both."""
    sent = BodyBuffer(memory, 1 << 30)
    for i in range(0, len(BODY), 33):
        sent.write(BODY[i : i + 33])
    in_memory, fd = sent.parts()
    assert in_memory == BODY[: len(in_memory)] and len(in_memory) <= memory and (fd is None) == (memory >= len(BODY))
    budget = CaptureBudget(1 << 20)
    assert budget.take_memory(7) and budget.take_disk(11)  # another request's body, held at the same time
    adopted = BodyBuffer.adopt(in_memory, None if fd is None else os.dup(fd), len(BODY), budget)
    sent.release()  # the app's side lets go; the agent's copy lives on
    assert adopted.size == len(BODY) and b"".join(adopted.chunks(100)) == BODY
    assert adopted.head_bytes(10) == BODY[:10]
    assert adopted.in_memory() == (BODY if fd is None else None)
    assert (budget.memory, budget.disk) == (7 + len(in_memory), 11 + len(BODY) - len(in_memory))
    adopted.release()
    assert (budget.memory, budget.disk) == (7, 11)
