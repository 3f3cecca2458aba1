"""The sender's per-destination state: circuits, candidates and the process-wide admission count."""

import os
import time

import pytest

from tests.helpers import Client, mirror_config, wait_until
from wsgimirror import MirrorMiddleware, load_config
from wsgimirror.errors import MirrorSendError
from wsgimirror.sender import ClusterState, Runtime, make_executor

CONFIG = {
    "ReverseProxy": {
        "Routes": {},
        "Clusters": {
            "m": {
                "LoadBalancingPolicy": "PowerOfTwoChoices",
                "Destinations": {
                    name: {"Address": f"http://127.0.0.1:{port}"}
                    for name, port in (("a", 9001), ("b", 9002), ("c", 9003))
                },
            }
        },
    },
    "Mirror": {"BreakerFailures": 1, "BreakerSeconds": 60, "MaxInFlight": 2},
}


def cluster_state():
    config = load_config(CONFIG)
    return ClusterState(config.clusters["m"], config, Runtime()), config


def test_power_of_two_choices_uses_the_one_destination_whose_circuit_is_closed():
    state, _ = cluster_state()
    a, _, c = state.destinations
    for dest in (a, c):
        dest.failure("m", "r", MirrorSendError("refused"))
    now = time.monotonic()
    assert [d.name for d in state.candidates(now)] == ["b"]
    assert {state.policy.pick(state.candidates(now), {}).name for _ in range(20)} == {"b"}


def test_a_half_open_destination_takes_one_trial_and_frees_it_when_the_trial_never_ran():
    state, _ = cluster_state()
    a = state.destinations[0]
    a.failure("m", "r", MirrorSendError("refused"))
    later = a.open_until + 0.001
    assert a in state.candidates(later) and a.picked(later)  # the trial
    assert a not in state.candidates(later)  # one at a time
    a.trial_not_run()
    assert a in state.candidates(later)


def test_every_configuration_shares_one_admission_count_and_one_pool_per_address():
    runtime = Runtime()
    config = load_config(CONFIG)
    first = ClusterState(config.clusters["m"], config, runtime)
    second = ClusterState(config.clusters["m"], config, runtime)
    assert [d.pool for d in first.destinations] == [d.pool for d in second.destinations]
    pool = first.destinations[0].pool
    assert runtime.admit(2, pool) and runtime.admit(2, pool) and not runtime.admit(2, pool)
    runtime.ended(pool)
    assert runtime.admit(2, pool)


def test_the_thread_executor_runs_what_it_is_given_and_join_waits_for_it():
    executor = make_executor("thread", 2)
    done = []
    for i in range(5):
        assert executor.try_submit(lambda n: (time.sleep(0.05), done.append(n)), i)
    assert executor.join(timeout=5)
    assert sorted(done) == [0, 1, 2, 3, 4]


def test_mirrors_go_out_through_the_thread_executor_when_it_is_chosen(server, sink):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    mw = MirrorMiddleware(app, mirror_config(sink.address, Executor="thread"))
    with Client(server(mw)) as client:
        assert client.request("POST", "/t", body=b"by thread").body == b"by thread"
    assert [r.body for r in sink.wait_for(1)] == [b"by thread"]
    wait_until(lambda: mw.stats()["succeeded"] == 1)
    assert mw.stats()["executor"] == "thread"
    assert mw.close(timeout=5)


def test_close_before_any_mirror_has_nothing_to_wait_for(sink):
    mw = MirrorMiddleware(lambda environ, start_response: [], mirror_config(sink.address))
    assert mw.close(timeout=0) is True


@pytest.mark.parametrize("executor", ["gevent", "thread"])
def test_close_gives_up_after_its_timeout_when_a_mirror_never_ends(server, executor):
    from gevent.event import Event

    from tests.helpers import ScriptedServer

    release = Event()
    stuck = ScriptedServer(lambda sock, head, body: release.wait(30) and False)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    mw = MirrorMiddleware(app, mirror_config(stuck.address, Timeout=30, Executor=executor))
    try:
        with Client(server(mw)) as client:
            client.request("GET", "/")
        wait_until(lambda: stuck.requests)
        started = time.monotonic()
        assert mw.close(timeout=0.3) is False
        assert 0.25 < time.monotonic() - started < 3
    finally:
        release.set()
        stuck.stop()


