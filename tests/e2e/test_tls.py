"""HTTPS destinations: real TLS servers on 127.0.0.1, certificates made by trustme at test time.

Each destination counts its handshakes (one per connection) and the connections that
resumed an earlier TLS session.
"""

from __future__ import annotations

import logging
import os
import ssl

import pytest
import trustme
from gevent.pywsgi import WSGIHandler, WSGIServer

from tests.helpers import Client, mirror_config, wait_until
from wsgimirror import ConfigError, load_config
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"real:" + environ["wsgi.input"].read()]


class TlsSink:
    """An HTTPS mirror destination recording bodies, handshakes and resumed sessions."""

    def __init__(self, context: ssl.SSLContext, close: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.handshakes = 0
        self.resumed = 0
        sink = self

        class Handler(WSGIHandler):
            def handle(self) -> None:
                sink.handshakes += 1
                sink.resumed += bool(self.socket.session_reused)
                super().handle()

        def record(environ, start_response):
            self.bodies.append(environ["wsgi.input"].read())
            start_response("200 OK", [("Content-Length", "2")] + ([("Connection", "close")] if close else []))
            return [b"ok"]

        self._server = WSGIServer(("127.0.0.1", 0), record, log=None, error_log=None, handler_class=Handler,
                                  ssl_context=context)  # fmt: skip
        self._server.start()
        self.address = f"https://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.stop(timeout=1)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_sink(ca):
    """A factory: ``tls_sink(names=..., client_ca=..., maximum=...)`` starts an HTTPS destination."""
    sinks = []

    def start(names=("127.0.0.1",), client_ca=None, maximum=None, close=False) -> TlsSink:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(context)
        if client_ca is not None:  # mutual TLS: a client certificate is required
            context.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(context)
        if maximum is not None:
            context.maximum_version = maximum
        sink = TlsSink(context, close)
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        sink.stop()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def tls_config(address: str, **http_client) -> dict:
    config = mirror_config(address, BreakerFailures=0)
    config["ReverseProxy"]["Clusters"]["m"]["HttpClient"] = http_client
    return config


def mirror_once(server, mw, count: int = 1) -> dict:
    """Send ``count`` requests through the wrapped app, one mirror at a time (each ends before the next
    request), checking the real answers; returns the stats."""

    def ended() -> int:
        return mw.stats()["succeeded"] + mw.stats()["failed"]

    with Client(server(mw)) as client:
        for i in range(count):
            before = ended()
            assert client.request("POST", f"/{i}", body=b"x%d" % i).body == b"real:x%d" % i
            wait_until(lambda before=before: ended() == before + 1, 10, "the mirror to end")
    return mw.stats()


def test_a_destination_trusted_through_ca_file_gets_the_mirror(server, tls_sink, ca_file):
    sink = tls_sink()
    stats = mirror_once(server, MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file)))
    assert (stats["succeeded"], sink.bodies) == (1, [b"x0"])


def test_an_untrusted_destination_is_a_tls_error_logged_once_and_the_client_never_notices(server, tls_sink, caplog):
    sink = tls_sink()
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        stats = mirror_once(server, MirrorMiddleware(app, tls_config(sink.address)), count=3)
    assert stats["failures"] == {"tls_error": 3} and sink.bodies == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert sink.address in line and "tls_error: unable to get local issuer certificate" in line


def test_dangerous_accept_any_server_certificate_skips_verification_with_a_warning(server, tls_sink, caplog):
    sink = tls_sink()
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        mw = MirrorMiddleware(app, tls_config(sink.address, DangerousAcceptAnyServerCertificate=True))
    assert "cluster 'm': DangerousAcceptAnyServerCertificate is true" in caplog.text
    assert mirror_once(server, mw)["succeeded"] == 1 and sink.bodies == [b"x0"]


def test_a_certificate_for_another_name_fails_until_server_name_names_it(server, tls_sink, ca_file):
    sink = tls_sink(names=("mirror.test",))
    stats = mirror_once(server, MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file)))
    assert stats["failures"] == {"tls_error": 1}
    stats = mirror_once(
        server, MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file, ServerName="mirror.test"))
    )
    assert stats["succeeded"] == 1 and sink.bodies == [b"x0"]


def test_mutual_tls_is_refused_without_the_client_certificate_and_accepted_with_it(
    server, tls_sink, ca_file, tmp_path, caplog
):
    clients = trustme.CA()
    sink = tls_sink(client_ca=clients)
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        stats = mirror_once(server, MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file)))
    assert stats["failures"] == {"tls_error": 1} and sink.bodies == []
    (line,) = [r.getMessage() for r in caplog.records]  # TLS 1.3: the server's alert comes after the handshake
    assert line.endswith("is failing: tls_error: TLSV13_ALERT_CERTIFICATE_REQUIRED"), line
    issued = clients.issue_cert("wsgimirror.client")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    config = tls_config(sink.address, CaFile=ca_file, ClientCertificate=str(cert), ClientKey=str(key))
    assert mirror_once(server, MirrorMiddleware(app, config))["succeeded"] == 1 and sink.bodies == [b"x0"]


