"""The sender's per-destination state: circuits, candidates and the process-wide admission count."""

import os
import time

import pytest

from tests.helpers import Client, mirror_config, wait_until
from wsgimirror import load_config
from wsgimirror.agent.runtime import Runtime
from wsgimirror.errors import MirrorSendError
from wsgimirror.middleware import MirrorMiddleware
from wsgimirror.send.breaker import ClusterState
from wsgimirror.send.executors import make_executor

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


def ok_app(environ, start_response):
    """Reads its body and answers ok."""
    environ["wsgi.input"].read()
    start_response("200 OK", [])
    return [b"ok"]


def with_cluster(**keys: object):
    """CONFIG, loaded, with ``keys`` added to cluster m."""
    cluster = {**CONFIG["ReverseProxy"]["Clusters"]["m"], **keys}
    return load_config({**CONFIG, "ReverseProxy": {**CONFIG["ReverseProxy"], "Clusters": {"m": cluster}}})


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


def two_pools(max_connections: int):
    """A runtime, and the pools of destinations a and b with ``max_connections`` each."""
    config = with_cluster(HttpClient={"MaxConnectionsPerServer": max_connections})
    runtime = Runtime()
    a, b, _ = ClusterState(config.clusters["m"], config, runtime).destinations
    return runtime, a.pool, b.pool


def test_max_in_flight_admits_exactly_that_many_mirrors_whatever_their_destinations():
    runtime, a, b = two_pools(max_connections=10)
    assert runtime.admit(2, a) and runtime.admit(2, b)
    assert not runtime.admit(2, a) and not runtime.admit(2, b)
    runtime.ended(b)
    assert runtime.admit(2, a) and not runtime.admit(2, a)


def test_a_pool_lends_each_of_its_connections_once_and_takes_each_back_once():
    runtime, a, _ = two_pools(max_connections=2)
    assert runtime.admit(100, a) and runtime.admit(100, a) and not runtime.admit(100, a)
    runtime.ended(a)
    assert runtime.admit(100, a) and not runtime.admit(100, a)


def test_a_circuit_half_opens_when_breaker_seconds_have_passed_to_the_instant():
    state, _ = cluster_state()
    a = state.destinations[0]
    a.failure("m", "r", MirrorSendError("refused"))
    assert a not in state.candidates(a.open_until - 0.001)
    assert a in state.candidates(a.open_until) and a.picked(a.open_until)  # the trial


def test_a_failing_destination_is_logged_at_its_first_failure_and_not_again_until_it_recovers(caplog):
    state, _ = cluster_state()
    a = state.destinations[0]
    caplog.set_level("WARNING", logger="wsgimirror.send.breaker")
    a.failure("m", "r", MirrorSendError("refused"))
    assert [r.getMessage() for r in caplog.records] == [
        "mirror destination http://127.0.0.1:9001 (cluster 'm', route 'r') is failing: refused"
    ]
    for _ in range(3):
        a.failure("m", "r", MirrorSendError("refused"))
    a.success("m")
    assert [r.getMessage() for r in caplog.records][1:] == [
        "mirror destination http://127.0.0.1:9001 (cluster 'm') recovered after 4 failures"
    ]


def test_a_hash_cluster_sends_each_key_to_one_destination():
    config = with_cluster(LoadBalancingPolicy="Hash", Metadata={"HashBy": "header", "Key": "X-User"})
    state = ClusterState(config.clusters["m"], config, Runtime())
    picked = {
        user: {state.policy.pick(state.destinations, {"HTTP_X_USER": user}).name for _ in range(5)}
        for user in ("alice", "bob", "carol", "dave", "erin", "frank")
    }
    assert all(len(names) == 1 for names in picked.values())
    assert len(set().union(*picked.values())) > 1  # and the keys are spread


def test_the_thread_executor_names_its_threads_and_refuses_mirrors_once_joined():
    import threading

    executor = make_executor("thread", 2)
    names: list = []
    assert executor.try_submit(lambda: names.append(threading.current_thread().name))
    assert executor.join(timeout=5)
    assert names and names[0].startswith("wsgimirror")
    assert executor.try_submit(names.append, "late") is False
    assert names == names[:1]


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


