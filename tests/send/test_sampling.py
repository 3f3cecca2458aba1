import os
import subprocess
import sys

import pytest

from wsgimirror import ConfigError, load_config
from wsgimirror.config.model import Cluster
from wsgimirror.send.pick import sampled_in


def cluster(percent, sample_by="random", hash_by="header", key="X-User") -> Cluster:
    return Cluster("c", "Random", (), hash_by, key, percent, sample_by)


def share(c: Cluster, n: int, env=lambda i: {"HTTP_X_USER": f"user{i}"}) -> float:
    return sum(sampled_in(c, env(i)) for i in range(n)) / n


def test_all_or_nothing():
    assert share(cluster(100), 500) == 1.0
    assert share(cluster(0), 500) == 0.0
    assert share(cluster(0, "key"), 500) == 0.0


@pytest.mark.parametrize("sample_by", ["random", "key"])
@pytest.mark.parametrize("percent", [1, 10, 37.5])
def test_the_share_matches_the_percentage(sample_by, percent):
    n = 20_000
    p = percent / 100
    bound = 5 * (p * (1 - p) / n) ** 0.5  # five standard deviations
    assert abs(share(cluster(percent, sample_by), n) - p) < bound


def test_key_sampling_keeps_a_user_in_or_out():
    c = cluster(30, "key")
    for i in range(200):
        env = {"HTTP_X_USER": f"user{i}"}
        assert len({sampled_in(c, env) for _ in range(5)}) == 1


def test_key_sampling_of_a_smaller_share_is_a_subset_of_a_larger_one():
    small, large = cluster(10, "key"), cluster(40, "key")
    users = [{"HTTP_X_USER": f"u{i}"} for i in range(2000)]
    assert all(sampled_in(large, u) for u in users if sampled_in(small, u))


PROBE = """
from wsgimirror.send.pick import sampled_in
from wsgimirror.config import Cluster
c = Cluster("c", "Random", (), "header", "X-User", 25.0, "key")
print("".join("1" if sampled_in(c, {"HTTP_X_USER": f"user{i}"}) else "0" for i in range(300)))
"""


def test_key_sampling_is_the_same_in_every_process():
    runs = set()
    for seed in ("11", "12"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        runs.add(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env).stdout.strip())
    here = "".join("1" if sampled_in(cluster(25, "key"), {"HTTP_X_USER": f"user{i}"}) else "0" for i in range(300))
    assert runs == {here} and 40 < here.count("1") < 110


def config_with(metadata: dict) -> dict:
    return {
        "ReverseProxy": {
            "Routes": {"r": {"Metadata": {"MirrorCluster": "m"}}},
            "Clusters": {"m": {"Metadata": metadata, "Destinations": [{"Address": "http://127.0.0.1:9"}]}},
        }
    }


def test_percent_and_sample_by_load():
    c = load_config(config_with({"MirrorPercent": "12.5", "MirrorSampleBy": "Key"})).clusters["m"]
    assert (c.percent, c.sample_by) == (12.5, "key")
    c = load_config(config_with({})).clusters["m"]
    assert (c.percent, c.sample_by) == (100.0, "random")


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"MirrorPercent": 101}, "MirrorPercent: must be a number from 0 to 100, got 101"),
        ({"MirrorPercent": -0.5}, "MirrorPercent: must be a number from 0 to 100, got -0.5"),
        ({"MirrorPercent": "half"}, "MirrorPercent: must be a number from 0 to 100, got 'half'"),
        ({"MirrorPercent": True}, "MirrorPercent: must be a number from 0 to 100, got boolean True"),
        ({"MirrorSampleBy": "user"}, "MirrorSampleBy: must be one of random, key, got 'user'"),
    ],
)
def test_invalid_sampling(metadata, message):
    with pytest.raises(ConfigError, match="^ReverseProxy.Clusters.m.Metadata." + message):
        load_config(config_with(metadata))


def test_key_sampling_decisions_are_pinned_so_an_upgrade_keeps_the_same_users_in():
    c = cluster(30, "key")
    decisions = "".join("1" if sampled_in(c, {"HTTP_X_USER": f"user{i}"}) else "0" for i in range(32))
    assert decisions == "00000001000001000101001100000000"


@pytest.mark.parametrize("sample_by", ["random", "key"])
def test_sampling_is_accurate_enough_to_notice_one_percent_too_few(sample_by):
    """200,000 decisions at 50 %: within 0.25 points, so 49.5 % (one percent too few) fails."""
    import random

    random.seed(20261126)  # the random sampler draws from the module's generator: a fixed draw
    n = 200_000
    assert abs(share(cluster(50, sample_by), n) - 0.5) < 0.0025
