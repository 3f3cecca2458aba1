import copy
import json
import logging
from pathlib import Path

import pytest

from wsgimirror import ConfigError, load_config
from wsgimirror.config import KNOWN_MIRROR_KEYS, Config, MirrorSettings

SEED = Path(__file__).parent / "data" / "seed.json"


def seed() -> dict:
    return json.loads(SEED.read_text())


def test_the_seed_config_loads_verbatim():
    config = load_config(str(SEED))
    (route,) = config.routes
    assert (route.id, route.hosts, route.paths, route.cluster_id) == ("a", ("api.com",), ("*",), "apidemo")
    assert route.mirror_clusters == ("apidemoMirror",)
    mirror = config.clusters["apidemoMirror"]
    assert (mirror.policy, mirror.hash_by, mirror.hash_key) == ("Hash", "header", "X-forwarded-For")
    (dest,) = mirror.destinations
    assert (dest.scheme, dest.host, dest.port, dest.base_path) == ("http", "xxx.org", 80, "")
    assert config.clusters["apidemo"].destinations[0].port == 443
    assert config.mirror == MirrorSettings()


def test_a_path_a_dict_and_a_config_give_the_same_result():
    from_path = load_config(SEED)
    assert load_config(seed()) == from_path
    assert load_config(from_path) is from_path


def test_global_defaults_and_overrides():
    defaults = MirrorSettings()
    assert (defaults.max_in_flight, defaults.memory_body_bytes, defaults.max_body_bytes) == (64, 1 << 20, 64 << 20)
    assert (defaults.connect_timeout, defaults.timeout, defaults.executor) == (1.0, 5.0, "auto")
    data = seed()
    data["Mirror"] = {"MaxInFlight": 8, "MemoryBodyBytes": 0, "MaxBodyBytes": 10, "Timeout": 0.5, "Executor": "Thread"}
    settings = load_config(data).mirror
    assert (settings.max_in_flight, settings.memory_body_bytes, settings.max_body_bytes) == (8, 0, 10)
    assert (settings.timeout, settings.executor) == (0.5, "thread")


def test_routes_are_sorted_by_order_with_ties_in_file_order():
    data = seed()
    routes = data["ReverseProxy"]["Routes"]
    routes["z"] = {"Order": -1}
    routes["b"] = {"Order": 0}
    routes["c"] = {}
    assert [r.id for r in load_config(data).routes] == ["z", "a", "b", "c"]


def test_destinations_as_a_dict_keep_their_names_and_base_paths():
    data = seed()
    data["ReverseProxy"]["Clusters"]["apidemoMirror"]["Destinations"] = {
        "one": {"Address": "http://127.0.0.1:9000/shadow/"},
        "two": {"Address": "https://[::1]:8443"},
    }
    one, two = load_config(data).clusters["apidemoMirror"].destinations
    assert (one.name, one.port, one.base_path, one.host_header) == ("one", 9000, "/shadow", "127.0.0.1:9000")
    assert (two.name, two.host, two.host_header) == ("two", "::1", "[::1]:8443")


def test_several_mirror_clusters_separated_by_commas():
    data = seed()
    data["ReverseProxy"]["Routes"]["a"]["Metadata"]["MirrorCluster"] = " apidemoMirror , apidemo "
    assert load_config(data).routes[0].mirror_clusters == ("apidemoMirror", "apidemo")


def test_policy_names_are_case_insensitive():
    data = seed()
    data["ReverseProxy"]["Clusters"]["apidemo"]["LoadBalancingPolicy"] = "roundrobin"
    assert load_config(data).clusters["apidemo"].policy == "RoundRobin"


def test_unknown_mirror_keys_are_named_in_a_warning(caplog):
    data = seed()
    data["ReverseProxy"]["Routes"]["a"]["Metadata"]["MirrorCluster1"] = "x"
    data["Mirror"] = {"MaxInFlite": 3}
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        load_config(data)
    text = caplog.text
    assert "ReverseProxy.Routes.a.Metadata.MirrorCluster1: unknown mirror key" in text
    assert "Mirror: unknown keys ['MaxInFlite']" in text


def test_other_keys_of_the_seed_proxy_are_accepted_silently(caplog):
    data = seed()
    data["Logging"] = {"LogLevel": {"Default": "Information"}}
    data["ReverseProxy"]["Routes"]["a"]["Timeout"] = "00:00:30"
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        load_config(data)
    assert caplog.text == ""


def _with(path: str, value):
    """The seed config with the value at a dotted path replaced (``DELETE`` removes it)."""
    data = seed()
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return data


DELETE = object()
R = "ReverseProxy.Routes.a"
M = "ReverseProxy.Clusters.apidemoMirror"


