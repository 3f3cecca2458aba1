import pytest

from wsgimirror.capture.routing import Router, request_host
from wsgimirror.config.model import Route
from wsgimirror.util.syntax import split_host_port


def environ(path="/", host="api.com", method="GET", scheme="http", **extra):
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "wsgi.url_scheme": scheme}
    if host is not None:
        env["HTTP_HOST"] = host
    env.update(extra)
    return env


def match(route: Route, **kwargs) -> bool:
    return Router([route]).match(environ(**kwargs)) is route


@pytest.mark.parametrize(
    "pattern, host, expected",
    [
        ("api.com", "api.com", True),
        ("api.com", "API.com:8080", True),
        ("api.com", "www.api.com", False),
        ("api.com:8080", "api.com:8080", True),
        ("api.com:8080", "api.com:9090", False),
        ("api.com:8080", "api.com", False),
        ("api.com:80", "api.com", True),
        ("*.api.com", "www.api.com", True),
        ("*.api.com", "api.com", False),
        ("*api.com", "myapi.com", True),
        ("*api.com", "api.com", True),
        ("*api.com", "api.org", False),
        ("*", "anything.example", True),
        ("[::1]:8080", "[::1]:8080", True),
        ("[::1]", "[::1]:9000", True),
    ],
)
def test_hosts(pattern, host, expected):
    assert match(Route("r", 0, hosts=(pattern.lower(),)), host=host) is expected


def test_a_host_pattern_with_a_port_uses_the_scheme_default_when_the_header_has_none():
    assert match(Route("r", 0, hosts=("api.com:443",)), host="api.com", scheme="https")


def test_without_a_host_header_the_server_name_and_port_are_used():
    route = Route("r", 0, hosts=("internal:8000",))
    assert match(route, host=None, SERVER_NAME="internal", SERVER_PORT="8000")
    assert not match(route, host=None, SERVER_NAME="internal", SERVER_PORT="8001")


@pytest.mark.parametrize(
    "patterns, path, expected",
    [
        (("/api",), "/api", True),
        (("/api",), "/api/", False),
        (("/api",), "/API", False),
        (("/api*",), "/api/users", True),
        (("/api*",), "/apix", True),
        (("/api/*",), "/api", False),
        (("*",), "/whatever", True),
        ((), "/whatever", True),
        (("/a", "/b*"), "/b/c", True),
        (("/a", "/b*"), "/c", False),
        # the seed proxy's and YARP's templates: {name} is one segment, a last {**name} the rest of the path
        (("/{**catch-all}",), "/", True),
        (("/{**catch-all}",), "/any/thing", True),
        (("/api/{**rest}",), "/api", True),
        (("/api/{**rest}",), "/api/orders/7", True),
        (("/api/{*rest}",), "/api/orders/7", True),
        (("/api/{**rest}",), "/apix", False),
        (("/users/{id}/orders",), "/users/7/orders", True),
        (("/users/{id}/orders",), "/users//orders", False),
        (("/users/{id}/orders",), "/users/7/8/orders", False),
        (("/users/{id}/orders",), "/users/7/orders/1", False),
        (("/a.b/{id}",), "/aXb/1", False),
        (("/x", "/users/{id}"), "/users/1", True),
    ],
)
def test_paths(patterns, path, expected):
    assert match(Route("r", 0, paths=patterns), path=path) is expected


def test_the_path_includes_script_name():
    route = Route("r", 0, paths=("/mount/api*",))
    assert Router([route]).match(environ(path="/api/x", SCRIPT_NAME="/mount")) is route


def test_methods_are_case_insensitive_and_optional():
    route = Route("r", 0, methods=("POST", "PUT"))
    assert match(route, method="post")
    assert not match(route, method="GET")
    assert match(Route("r", 0), method="DELETE")


def test_all_of_hosts_paths_and_methods_must_match():
    route = Route("r", 0, hosts=("api.com",), paths=("/x",), methods=("GET",))
    assert match(route, host="api.com", path="/x", method="GET")
    assert not match(route, host="other.com", path="/x", method="GET")
    assert not match(route, host="api.com", path="/y", method="GET")
    assert not match(route, host="api.com", path="/x", method="POST")


