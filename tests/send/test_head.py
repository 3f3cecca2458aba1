import pytest

from wsgimirror.config.model import Destination
from wsgimirror.send.head import BadRequest, build_head, header_name, request_target

DEST = Destination("d", "http://mirror:8080/shadow", "http", "mirror", 8080, "/shadow")


def head_lines(environ, length=0, dest=DEST):
    text = build_head(environ, dest, length).decode("latin-1")
    assert text.endswith("\r\n\r\n")
    request_line, *headers = text[:-4].split("\r\n")
    return request_line, [tuple(h.split(": ", 1)) for h in headers]


BASE = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/api/items",
    "QUERY_STRING": "a=1&b=%20x",
    "REMOTE_ADDR": "192.0.2.7",
    "HTTP_HOST": "api.com",
    "wsgi.url_scheme": "https",
}


def test_request_line_keeps_method_path_and_query_under_the_base_path():
    line, _ = head_lines(BASE)
    assert line == "POST /shadow/api/items?a=1&b=%20x HTTP/1.1"


def test_the_path_is_quoted_again_as_the_client_sent_it():
    env = {"PATH_INFO": "/caf\xc3\xa9/a b/%", "SCRIPT_NAME": "/app"}
    assert request_target(env) == "/app/caf%C3%A9/a%20b/%25"
    assert request_target({"PATH_INFO": "", "QUERY_STRING": "x=1"}) == "/?x=1"
    assert request_target({"RAW_URI": "/a%2Fb?q", "PATH_INFO": "/a/b"}) == "/a%2Fb?q"


def test_header_rules():
    env = dict(
        BASE,
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="999",
        HTTP_X_TRACE="t1",
        HTTP_CONNECTION="keep-alive, X-Private",
        HTTP_X_PRIVATE="secret",
        HTTP_KEEP_ALIVE="300",
        HTTP_TE="trailers",
        HTTP_TRAILER="X-Sum",
        HTTP_TRANSFER_ENCODING="chunked",
        HTTP_UPGRADE="h2c",
        HTTP_PROXY_AUTHORIZATION="Basic x",
        HTTP_EXPECT="100-continue",
        HTTP_X_FORWARDED_FOR="203.0.113.1",
    )
    _, headers = head_lines(env, length=12)
    names = [n for n, _ in headers]
    assert len(names) == len(set(names))
    got = dict(headers)
    assert got["Host"] == "mirror:8080"
    assert got["Content-Type"] == "application/json"
    assert got["Content-Length"] == "12"
    assert got["X-Trace"] == "t1"
    assert got["X-Forwarded-For"] == "203.0.113.1, 192.0.2.7"
    assert got["X-Forwarded-Host"] == "api.com"
    assert got["X-Forwarded-Proto"] == "https"
    assert got["X-Mirrored-By"] == "wsgimirror"
    for hop in ("Connection", "X-Private", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade"):
        assert hop not in got
    assert "Proxy-Authorization" not in got and "Expect" not in got


def test_a_request_without_a_body_gets_no_content_length():
    _, headers = head_lines(dict(BASE, REQUEST_METHOD="GET"))
    assert "Content-Length" not in dict(headers)
    _, headers = head_lines(dict(BASE, CONTENT_LENGTH="0"))
    assert dict(headers)["Content-Length"] == "0"


def test_without_a_host_header_the_server_name_is_the_original_host():
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "internal", "SERVER_PORT": "8000"}
    _, headers = head_lines(env)
    got = dict(headers)
    assert got["X-Forwarded-Host"] == "internal:8000"
    assert "X-Forwarded-For" not in got


def test_default_ports_are_left_out_of_host():
    dest = Destination("d", "https://m", "https", "m", 443, "")
    _, headers = head_lines(BASE, dest=dest)
    assert dict(headers)["Host"] == "m"


def test_header_names():
    assert header_name("X_FORWARDED_FOR") == "X-Forwarded-For"
    assert header_name("ACCEPT") == "Accept"


@pytest.mark.parametrize(
    "environ, target",
    [
        ({}, "/"),
        ({"PATH_INFO": ""}, "/"),
        ({"SCRIPT_NAME": "/app"}, "/app"),
        ({"PATH_INFO": "/a@b:c,d;e=f"}, "/a@b:c,d;e=f"),
        ({"REQUEST_URI": "/a%2Fb?x=%41", "PATH_INFO": "/a/b"}, "/a%2Fb?x=%41"),
        ({"RAW_URI": "/raw", "REQUEST_URI": "/request"}, "/raw"),
        ({"RAW_URI": "http://evil.example/admin?x=1"}, "/admin?x=1"),
        ({"RAW_URI": "https://evil.example?x=1"}, "/?x=1"),
        ({"RAW_URI": "HTTP://evil.example"}, "/"),
    ],
)
def test_the_target_in_origin_form(environ, target):
    assert request_target(environ) == target


@pytest.mark.parametrize("raw", ["*", "-admin/x", "admin", "/a b", "/a\x00"])
def test_a_target_in_neither_form_is_refused(raw):
    assert request_target({"RAW_URI": raw, "PATH_INFO": "/fallback"}) is None
    with pytest.raises(BadRequest, match="^the request target is neither origin nor absolute form$"):
        build_head({"RAW_URI": raw}, DEST, 0)