def test_max_connections_per_server_caps_the_connections_to_a_destination(server, make_sink):
    slow = make_sink(delay=0.5)
    config = mirror_config(slow.address, MaxInFlight=8)
    config["ReverseProxy"]["Clusters"]["m"]["HttpClient"] = {"MaxConnectionsPerServer": 2}

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    mw = MirrorMiddleware(app, config)
    with Client(server(mw)) as client:
        for i in range(5):
            client.request("GET", f"/{i}")
    wait_until(lambda: mw.stats()["in_flight"] == 0, 5)
    stats = mw.stats()
    assert (stats["succeeded"], stats["dropped"]) == (2, {"backlog_full": 3})
    assert len(slow.requests) == 2


@pytest.mark.parametrize("executor", ["gevent", "thread"])
def test_close_returns_as_soon_as_the_last_mirror_has_ended(server, sink, executor):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    mw = MirrorMiddleware(app, mirror_config(sink.address, Executor=executor))
    with Client(server(mw)) as client:
        for i in range(3):
            client.request("GET", f"/{i}")
    started = time.monotonic()
    assert mw.close(timeout=10) is True
    assert time.monotonic() - started < 2  # not the 10 s it was allowed
    assert mw.stats()["succeeded"] == 3


def test_the_thread_executor_runs_max_in_flight_mirrors_at_once(server, make_sink):
    slow = make_sink(delay=1.0)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    mw = MirrorMiddleware(app, mirror_config(slow.address, Executor="thread", MaxInFlight=12, Timeout=5))
    with Client(server(mw)) as client:
        for i in range(12):
            client.request("GET", f"/{i}")
    requests = slow.wait_for(12, timeout=5)
    assert max(r.at for r in requests) - min(r.at for r in requests) < 0.9  # none waited for another to end
    wait_until(lambda: mw.stats()["succeeded"] == 12, 10)
    mw.close(timeout=5)


def test_a_forked_child_knows_its_own_process_id():
    from wsgimirror._pid import current_pid

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report what it sees, and leave at once
        os.write(write, f"{current_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, real = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(child, 0)
    assert seen == real == str(child) and current_pid() == os.getpid()


def test_after_a_burst_the_mirrors_greenlets_are_few_and_reused(server, make_sink):
    import gc

    from greenlet import greenlet

    from wsgimirror.sender import PARKED_WORKERS

    def workers() -> int:
        """Greenlets of this middleware's mirror workers (the in-process sink has greenlets of its own).

        A worker is a greenlet running a method of the executor (by its ``self``, not its name: mutation
        testing renames functions).
        """
        gc.collect()
        count = 0
        for o in gc.get_objects():
            frame = o.gr_frame if isinstance(o, greenlet) else None
            while frame is not None and frame.f_locals.get("self") is not mw._runtime._executor:
                frame = frame.f_back
            count += frame is not None
        return count

    slow = make_sink(delay=0.2)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    mw = MirrorMiddleware(app, mirror_config(slow.address, MaxInFlight=100, Timeout=5))
    with Client(server(mw)) as client:
        for i in range(100):  # 100 mirrors at once: 100 workers
            client.request("GET", f"/{i}")
        wait_until(lambda: mw.stats()["succeeded"] == 100, 10)
        after_burst = workers()
        for i in range(20):  # one at a time: parked workers are reused, none is added
            client.request("GET", f"/again/{i}")
            wait_until(lambda i=i: mw.stats()["succeeded"] == 101 + i, 10)
        assert workers() == after_burst
    assert after_burst == PARKED_WORKERS  # the other 68 ended with their mirrors
    assert mw.close(timeout=5) and workers() == 0  # closed: none is left
