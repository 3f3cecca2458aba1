"""The configuration's model: frozen value objects, and the keys and values the format accepts.

Nothing here reads or checks a file; :mod:`.load` builds these objects and :mod:`.sections` the top-level
sections' settings.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass, field

from .transforms import Transform

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
# The load-balancing policies a cluster may name, as the seed spells them; ``send.pick`` implements each.
POLICY_NAMES = ("Hash", "Random", "RoundRobin", "LeastRequests", "PowerOfTwoChoices", "First")
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
    """The top-level ``Record`` section: how file destinations write (see :mod:`wsgimirror.record.recorder`)."""

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


@dataclass(frozen=True)
class Destination:
    """One mirror destination: ``scheme://host:port`` plus a base path prefixed to every mirrored path.

    A ``file:///path/traffic.gor`` destination records its copies to GoReplay files at ``path``
    (see :mod:`wsgimirror.record.recorder`); its host is empty and its port 0.
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
