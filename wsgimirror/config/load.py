"""Load and validate the seed proxy's JSON configuration into the frozen objects of :mod:`.model`. One idea kept
whole (over 400 lines): ``ReverseProxy``'s routes, clusters, destinations and TLS, checked in the file's order.

The format is the seed proxy's (``ReverseProxy.Routes`` / ``ReverseProxy.Clusters``) plus optional top-level
``Mirror``, ``Record``, ``Compare`` and ``Agent`` sections (:mod:`.sections`), read as .NET reads
``appsettings.json`` (see :mod:`.appsettings`): comments, trailing commas, and keys in any case; cluster ids
are matched in any case too. Everything is checked here, once, at load time; a bad value raises
:class:`~wsgimirror.errors.ConfigError` whose message starts with the dotted path of the key. Nothing is
validated per request.
"""

from __future__ import annotations

import logging
import os
import typing as t
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..util.syntax import has_control, shown, split_host_port
from .appsettings import loads
from .model import (
    CLUSTER_KEYS,
    CLUSTER_OWN_KEYS,
    DEFAULT_PORTS,
    DESTINATION_KEYS,
    DESTINATION_OWN_KEYS,
    HASH_SOURCES,
    HTTP_CLIENT_OWN_KEYS,
    KNOWN_HTTP_CLIENT_KEYS,
    KNOWN_MIRROR_METADATA,
    MATCH_KEYS,
    MATCH_REFUSED,
    MAX_IN_FLIGHT,
    POLICY_NAMES,
    PROXY_KEYS,
    PROXY_OWN_KEYS,
    ROUTE_KEYS,
    ROUTE_OWN_KEYS,
    SAMPLE_BY,
    SSL_PROTOCOLS,
    Cluster,
    Config,
    ConfigSource,
    Destination,
    HttpClientSettings,
    Route,
)
from .rules import (
    _boolean,
    _check_keys,
    _did_you_mean,
    _flag,
    _integer,
    _json_type,
    _object,
    _optional_str,
    _percent,
    _str_list,
    _unknown_keys,
)
from .sections import _agent_settings, _compare_settings, _mirror_settings, _record_settings, _writable_directory
from .transforms import compile_transforms

log = logging.getLogger(__name__)
# A host name as a destination may spell it: letters, digits and the few marks a DNS name or an
# IPv4 address uses. IPv6 literals are checked by urlsplit and come without brackets.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:%")


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
    policy = {name.lower(): name for name in POLICY_NAMES}.get(policy_name.lower())
    if policy is None:
        valid = ", ".join(POLICY_NAMES)
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
        policy=policy,
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


def _check_match_keys(match: t.Mapping[str, t.Any], path: str) -> None:
    for key in match:
        refused = next((why for name, why in MATCH_REFUSED.items() if name.lower() == key.lower()), None)
        if refused is not None:
            raise ConfigError(
                f"{path}.{key}", f"{refused}: without it this route would mirror requests the proxy's route does "
                "not match. Narrow the route with Hosts, Paths and Methods instead"
            )  # fmt: skip
    _check_keys(match, path, MATCH_KEYS)


def _check_mirror_metadata(metadata: t.Mapping[str, t.Any], path: str) -> None:
    """Metadata is free-form, but a key that starts with Mirror is ours: a typo such as ``MirrorPercnt`` would
    mirror every request instead of a share, so it is refused."""
    known = {k.lower() for k in KNOWN_MIRROR_METADATA}
    for key in metadata:
        if key.lower().startswith("mirror") and key.lower() not in known:
            raise ConfigError(f"{path}.{key}", f"unknown mirror key; {_did_you_mean(key, KNOWN_MIRROR_METADATA)}")
