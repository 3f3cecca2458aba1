"""Load and validate the seed proxy's JSON configuration into frozen objects.

The format is the seed proxy's (``ReverseProxy.Routes`` / ``ReverseProxy.Clusters``)
plus an optional top-level ``Mirror`` section with global knobs, read as .NET reads
``appsettings.json`` (see :mod:`.appsettings`): comments, trailing commas, and keys in
any case; cluster ids are matched in any case too. Everything is checked here, once, at
load time; a bad value raises :class:`ConfigError` whose message starts with the dotted
path of the key. Nothing is validated per request.
"""

from __future__ import annotations

import difflib
import logging
import os
import typing as t
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .appsettings import Section, loads
from .balancing import POLICIES, resolve_policy
from .errors import ConfigError
from .syntax import has_control, is_token, shown, split_host_port, wsgi_header_name
from .transforms import PROTECTED_HEADERS, Transform, compile_transforms

log = logging.getLogger(__name__)

# The keys of each object of the seed proxy's format (VKProxy's, and YARP's where they differ). A key that is
# none of them is refused, with a "did you mean" when a known key is close: a one-letter typo must never
# widen what a route mirrors. The proxies' own keys that wsgimirror does not need are accepted and not read.
PROXY_KEYS = ("Routes", "Clusters")
PROXY_OWN_KEYS = ("Listen", "Sni")
ROUTE_KEYS = ("Order", "Match", "ClusterId", "Metadata", "Transforms")
ROUTE_OWN_KEYS = (  # about the primary traffic: how the proxy forwards, limits and authorizes it
    "RouteId", "Timeout", "UdpResponses", "Limit", "AuthorizationPolicy", "RateLimiterPolicy", "OutputCachePolicy",
    "TimeoutPolicy", "CorsPolicy", "MaxRequestBodySize",
)  # fmt: skip
MATCH_KEYS = ("Hosts", "Paths", "Methods")
# Keys of the proxies' Match that narrow a route and that wsgimirror does not evaluate. Ignoring one would
# mirror requests the proxy's route does not take, so a route that has one is refused, saying why.
MATCH_REFUSED = {
    "Path": 'YARP\'s single Path is not read; wsgimirror reads Paths, an array ("Paths": ["/api/{**rest}"])',
    "Headers": "matching on request headers is not implemented",
    "QueryParameters": "matching on query parameters is not implemented",
    "Statement": "VKProxy's Statement expressions are not implemented",
}
CLUSTER_KEYS = ("LoadBalancingPolicy", "Destinations", "Metadata", "HttpClient", "HttpClientConfig")
CLUSTER_OWN_KEYS = ("ClusterId", "HealthCheck", "HttpRequest", "SessionAffinity")
DESTINATION_KEYS = ("Address",)
DESTINATION_OWN_KEYS = ("Health", "Metadata", "Host")
KNOWN_MIRROR_KEYS = (
    "MaxInFlight",
    "MemoryBodyBytes",
    "MaxBodyBytes",
    "ConnectTimeout",
    "Timeout",
    "Executor",
    "RemoveHeaders",
    "BreakerFailures",
    "BreakerSeconds",
    "LoopToken",
    "CaptureMemoryBytes",
    "CaptureDiskBytes",
    "KeepAliveConnections",
    "KeepAliveSeconds",
)
KNOWN_MIRROR_METADATA = (
    "MirrorCluster",
    "MirrorPercent",
    "MirrorSampleBy",
    "MirrorCompare",
    "MirrorBaseline",
    "MirrorRecordResponses",
)
KNOWN_RECORD_KEYS = ("QueueBytes", "FlushSeconds", "ChunkBytes", "MaxBytes")
KNOWN_AGENT_KEYS = ("Mode", "Socket", "IdleSeconds", "BufferBytes", "MetricsBind")
AGENT_MODES = ("embedded", "external", "in-process")
AGENT_ENVIRONMENT = "WSGIMIRROR_AGENT"  # in-process, embedded, or an external agent's socket path: wins over Agent
KNOWN_COMPARE_KEYS = (
    "MaxBodyBytes",
    "MemoryBytes",
    "IgnoreHeaders",
    "IgnoreFields",
    "ArrayOrder",
    "Endpoints",
    "RelativeThreshold",
    "AbsoluteThreshold",
    "Log",
    "LogMaxBytes",
    "LogSeconds",
    "Examples",
    "MaxPerSecond",
    "SensitiveNames",
    "MinSamples",
    "Confidence",
    "LatencyThreshold",
    "AddedFields",
    "StrictTypes",
    "TransferHeaders",
)
ADDED_FIELDS = ("report", "regression")
# Query parameters, cookies, form fields and JSON keys whose values an example masks: a name is sensitive
# when it contains one of these, in any case (so "access_token" and "PHPSESSID" are).
SENSITIVE_NAMES = (
    "pass", "secret", "token", "auth", "session", "sess", "sid", "csrf", "xsrf", "key", "signature", "sig",
    "cred", "otp", "code",
)  # fmt: skip
# Headers that describe the transfer, not the content (they differ between any two servers, connections or
# encodings of one answer): not compared unless Compare.TransferHeaders says otherwise.
TRANSFER_HEADERS = (
    "date", "server", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
    "vary", "via", "age",
)  # fmt: skip
ALWAYS_IGNORED_HEADERS = frozenset(TRANSFER_HEADERS)
ARRAY_ORDERS = ("ordered", "unordered")
SAMPLE_BY = ("random", "key")
EXECUTORS = ("auto", "gevent", "thread")
HASH_SOURCES = ("header", "cookie", "query")
# A cluster's HttpClient section (the seed proxy family's names, plus CaFile, ClientCertificate, ClientKey and
# ServerName). Other keys of that section (EnableMultipleHttp2Connections, WebProxy, ...) are named in a warning.
KNOWN_HTTP_CLIENT_KEYS = (
    "DangerousAcceptAnyServerCertificate",
    "SslProtocols",
    "MaxConnectionsPerServer",
    "CaFile",
    "ClientCertificate",
    "ClientKey",
    "ServerName",
)
# The proxies' other HttpClient keys: named in a warning (the mirrors connect without them), never an error.
HTTP_CLIENT_OWN_KEYS = (
    "EnableMultipleHttp2Connections", "EnableMultipleHttp3Connections", "AllowAutoRedirect", "RequestHeaderEncoding",
    "ResponseHeaderEncoding", "WebProxy",
)  # fmt: skip
SSL_PROTOCOLS = ("Tls12", "Tls13")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_IN_FLIGHT = 65536
LOOP_TOKEN_MIN = 16
# A host name as a destination may spell it: letters, digits and the few marks a DNS name or an
# IPv4 address uses. IPv6 literals are checked by urlsplit and come without brackets.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:%")


