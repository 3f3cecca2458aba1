import copy
import json
import logging
from pathlib import Path

import pytest

from wsgimirror import ConfigError, load_config
from wsgimirror.compare.verdicts import settings_of
from wsgimirror.config.model import KNOWN_MIRROR_KEYS, Config, MirrorSettings

SEED = Path(__file__).parents[1] / "data" / "seed.json"


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
    assert (defaults.max_in_flight, defaults.memory_body_bytes, defaults.max_body_bytes) == (256, 1 << 20, 64 << 20)
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


def test_an_unknown_mirror_key_is_refused_with_the_key_it_resembles():
    data = seed()
    data["ReverseProxy"]["Routes"]["a"]["Metadata"]["MirrorCluster1"] = "x"
    with pytest.raises(ConfigError, match="^ReverseProxy.Routes.a.Metadata.MirrorCluster1: unknown mirror key; "
                       "did you mean MirrorCluster\\?$"):  # fmt: skip
        load_config(data)


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
        ({}, "ReverseProxy: is missing: the config needs a ReverseProxy section with Routes and Clusters$"),
        ({"ReverseProxy": None}, "ReverseProxy: must be an object, got null"),
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
    from wsgimirror.util.syntax import shown

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


def test_an_unknown_key_of_the_mirror_section_is_refused_naming_the_keys_read():
    with pytest.raises(ConfigError, match="^Mirror.MaxInFlite: unknown key; did you mean MaxInFlight\\?$"):
        load_config(_with("Mirror.MaxInFlite", 3))
    with pytest.raises(ConfigError, match="^Mirror.Speed: unknown key; the keys read here are " + ", ".join(
            KNOWN_MIRROR_KEYS) + "$"):  # fmt: skip
        load_config(_with("Mirror.Speed", 3))


def test_a_config_path_with_a_nul_character_is_refused_naming_it():
    with pytest.raises(ConfigError, match="^'config\\\\x00.json': a file path cannot contain a NUL character$"):
        load_config("config\x00.json")


# -- the Compare section and a route's MirrorCompare / MirrorBaseline -------------------------------


def _two_clusters(**metadata) -> dict:
    data = seed()
    data["ReverseProxy"]["Clusters"]["other"] = {"Destinations": {"o": {"Address": "http://127.0.0.1:9"}}}
    data["ReverseProxy"]["Routes"]["a"]["Metadata"] = {"MirrorCluster": "apidemoMirror,other", **metadata}
    return data


def test_compare_and_baseline_clusters_are_read_in_any_case():
    config = load_config(_two_clusters(MirrorCompare=" APIDEMOMIRROR ", MirrorBaseline="Other"))
    (route,) = [r for r in config.routes if r.id == "a"]
    assert (route.compare_clusters, route.baseline_cluster, route.compares) == (("apidemoMirror",), "other", True)


def test_compare_defaults_and_overrides(tmp_path):
    defaults = load_config(seed()).compare
    assert (defaults.max_body_bytes, defaults.relative_threshold, defaults.absolute_threshold) == (1 << 20, 20, 0.03)
    assert defaults.ignore_headers == frozenset(
        {"date", "server", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
         "vary", "via", "age"}
    )  # fmt: skip
    assert (defaults.min_samples, defaults.confidence, defaults.latency_threshold) == (10, 0.999, 20.0)
    assert (defaults.added_fields, defaults.strict_types) == ("report", False)
    assert (defaults.log, defaults.log_max_bytes, defaults.log_seconds, defaults.examples) == (None, 64 << 20, 10, 5)
    assert (defaults.max_per_second, defaults.array_order, defaults.memory_bytes) == (200, "ordered", 64 << 20)
    data = seed()
    data["Compare"] = {"IgnoreHeaders": ["X-Trace-Id"], "IgnoreFields": ["headers.X-A", "body.Meta.*"],
                       "ArrayOrder": "Unordered", "Endpoints": ["/u/{id}"], "Log": str(tmp_path / "d-{pid}.jsonl"),
                       "RelativeThreshold": 0, "AbsoluteThreshold": 100, "MaxPerSecond": 1, "MinSamples": 30,
                       "Confidence": 99, "LatencyThreshold": 50, "AddedFields": "Regression", "StrictTypes": "true",
                       "TransferHeaders": ["Date"]}  # fmt: skip
    got = load_config(data).compare
    assert (got.min_samples, got.confidence, got.latency_threshold, got.added_fields, got.strict_types) == (
        30, 0.99, 50.0, "regression", True)  # fmt: skip
    assert got.ignore_headers == frozenset({"date", "x-trace-id"})  # TransferHeaders replaces the default list
    assert settings_of(got).min_samples == 30 and settings_of(got).confidence == 0.99
    assert got.ignore_fields == ("headers.x-a", "body.Meta.*")  # header names in lower case, body keys as given
    assert (got.array_order, got.endpoints, got.relative_threshold, got.absolute_threshold) == (
        "unordered", ("/u/{id}",), 0.0, 100.0
    )  # fmt: skip


C = "Compare"