@pytest.mark.parametrize(
    "config, message",
    [
        ([], "config: expected a file path, a dict or a Config, got list"),
        ({}, "ReverseProxy: must be an object, got null"),
        ({"ReverseProxy": {"Routes": []}}, "ReverseProxy.Routes: must be an object, got array"),
        (
            _with(f"{R}.Metadata.MirrorCluster", "apidemoMirrorX"),
            "ReverseProxy.Routes.a.Metadata.MirrorCluster: cluster 'apidemoMirrorX' is not defined in "
            "ReverseProxy.Clusters",
        ),
        (
            _with(f"{R}.Metadata.MirrorCluster", "apidemoMirror,apidemoMirror"),
            "ReverseProxy.Routes.a.Metadata.MirrorCluster: a cluster is named twice",
        ),
        (_with(f"{R}.Metadata.MirrorCluster", 3), "ReverseProxy.Routes.a.Metadata.MirrorCluster: must be a string"),
        (
            _with(f"{R}.ClusterId", "nope"),
            "ReverseProxy.Routes.a.ClusterId: cluster 'nope' is not defined in ReverseProxy.Clusters",
        ),
        (_with(f"{R}.Order", "1"), "ReverseProxy.Routes.a.Order: must be an integer, got string '1'"),
        (_with(f"{R}.Order", True), "ReverseProxy.Routes.a.Order: must be an integer, got boolean True"),
        (_with(f"{R}.Match.Hosts", "api.com"), "ReverseProxy.Routes.a.Match.Hosts: must be an array of strings"),
        (_with(f"{R}.Match.Hosts", ["ok.com", 5]), "ReverseProxy.Routes.a.Match.Hosts\\[1\\]: must be a string"),
        (_with(f"{R}.Match.Hosts", ["a.*.com"]), f"{R}.Match.Hosts\\[0\\]: '\\*' is only allowed at the start"),
        (_with(f"{R}.Match.Hosts", ["api.com:80x"]), f"{R}.Match.Hosts\\[0\\]: the port must be a number"),
        (_with(f"{R}.Match.Paths", ["api"]), f"{R}.Match.Paths\\[0\\]: must start with '/' or be '\\*', got 'api'"),
        (_with(f"{R}.Match.Paths", ["/a*b"]), f"{R}.Match.Paths\\[0\\]: '\\*' is only allowed at the end"),
        (
            _with(f"{M}.LoadBalancingPolicy", "Sticky"),
            f"{M}.LoadBalancingPolicy: unknown policy 'Sticky'; valid policies: Hash, Random, RoundRobin, "
            "LeastRequests, PowerOfTwoChoices, First",
        ),
        (_with(f"{M}.Metadata.HashBy", "body"), f"{M}.Metadata.HashBy: must be one of header, cookie, query"),
        (_with(f"{M}.Metadata.Key", DELETE), f"{M}.Metadata.Key: is required when HashBy is 'header'"),
        (_with(f"{M}.Destinations", []), f"{M}.Destinations: must name at least one destination"),
        (_with(f"{M}.Destinations", "http://a"), f"{M}.Destinations: must be a list or an object"),
        (_with(f"{M}.Destinations.0", {"Address": "ftp://x"}), f"{M}.Destinations\\[0\\].Address: scheme must be http"),
        (_with(f"{M}.Destinations.0", {}), f"{M}.Destinations\\[0\\].Address: is required"),
        (_with(f"{M}.Destinations.0", {"Address": "http://"}), f"{M}.Destinations\\[0\\].Address: has no host"),
        (_with(f"{M}.Destinations.0", {"Address": "http://a:x"}), f"{M}.Destinations\\[0\\].Address: is not a valid"),
        (
            _with(f"{M}.Destinations.0", {"Address": "http://a/?q=1"}),
            f"{M}.Destinations\\[0\\].Address: must not carry a query",
        ),
        (_with("Mirror.MaxInFlight", 0), "Mirror.MaxInFlight: must be at least 1, got 0"),
        (_with("Mirror.MaxInFlight", 2.5), "Mirror.MaxInFlight: must be an integer, got number 2.5"),
        (_with("Mirror.MemoryBodyBytes", -1), "Mirror.MemoryBodyBytes: must be at least 0, got -1"),
        (_with("Mirror.Timeout", False), "Mirror.Timeout: must be a number of seconds, got boolean False"),
        (_with("Mirror.ConnectTimeout", 0), "Mirror.ConnectTimeout: must be more than 0"),
        (_with("Mirror.Executor", "process"), "Mirror.Executor: must be one of auto, gevent, thread, got 'process'"),
        (_with("Mirror", []), "Mirror: must be an object, got array"),
        (
            _with("Mirror.RemoveHeaders", ["Cookie", "X_Api_Key"]),
            "Mirror.RemoveHeaders\\[1\\]: 'X_Api_Key' has '_': WSGI servers drop such headers or merge them with '-'; "
            "write 'X-Api-Key'",
        ),
        (
            _with("Mirror.RemoveHeaders", ["Authorization:"]),
            "Mirror.RemoveHeaders\\[0\\]: 'Authorization:' is not a header name",
        ),
        (_with("Mirror.RemoveHeaders", ["X Api"]), "Mirror.RemoveHeaders\\[0\\]: 'X Api' is not a header name"),
        (_with("Mirror.MaxInFlight", 10**9), "Mirror.MaxInFlight: must be at most 65536, got 1000000000"),
        (_with("Mirror.LoopToken", "short"), "Mirror.LoopToken: must be a secret of at least 16 printable ASCII"),
        (_with("Mirror.LoopToken", "x" * 16 + " y"), "Mirror.LoopToken: must be a secret of at least 16 printable"),
        (_with("Mirror.CaptureMemoryBytes", -1), "Mirror.CaptureMemoryBytes: must be at least 0, got -1"),
        (_with("Mirror.CaptureDiskBytes", "1G"), "Mirror.CaptureDiskBytes: must be an integer, got string '1G'"),
        (_with(f"{R}.Match.Hosts", ["app.local:\u00b2"]), f"{R}.Match.Hosts\\[0\\]: the port must be a number"),
        (_with(f"{R}.Match.Hosts", ["app local"]), f"{R}.Match.Hosts\\[0\\]: must not contain spaces"),
        (
            _with(f"{M}.Destinations.0", {"Address": "http://a_b!/"}),
            f"{M}.Destinations\\[0\\].Address: the host has characters a host name cannot have",
        ),
        (
            _with(f"{M}.Destinations.0", {"Address": "http://a/sh\radow"}),
            f"{M}.Destinations\\[0\\].Address: must not contain spaces or control characters",
        ),
    ],
)
def test_invalid_configs_name_the_key_path(config, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(config)


def test_config_error_carries_path_and_reason():
    with pytest.raises(ConfigError) as info:
        load_config(_with("Mirror.MaxInFlight", 0))
    assert (info.value.path, info.value.reason) == ("Mirror.MaxInFlight", "must be at least 1, got 0")


def test_file_errors_are_config_errors(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read the file: No such file"):
        load_config(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"ReverseProxy": ')
    with pytest.raises(ConfigError, match=f"^{broken}: invalid JSON at line 1 column 18"):
        load_config(broken)


def test_load_config_rejects_other_types():
    with pytest.raises(ConfigError, match="^config: expected a file path, a dict or a Config, got int"):
        load_config(3)


def test_config_objects_are_frozen():
    config = load_config(seed())
    with pytest.raises(AttributeError):
        config.routes = ()  # type: ignore[misc]
    assert isinstance(copy.deepcopy(config), Config)


def test_a_long_or_odd_value_in_an_error_message_is_cut_short_and_never_fails():
    from wsgimirror.syntax import shown

    assert shown("x" * 78) == repr("x" * 78)  # 80 characters with the quotes: kept whole
    assert shown("x" * 79) == repr("x" * 79)[:77] + "..."  # 81: cut to 80
    assert len(shown({"key": "v" * 500})) == 80 and shown({"key": "v" * 500}).endswith("...")
    assert shown({"a": object()}).startswith('{"a": "<object object at')  # JSON, odd values by repr
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert shown(deep) == "<list>"
    assert shown([1, "a"], as_json=True) == '[1, "a"]' and shown("a", as_json=True) == '"a"'


def test_a_file_that_is_not_utf_8_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"ReverseProxy": {"Routes": {"caf\xe9": {}}}}')
    with pytest.raises(ConfigError, match=f"^{path}: the file is not UTF-8: invalid continuation byte$"):
        load_config(str(path))


def test_a_byte_order_mark_is_allowed(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"ReverseProxy": {"Routes": {"r": {}}}}')
    assert [r.id for r in load_config(str(path)).routes] == ["r"]


def test_max_body_bytes_may_be_zero_but_not_negative():
    assert load_config(_with("Mirror.MaxBodyBytes", 0)).mirror.max_body_bytes == 0
    with pytest.raises(ConfigError, match="^Mirror.MaxBodyBytes: must be at least 0, got -1$"):
        load_config(_with("Mirror.MaxBodyBytes", -1))


def test_every_known_mirror_key_in_any_case_loads_without_a_warning(caplog):
    data = seed()
    data["mirror"] = {
        "maxinflight": 9, "MEMORYBODYBYTES": 10, "maxBodyBytes": 11, "connecttimeout": 1, "TIMEOUT": 2,
        "executor": "thread", "removeheaders": ["Cookie"], "breakerfailures": 3, "BREAKERSECONDS": 4,
        "looptoken": "0123456789abcdef", "capturememorybytes": 12, "CAPTUREDISKBYTES": 13,
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        m = load_config(data).mirror
    assert caplog.text == ""
    assert (m.max_in_flight, m.memory_body_bytes, m.max_body_bytes, m.connect_timeout, m.timeout) == (9, 10, 11, 1, 2)
    assert (m.executor, m.remove_headers, m.breaker_failures, m.breaker_seconds) == ("thread", {"cookie"}, 3, 4)
    assert (m.loop_token, m.capture_memory_bytes, m.capture_disk_bytes) == ("0123456789abcdef", 12, 13)


def test_an_unknown_mirror_key_is_named_with_the_known_ones(caplog):
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        load_config(_with("Mirror.MaxInFlite", 3))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "Mirror: unknown keys ['MaxInFlite'] are ignored; known keys: " + ", ".join(KNOWN_MIRROR_KEYS)


def test_a_config_path_with_a_nul_character_is_refused_naming_it():
    with pytest.raises(ConfigError, match="^'config\\\\x00.json': a file path cannot contain a NUL character$"):
        load_config("config\x00.json")