@dataclass(frozen=True)
class MirrorSettings:
    """The global knobs of the top-level ``Mirror`` section."""

    max_in_flight: int = 256  # Little's law: 400 mirrors/s to a destination answering in 500 ms, with room
    memory_body_bytes: int = 1 << 20
    max_body_bytes: int = 64 << 20
    connect_timeout: float = 1.0
    timeout: float = 5.0
    executor: str = "auto"
    remove_headers: frozenset[str] = frozenset()
    breaker_failures: int = 5
    breaker_seconds: float = 10.0
    loop_token: str | None = None
    capture_memory_bytes: int = 64 << 20
    capture_disk_bytes: int = 1 << 30
    keep_alive_connections: int = 32  # idle connections kept per destination (nginx's upstream keepalive)
    keep_alive_seconds: float = 60.0  # an idle connection is closed after this long


@dataclass(frozen=True)
class RecordSettings:
    """The top-level ``Record`` section: how file destinations write (see :mod:`.record`)."""

    queue_bytes: int = 16 << 20  # records waiting for the writer thread; past it, dropped as backlog_full
    flush_seconds: float = 1.0
    chunk_bytes: int = 32 << 20
    max_bytes: int = 1 << 30  # per process; past it, dropped as disk_budget


@dataclass(frozen=True)
class AgentSettings:
    """The top-level ``Agent`` section: which process sends the mirrors (see :mod:`wsgimirror.agent`)."""

    mode: str = "embedded"  # the first middleware on a host starts one agent for its config; or external, in-process
    socket: str | None = None  # an external agent's socket; for an embedded one, a path instead of the default
    idle_seconds: float = 300.0  # an embedded agent exits after this long without a client
    buffer_bytes: int = 8 << 20  # copies the app holds while the agent is slow to take them; past it, dropped
    metrics_bind: str | None = None  # the agent's /metrics and /compare, on loopback unless an address is given


@dataclass(frozen=True)
class CompareSettings:
    """The top-level ``Compare`` section: how mirrors' answers are compared with the app's, and logged."""

    max_body_bytes: int = 1 << 20
    memory_bytes: int = 64 << 20  # answer bodies kept at once by the process; past it, compared by hash
    ignore_headers: frozenset[str] = ALWAYS_IGNORED_HEADERS
    ignore_fields: tuple[str, ...] = ()
    array_order: str = "ordered"
    endpoints: tuple[str, ...] = ()
    relative_threshold: float = 20.0
    absolute_threshold: float = 0.03
    log: str | None = None
    log_max_bytes: int = 64 << 20
    log_seconds: float = 10.0
    examples: int = 5
    max_per_second: int = 200
    sensitive_names: tuple[str, ...] = SENSITIVE_NAMES
    min_samples: int = 10  # comparisons each arm needs before a verdict; until then, "learning"
    confidence: float = 0.999  # a regression's one-sided p-value is below 1 - this
    latency_threshold: float = 20.0  # percent slower at p50 before a latency verdict says "slower"
    added_fields: str = "report"  # or "regression"
    strict_types: bool = False  # 12.0 and 12 differ in type (else numbers compare by value)

    def verdicts(self) -> t.Any:
        """What the verdicts depend on (:class:`wsgimirror.compare.verdicts.Settings`)."""
        from .compare.verdicts import Settings

        return Settings(self.relative_threshold, self.absolute_threshold, self.min_samples, self.confidence,
                        self.latency_threshold, self.added_fields)  # fmt: skip


@dataclass(frozen=True)
class Destination:
    """One mirror destination: ``scheme://host:port`` plus a base path prefixed to every mirrored path.

    A ``file:///path/traffic.gor`` destination records its copies to GoReplay files at ``path``
    (see :mod:`.record`); its host is empty and its port 0.
    """

    name: str
    address: str
    scheme: str
    host: str
    port: int
    base_path: str
    path: str = ""  # a file destination's path template

    @property
    def records(self) -> bool:
        return self.scheme == "file"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class HttpClientSettings:
    """How a cluster's destinations are connected to: TLS and the connections per destination."""

    accept_any_certificate: bool = False
    protocols: tuple[str, ...] = ()  # of SSL_PROTOCOLS; empty: the ssl module's defaults
    max_connections: int | None = None  # None: Mirror.MaxInFlight
    ca_file: str | None = None  # None: the system's trusted certificates
    client_certificate: str | None = None
    client_key: str | None = None
    server_name: str | None = None  # None: the destination's host


@dataclass(frozen=True)
class Cluster:
    """A named set of destinations and the policy that picks one of them per mirror."""

    id: str
    policy: str
    destinations: tuple[Destination, ...]
    hash_by: str | None = None
    hash_key: str | None = None
    percent: float = 100.0
    sample_by: str = "random"
    http_client: HttpClientSettings = field(default_factory=HttpClientSettings)


@dataclass(frozen=True)
class Route:
    """Which requests a route matches, and the mirror clusters its requests are copied to."""

    id: str
    order: int
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    cluster_id: str | None = None
    mirror_clusters: tuple[str, ...] = ()
    transforms: tuple[Transform, ...] = ()
    compare_clusters: tuple[str, ...] = ()  # of mirror_clusters: answers compared with the app's
    baseline_cluster: str | None = None  # of mirror_clusters: runs the app's code; its differences are noise
    record_responses: bool = False  # file destinations also record the app's answer (type 2)

    @property
    def compares(self) -> bool:
        return bool(self.compare_clusters or self.baseline_cluster)


