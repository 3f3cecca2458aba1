"""The answer tee, in-process: what it keeps, what it gives back, and when an answer counts as complete."""

import sys

from wsgimirror.capture.answer import Answer, AnswerTee
from wsgimirror.capture.body import CaptureBudget


def test_a_fresh_answer_is_empty_and_incomplete():
    answer = Answer(10, CaptureBudget())
    assert (answer.status, answer.headers, bytes(answer.body), answer.length, answer.complete) == (0, [], b"", 0, False)
    assert answer.header("content-type") == "" and answer.whole


def test_the_body_is_kept_up_to_the_limit_exactly_and_the_budget_gets_every_byte_back():
    budget = CaptureBudget(memory_limit=100)
    exact = Answer(6, budget)
    exact.feed(b"abc")
    exact.feed(b"def")
    assert exact.whole and bytes(exact.body) == b"abcdef" and budget.memory == 6
    exact.release()
    assert (budget.memory, budget.disk) == (0, 0)
    over = Answer(5, budget)
    over.feed(b"abc")
    over.feed(b"def")
    assert not over.whole and over.length == 6 and budget.memory == 0
    nothing = Answer(0, budget)
    nothing.feed(b"x")
    assert not nothing.whole


def test_restart_forgets_the_body_and_completion_but_not_the_head():
    budget = CaptureBudget()
    answer = Answer(10, budget)
    answer.status, answer.headers, answer.complete = 201, [("X-A", "1")], True
    answer.feed(b"abc")
    answer.restart()
    assert (answer.status, answer.complete, answer.length, bytes(answer.body), budget.memory) == (201, False, 0, b"", 0)
    answer.feed(b"de")
    answer.release()
    assert (budget.memory, budget.disk) == (0, 0)


class Recorder:
    def __init__(self):
        self.calls, self.written = [], []

    def __call__(self, *args):
        self.calls.append(args)
        return self.written.append


def test_the_tee_passes_start_response_through_and_reads_the_status():
    server = Recorder()
    tee = AnswerTee(server, 100, CaptureBudget())
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    tee.start_response("500 Internal Server Error", [("X-A", "1")], exc_info)
    assert server.calls == [("500 Internal Server Error", [("X-A", "1")], exc_info)]
    tee.start_response("404 Not Found", [])  # the last call wins
    assert (tee.answer.status, tee.answer.headers) == (404, [])
    assert list(tee.iterate([b"gone"])) == [b"gone"] and tee.answer.complete


def test_an_answer_without_a_valid_status_is_never_complete():
    for status in (None, "abc"):
        tee = AnswerTee(Recorder(), 100, CaptureBudget())
        if status is not None:
            tee.start_response(status, [])
        assert list(tee.iterate([b"x"])) == [b"x"]
        assert tee.answer.complete is False, status


def test_write_then_a_second_iteration_is_not_comparable_but_write_alone_is():
    server = Recorder()
    tee = AnswerTee(server, 100, CaptureBudget())
    write = tee.start_response("200 OK", [])
    write(b"written ")
    assert list(tee.iterate([b"returned"])) == [b"returned"]
    assert tee.answer.complete and bytes(tee.answer.body) == b"written returned" and server.written == [b"written "]
    assert list(tee.iterate([b"returned"])) == [b"returned"]  # a server iterating again
    assert tee.answer.complete is False


def test_a_second_iteration_inside_the_first_one_is_counted_once():
    """gevent sums a sized response's chunk lengths while writing its first chunk: two iterations, nested."""
    tee = AnswerTee(lambda status, headers, exc_info=None: None, 1 << 20, CaptureBudget(1 << 20))
    tee.start_response("200 OK", [])
    result = [b"one ", b"two ", b"three"]
    outer = tee.iterate(result)
    sent = [next(outer)]
    assert sum(len(chunk) for chunk in tee.iterate(result)) == 13  # the server's Content-Length pass
    sent.extend(outer)
    assert b"".join(sent) == b"one two three"
    assert (bytes(tee.answer.body), tee.answer.length, tee.answer.complete) == (b"one two three", 13, True)


def test_a_prefix_answer_keeps_the_first_bytes_past_its_limit_and_is_no_longer_whole():
    budget = CaptureBudget(1 << 20)
    answer = Answer(10, budget, prefix=True)
    answer.feed(b"abcdef")
    answer.feed(b"ghijkl")
    answer.feed(b"mno")
    assert (bytes(answer.body), answer.length, answer.whole) == (b"abcdefghij", 15, False)
    assert budget.memory == 10
    answer.release()
    assert budget.memory == 0
    plain = Answer(10, budget)
    plain.feed(b"abcdef")
    plain.feed(b"ghijkl")
    assert (bytes(plain.body), plain.whole, budget.memory) == (b"", False, 0)