def test_the_first_route_in_order_wins():
    specific = Route("specific", 0, paths=("/api/admin*",))
    broad = Route("broad", 1, paths=("/api*",))
    router = Router([specific, broad])
    assert router.match(environ(path="/api/admin/users")) is specific
    assert router.match(environ(path="/api/users")) is broad
    assert router.match(environ(path="/static")) is None


def test_split_host_port():
    assert split_host_port("Example.COM:81") == ("example.com", 81)
    assert split_host_port("[::1]:81") == ("::1", 81)
    assert split_host_port("[::1]") == ("::1", None)
    assert split_host_port("example.com") == ("example.com", None)
    assert split_host_port("example.com:\u00b2") == ("example.com", -1)
    assert split_host_port("example.com:") == ("example.com", -1)
    assert split_host_port("[::1]:x") == ("::1", -1)
    assert split_host_port("[::1]x:80") == ("::1", -1)
    assert split_host_port("[::1") == ("::1", -1)
    assert split_host_port("[::1]:") == ("::1", -1)
    assert split_host_port("example.com:65535") == ("example.com", 65535)  # five digits
    assert split_host_port("example.com:123456") == ("example.com", -1)
    assert split_host_port("fe80::1") == ("fe80::1", None)  # a bare IPv6 address has no port
    assert request_host(environ(host="a.b", scheme="https")) == ("a.b", 443)


def test_an_environ_without_script_name_or_path_info_matches_a_catch_all_route():
    catch_all, api = Route("all", 1, paths=("*",)), Route("api", 0, paths=("/api/*",))
    assert Router([api, catch_all]).match({"REQUEST_METHOD": "GET"}) is catch_all


@pytest.mark.parametrize("host", ["app.local:\u00b2", "app.local:", "app.local:123456", "app.local:8o"])
def test_a_malformed_host_matches_no_host_pattern(host):
    for pattern in ("app.local", "*.local", "*local", "app.local:80"):
        assert not match(Route("r", 0, hosts=(pattern,)), host=host)
    assert match(Route("r", 0), host=host)  # a route without host patterns takes any Host
    assert match(Route("r", 0, hosts=("*",)), host=host)  # and so does "*", any host at all


@pytest.mark.parametrize("methods, matched", [(("GET",), True), (("POST",), False), (("get", "head"), True)])
def test_a_request_without_a_method_is_a_get(methods, matched):
    route = Route("r", 0, methods=tuple(m.upper() for m in methods))
    assert (Router([route]).match({"PATH_INFO": "/"}) is route) is matched


def test_an_absent_script_name_or_path_info_is_empty():
    exact = Route("r", 0, paths=("/app/x",))
    assert Router([exact]).match({"PATH_INFO": "/app/x"}) is exact
    assert Router([exact]).match({"SCRIPT_NAME": "/app/x"}) is exact


@pytest.mark.parametrize(
    "pattern, environ, matched",
    [
        ("api.com:80", {"HTTP_HOST": "api.com"}, True),  # no wsgi.url_scheme: http
        ("api.com:443", {"HTTP_HOST": "api.com"}, False),
        ("api.com:80", {"HTTP_HOST": "api.com", "wsgi.url_scheme": "ws"}, True),  # an unknown scheme: port 80
        ("internal:80", {"SERVER_NAME": "internal"}, True),  # no Host, no SERVER_PORT: port 80
        ("internal:81", {"SERVER_NAME": "internal"}, False),
        ("internal:8000", {"SERVER_NAME": "Internal", "SERVER_PORT": "8000"}, True),
        ("none", {}, False),  # neither Host nor SERVER_NAME: no host pattern matches
        ("xxxx", {}, False),
        ("*", {}, True),
    ],
)
def test_the_host_of_a_request_with_parts_of_the_environ_missing(pattern, environ, matched):
    route = Route("r", 0, hosts=(pattern,))
    assert (Router([route]).match({"PATH_INFO": "/", **environ}) is route) is matched


def test_a_malformed_host_has_no_host_and_port():
    assert request_host(environ(host="app.local:\u00b2")) is None