@dataclass(frozen=True)
class Config:
    """A validated configuration: routes in the order they are tried, clusters by id, global knobs."""

    routes: tuple[Route, ...]
    clusters: t.Mapping[str, Cluster]
    mirror: MirrorSettings = field(default_factory=MirrorSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    record: RecordSettings = field(default_factory=RecordSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    # The JSON this config was loaded from: the agent loads it again, in its own process.
    source: t.Mapping[str, t.Any] = field(default_factory=dict, compare=False, repr=False)


ConfigSource = t.Union[Config, t.Mapping[str, t.Any], str, "os.PathLike[str]"]


def load_config(source: ConfigSource) -> Config:
    """Return a validated :class:`Config` from a JSON file path, a dict of the same shape, or a Config."""
    if isinstance(source, Config):
        return source
    if isinstance(source, t.Mapping):
        return config_from_dict(source)
    if isinstance(source, (str, os.PathLike)):
        return config_from_dict(_read_json(os.fspath(source)))
    raise ConfigError("config", f"expected a file path, a dict or a Config, got {type(source).__name__}")


def _read_json(path: str) -> t.Any:
    if "\x00" in path:
        raise ConfigError(repr(path), "a file path cannot contain a NUL character")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as err:
        raise ConfigError(path, f"cannot read the file: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"the file is not UTF-8: {err.reason}") from err
    return loads(text, path)


def config_from_dict(data: t.Mapping[str, t.Any]) -> Config:
    root = _object(data, "", "config")
    if "ReverseProxy" not in root:
        raise ConfigError(
            "ReverseProxy", "is missing: the config needs a ReverseProxy section with Routes and Clusters"
        )
    proxy = _object(root.get("ReverseProxy"), "ReverseProxy")
    _check_keys(proxy, "ReverseProxy", PROXY_KEYS, PROXY_OWN_KEYS)
    clusters_raw = _object(proxy.get("Clusters", {}), "ReverseProxy.Clusters")
    clusters = {cid: _cluster(cid, body, f"ReverseProxy.Clusters.{cid}") for cid, body in clusters_raw.items()}
    routes_raw = _object(proxy.get("Routes", {}), "ReverseProxy.Routes")
    routes = [_route(rid, body, f"ReverseProxy.Routes.{rid}", clusters) for rid, body in routes_raw.items()]
    routes.sort(key=lambda route: route.order)  # stable: ties keep file order
    mirror = _mirror_settings(root.get("Mirror", {}), "Mirror")
    compare = _compare_settings(root.get("Compare", {}), "Compare")
    record = _record_settings(root.get("Record", {}), "Record")
    agent = _agent_settings(root.get("Agent", {}), "Agent")
    return Config(routes=tuple(routes), clusters=clusters, mirror=mirror, compare=compare, record=record,
                  agent=agent, source=data)  # fmt: skip


def _route(rid: str, raw: t.Any, path: str, clusters: t.Mapping[str, Cluster]) -> Route:
    body = _object(raw, path)
    _check_keys(body, path, ROUTE_KEYS, ROUTE_OWN_KEYS)
    match = _object(body.get("Match", {}), f"{path}.Match")
    _check_match_keys(match, f"{path}.Match")
    cluster_id = _optional_str(body.get("ClusterId"), f"{path}.ClusterId")
    if cluster_id is not None:
        cluster_id = _cluster_ref(cluster_id, clusters, f"{path}.ClusterId")
    metadata = _object(body.get("Metadata", {}), f"{path}.Metadata")
    _check_mirror_metadata(metadata, f"{path}.Metadata")
    mirrors = _mirror_clusters(metadata.get("MirrorCluster"), f"{path}.Metadata.MirrorCluster", clusters)
    compared = _compared_clusters(metadata.get("MirrorCompare"), f"{path}.Metadata.MirrorCompare", mirrors)
    baseline = _compared_clusters(metadata.get("MirrorBaseline"), f"{path}.Metadata.MirrorBaseline", mirrors)
    if len(baseline) > 1:
        raise ConfigError(f"{path}.Metadata.MirrorBaseline", f"names one cluster at most, got {len(baseline)}")
    if baseline and baseline[0] in compared:
        raise ConfigError(
            f"{path}.Metadata.MirrorBaseline", f"cluster {baseline[0]!r} is also in MirrorCompare; a baseline "
            "runs the app's code and a compared cluster the new code, so one cluster cannot be both"
        )  # fmt: skip
    return Route(
        id=rid,
        order=_integer(body.get("Order", 0), f"{path}.Order"),
        hosts=tuple(_host(h, f"{path}.Match.Hosts[{i}]") for i, h in enumerate(_str_list(match, "Hosts", path))),
        paths=tuple(_path(p, f"{path}.Match.Paths[{i}]") for i, p in enumerate(_str_list(match, "Paths", path))),
        methods=tuple(m.upper() for m in _str_list(match, "Methods", path)),
        cluster_id=cluster_id,
        mirror_clusters=mirrors,
        transforms=compile_transforms(body.get("Transforms"), f"{path}.Transforms"),
        compare_clusters=compared,
        baseline_cluster=baseline[0] if baseline else None,
        record_responses=_flag(metadata.get("MirrorRecordResponses"), f"{path}.Metadata.MirrorRecordResponses"),
    )


def _flag(raw: t.Any, path: str) -> bool:
    """A Metadata switch: "true" or "false" in any case (Metadata values are strings), or a JSON boolean."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ConfigError(path, f'must be "true" or "false", got {_json_type(raw)} {shown(raw)}')


def _compared_clusters(raw: t.Any, path: str, mirrors: tuple[str, ...]) -> tuple[str, ...]:
    """The clusters of the route's ``MirrorCluster`` that MirrorCompare or MirrorBaseline name, spelled as there."""
    value = _optional_str(raw, path)
    names = []
    for name in (n.strip() for n in (value or "").split(",")):
        if not name:
            continue
        spelled = [m for m in mirrors if m.lower() == name.lower()]
        if not spelled:
            raise ConfigError(path, f"cluster {name!r} is not one of the route's MirrorCluster {list(mirrors)}")
        if spelled[0] in names:
            raise ConfigError(path, f"a cluster is named twice in {value!r}")
        names.append(spelled[0])
    return tuple(names)


def _mirror_clusters(raw: t.Any, path: str, clusters: t.Mapping[str, Cluster]) -> tuple[str, ...]:
    value = _optional_str(raw, path)
    names = tuple(_cluster_ref(name.strip(), clusters, path) for name in (value or "").split(",") if name.strip())
    if len(set(names)) != len(names):
        raise ConfigError(path, f"a cluster is named twice in {value!r}")
    return names


def _cluster_ref(name: str, clusters: t.Mapping[str, Cluster], path: str) -> str:
    """The id of the cluster ``name`` refers to, as the Clusters section spells it (ids match in any case)."""
    if name in clusters:
        return name
    for cid in clusters:
        if cid.lower() == name.lower():
            return cid
    raise ConfigError(path, f"cluster {name!r} is not defined in ReverseProxy.Clusters")


def _host(value: str, path: str) -> str:
    host = value.strip().lower()
    if not host:
        raise ConfigError(path, "must not be empty")
    if "*" in host[1:]:
        raise ConfigError(path, f"'*' is only allowed at the start of a host, got {value!r}")
    if has_control(host):
        raise ConfigError(path, f"must not contain spaces or control characters, got {shown(value)}")
    if split_host_port(host.lstrip("*"))[1] == -1:
        raise ConfigError(path, f"the port must be a number from 0 to 99999, got {shown(value)}")
    return host


def _path(value: str, path: str) -> str:
    """A path pattern: exact, a trailing ``*`` for a prefix, or a template of the seed proxy's and YARP's syntax:
    ``{name}`` is one segment and a last ``{**name}`` (or ``{*name}``) the rest of the path."""
    if value != "*" and not value.startswith("/"):
        raise ConfigError(path, f"must start with '/' or be '*', got {value!r}")
    if "{" in value or "}" in value:
        _check_template(value, path)
        return value
    if "*" in value[:-1]:
        raise ConfigError(path, f"'*' is only allowed at the end of a path, got {value!r}")
    return value


def _check_template(value: str, path: str) -> None:
    segments = value.split("/")
    for i, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            if "*" in segment:
                raise ConfigError(path, f"'*' is only allowed as {{**name}} or at the end of a path, got {value!r}")
            continue
        if not (segment.startswith("{") and segment.endswith("}")) or segment.count("{") != 1:
            raise ConfigError(path, f"a parameter must be a whole segment such as {{id}}, got {segment!r}")
        name = segment[1:-1]
        catch_all = name.startswith("*")
        name = name.lstrip("*")
        if catch_all and i != len(segments) - 1:
            raise ConfigError(path, f"a catch-all parameter must be the last segment, got {value!r}")
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ConfigError(
                path, f"route constraints, defaults and optional parameters are not implemented; use a plain "
                f"{{name}} or {{**name}}, got {segment!r}"
            )  # fmt: skip


def _cluster(cid: str, raw: t.Any, path: str) -> Cluster:
    body = _object(raw, path)
    _check_keys(body, path, CLUSTER_KEYS, CLUSTER_OWN_KEYS)
    policy_name = _optional_str(body.get("LoadBalancingPolicy"), f"{path}.LoadBalancingPolicy") or "Random"
    policy = resolve_policy(policy_name)
    if policy is None:
        valid = ", ".join(cls.name for cls in POLICIES.values())
        raise ConfigError(f"{path}.LoadBalancingPolicy", f"unknown policy {policy_name!r}; valid policies: {valid}")
    metadata = _object(body.get("Metadata", {}), f"{path}.Metadata")
    _check_mirror_metadata(metadata, f"{path}.Metadata")
    hash_by, hash_key = _hash_source(metadata, f"{path}.Metadata")
    sample_by = _optional_str(metadata.get("MirrorSampleBy"), f"{path}.Metadata.MirrorSampleBy") or "random"
    if sample_by.lower() not in SAMPLE_BY:
        raise ConfigError(
            f"{path}.Metadata.MirrorSampleBy", f"must be one of {', '.join(SAMPLE_BY)}, got {sample_by!r}"
        )
    return Cluster(
        id=cid,
        policy=policy.name,
        destinations=_destinations(body.get("Destinations"), f"{path}.Destinations"),
        hash_by=hash_by,
        hash_key=hash_key,
        percent=_percent(metadata.get("MirrorPercent", 100), f"{path}.Metadata.MirrorPercent"),
        sample_by=sample_by.lower(),
        http_client=_http_client(*_http_client_section(body, path), cid),
    )


def _http_client_section(cluster: t.Mapping[str, t.Any], path: str) -> tuple[t.Any, str]:
    """The cluster's ``HttpClient`` (YARP's name) or ``HttpClientConfig`` (VKProxy's), and its key path."""
    names = [key for key in ("HttpClient", "HttpClientConfig") if key in cluster]
    if len(names) == 2:
        raise ConfigError(path, "has both HttpClient and HttpClientConfig; they are one section, keep one")
    name = names[0] if names else "HttpClient"
    return cluster.get(name, {}), f"{path}.{name}"


def _http_client(raw: t.Any, path: str, cluster_id: str) -> HttpClientSettings:
    """The cluster's ``HttpClient`` section; every file it names is read and parsed now."""
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_HTTP_CLIENT_KEYS, HTTP_CLIENT_OWN_KEYS)
    ignored = _unknown_keys(body, KNOWN_HTTP_CLIENT_KEYS)
    if ignored:
        log.warning("%s: keys %s are ignored; wsgimirror reads %s", path, ignored, ", ".join(KNOWN_HTTP_CLIENT_KEYS))
    accept_any = _boolean(body.get("DangerousAcceptAnyServerCertificate", False),
                          f"{path}.DangerousAcceptAnyServerCertificate")  # fmt: skip
    if accept_any:
        log.warning(
            "cluster %r: DangerousAcceptAnyServerCertificate is true: its HTTPS destinations are not verified, "
            "anyone on the path can read and change the mirrored traffic", cluster_id
        )  # fmt: skip
    max_connections = body.get("MaxConnectionsPerServer")
    settings = HttpClientSettings(
        accept_any_certificate=accept_any,
        protocols=_ssl_protocols(body.get("SslProtocols"), f"{path}.SslProtocols"),
        max_connections=None if max_connections is None else _integer(
            max_connections, f"{path}.MaxConnectionsPerServer", minimum=1, maximum=MAX_IN_FLIGHT),
        ca_file=_optional_str(body.get("CaFile"), f"{path}.CaFile"),
        client_certificate=_optional_str(body.get("ClientCertificate"), f"{path}.ClientCertificate"),
        client_key=_optional_str(body.get("ClientKey"), f"{path}.ClientKey"),
        server_name=_server_name(body.get("ServerName"), f"{path}.ServerName"),
    )  # fmt: skip
    _check_tls_files(settings, path)
    return settings


def _boolean(value: t.Any, path: str) -> bool:
    """A JSON boolean, or the strings "true" and "false" (.NET's configuration stores values as strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(path, f"must be true or false, got {_json_type(value)} {shown(value)}")


def _ssl_protocols(raw: t.Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [p.strip() for p in raw.split(",") if p.strip()] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError(path, f"must be a non-empty array of {' and '.join(SSL_PROTOCOLS)}, got {shown(raw)}")
    protocols = []
    for i, item in enumerate(items):
        names = {name.lower(): name for name in SSL_PROTOCOLS}
        if not isinstance(item, str) or item.lower() not in names:
            raise ConfigError(f"{path}[{i}]", f"must be one of {', '.join(SSL_PROTOCOLS)}, got {shown(item)}")
        protocols.append(names[item.lower()])
    return tuple(sorted(set(protocols)))


def _server_name(raw: t.Any, path: str) -> str | None:
    name = _optional_str(raw, path)
    if name is not None and (not name or not set(name) <= _HOST_CHARS):
        raise ConfigError(path, f"must be a host name, got {shown(name)}")
    return name


def _check_tls_files(settings: HttpClientSettings, path: str) -> None:
    """Read every certificate and key file now, so a bad one fails the load, not the first mirror."""
    import ssl

    for key, name in (("CaFile", settings.ca_file), ("ClientCertificate", settings.client_certificate),
                      ("ClientKey", settings.client_key)):  # fmt: skip
        if name is not None:
            try:
                with open(name, "rb") as fh:
                    pem = fh.read()
            except OSError as err:
                raise ConfigError(f"{path}.{key}", f"cannot read {name!r}: {err.strerror or err}") from err
            if b"-----BEGIN " not in pem:
                raise ConfigError(f"{path}.{key}", f"{name!r} is not a PEM file")
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError(f"{path}.CaFile", f"{settings.ca_file!r} holds no usable certificate: {err}") from err
    if settings.client_key is not None and settings.client_certificate is None:
        raise ConfigError(f"{path}.ClientKey", "needs ClientCertificate")
    if settings.client_certificate is not None:
        try:
            context.load_cert_chain(settings.client_certificate, settings.client_key)
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError(
                f"{path}.ClientCertificate",
                f"{settings.client_certificate!r} and its key do not load as a certificate and private key: {err}",
            ) from err


def _percent(value: t.Any, path: str) -> float:
    """A share from 0 to 100; strings are accepted too, as the seed proxy's Metadata values are strings."""
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            raise ConfigError(path, f"must be a number from 0 to 100, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number from 0 to 100, got {_json_type(value)} {shown(value)}")
    if not 0 <= value <= 100:
        raise ConfigError(path, f"must be a number from 0 to 100, got {value}")
    return float(value)


def _hash_source(metadata: t.Mapping[str, t.Any], path: str) -> tuple[str | None, str | None]:
    hash_by = _optional_str(metadata.get("HashBy"), f"{path}.HashBy")
    key = _optional_str(metadata.get("Key"), f"{path}.Key")
    if hash_by is None and key is None:
        return None, None
    if hash_by is None:
        hash_by = "header"
    if hash_by.lower() not in HASH_SOURCES:
        raise ConfigError(f"{path}.HashBy", f"must be one of {', '.join(HASH_SOURCES)}, got {hash_by!r}")
    if not key:
        raise ConfigError(f"{path}.Key", f"is required when HashBy is {hash_by!r}")
    return hash_by.lower(), key


def _destinations(raw: t.Any, path: str) -> tuple[Destination, ...]:
    items: list[tuple[str | None, t.Any, str]]
    if isinstance(raw, t.Mapping):
        items = [(name, body, f"{path}.{name}") for name, body in _object(raw, path).items()]
    elif isinstance(raw, list):
        items = [(None, body, f"{path}[{i}]") for i, body in enumerate(raw)]
    else:
        raise ConfigError(path, f"must be a list or an object of destinations, got {_json_type(raw)}")
    if not items:
        raise ConfigError(path, "must name at least one destination")
    destinations = [_destination(name, body, item_path) for name, body, item_path in items]
    return tuple(_unique_names(destinations))


def _unique_names(destinations: list[Destination]) -> t.Iterator[Destination]:
    """Name list destinations by address (``#2`` on repeats), so hashing survives reordering."""
    seen: dict[str, int] = {}
    for dest in destinations:
        count = seen[dest.name] = seen.get(dest.name, 0) + 1
        yield dest if count == 1 else Destination(**{**dest.__dict__, "name": f"{dest.name}#{count}"})


def _destination(name: str | None, raw: t.Any, path: str) -> Destination:
    body = _object(raw, path)
    _check_keys(body, path, DESTINATION_KEYS, DESTINATION_OWN_KEYS)
    if "Host" in body:
        log.warning("%s.Host: is not read by wsgimirror; a mirror's Host header is its destination's", path)
    address = _optional_str(body.get("Address"), f"{path}.Address")
    if not address:
        raise ConfigError(f"{path}.Address", "is required")
    if has_control(address):  # urlsplit would silently drop tabs and line breaks
        raise ConfigError(f"{path}.Address", f"must not contain spaces or control characters: {shown(address)}")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"{path}.Address", f"is not a valid URL: {err}") from err
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _file_destination(name, address, parts.netloc, parts.path, f"{path}.Address")
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"{path}.Address", f"scheme must be http, https or file, got {parts.scheme!r}")
    if not parts.hostname:
        raise ConfigError(f"{path}.Address", f"has no host: {address!r}")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{path}.Address", f"must not carry a query, fragment or user info: {address!r}")
    if not set(parts.hostname) <= _HOST_CHARS:
        raise ConfigError(f"{path}.Address", f"the host has characters a host name cannot have: {shown(address)}")
    return Destination(
        name=name if name is not None else address,
        address=address,
        scheme=scheme,
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        base_path=parts.path.rstrip("/"),
    )


