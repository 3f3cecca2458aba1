"""Every config error and warning, word for word: the key path first, then what is wrong with the value.

A user fixes a config from the message alone, so its exact text is behaviour. These tables pin each
branch of the loader that the broader tests in test_config.py reach only by a prefix.
"""

import copy
import logging

import pytest
import trustme

from wsgimirror import ConfigError, load_config

BASE = {
    "ReverseProxy": {
        "Routes": {"r": {"Match": {"Paths": ["/*"]}, "Metadata": {"MirrorCluster": "m"}}},
        "Clusters": {"m": {"Destinations": {"d": {"Address": "http://127.0.0.1:9"}}}},
    }
}
R = "ReverseProxy.Routes.r"
M = "ReverseProxy.Clusters.m"


def config(route=None, cluster=None, match=None, **top):
    data = copy.deepcopy(BASE)
    data["ReverseProxy"]["Routes"]["r"]["Match"].update(match or {})
    data["ReverseProxy"]["Routes"]["r"].update(route or {})
    data["ReverseProxy"]["Clusters"]["m"].update(cluster or {})
    data.update(top)
    return data


def metadata(**values):
    return config(cluster={"Metadata": values})


def http_client(**values):
    return config(cluster={"HttpClient": values})


@pytest.mark.parametrize(
    "data, message",
    [
        ({1: 2}, "config: keys must be strings, got number 1"),
        ({"ReverseProxy": {"Clusters": []}}, "ReverseProxy.Clusters: must be an object, got array"),
        (config(route={"Match": []}), f"{R}.Match: must be an object, got array"),
        ({"ReverseProxy": {"Routes": {"r": "x"}}}, f"{R}: must be an object, got string"),
        (config(route={"ClusterId": 7}), f"{R}.ClusterId: must be a string, got number"),
        (config(match={"Methods": "GET"}), f"{R}.Match.Methods: must be an array of strings, got string"),
        (config(match={"Hosts": [" "]}), rf"{R}.Match.Hosts\[0\]: must not be empty"),
        (config(match={"Hosts": ["a*b.com"]}), rf"{R}.Match.Hosts\[0\]: '\*' is only allowed at the start of a host, "
                                                "got 'a\\*b.com'"),
        (config(match={"Hosts": ["x\x01.com"]}), rf"{R}.Match.Hosts\[0\]: must not contain spaces or control "
                                                  r"characters, got 'x\\x01.com'"),
        (config(match={"Hosts": ["*.a.com:8x"]}), rf"{R}.Match.Hosts\[0\]: the port must be a number from 0 to "
                                                   "99999, got '\\*.a.com:8x'"),
        ({"ReverseProxy": {"Clusters": {"m": 1}}}, f"{M}: must be an object, got number"),
        (config(cluster={"LoadBalancingPolicy": 1}), f"{M}.LoadBalancingPolicy: must be a string, got number"),
        (config(cluster={"Metadata": []}), f"{M}.Metadata: must be an object, got array"),
        (metadata(MirrorSampleBy="user"), f"{M}.Metadata.MirrorSampleBy: must be one of random, key, got 'user'$"),
        (metadata(MirrorSampleBy=3), f"{M}.Metadata.MirrorSampleBy: must be a string, got number"),
        (metadata(MirrorPercent="half"), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got 'half'$"),
        (metadata(MirrorPercent=True), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got boolean "
                                       "True$"),
        (metadata(MirrorPercent=[5]), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got array"),
        (metadata(MirrorPercent=100.5), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got 100.5$"),
        (metadata(MirrorPercent="-1"), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got -1.0$"),
        (metadata(HashBy=1), f"{M}.Metadata.HashBy: must be a string, got number"),
        (metadata(Key=1), f"{M}.Metadata.Key: must be a string, got number"),
        (metadata(HashBy="path", Key="k"), f"{M}.Metadata.HashBy: must be one of header, cookie, query, got 'path'$"),
        (metadata(HashBy="cookie"), f"{M}.Metadata.Key: is required when HashBy is 'cookie'$"),
        (http_client(DangerousAcceptAnyServerCertificate=1), f"{M}.HttpClient.DangerousAcceptAnyServerCertificate: "
                                                              "must be true or false, got number 1$"),
        (http_client(SslProtocols=""), f"{M}.HttpClient.SslProtocols: must be a non-empty array of Tls12 and Tls13, "
                                       "got ''$"),
        (http_client(ServerName=""), f"{M}.HttpClient.ServerName: "),
        (http_client(ServerName=5), f"{M}.HttpClient.ServerName: must be a string, got number"),
        (http_client(MaxConnectionsPerServer=65537), f"{M}.HttpClient.MaxConnectionsPerServer: must be at most 65536, "
                                                     "got 65537$"),
        (http_client(ClientCertificate=3), f"{M}.HttpClient.ClientCertificate: must be a string, got number"),
        (http_client(ClientKey=3), f"{M}.HttpClient.ClientKey: must be a string, got number"),
        (http_client(ClientKey="/no/such.pem"), f"{M}.HttpClient.ClientKey: cannot read '/no/such.pem': "),
        (http_client(ClientCertificate="/no/such.pem"), f"{M}.HttpClient.ClientCertificate: cannot read "
                                                        "'/no/such.pem': "),
        (config(cluster={"Destinations": "x"}), f"{M}.Destinations: must be a list or an object of destinations, got "
                                                "string$"),
        (config(cluster={"Destinations": [1]}), rf"{M}.Destinations\[0\]: must be an object, got number"),
        (config(cluster={"Destinations": [{"Address": {}}]}), rf"{M}.Destinations\[0\].Address: must be a string, "
                                                              "got object"),
        (config(cluster={"Destinations": [{"Address": "http://a/ b"}]}), rf"{M}.Destinations\[0\].Address: must "
                                                                         "not contain spaces or control characters: "
                                                                         "'http://a/ b'$"),
        (config(cluster={"Destinations": [{"Address": "http://a/#top"}]}), rf"{M}.Destinations\[0\].Address: must "
                                                                           "not carry a query, fragment or user info"),
        (config(cluster={"Destinations": [{"Address": "http://a{b}/"}]}), rf"{M}.Destinations\[0\].Address: the "
                                                                          "host has characters a host name cannot "
                                                                          "have: 'http://a\\{b\\}/'$"),
        (config(match={"Paths": "/x"}), f"{R}.Match.Paths: must be an array of strings, got string$"),
        (config(match={"Paths": [1]}), rf"{R}.Match.Paths\[0\]: must be a string, got number$"),
        ({"ReverseProxy": {1: 2}}, "ReverseProxy: keys must be strings, got number 1$"),
        ({"ReverseProxy": {"Routes": (1,)}}, "ReverseProxy.Routes: must be an object, got tuple$"),
        (config(Mirror={"Executor": 1}), "Mirror.Executor: must be a string, got number"),
        (config(Mirror={"BreakerFailures": -1}), "Mirror.BreakerFailures: must be at least 0, got -1$"),
        (config(Mirror={"BreakerSeconds": "5"}), "Mirror.BreakerSeconds: must be a number of seconds, got string"),
        (config(Mirror={"BreakerSeconds": 3600.5}), "Mirror.BreakerSeconds: must be more than 0 and at most 3600 "
                                                    "seconds, got 3600.5$"),
        (config(Mirror={"CaptureDiskBytes": -1}), "Mirror.CaptureDiskBytes: must be at least 0, got -1$"),
        (config(Mirror={"LoopToken": 5}), "Mirror.LoopToken: must be a string, got number"),
        (config(Mirror={"MaxInFlight": 65537}), "Mirror.MaxInFlight: must be at most 65536, got 65537$"),
        (config(match={"Hosts": ["*[::1]:8x"]}), rf"{R}.Match.Hosts\[0\]: the port must be a number from 0 to "
                                                  "99999"),
        (metadata(MirrorPercent="5X"), f"{M}.Metadata.MirrorPercent: must be a number from 0 to 100, got '5X'$"),
    ],
)  # fmt: skip
def test_each_error_names_its_key_path_and_the_value(data, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(data)


def test_values_are_read_as_dotnet_and_the_seed_proxy_write_them():
    loaded = load_config(
        config(
            route={"Match": {"Paths": ["/*"], "Methods": ["get", "Post"]}},
            cluster={"Metadata": {"MirrorSampleBy": "Key", "MirrorPercent": "12.5%", "Key": "X-User"}},
        )
    )
    (route,) = loaded.routes
    cluster = loaded.clusters["m"]
    assert (route.order, route.methods, cluster.id) == (0, ("GET", "POST"), "m")
    assert (cluster.sample_by, cluster.percent, cluster.hash_by, cluster.hash_key) == ("key", 12.5, "header", "X-User")
    for edge in (0, 100, "0", "100%"):
        assert load_config(metadata(MirrorPercent=edge)).clusters["m"].percent == float(str(edge).rstrip("%"))
    for spelled, value in ((" TRUE ", True), ("False", False), (True, True)):
        settings = load_config(http_client(DangerousAcceptAnyServerCertificate=spelled)).clusters["m"].http_client
        assert settings.accept_any_certificate is value
    assert load_config(http_client(SslProtocols="Tls12, Tls13")).clusters["m"].http_client.protocols == (
        "Tls12", "Tls13"
    )  # fmt: skip
    assert load_config(config(match={"Hosts": ["*api.com:8080", "*"]})).routes[0].hosts == ("*api.com:8080", "*")
    edges = load_config(config(Mirror={"MaxInFlight": 65536, "BreakerSeconds": 3600, "CaptureDiskBytes": 0}))
    assert (edges.mirror.max_in_flight, edges.mirror.breaker_seconds, edges.mirror.capture_disk_bytes) == (
        65536, 3600.0, 0
    )  # fmt: skip


def test_list_destinations_are_named_by_address_with_repeats_numbered():
    listed = [{"Address": "http://127.0.0.1:9/v2/"}, {"Address": "http://127.0.0.1:9/v2/"}, {"Address": "http://b"}]
    destinations = load_config(config(cluster={"Destinations": listed})).clusters["m"].destinations
    assert [d.name for d in destinations] == ["http://127.0.0.1:9/v2/", "http://127.0.0.1:9/v2/#2", "http://b"]
    first = destinations[0]
    assert (first.address, first.scheme, first.host, first.port, first.base_path) == (
        "http://127.0.0.1:9/v2/", "http", "127.0.0.1", 9, "/v2"
    )  # fmt: skip
    ending = load_config(config(cluster={"Destinations": [{"Address": "http://b/apiX/"}]})).clusters["m"]
    assert ending.destinations[0].base_path == "/apiX"
    named = load_config(config(cluster={"Destinations": {"v2": {"Address": "https://b"}}})).clusters["m"]
    assert [(d.name, d.port, d.base_path) for d in named.destinations] == [("v2", 443, "")]


def test_a_client_certificate_with_its_key_in_another_file_loads(tmp_path):
    ca = trustme.CA()
    issued = ca.issue_cert("client.test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    settings = load_config(http_client(ClientCertificate=str(cert), ClientKey=str(key))).clusters["m"].http_client
    assert (settings.client_certificate, settings.client_key) == (str(cert), str(key))
    with pytest.raises(ConfigError, match=f"^{M}.HttpClient.ClientCertificate: '{cert}' and its key do not load"):
        load_config(http_client(ClientCertificate=str(cert)))  # the certificate alone has no private key


def test_warnings_name_the_section_and_the_keys_read(caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror.config")
    load_config(http_client(WebProxy="x", DangerousAcceptAnyServerCertificate=True))
    load_config(config(cluster={"Destinations": [{"Address": "http://127.0.0.1:9", "Host": "a.test"}]}))
    assert [r.getMessage() for r in caplog.records] == [
        f"{M}.HttpClient: keys ['WebProxy'] are ignored; wsgimirror reads DangerousAcceptAnyServerCertificate, "
        "SslProtocols, MaxConnectionsPerServer, CaFile, ClientCertificate, ClientKey, ServerName",
        "cluster 'm': DangerousAcceptAnyServerCertificate is true: its HTTPS destinations are not verified, anyone "
        "on the path can read and change the mirrored traffic",
        f"{M}.Destinations[0].Host: is not read by wsgimirror; a mirror's Host header is its destination's",
    ]
    caplog.clear()
    load_config(http_client(sslprotocols=["Tls12"], MAXCONNECTIONSPERSERVER=2))  # known keys, in any case
    assert caplog.records == []


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("/api/{id:int}", "route constraints, defaults and optional parameters are not implemented; use a plain "
                          "{name} or {\\*\\*name}, got '{id:int}'"),
        ("/api/{id?}", "route constraints, defaults and optional parameters are not implemented"),
        ("/{**rest}/x", "a catch-all parameter must be the last segment, got '/{\\*\\*rest}/x'"),
        ("/api/x{id}", "a parameter must be a whole segment such as {id}, got 'x{id}'"),
        ("/api/{a}{b}", "a parameter must be a whole segment such as {id}, got '{a}{b}'"),
        ("/*/{id}", "'\\*' is only allowed as {\\*\\*name} or at the end of a path, got '/\\*/{id}'"),
    ],
)  # fmt: skip
def test_a_path_template_is_read_as_the_proxies_read_it_or_refused(pattern, message):
    with pytest.raises(ConfigError, match=rf"^{R}.Match.Paths\[0\]: " + message):
        load_config(config(match={"Paths": [pattern]}))
    assert load_config(config(match={"Paths": ["/{**catch-all}"]})).routes[0].paths == ("/{**catch-all}",)


ROUTE_READ = "Order, Match, ClusterId, Metadata, Transforms"
NARROW = "without it this route would mirror requests the proxy's route does not match. Narrow the route with " \
    "Hosts, Paths and Methods instead"  # fmt: skip


@pytest.mark.parametrize(
    "data, message",
    [
        # A key of Match that is not read would widen the route to every path, host or method.
        (config(match={"Path": "/admin"}), f"{R}.Match.Path: YARP's single Path is not read; wsgimirror reads "
                                           f'Paths, an array \\("Paths": \\["/api/{{\\*\\*rest}}"\\]\\): {NARROW}'),
        (config(match={"Host": ["a.com"]}), f"{R}.Match.Host: unknown key; did you mean Hosts\\?"),
        (config(match={"Method": ["GET"]}), f"{R}.Match.Method: unknown key; did you mean Methods\\?"),
        (config(match={"Headers": [{"Name": "X-Canary"}]}), f"{R}.Match.Headers: matching on request headers is "
                                                            f"not implemented: {NARROW}"),
        (config(match={"queryparameters": []}), f"{R}.Match.queryparameters: matching on query parameters is not "
                                                f"implemented: {NARROW}"),
        (config(match={"Statement": "Method = 'GET'"}), f"{R}.Match.Statement: VKProxy's Statement expressions are "
                                                        f"not implemented: {NARROW}"),
        (config(match={"Pathz": ["/a"]}), f"{R}.Match.Pathz: unknown key; did you mean Paths\\?"),
        (config(match={"Verbs": ["GET"]}), f"{R}.Match.Verbs: unknown key; the keys read here are Hosts, Paths, "
                                           "Methods"),
        (config(route={"Metdata": {}}), f"{R}.Metdata: unknown key; did you mean Metadata\\?"),
        (config(route={"Transform": []}), f"{R}.Transform: unknown key; did you mean Transforms\\?"),
        (config(route={"Priority": 1}), f"{R}.Priority: unknown key; the keys read here are {ROUTE_READ}"),
        (config(cluster={"LoadBalancing": "Hash"}), f"{M}.LoadBalancing: unknown key; did you mean "
                                                    "LoadBalancingPolicy\\?"),
        (config(cluster={"Destination": {}}), f"{M}.Destination: unknown key; did you mean Destinations\\?"),
        (config(cluster={"Destinations": [{"Adress": "http://a"}]}), f"{M}.Destinations\\[0\\].Adress: unknown key; "
                                                                     "did you mean Address\\?"),
        (config(cluster={"HttpClient": {}, "HttpClientConfig": {}}), f"{M}: has both HttpClient and "
                                                                     "HttpClientConfig; they are one section"),
        (http_client(CAFiles="x"), f"{M}.HttpClient.CAFiles: unknown key; did you mean CaFile\\?"),
        (metadata(MirrorPercentage=5), f"{M}.Metadata.MirrorPercentage: unknown mirror key; did you mean "
                                       "MirrorPercent\\?"),
        (config(route={"Metadata": {"MirrorClusters": "m"}}), f"{R}.Metadata.MirrorClusters: unknown mirror key; "
                                                              "did you mean MirrorCluster\\?"),
        ({**BASE, "ReverseProxy": {**BASE["ReverseProxy"], "Route": {}}}, "ReverseProxy.Route: unknown key; did "
                                                                          "you mean Routes\\?"),
        (config(Mirror={"RemoveHeader": ["Authorization"]}), "Mirror.RemoveHeader: unknown key; did you mean "
                                                             "RemoveHeaders\\?"),
        (config(Record={"Queue": 1}), "Record.Queue: unknown key; did you mean QueueBytes\\?"),
        (config(Compare={"Examples2": 1}), "Compare.Examples2: unknown key; did you mean Examples\\?"),
    ],
)  # fmt: skip
def test_a_typo_is_refused_never_ignored(data, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(data)


def test_the_proxies_own_keys_load_silently_and_widen_nothing(caplog):
    """Keys about the primary traffic (timeouts, policies, health checks) are accepted and not read."""
    caplog.set_level(logging.WARNING, logger="wsgimirror.config")
    data = config(
        route={"Timeout": "00:00:30", "AuthorizationPolicy": "x", "CorsPolicy": "y", "RouteId": "r", "udpresponses": 1},
        cluster={"HealthCheck": {"Active": {}}, "HttpRequest": {}, "SessionAffinity": {}, "ClusterId": "m",
                 "HttpClientConfig": {"SslProtocols": ["Tls12"]}},
    )  # fmt: skip
    data["ReverseProxy"]["Listen"] = {}
    data["ReverseProxy"]["Sni"] = {}
    data["Logging"] = {}
    loaded = load_config(data)
    assert caplog.records == []
    assert loaded.clusters["m"].http_client.protocols == ("Tls12",)  # VKProxy's name for the section is read


def test_a_file_is_read_as_utf_8_with_or_without_a_byte_order_mark(tmp_path):
    import json

    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(config(route={"Order": 3})).encode())
    assert load_config(str(path)).routes[0].order == 3


# -- the Compare section ------------------------------------------------------------------------------


def compare(**values):
    return config(Compare=values)


def two_clusters(**route_metadata):
    data = config()
    data["ReverseProxy"]["Clusters"]["o"] = {"Destinations": {"d": {"Address": "http://127.0.0.1:9"}}}
    data["ReverseProxy"]["Routes"]["r"]["Metadata"] = {"MirrorCluster": "m,o", **route_metadata}
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (compare(ArrayOrder=1), "Compare.ArrayOrder: must be a string, got number"),
        (compare(MemoryBytes=-1), "Compare.MemoryBytes: must be at least 0, got -1$"),
        (compare(MaxPerSecond=1_000_001), "Compare.MaxPerSecond: must be at most 1000000, got 1000001$"),
        (compare(RelativeThreshold="x"), "Compare.RelativeThreshold: must be a percentage, got string 'x'$"),
        (compare(Log=5), "Compare.Log: must be a string, got number"),
        (compare(Log="/tmp/a\x00b"), r"Compare.Log: must be a file path, got '/tmp/a\\x00b'$"),
        (compare(Log="/tmp/run-{pid}/diff.jsonl"), "Compare.Log: {pid} belongs in the file name, not the directory: "
                                                   "'/tmp/run-{pid}/diff.jsonl'$"),
        (compare(Log="/proc/self/diff.jsonl"), "Compare.Log: directory '/proc/self' is not writable$"),
        (compare(Endpoints=[1]), r"Compare.Endpoints\[0\]: must be path template, got number 1$"),
        (compare(Endpoints=["/a b"]), r"Compare.Endpoints\[0\]: must be a path template such as /users/{id}, got "
                                      "'/a b'$"),
        (compare(Endpoints=["/a\x01"]), r"Compare.Endpoints\[0\]: must be a path template"),
        (compare(IgnoreFields=["body.a b"]), r"Compare.IgnoreFields\[0\]: must be a field path under status, headers "
                                             "or body, got 'body.a b'$"),
        (compare(IgnoreFields=["body.a\x01"]), r"Compare.IgnoreFields\[0\]: must be a field path"),
        (two_clusters(MirrorCompare="m", MirrorBaseline="m"), f"{R}.Metadata.MirrorBaseline: cluster 'm' is also in "
                                                              "MirrorCompare; a baseline runs the app's code and a "
                                                              "compared cluster the new code, so one cluster cannot "
                                                              "be both$"),
        (two_clusters(MirrorBaseline=7), f"{R}.Metadata.MirrorBaseline: must be a string, got number"),
    ],
)  # fmt: skip
def test_each_compare_error_names_its_key_path(data, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(data)


@pytest.mark.parametrize(
    "segment, valid",
    [("{a}", True), ("{id}", True), ("x", True), ("{}", False), ("x{id}", False), ("ab}", False), ("{ab", False),
     ("x{id", False), ("{{a}", False), ("{}a}", False), ("{a{b}", False), ("{ab{}", False), ("{ab}}", False)],
)  # fmt: skip
def test_an_endpoint_placeholder_is_a_whole_segment(segment, valid):
    data = compare(Endpoints=[f"/users/{segment}/orders"])
    if valid:
        assert load_config(data).compare.endpoints == (f"/users/{segment}/orders",)
    else:
        with pytest.raises(ConfigError, match=r"^Compare.Endpoints\[0\]: a placeholder must be a whole segment"):
            load_config(data)


def test_compare_values_that_load(tmp_path):
    fields = ["status", "body[].id", "body[][]", "headers.X-A", "body.*.id"]
    loaded = load_config(compare(IgnoreFields=fields, MemoryBytes=0, MaxPerSecond=1_000_000,
                                 Log=str(tmp_path / "diff-{pid}.jsonl")))  # fmt: skip
    assert loaded.compare.ignore_fields == ("status", "body[].id", "body[][]", "headers.x-a", "body.*.id")
    assert (loaded.compare.memory_bytes, loaded.compare.max_per_second) == (0, 1_000_000)
    assert loaded.compare.log == str(tmp_path / "diff-{pid}.jsonl")
    (route,) = load_config(two_clusters(MirrorCompare="m, ,O", MirrorBaseline=" ")).routes
    assert (route.compare_clusters, route.baseline_cluster) == (("m", "o"), None)
    assert load_config(config(match={"Hosts": ["*[::1]:8080"]})).routes[0].hosts == ("*[::1]:8080",)


def test_compare_keys_load_in_any_case():
    assert load_config(compare(maxbodybytes=5, LOGSECONDS=2)).compare.max_body_bytes == 5


def record(**values):
    return config(Record=values)


@pytest.mark.parametrize(
    "data, message",
    [
        (config(Record=[]), "Record: must be an object, got array$"),
        (record(QueueBytes=4095), "Record.QueueBytes: must be at least 4096, got 4095$"),
        (record(QueueBytes="1"), "Record.QueueBytes: must be an integer, got string '1'$"),
        (record(FlushSeconds=0), "Record.FlushSeconds: must be more than 0 and at most 3600 seconds, got 0$"),
        (record(ChunkBytes=4095), "Record.ChunkBytes: must be at least 4096, got 4095$"),
        (record(MaxBytes=-1), "Record.MaxBytes: must be at least 0, got -1$"),
    ],
)  # fmt: skip
def test_each_record_error_names_its_key_path(data, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(data)


def test_record_values_load_at_their_bounds_and_default_when_absent():
    from wsgimirror.config.model import RecordSettings

    loaded = load_config(record(queuebytes=4096, FlushSeconds=0.5, CHUNKBYTES=4096, MaxBytes=0))
    assert loaded.record == RecordSettings(queue_bytes=4096, flush_seconds=0.5, chunk_bytes=4096, max_bytes=0)
    assert load_config(config()).record == RecordSettings(16 << 20, 1.0, 32 << 20, 1 << 30)


def file_destination(address):
    return config(cluster={"Destinations": [{"Address": address}]})


D0 = f"{M}.Destinations[0].Address"


@pytest.mark.parametrize(
    "address, message",
    [
        ("file://host/tmp/t.gor", "a file address names no host, as in file:///var/lib/traffic.gor: "
                                  "'file://host/tmp/t.gor'"),
        ("file:///tmp/", "must be file:///absolute/path/name.gor, got 'file:///tmp/'"),
        ("file:tmp/t.gor", "must be file:///absolute/path/name.gor, got 'file:tmp/t.gor'"),
        ("file:///tmp/t-{pid}.gor", "only %Y %m %d %H expand in a file address, got 'file:///tmp/t-{pid}.gor'"),
        ("file:///tmp/t-%M.gor", "only %Y %m %d %H expand in a file address, got 'file:///tmp/t-%M.gor'"),
        ("file:///tmp/t-%S.gor", "only %Y %m %d %H expand in a file address, got 'file:///tmp/t-%S.gor'"),
        ("file:///tmp/%Y/t.gor", "%Y %m %d %H expand in the file name only, not the directory: "
                                 "'file:///tmp/%Y/t.gor'"),
        ("file:///no/such/dir/t.gor", "directory '/no/such/dir' does not exist"),
    ],
)  # fmt: skip
def test_each_file_address_error_names_its_key_path(address, message):
    with pytest.raises(ConfigError) as caught:
        load_config(file_destination(address))
    assert str(caught.value) == f"{D0}: {message}"


def test_a_file_address_loads_as_a_destination_that_records(tmp_path):
    named = config(cluster={"Destinations": {"disk": {"Address": f"file://localhost{tmp_path}/t-%Y%m%d%H.gor.gz"}}})
    (destination,) = load_config(named).clusters["m"].destinations
    assert (destination.name, destination.scheme, destination.host, destination.port, destination.base_path) == (
        "disk", "file", "", 0, "",
    )  # fmt: skip
    assert destination.path == f"{tmp_path}/t-%Y%m%d%H.gor.gz" and destination.records
    (unnamed,) = load_config(file_destination(f"file://{tmp_path}/t.gor")).clusters["m"].destinations
    assert (unnamed.name, unnamed.address, unnamed.path) == (f"file://{tmp_path}/t.gor",) * 2 + (f"{tmp_path}/t.gor",)


@pytest.mark.parametrize(
    "value, recorded",
    [("true", True), (" TRUE ", True), ("False", False), ("false", False), (True, True), (False, False)],
)
def test_mirror_record_responses_is_true_or_false_in_any_case_or_a_json_boolean(value, recorded):
    data = config(route={"Metadata": {"MirrorCluster": "m", "MirrorRecordResponses": value}})
    assert load_config(data).routes[0].record_responses is recorded
    assert load_config(config()).routes[0].record_responses is False  # absent: answers are not recorded


@pytest.mark.parametrize("value, shown", [("yes", "string 'yes'"), (1, "number 1")])
def test_any_other_mirror_record_responses_names_its_key_path(value, shown):
    data = config(route={"Metadata": {"MirrorCluster": "m", "MirrorRecordResponses": value}})
    with pytest.raises(ConfigError) as caught:
        load_config(data)
    assert str(caught.value) == f'{R}.Metadata.MirrorRecordResponses: must be "true" or "false", got {shown}'
