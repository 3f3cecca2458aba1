"""The keys and the making of the connection pools mirrors are sent through, one per destination address
and TLS settings.
"""

from __future__ import annotations

import typing as t

from .transport import MirrorHTTPConnectionPool, MirrorHTTPSConnectionPool, tls_context

if t.TYPE_CHECKING:
    from ..config.model import Destination, HttpClientSettings, MirrorSettings

PoolKey = tuple[str, str, int, "HttpClientSettings | None"]  # a file destination's: (file, path, 0, None)


def pool_key(destination: Destination, http_client: HttpClientSettings) -> PoolKey:
    if destination.records:
        return (destination.scheme, destination.path, 0, None)
    return (destination.scheme, destination.host, destination.port, http_client)


def connection_pool(destination: Destination, settings: MirrorSettings, http_client: HttpClientSettings) -> t.Any:
    """A new connection pool of a destination's address and TLS settings, holding at most
    ``MaxConnectionsPerServer`` connections (``MaxInFlight`` by default) that rest ``KeepAliveSeconds``."""
    size = http_client.max_connections or settings.max_in_flight
    pool: t.Any
    if destination.scheme == "http":
        pool = MirrorHTTPConnectionPool(destination.host, destination.port, maxsize=size, block=False, retries=False)
    else:
        pool = MirrorHTTPSConnectionPool(
            destination.host,
            destination.port,
            maxsize=size,
            block=False,
            retries=False,
            ssl_context=tls_context(http_client),
            server_hostname=http_client.server_name,
            cert_reqs="CERT_NONE" if http_client.accept_any_certificate else "CERT_REQUIRED",
        )
    pool.keep_alive = settings.keep_alive_connections
    pool.keep_alive_seconds = settings.keep_alive_seconds
    return pool