def _file_destination(name: str | None, address: str, netloc: str, file_path: str, path: str) -> Destination:
    """``file:///absolute/path/traffic.gor[.gz]``: its directory must exist and be writable now."""
    if netloc not in ("", "localhost"):
        raise ConfigError(path, f"a file address names no host, as in file:///var/lib/traffic.gor: {address!r}")
    if not file_path.startswith("/") or file_path.endswith("/"):
        raise ConfigError(path, f"must be file:///absolute/path/name.gor, got {address!r}")
    if "{pid}" in file_path or any(mark in file_path for mark in ("%M", "%S")):
        raise ConfigError(path, f"only %Y %m %d %H expand in a file address, got {address!r}")
    directory = os.path.dirname(file_path)
    if "%" in directory:
        raise ConfigError(path, f"%Y %m %d %H expand in the file name only, not the directory: {address!r}")
    _writable_directory(directory, path)
    return Destination(
        name=name if name is not None else address, address=address, scheme="file", host="", port=0, base_path="",
        path=file_path,
    )  # fmt: skip


def _record_settings(raw: t.Any, path: str) -> RecordSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_RECORD_KEYS)
    defaults = RecordSettings()
    return RecordSettings(
        queue_bytes=_integer(body.get("QueueBytes", defaults.queue_bytes), f"{path}.QueueBytes", minimum=4096),
        flush_seconds=_seconds(body.get("FlushSeconds", defaults.flush_seconds), f"{path}.FlushSeconds"),
        chunk_bytes=_integer(body.get("ChunkBytes", defaults.chunk_bytes), f"{path}.ChunkBytes", minimum=4096),
        max_bytes=_integer(body.get("MaxBytes", defaults.max_bytes), f"{path}.MaxBytes", minimum=0),
    )