def test_characters_past_latin_1_in_a_target_go_out_as_utf_8_percent_escapes():
    # A WSGI string's characters are bytes (Latin-1): é is the byte E9. Past it, no server should
    # produce one, but if one does, it is sent as its UTF-8 bytes, escaped.
    assert request_target({"RAW_URI": "/\u00e9\u2615?q=\u2615"}) == "/%E9%E2%98%95?q=%E2%98%95"
    assert request_target({"RAW_URI": "/\u00ff\u0100"}) == "/%FF%C4%80"  # the last Latin-1 byte, the first past it


@pytest.mark.parametrize(
    "software, raw, target",
    [
        ("Werkzeug/3.1.8 Python/3.11.7", "/caf\u00c3\u0083\u00c2\u00a9", "/caf%C3%A9"),  # its double encoding undone
        ("Werkzeug/3.1.8", "/plain?x=1", "/plain?x=1"),
        ("Werkzeug/3.1.8", "/caf\u00e9", "/caf%E9"),  # not valid UTF-8 once encoded: left as it is
        ("gunicorn/23.0.0", "/caf\u00c3\u00a9", "/caf%C3%A9"),  # other servers keep the bytes
    ],
    ids=["double-encoded", "ascii", "not-utf-8", "another-server"],  # no server name: -k filters in mutation_run
)
def test_the_dev_servers_double_encoding_of_the_target_is_undone_and_no_other_servers(software, raw, target):
    assert request_target({"SERVER_SOFTWARE": software, "RAW_URI": raw}) == target


def test_a_directly_connected_client_is_the_only_forwarded_address():
    _, headers = head_lines(dict(BASE))
    assert dict(headers)["X-Forwarded-For"] == "192.0.2.7"


def test_an_obs_folded_value_is_unfolded_and_a_control_byte_refused():
    _, headers = head_lines(dict(BASE, HTTP_X_A="one\r\n  two\r\n\tthree"))
    assert dict(headers)["X-A"] == "one two three"
    for value in ("a\x01b", "a\rb", "a\nb", "a\x00b", "a\x7fb"):
        with pytest.raises(BadRequest, match="X-A header holds control characters"):
            build_head(dict(BASE, HTTP_X_A=value), DEST, 0)
    _, headers = head_lines(dict(BASE, HTTP_X_A="tab\tinside"))
    assert dict(headers)["X-A"] == "tab\tinside"


def test_a_method_or_header_name_that_is_not_a_token_is_refused():
    with pytest.raises(BadRequest, match="^the method is not a token$"):
        build_head(dict(BASE, REQUEST_METHOD="GET /x"), DEST, 0)
    with pytest.raises(BadRequest, match="HTTP_X_\\(A\\) is not a header name"):
        build_head(dict(BASE, **{"HTTP_X_(A)": "1"}), DEST, 0)


def test_the_loop_mark_is_the_token_when_one_is_set():
    text = build_head(BASE, DEST, 0, mark="s3cret-loop-token-0123").decode("latin-1")
    assert text.count("X-Mirrored-By") == 1 and "\r\nX-Mirrored-By: s3cret-loop-token-0123\r\n" in text


def test_a_request_without_a_method_or_scheme_is_a_get_over_http():
    line, headers = head_lines({"PATH_INFO": "/x", "HTTP_HOST": "a"})
    assert line == "GET /shadow/x HTTP/1.1"
    assert dict(headers)["X-Forwarded-Proto"] == "http"


@pytest.mark.parametrize(
    "environ, forwarded_host",
    [
        ({}, ""),
        ({"SERVER_NAME": "internal"}, "internal"),
        ({"SERVER_NAME": "HOST-X"}, "HOST-X"),
        ({"SERVER_NAME": "internal", "SERVER_PORT": "8000"}, "internal:8000"),
        ({"SERVER_PORT": "8000"}, ":8000"),
        ({"HTTP_HOST": "shop.example:8443", "SERVER_NAME": "internal"}, "shop.example:8443"),
    ],
)
def test_the_original_host_without_a_host_header_is_the_servers_name_and_port(environ, forwarded_host):
    _, headers = head_lines({"PATH_INFO": "/", **environ})
    assert dict(headers)["X-Forwarded-Host"] == forwarded_host


def test_only_the_headers_connection_names_are_dropped_whatever_its_spacing():
    env = dict(BASE, HTTP_CONNECTION="X-A,X-B", HTTP_X_A="1", HTTP_X_B="2", HTTP_XXXX="3")
    got = dict(head_lines(env)[1])
    assert "X-A" not in got and "X-B" not in got and got["Xxxx"] == "3"
    got = dict(head_lines(dict(BASE, HTTP_XXXX="3"))[1])  # no Connection header: nothing named
    assert got["Xxxx"] == "3"


def test_an_empty_chunked_body_is_mirrored_with_content_length_zero():
    _, headers = head_lines(dict(BASE, HTTP_TRANSFER_ENCODING="chunked"), length=0)
    assert dict(headers)["Content-Length"] == "0"


def test_a_bad_original_host_is_refused_naming_the_host_header():
    from wsgimirror.config.transforms import compile_transforms

    original = compile_transforms([{"RequestHeaderOriginalHost": "true"}], "T")
    with pytest.raises(BadRequest, match="^the Host header holds control characters$"):
        build_head(dict(BASE, HTTP_HOST="a\x01b"), DEST, 0, original)
    with pytest.raises(BadRequest, match="^the X-A header holds characters a WSGI server cannot have decoded$"):
        build_head(dict(BASE, HTTP_X_A="\u2615"), DEST, 0)