@pytest.mark.parametrize(
    "config, message",
    [
        (
            _two_clusters(MirrorCompare="nope"),
            f"{R}.Metadata.MirrorCompare: cluster 'nope' is not one of the route's MirrorCluster",
        ),
        (_two_clusters(MirrorCompare="other,OTHER"), f"{R}.Metadata.MirrorCompare: a cluster is named twice"),
        (
            _two_clusters(MirrorBaseline="other,apidemoMirror"),
            f"{R}.Metadata.MirrorBaseline: names one cluster at most, got 2",
        ),
        (
            _two_clusters(MirrorCompare="other", MirrorBaseline="other"),
            f"{R}.Metadata.MirrorBaseline: cluster 'other' is also in MirrorCompare",
        ),
        (_two_clusters(MirrorCompare=3), f"{R}.Metadata.MirrorCompare: must be a string, got number"),
        ({**seed(), C: []}, "Compare: must be an object, got array"),
        ({**seed(), C: {"MaxBodyBytes": -1}}, "Compare.MaxBodyBytes: must be at least 0, got -1"),
        ({**seed(), C: {"MaxBodyBytes": "1"}}, "Compare.MaxBodyBytes: must be an integer, got string '1'"),
        ({**seed(), C: {"MemoryBytes": True}}, "Compare.MemoryBytes: must be an integer, got boolean"),
        (
            {**seed(), C: {"IgnoreHeaders": "Date"}},
            "Compare.IgnoreHeaders: must be an array of header names, got string",
        ),
        ({**seed(), C: {"IgnoreHeaders": ["X A"]}}, r"Compare.IgnoreHeaders\[0\]: 'X A' is not a header name"),
        ({**seed(), C: {"IgnoreHeaders": [""]}}, r"Compare.IgnoreHeaders\[0\]: must be header name, got string ''"),
        (
            {**seed(), C: {"IgnoreFields": ["meta.x"]}},
            r"Compare.IgnoreFields\[0\]: must be a field path under "
            "status, headers or body, got 'meta.x'",
        ),
        ({**seed(), C: {"IgnoreFields": [1]}}, r"Compare.IgnoreFields\[0\]: must be field path, got number 1"),
        (
            {**seed(), C: {"ArrayOrder": "sorted"}},
            "Compare.ArrayOrder: must be one of ordered, unordered, got 'sorted'",
        ),
        (
            {**seed(), C: {"Endpoints": ["users/{id}"]}},
            r"Compare.Endpoints\[0\]: must be a path template such as "
            "/users/{id}, got 'users/{id}'",
        ),
        (
            {**seed(), C: {"Endpoints": ["/u/x{id}"]}},
            r"Compare.Endpoints\[0\]: a placeholder must be a whole "
            "segment such as {id}, got 'x{id}'",
        ),
        ({**seed(), C: {"Endpoints": ["/u?x=1"]}}, r"Compare.Endpoints\[0\]: must be a path template"),
        ({**seed(), C: {"RelativeThreshold": 101}}, "Compare.RelativeThreshold: must be from 0 to 100, got 101"),
        ({**seed(), C: {"AbsoluteThreshold": -0.1}}, "Compare.AbsoluteThreshold: must be from 0 to 100, got -0.1"),
        ({**seed(), C: {"AbsoluteThreshold": "1"}}, "Compare.AbsoluteThreshold: must be a percentage, got string"),
        ({**seed(), C: {"Log": "/no/such/dir/diff.jsonl"}}, "Compare.Log: directory '/no/such/dir' does not exist"),
        ({**seed(), C: {"Log": " "}}, "Compare.Log: must be a file path"),
        ({**seed(), C: {"LogMaxBytes": 10}}, "Compare.LogMaxBytes: must be at least 4096, got 10"),
        ({**seed(), C: {"LogSeconds": 0}}, "Compare.LogSeconds: must be more than 0 and at most 3600 seconds"),
        ({**seed(), C: {"Examples": -1}}, "Compare.Examples: must be at least 0, got -1"),
        ({**seed(), C: {"Examples": 1001}}, "Compare.Examples: must be at most 1000, got 1001"),
        ({**seed(), C: {"MaxPerSecond": 0}}, "Compare.MaxPerSecond: must be at least 1, got 0"),
        ({**seed(), C: {"MinSamples": 0}}, "Compare.MinSamples: must be at least 1, got 0"),
        (
            {**seed(), C: {"Confidence": 40}},
            "Compare.Confidence: must be at least 50 and below 100 \\(percent\\), got 40",
        ),
        ({**seed(), C: {"Confidence": 100}}, "Compare.Confidence: must be at least 50 and below 100"),
        ({**seed(), C: {"LatencyThreshold": 200}}, "Compare.LatencyThreshold: must be from 0 to 100, got 200"),
        (
            {**seed(), C: {"AddedFields": "ignore"}},
            "Compare.AddedFields: must be one of report, regression, got 'ignore'",
        ),
        ({**seed(), C: {"StrictTypes": 1}}, "Compare.StrictTypes: must be true or false, got number 1"),
        (
            {**seed(), C: {"TransferHeaders": ["bad name"]}},
            "Compare.TransferHeaders\\[0\\]: 'bad name' is not a header name",
        ),
    ],
)
def test_invalid_compare_settings_name_the_key_path(config, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(config)


def test_unknown_compare_keys_are_refused():
    with pytest.raises(ConfigError, match="^Compare.MaxBodyByte: unknown key; did you mean MaxBodyBytes\\?$"):
        load_config({**seed(), "Compare": {"MaxBodyByte": 1}})