def _mirror_settings(raw: t.Any, path: str) -> MirrorSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_MIRROR_KEYS)
    defaults = MirrorSettings()
    executor = _optional_str(body.get("Executor"), f"{path}.Executor") or defaults.executor
    if executor.lower() not in EXECUTORS:
        raise ConfigError(f"{path}.Executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return MirrorSettings(
        max_in_flight=_integer(
            body.get("MaxInFlight", defaults.max_in_flight), f"{path}.MaxInFlight", minimum=1, maximum=MAX_IN_FLIGHT
        ),
        memory_body_bytes=_integer(
            body.get("MemoryBodyBytes", defaults.memory_body_bytes), f"{path}.MemoryBodyBytes", minimum=0
        ),
        max_body_bytes=_integer(body.get("MaxBodyBytes", defaults.max_body_bytes), f"{path}.MaxBodyBytes", minimum=0),
        connect_timeout=_seconds(body.get("ConnectTimeout", defaults.connect_timeout), f"{path}.ConnectTimeout"),
        timeout=_seconds(body.get("Timeout", defaults.timeout), f"{path}.Timeout"),
        executor=executor.lower(),
        remove_headers=_remove_headers(body.get("RemoveHeaders", []), f"{path}.RemoveHeaders"),
        breaker_failures=_integer(
            body.get("BreakerFailures", defaults.breaker_failures), f"{path}.BreakerFailures", minimum=0
        ),
        breaker_seconds=_seconds(body.get("BreakerSeconds", defaults.breaker_seconds), f"{path}.BreakerSeconds"),
        loop_token=_loop_token(body.get("LoopToken"), f"{path}.LoopToken"),
        capture_memory_bytes=_integer(
            body.get("CaptureMemoryBytes", defaults.capture_memory_bytes), f"{path}.CaptureMemoryBytes", minimum=0
        ),
        capture_disk_bytes=_integer(
            body.get("CaptureDiskBytes", defaults.capture_disk_bytes), f"{path}.CaptureDiskBytes", minimum=0
        ),
        keep_alive_connections=_integer(
            body.get("KeepAliveConnections", defaults.keep_alive_connections), f"{path}.KeepAliveConnections",
            minimum=0, maximum=MAX_IN_FLIGHT,
        ),
        keep_alive_seconds=_seconds(body.get("KeepAliveSeconds", defaults.keep_alive_seconds),
                                    f"{path}.KeepAliveSeconds"),
    )  # fmt: skip