def test_a_mirror_the_executor_refuses_is_dropped_as_backlog_full_and_gives_back_what_it_held(server, sink, caplog):
    from tests.helpers import assert_accounted

    mw = MirrorMiddleware(ok_app, mirror_config(sink.address, Executor="thread"))
    with Client(server(mw)) as client:
        client.request("POST", "/warm", body=b"w")
        wait_until(lambda: mw.stats()["succeeded"] == 1)
        mw._runtime._executor.join(timeout=5)  # its threads stop, as at interpreter exit; the rest still takes copies
        assert client.request("POST", "/late", body=b"x" * 100).body == b"ok"
    stats = mw.stats()
    assert stats["dropped"] == {"backlog_full": 1}
    assert stats["by_route"]["all"]["dropped"] == stats["by_cluster"]["m"]["dropped"] == {"backlog_full": 1}
    [(_, destination)] = stats["by_destination"].items()
    assert (destination["mirrored"], destination["succeeded"], destination["in_flight"]) == (1, 1, 0)
    assert stats["capture"]["memory_bytes"] == 0  # the body's copy was released
    assert mw._runtime.in_flight == 0 and mw._generation.dispatcher.active == 0  # admission and activity given back
    [state] = mw._generation.dispatcher._runtime()[1]["m"].destinations
    assert state.in_flight == 0  # else LeastRequests and PowerOfTwoChoices would shun it
    assert_accounted(stats)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_a_bug_while_sending_fails_the_mirror_as_internal_error_and_the_app_never_sees_it(
    server, sink, monkeypatch, caplog
):
    from wsgimirror.agent import dispatch

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dispatch, "exchange", broken)
    caplog.set_level("WARNING", logger="wsgimirror.agent.dispatch")

    mw = MirrorMiddleware(ok_app, mirror_config(sink.address))
    with Client(server(mw)) as client:
        assert client.request("GET", "/x").body == b"ok"
    wait_until(lambda: mw.stats()["failed"] == 1)
    stats = mw.stats()
    [(_, destination)] = stats["by_destination"].items()
    for part in (stats, stats["by_route"]["all"], stats["by_cluster"]["m"], destination):
        assert (part["mirrored"], part["failed"], part["failures"]) == (1, 1, {"internal_error": 1})
    assert stats["by_cluster"]["m"]["latency_ms"]["p50"] < 5000
    assert [r.getMessage() for r in caplog.records] == [
        f"mirror destination {sink.address} (cluster 'm', route 'all') is failing: "
        "internal_error: RuntimeError('a bug')"
    ]


def test_close_before_any_mirror_has_nothing_to_wait_for(sink):
    mw = MirrorMiddleware(lambda environ, start_response: [], mirror_config(sink.address))
    assert mw.close(timeout=0) is True


@pytest.mark.parametrize("executor", ["gevent", "thread"])
def test_close_gives_up_after_its_timeout_when_a_mirror_never_ends(server, executor):
    from gevent.event import Event

    from tests.helpers import ScriptedServer

    release = Event()
    stuck = ScriptedServer(lambda sock, head, body: release.wait(30) and False)

    mw = MirrorMiddleware(ok_app, mirror_config(stuck.address, Timeout=30, Executor=executor))
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

    mw = MirrorMiddleware(ok_app, config)
    with Client(server(mw)) as client:
        for i in range(5):
            client.request("GET", f"/{i}")
    wait_until(lambda: mw.stats()["in_flight"] == 0, 5)
    stats = mw.stats()
    assert (stats["succeeded"], stats["dropped"]) == (2, {"backlog_full": 3})
    assert len(slow.requests) == 2


@pytest.mark.parametrize("executor", ["gevent", "thread"])
def test_close_returns_as_soon_as_the_last_mirror_has_ended(server, sink, executor):
    mw = MirrorMiddleware(ok_app, mirror_config(sink.address, Executor=executor))
    with Client(server(mw)) as client:
        for i in range(3):
            client.request("GET", f"/{i}")
    started = time.monotonic()
    assert mw.close(timeout=10) is True
    assert time.monotonic() - started < 2  # not the 10 s it was allowed
    assert mw.stats()["succeeded"] == 3


@pytest.mark.parametrize("executor", ["gevent", "thread"])
def test_close_returns_within_moments_of_the_last_mirror_in_flight_ending(server, make_sink, executor):
    slow = make_sink(delay=0.3)

    mw = MirrorMiddleware(ok_app, mirror_config(slow.address, Executor=executor))
    with Client(server(mw)) as client:
        client.request("GET", "/")
    slow.wait_for(1)
    started = time.monotonic()
    assert mw.close(timeout=10) is True
    assert time.monotonic() - started < 0.95  # the mirror's 0.3 s, not a second's polling
    assert mw.stats()["succeeded"] == 1


def test_the_thread_executor_runs_max_in_flight_mirrors_at_once(server, make_sink):
    slow = make_sink(delay=1.0)

    mw = MirrorMiddleware(ok_app, mirror_config(slow.address, Executor="thread", MaxInFlight=12, Timeout=5))
    with Client(server(mw)) as client:
        for i in range(12):
            client.request("GET", f"/{i}")
    requests = slow.wait_for(12, timeout=5)
    assert max(r.at for r in requests) - min(r.at for r in requests) < 0.9  # none waited for another to end
    wait_until(lambda: mw.stats()["succeeded"] == 12, 10)
    mw.close(timeout=5)


def test_a_forked_child_knows_its_own_process_id():
    from wsgimirror.util.pid import current_pid

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


def test_a_forked_child_does_not_wait_for_the_mirrors_of_its_parent():
    import threading

    config = load_config({**CONFIG, "Mirror": {**CONFIG["Mirror"], "Executor": "thread"}})
    runtime = Runtime()
    executor = runtime.executor(config.mirror)
    release = threading.Event()
    assert executor.try_submit(release.wait, 10)  # the parent's mirror, in flight
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: close what is its own, and leave at once
        os.write(write, str(runtime.join(timeout=2)).encode())
        os._exit(0)
    os.close(write)
    said = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(child, 0)
    release.set()
    assert runtime.join(timeout=5)  # the parent waits for it
    assert said == "True"


def test_after_a_burst_the_mirrors_greenlets_are_few_and_reused(server, make_sink):
    import gc

    from greenlet import greenlet

    from wsgimirror.send.executors import PARKED_WORKERS

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

    mw = MirrorMiddleware(ok_app, mirror_config(slow.address, MaxInFlight=100, Timeout=5))
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
