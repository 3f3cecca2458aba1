import os
import subprocess
import sys
from collections import Counter

import pytest

from wsgimirror.config.model import POLICY_NAMES, Cluster, Destination
from wsgimirror.send.pick import POLICIES, hash_key, resolve_policy


class Dest:
    def __init__(self, name, in_flight=0):
        self.name = name
        self.in_flight = in_flight

    def __repr__(self):
        return self.name


def cluster(policy="Hash", hash_by=None, key=None) -> Cluster:
    return Cluster("c", policy, (Destination("d", "http://d", "http", "d", 80, ""),), hash_by, key)


def policy(name, **kwargs):
    return POLICIES[name.lower()](cluster(name, **kwargs))


def test_first_always_picks_the_first():
    dests = [Dest("a"), Dest("b")]
    assert {policy("First").pick(dests, {}).name for _ in range(20)} == {"a"}


def test_round_robin_cycles_in_order():
    dests = [Dest("a"), Dest("b"), Dest("c")]
    rr = policy("RoundRobin")
    assert [rr.pick(dests, {}).name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_random_uses_every_destination_evenly():
    dests = [Dest("a"), Dest("b")]
    counts = Counter(policy("Random").pick(dests, {}).name for _ in range(4000))
    assert 1700 < counts["a"] < 2300


def test_least_requests_picks_the_least_loaded_and_ties_go_first():
    assert policy("LeastRequests").pick([Dest("a", 3), Dest("b", 1), Dest("c", 2)], {}).name == "b"
    assert policy("LeastRequests").pick([Dest("a", 1), Dest("b", 1)], {}).name == "a"


def test_power_of_two_choices_never_picks_the_most_loaded_of_two():
    dests = [Dest("busy", 10), Dest("idle", 0)]
    assert {policy("PowerOfTwoChoices").pick(dests, {}).name for _ in range(50)} == {"idle"}
    three = [Dest("a", 5), Dest("b", 0), Dest("c", 9)]
    picks = Counter(policy("PowerOfTwoChoices").pick(three, {}).name for _ in range(600))
    assert picks["c"] == 0 and picks["b"] > picks["a"]


def test_hash_is_sticky_per_key():
    h = policy("Hash", hash_by="header", key="X-User")
    dests = [Dest("a"), Dest("b"), Dest("c")]
    for user in ("alice", "bob", "carol", "dave"):
        picks = {h.pick(dests, {"HTTP_X_USER": user}).name for _ in range(10)}
        assert len(picks) == 1


def test_hash_spreads_keys_over_destinations():
    h = policy("Hash", hash_by="header", key="X-User")
    dests = [Dest("a"), Dest("b"), Dest("c")]
    counts = Counter(h.pick(dests, {"HTTP_X_USER": f"user{i}"}).name for i in range(3000))
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_hash_is_consistent_when_a_destination_is_added():
    h = policy("Hash", hash_by="header", key="X-User")
    three = [Dest("a"), Dest("b"), Dest("c")]
    four = three + [Dest("d")]
    keys = [{"HTTP_X_USER": f"user{i}"} for i in range(4000)]
    moved = [k for k in keys if h.pick(three, k).name != h.pick(four, k).name]
    assert 0.2 < len(moved) / len(keys) < 0.3
    assert {h.pick(four, k).name for k in moved} == {"d"}  # keys only move to the new destination


def test_hash_does_not_depend_on_the_destinations_order():
    h = policy("Hash", hash_by="header", key="X-User")
    dests = [Dest("a"), Dest("b"), Dest("c")]
    for i in range(200):
        env = {"HTTP_X_USER": f"u{i}"}
        assert h.pick(dests, env).name == h.pick(dests[::-1], env).name


STABILITY_PROBE = """
from wsgimirror.send.pick import POLICIES
from wsgimirror.config import Cluster

class D:
    def __init__(self, name):
        self.name, self.in_flight = name, 0

h = POLICIES["hash"](Cluster("c", "Hash", (), "header", "X-User"))
print(",".join(h.pick([D("a"), D("b"), D("c")], {"HTTP_X_USER": f"u{i}"}).name for i in range(50)))
"""


def test_hash_is_stable_across_processes_and_hash_seeds():
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", STABILITY_PROBE], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        outputs.add(run.stdout.strip())
    h = policy("Hash", hash_by="header", key="X-User")
    here = ",".join(h.pick([Dest("a"), Dest("b"), Dest("c")], {"HTTP_X_USER": f"u{i}"}).name for i in range(50))
    assert outputs == {here}


@pytest.mark.parametrize(
    "hash_by, key, env, expected",
    [
        ("header", "X-Forwarded-For", {"HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.1"}, "203.0.113.9"),
        ("header", "x-forwarded-for", {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}, "203.0.113.9"),
        ("header", "Content-Type", {"CONTENT_TYPE": "text/csv"}, "text/csv"),
        ("header", "Content-Length", {"CONTENT_LENGTH": "42"}, "42"),
        ("cookie", "sid", {"HTTP_COOKIE": "a=1; sid=abc; b=2"}, "abc"),
        ("query", "user", {"QUERY_STRING": "x=1&user=u%207"}, "u 7"),
        ("header", "X-User", {"REMOTE_ADDR": "192.0.2.1"}, "192.0.2.1"),
        ("cookie", "sid", {"HTTP_COOKIE": "other=1", "REMOTE_ADDR": "192.0.2.2"}, "192.0.2.2"),
        (None, None, {"REMOTE_ADDR": "192.0.2.3"}, "192.0.2.3"),
        ("header", "X-Forwarded-For", {"HTTP_X_FORWARDED_FOR": " 198.51.100.4 ,10.0.0.2, 10.0.0.1"}, "198.51.100.4"),
        ("cookie", "sid", {"HTTP_COOKIE": "sid=YWJj/ZGVm+==; b=2"}, "YWJj/ZGVm+=="),
        ("cookie", "sid", {"HTTP_COOKIE": 'a=1; sid="quoted value"'}, "quoted value"),
        ("cookie", "sid", {"HTTP_COOKIE": "sidx=1; xsid=2; sid=3"}, "3"),
        ("cookie", "sid", {"HTTP_COOKIE": 'sid="X-token-X"'}, "X-token-X"),
        ("query", "id", {"QUERY_STRING": "id=YWJj==&x=1"}, "YWJj=="),
        ("query", "id", {"QUERY_STRING": "id=&x=1", "REMOTE_ADDR": "192.0.2.5"}, "192.0.2.5"),
        ("query", "id", {"QUERY_STRING": "x=1&id", "REMOTE_ADDR": "192.0.2.6"}, "192.0.2.6"),
        ("header", "X-User", {}, ""),
        ("cookie", "sid", {}, ""),
        ("query", "id", {}, ""),
        ("header", "X-Forwarded-For", {"REMOTE_ADDR": "192.0.2.4"}, "192.0.2.4"),
    ],
)
def test_hash_keys(hash_by, key, env, expected):
    assert hash_key(cluster(hash_by=hash_by, key=key), env) == expected


def test_a_missing_key_hashes_the_client_address_not_one_shared_value():
    h = policy("Hash", hash_by="header", key="X-User")
    dests = [Dest("a"), Dest("b"), Dest("c")]
    picks = {h.pick(dests, {"REMOTE_ADDR": f"192.0.2.{i}"}).name for i in range(60)}
    assert picks == {"a", "b", "c"}


def test_registry_lookup_is_case_insensitive():
    assert resolve_policy("leastrequests").name == "LeastRequests"
    assert resolve_policy("nope") is None


def test_every_policy_the_config_accepts_is_implemented_and_no_other():
    assert sorted(cls.name for cls in POLICIES.values()) == sorted(POLICY_NAMES)


def test_hash_picks_are_pinned_so_an_upgrade_never_reshards_users():
    """A change of digest, separator or comparison would move users between destinations: this fails first."""
    h = policy("Hash", hash_by="header", key="X-User")
    dests = [Dest("mirror-a"), Dest("mirror-b"), Dest("mirror-c")]
    picks = "".join(h.pick(dests, {"HTTP_X_USER": f"user{i}"}).name[-1] for i in range(16))
    assert picks == "aaccabbaaaacaaba"


@pytest.mark.parametrize("name", ["PowerOfTwoChoices", "LeastRequests", "RoundRobin", "Random", "Hash", "First"])
def test_every_policy_works_with_a_single_destination(name):
    only = Dest("only", in_flight=3)
    assert {policy(name, hash_by="header", key="X-User").pick([only], {}).name for _ in range(10)} == {"only"}


def test_power_of_two_choices_prefers_the_less_loaded_of_two():
    busy, idle = Dest("busy", in_flight=5), Dest("idle", in_flight=0)
    p2c = policy("PowerOfTwoChoices")
    assert {p2c.pick([busy, idle], {}).name for _ in range(50)} == {"idle"}
    assert {p2c.pick([idle, busy], {}).name for _ in range(50)} == {"idle"}


def test_least_requests_takes_the_fewest_in_flight_and_the_first_on_ties():
    lr = policy("LeastRequests")
    assert lr.pick([Dest("a", 2), Dest("b", 1), Dest("c", 1)], {}).name == "b"


def test_a_key_a_server_decoded_with_surrogate_escapes_still_picks_and_samples():
    """A server that decodes bytes with surrogateescape (not PEP 3333's Latin-1) hands over lone surrogates."""
    from wsgimirror.send.pick import sampled_in

    h = policy("Hash", hash_by="header", key="X-User")
    env = {"HTTP_X_USER": "caf\udce9"}
    assert h.pick([Dest("a"), Dest("b")], env).name == h.pick([Dest("b"), Dest("a")], env).name
    sampling = Cluster("c", "Random", (), "header", "X-User", 50.0, "key")
    assert sampled_in(sampling, env) in (True, False)
    assert len({sampled_in(sampling, env) for _ in range(5)}) == 1