def _unknown_keys(body: t.Mapping[str, t.Any], known: t.Sequence[str]) -> list[str]:
    """The keys of a section that are none of ``known``, in any case, sorted."""
    lowered = {k.lower() for k in known}
    return sorted(key for key in body if key.lower() not in lowered)


def _check_keys(body: t.Mapping[str, t.Any], path: str, read: t.Sequence[str], own: t.Sequence[str] = ()) -> None:
    """Refuse the first key that is neither read by wsgimirror nor one of the proxy's ``own`` keys."""
    for key in _unknown_keys(body, (*read, *own)):
        raise ConfigError(f"{path}.{key}", f"unknown key; {_did_you_mean(key, read)}")


def _did_you_mean(key: str, known: t.Sequence[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"did you mean {by_lower[close[0]]}?"
    return f"the keys read here are {', '.join(known)}"


def _check_match_keys(match: t.Mapping[str, t.Any], path: str) -> None:
    for key in match:
        refused = next((why for name, why in MATCH_REFUSED.items() if name.lower() == key.lower()), None)
        if refused is not None:
            raise ConfigError(
                f"{path}.{key}", f"{refused}: without it this route would mirror requests the proxy's route does "
                "not match. Narrow the route with Hosts, Paths and Methods instead"
            )  # fmt: skip
    _check_keys(match, path, MATCH_KEYS)


def _compare_settings(raw: t.Any, path: str) -> CompareSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_COMPARE_KEYS)
    defaults = CompareSettings()
    order = _optional_str(body.get("ArrayOrder"), f"{path}.ArrayOrder") or defaults.array_order
    if order.lower() not in ARRAY_ORDERS:
        raise ConfigError(f"{path}.ArrayOrder", f"must be one of {', '.join(ARRAY_ORDERS)}, got {order!r}")
    extra_headers = _header_names(body.get("IgnoreHeaders", []), f"{path}.IgnoreHeaders")
    transfer = _header_names(body.get("TransferHeaders", list(TRANSFER_HEADERS)), f"{path}.TransferHeaders")
    added = (_optional_str(body.get("AddedFields"), f"{path}.AddedFields") or defaults.added_fields).lower()
    if added not in ADDED_FIELDS:
        raise ConfigError(f"{path}.AddedFields", f"must be one of {', '.join(ADDED_FIELDS)}, got {added!r}")
    confidence = round(_threshold(body.get("Confidence", defaults.confidence * 100), f"{path}.Confidence") / 100, 9)
    if not 0.5 <= confidence < 1:
        raise ConfigError(
            f"{path}.Confidence", f"must be at least 50 and below 100 (percent), got {confidence * 100:g}"
        )
    return CompareSettings(
        max_body_bytes=_integer(body.get("MaxBodyBytes", defaults.max_body_bytes), f"{path}.MaxBodyBytes", minimum=0),
        memory_bytes=_integer(body.get("MemoryBytes", defaults.memory_bytes), f"{path}.MemoryBytes", minimum=0),
        ignore_headers=frozenset(transfer | extra_headers),
        ignore_fields=_field_patterns(body.get("IgnoreFields", []), f"{path}.IgnoreFields"),
        array_order=order.lower(),
        endpoints=_endpoint_templates(body.get("Endpoints", []), f"{path}.Endpoints"),
        relative_threshold=_threshold(body.get("RelativeThreshold", defaults.relative_threshold),
                                      f"{path}.RelativeThreshold"),
        absolute_threshold=_threshold(body.get("AbsoluteThreshold", defaults.absolute_threshold),
                                      f"{path}.AbsoluteThreshold"),
        log=_log_path(body.get("Log"), f"{path}.Log"),
        log_max_bytes=_integer(body.get("LogMaxBytes", defaults.log_max_bytes), f"{path}.LogMaxBytes",
                               minimum=4096),
        log_seconds=_seconds(body.get("LogSeconds", defaults.log_seconds), f"{path}.LogSeconds"),
        examples=_integer(body.get("Examples", defaults.examples), f"{path}.Examples", minimum=0, maximum=1000),
        max_per_second=_integer(body.get("MaxPerSecond", defaults.max_per_second), f"{path}.MaxPerSecond",
                                minimum=1, maximum=1_000_000),
        sensitive_names=_sensitive_names(body.get("SensitiveNames", list(SENSITIVE_NAMES)),
                                         f"{path}.SensitiveNames"),
        min_samples=_integer(body.get("MinSamples", defaults.min_samples), f"{path}.MinSamples", minimum=1,
                             maximum=1_000_000),
        confidence=confidence,
        latency_threshold=_threshold(body.get("LatencyThreshold", defaults.latency_threshold),
                                     f"{path}.LatencyThreshold"),
        added_fields=added,
        strict_types=_boolean(body.get("StrictTypes", defaults.strict_types), f"{path}.StrictTypes"),
    )  # fmt: skip


def _header_names(raw: t.Any, path: str) -> set[str]:
    names = set()
    for where, name in _string_items(raw, path, "header names"):
        if not is_token(name):
            raise ConfigError(where, f"{shown(name)} is not a header name")
        names.add(name.lower())
    return names


def _sensitive_names(raw: t.Any, path: str) -> tuple[str, ...]:
    names = []
    for where, name in _string_items(raw, path, "names"):
        if not is_token(name):
            raise ConfigError(where, f"must be a name such as token or session, got {shown(name)}")
        names.append(name.lower())
    return tuple(names)


def _string_items(raw: t.Any, path: str, what: str) -> t.Iterator[tuple[str, str]]:
    """(path of the item, the item) for an array of non-empty strings."""
    if not isinstance(raw, list):
        raise ConfigError(path, f"must be an array of {what}, got {_json_type(raw)}")
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}[{i}]", f"must be {what[:-1]}, got {_json_type(item)} {shown(item)}")
        yield f"{path}[{i}]", item.strip()