@pytest.mark.parametrize(
    "protocols, outcome", [(["Tls13"], "failed"), (["Tls12"], "succeeded"), ("Tls12, Tls13", "succeeded")]
)
def test_ssl_protocols_against_a_tls_1_2_only_destination(server, tls_sink, ca_file, protocols, outcome, caplog):
    sink = tls_sink(maximum=ssl.TLSVersion.TLSv1_2)
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        mw = MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file, SslProtocols=protocols))
        stats = mirror_once(server, mw)
    assert stats[outcome] == 1
    if outcome == "failed":  # no certificate was verified: OpenSSL's reason, alone on its line
        assert stats["failures"] == {"tls_error": 1}
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.endswith("is failing: tls_error: TLSV1_ALERT_PROTOCOL_VERSION"), line


def test_keep_alive_over_tls_is_one_handshake_for_many_mirrors(server, tls_sink, ca_file):
    sink = tls_sink()
    stats = mirror_once(server, MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file)), count=20)
    assert stats["succeeded"] == 20 and len(sink.bodies) == 20
    assert sink.handshakes == 1


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_later_connections_resume_the_tls_session_of_the_first(server, tls_sink, ca_file, maximum):
    sink = tls_sink(maximum=maximum, close=True)  # closes after each answer: every mirror connects again
    mw = MirrorMiddleware(app, tls_config(sink.address, CaFile=ca_file))
    assert mirror_once(server, mw, count=4)["succeeded"] == 4
    assert (sink.handshakes, sink.resumed) == (4, 3)


@pytest.mark.parametrize(
    "http_client, message",
    [
        ({"CaFile": "/nonexistent/ca.pem"}, "HttpClient.CaFile: cannot read '/nonexistent/ca.pem': No such file"),
        ({"CaFile": "NOT-PEM"}, "HttpClient.CaFile: 'NOT-PEM' is not a PEM file"),
        ({"CaFile": "BAD-PEM"}, "HttpClient.CaFile: 'BAD-PEM' holds no usable certificate"),
        ({"ClientKey": "CA"}, "HttpClient.ClientKey: needs ClientCertificate"),
        ({"ClientCertificate": "CA"}, "HttpClient.ClientCertificate: 'CA' and its key do not load"),
        ({"SslProtocols": ["Tls11"]}, "HttpClient.SslProtocols\\[0\\]: must be one of Tls12, Tls13, got 'Tls11'"),
        ({"SslProtocols": []}, "HttpClient.SslProtocols: must be a non-empty array of Tls12 and Tls13"),
        ({"SslProtocols": 12}, "HttpClient.SslProtocols: must be a non-empty array"),
        ({"MaxConnectionsPerServer": 0}, "HttpClient.MaxConnectionsPerServer: must be at least 1, got 0"),
        ({"DangerousAcceptAnyServerCertificate": "yes"}, "HttpClient.DangerousAcceptAnyServerCertificate: must be"),
        ({"ServerName": "a b"}, "HttpClient.ServerName: must be a host name, got 'a b'"),
        ({"CaFile": 3}, "HttpClient.CaFile: must be a string, got number"),
        ([], "HttpClient: must be an object, got array"),
    ],
)  # fmt: skip
def test_invalid_http_client_values_name_their_key(tmp_path, ca, http_client, message):
    bad_pem = b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"
    files = {"NOT-PEM": b"not a certificate", "BAD-PEM": bad_pem, "CA": ca.cert_pem.bytes()}
    if isinstance(http_client, dict):
        for key, value in http_client.items():
            if isinstance(value, str) and value in files:
                (tmp_path / value).write_bytes(files[value])
                http_client[key] = value
    config = tls_config("https://127.0.0.1:9", **http_client) if isinstance(http_client, dict) else None
    if config is None:
        config = mirror_config("https://127.0.0.1:9")
        config["ReverseProxy"]["Clusters"]["m"]["HttpClient"] = http_client
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the files are named relative to the working directory, as in a deployment
    try:
        with pytest.raises(ConfigError, match="^ReverseProxy.Clusters.m." + message):
            load_config(config)
    finally:
        os.chdir(cwd)


def test_tls_settings_as_appsettings_spell_them_load(ca_file):
    spelled = {"cafile": ca_file, "sslprotocols": ["tls13"], "maxconnectionsperserver": 4,
               "dangerousacceptanyservercertificate": "false"}  # fmt: skip
    config = load_config(tls_config("https://127.0.0.1:9", **spelled))
    http_client = config.clusters["m"].http_client
    assert (http_client.ca_file, http_client.protocols, http_client.max_connections) == (ca_file, ("Tls13",), 4)
    assert http_client.accept_any_certificate is False