def _field_patterns(raw: t.Any, path: str) -> tuple[str, ...]:
    patterns = []
    for where, pattern in _string_items(raw, path, "field paths"):
        root = pattern.split(".", 1)[0].split("[", 1)[0]
        if root not in ("status", "headers", "body") or has_control(pattern) or " " in pattern:
            raise ConfigError(where, f"must be a field path under status, headers or body, got {pattern!r}")
        patterns.append(pattern.lower() if root == "headers" else pattern)
    return tuple(patterns)


def _endpoint_templates(raw: t.Any, path: str) -> tuple[str, ...]:
    templates = []
    for where, template in _string_items(raw, path, "path templates"):
        if not template.startswith("/") or has_control(template) or " " in template or "?" in template:
            raise ConfigError(where, f"must be a path template such as /users/{{id}}, got {template!r}")
        for segment in template.split("/"):
            if ("{" in segment or "}" in segment) and not _is_placeholder(segment):
                raise ConfigError(where, f"a placeholder must be a whole segment such as {{id}}, got {segment!r}")
        templates.append(template)
    return tuple(templates)


def _is_placeholder(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}" and "{" not in segment[1:-1] \
        and "}" not in segment[1:-1]  # fmt: skip


def _threshold(value: t.Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a percentage, got {_json_type(value)} {shown(value)}")
    if not 0 <= value <= 100:
        raise ConfigError(path, f"must be from 0 to 100, got {value}")
    return float(value)


def _agent_settings(raw: t.Any, path: str) -> AgentSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_AGENT_KEYS)
    defaults = AgentSettings()
    mode = (_optional_str(body.get("Mode"), f"{path}.Mode") or defaults.mode).lower()
    if mode not in AGENT_MODES:
        raise ConfigError(f"{path}.Mode", f"must be one of {', '.join(AGENT_MODES)}, got {body.get('Mode')!r}")
    socket = _optional_str(body.get("Socket"), f"{path}.Socket")
    if socket is not None and (not socket.startswith("/") or "\x00" in socket or len(socket.encode()) > 100):
        raise ConfigError(f"{path}.Socket", f"must be an absolute path of at most 100 bytes, got {shown(socket)}")
    if mode == "external" and socket is None:
        raise ConfigError(f"{path}.Socket", "is required when Mode is external: the agent's socket path")
    bind = _optional_str(body.get("MetricsBind"), f"{path}.MetricsBind")
    if bind is not None and not _is_bind(bind):
        raise ConfigError(f"{path}.MetricsBind", f"must be PORT or HOST:PORT, got {shown(bind)}")
    return AgentSettings(
        mode=mode,
        socket=socket,
        idle_seconds=_seconds(body.get("IdleSeconds", defaults.idle_seconds), f"{path}.IdleSeconds"),
        buffer_bytes=_integer(body.get("BufferBytes", defaults.buffer_bytes), f"{path}.BufferBytes", minimum=65536),
        metrics_bind=bind,
    )


def _is_bind(value: str) -> bool:
    """``PORT`` or ``HOST:PORT`` (an IPv6 host in brackets)."""
    host, colon, port = value.rpartition(":")
    return port.isdigit() and int(port) < 65536 and (not colon or bool(host.strip("[]")))


def _log_path(raw: t.Any, path: str) -> str | None:
    """The diff log's path: its directory must exist and be writable now, not at the first difference."""
    value = _optional_str(raw, path)
    if value is None:
        return None
    if not value.strip() or "\x00" in value:
        raise ConfigError(path, f"must be a file path, got {shown(value)}")
    directory = os.path.dirname(os.path.abspath(value))
    if "{pid}" in directory:
        raise ConfigError(path, f"{{pid}} belongs in the file name, not the directory: {shown(value)}")
    _writable_directory(directory, path)
    return value


def _writable_directory(directory: str, path: str) -> None:
    """A file wsgimirror writes goes there: the directory must exist and be writable at load, not at the first write."""
    if not os.path.isdir(directory):
        raise ConfigError(path, f"directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(path, f"directory {directory!r} is not writable")


def _loop_token(raw: t.Any, path: str) -> str | None:
    """The shared secret that marks this deployment's mirrors; a header value of at least 16 characters."""
    token = _optional_str(raw, path)
    if token is None:
        return None
    if len(token) < LOOP_TOKEN_MIN or has_control(token) or not token.isascii():
        raise ConfigError(
            path, f"must be a secret of at least {LOOP_TOKEN_MIN} printable ASCII characters without spaces"
        )
    return token


def _remove_headers(raw: t.Any, path: str) -> frozenset[str]:
    if not isinstance(raw, list):
        raise ConfigError(path, f"must be an array of header names, got {_json_type(raw)}")
    names = set()
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}[{i}]", f"must be a header name, got {_json_type(name)} {shown(name)}")
        problem = wsgi_header_name(name.strip())
        if problem is not None:
            raise ConfigError(f"{path}[{i}]", problem)
        if name.strip().lower() in PROTECTED_HEADERS:
            raise ConfigError(f"{path}[{i}]", f"{name!r} is set by wsgimirror and cannot be removed")
        names.add(name.strip().lower())
    return frozenset(names)


def _check_mirror_metadata(metadata: t.Mapping[str, t.Any], path: str) -> None:
    """Metadata is free-form, but a key that starts with Mirror is ours: a typo such as ``MirrorPercnt`` would
    mirror every request instead of a share, so it is refused."""
    known = {k.lower() for k in KNOWN_MIRROR_METADATA}
    for key in metadata:
        if key.lower().startswith("mirror") and key.lower() not in known:
            raise ConfigError(f"{path}.{key}", f"unknown mirror key; {_did_you_mean(key, KNOWN_MIRROR_METADATA)}")


# -- small typed readers: each names the path and the JSON type it got ------------------------


def _json_type(value: t.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, t.Mapping):
        return "object"
    return type(value).__name__


def _object(value: t.Any, path: str, what: str = "") -> Section:
    """A JSON object with case-insensitive keys, as .NET's configuration binder reads one."""
    if not isinstance(value, t.Mapping):
        raise ConfigError(path or what, f"must be an object, got {_json_type(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path or what, f"keys must be strings, got {_json_type(key)} {shown(key)}")
    return value if isinstance(value, Section) else Section(value, path or what)


def _optional_str(value: t.Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(path, f"must be a string, got {_json_type(value)}")


def _str_list(match: t.Mapping[str, t.Any], key: str, route_path: str) -> list[str]:
    path = f"{route_path}.Match.{key}"
    value = match.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, f"must be an array of strings, got {_json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", f"must be a string, got {_json_type(item)}")
    return value


def _integer(value: t.Any, path: str, minimum: int | None = None, maximum: int = 1 << 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, got {_json_type(value)} {shown(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(path, f"must be at most {maximum}, got {shown(value)}")
    return value


def _seconds(value: t.Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number of seconds, got {_json_type(value)} {shown(value)}")
    if not 0 < value <= 3600:
        raise ConfigError(path, f"must be more than 0 and at most 3600 seconds, got {value}")
    return float(value)
