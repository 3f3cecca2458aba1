import pytest

from wsgimirror import ConfigError, load_config
from wsgimirror.config.model import Destination
from wsgimirror.config.transforms import compile_transforms
from wsgimirror.send.head import build_head

DEST = Destination("d", "http://mirror:81", "http", "mirror", 81, "")
ENV = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/api/users/7",
    "QUERY_STRING": "token=s3cret&a=old&keep=a%2Bb+c&a=older",
    "HTTP_HOST": "shop.example",
    "HTTP_COOKIE": "sid=1",
    "HTTP_X_ENV": "prod",
    "REMOTE_ADDR": "192.0.2.1",
    "wsgi.url_scheme": "https",
}


def mirror(transforms: list, remove=frozenset()) -> tuple[str, list[tuple[str, str]]]:
    head = build_head(ENV, DEST, 0, compile_transforms(transforms, "T"), remove).decode()
    request_line, *lines = head.strip().split("\r\n")
    return request_line, [tuple(line.split(": ", 1)) for line in lines]


def header(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


def test_no_transform_keeps_the_request():
    line, headers = mirror([])
    assert line == "POST /api/users/7?token=s3cret&a=old&keep=a%2Bb+c&a=older HTTP/1.1"
    assert header(headers, "Host") == ["mirror:81"] and header(headers, "Cookie") == ["sid=1"]


def test_request_header_set_append_and_remove():
    _, headers = mirror([{"RequestHeader": "X-Env", "Set": "shadow"}, {"RequestHeaderRemove": "cookie"}])
    assert header(headers, "X-Env") == ["shadow"] and header(headers, "Cookie") == []
    _, headers = mirror([{"RequestHeader": "X-Env", "Append": "shadow"}, {"RequestHeader": "X-New", "Append": "1"}])
    assert header(headers, "X-Env") == ["prod", "shadow"] and header(headers, "X-New") == ["1"]


def test_path_transforms_apply_in_order():
    assert mirror([{"PathPrefix": "/v2"}])[0].startswith("POST /v2/api/users/7?")
    assert mirror([{"PathRemovePrefix": "/api"}])[0].startswith("POST /users/7?")
    assert mirror([{"PathRemovePrefix": "/ap"}])[0].startswith("POST /api/users/7?")  # whole segments only
    assert mirror([{"PathSet": "/x"}, {"PathPrefix": "/v2/"}])[0].startswith("POST /v2/x?")


def test_query_transforms_keep_other_parameters_byte_for_byte():
    line, _ = mirror([{"QueryValueParameter": "a", "Set": "1 2"}, {"QueryRemoveParameter": "token"}])
    assert line == "POST /api/users/7?keep=a%2Bb+c&a=1%202 HTTP/1.1"
    line, _ = mirror([{"QueryValueParameter": "a", "Append": "new"}])
    assert line.endswith("&a=older&a=new HTTP/1.1")


def test_original_host_is_kept_on_request():
    _, headers = mirror([{"RequestHeaderOriginalHost": "true"}])
    assert header(headers, "Host") == ["shop.example"]
    _, headers = mirror([{"RequestHeaderOriginalHost": "false"}])
    assert header(headers, "Host") == ["mirror:81"]


def test_forwarding_headers_can_be_transformed_but_the_mark_cannot_be_removed():
    _, headers = mirror([{"RequestHeader": "X-Forwarded-Proto", "Set": "http"}], remove=frozenset({"cookie"}))
    assert header(headers, "X-Forwarded-Proto") == ["http"] and header(headers, "Cookie") == []
    assert header(headers, "X-Mirrored-By") == ["wsgimirror"]


def test_remove_headers_wins_over_transforms():
    _, headers = mirror([{"RequestHeader": "Authorization", "Set": "Bearer x"}], remove=frozenset({"authorization"}))
    assert header(headers, "Authorization") == []


def route_config(transforms, mirror=None) -> dict:
    config = {
        "ReverseProxy": {
            "Routes": {"a": {"Metadata": {"MirrorCluster": "m"}, "Transforms": transforms}},
            "Clusters": {"m": {"Destinations": [{"Address": "http://127.0.0.1:9"}]}},
        }
    }
    if mirror is not None:
        config["Mirror"] = mirror
    return config


def test_transforms_and_remove_headers_load():
    config = load_config(route_config([{"PathPrefix": "/v2"}], {"RemoveHeaders": ["Authorization", " Cookie"]}))
    assert [t.kind for t in config.routes[0].transforms] == ["PathPrefix"]
    assert config.mirror.remove_headers == frozenset({"authorization", "cookie"})


T = "ReverseProxy.Routes.a.Transforms"


@pytest.mark.parametrize(
    "transforms, message",
    [
        ({"PathPrefix": "/v2"}, f"{T}: must be an array of transforms"),
        (
            [{"PathPrefix": "/v2"}, "PathSet"],
            f'{T}\\[1\\]: must be an object such as {{"PathPrefix": "/v2"}}, got "PathSet"$',
        ),
        ([{1: "/x"}], f"{T}\\[0\\]: must be an object such as"),
        (
            [{"PathPrefix": "/v2"}, {"PathPrefx": "/x"}],
            f'{T}\\[1\\]: unknown transform {{"PathPrefx": "/x"}}; supported: RequestHeader, RequestHeaderRemove, '
            "RequestHeaderOriginalHost, PathPrefix, PathRemovePrefix, PathSet, QueryValueParameter, "
            "QueryRemoveParameter$",
        ),
        ([{"RequestHeader": "X-Env"}], f"{T}\\[0\\]: RequestHeader needs exactly one of Set or Append"),
        ([{"RequestHeader": "X-Env", "Set": "a", "Append": "b"}], f"{T}\\[0\\]: RequestHeader needs exactly one"),
        ([{"RequestHeader": "X-Env", "Set": 3}], f"{T}\\[0\\].Set: must be a string, got 3"),
        ([{"RequestHeader": "X-Env", "Set": True}], f"{T}\\[0\\].Set: must be a string, got true$"),
        ([{"RequestHeader": "", "Set": "a"}], f'{T}\\[0\\].RequestHeader: must be a non-empty string, got ""'),
        ([{"RequestHeader": "Host", "Set": "a"}], f"{T}\\[0\\].RequestHeader: 'Host' is set by wsgimirror"),
        ([{"PathPrefix": "v2"}], f"{T}\\[0\\].PathPrefix: must start with '/', got 'v2'"),
        ([{"PathSet": "/x", "When": "always"}], f"{T}\\[0\\]: unexpected key 'When' in PathSet transform"),
        ([{"RequestHeaderOriginalHost": "yes"}], f"{T}\\[0\\].RequestHeaderOriginalHost: must be 'true' or 'false'"),
        ([{"QueryValueParameter": "a"}], f"{T}\\[0\\]: QueryValueParameter needs exactly one of Set or Append"),
        ([{"RequestHeaderRemove": "Host"}], f"{T}\\[0\\].RequestHeaderRemove: 'Host' is set by wsgimirror"),
        ([{"RequestHeaderRemove": "content-length"}], f"{T}\\[0\\].RequestHeaderRemove: 'content-length' is set by"),
        ([{"RequestHeaderRemove": "X-Mirrored-By"}], f"{T}\\[0\\].RequestHeaderRemove: 'X-Mirrored-By' is set by"),
        ([{"RequestHeaderRemove": "X_Api_Key"}], f"{T}\\[0\\].RequestHeaderRemove: 'X_Api_Key' has '_'"),
        ([{"RequestHeader": "X Env", "Set": "a"}], f"{T}\\[0\\].RequestHeader: 'X Env' is not a header name"),
        (
            [{"RequestHeader": "X-Env", "Set": "a\r\nX-Evil: 1"}],
            f"{T}\\[0\\].Set: must not contain line breaks or control characters, got 'a\\\\r\\\\nX-Evil: 1'$",
        ),
        (
            [{"PathPrefix": "/v 2"}],
            f'{T}\\[0\\].PathPrefix: must not contain spaces or control characters, got "/v 2"$',
        ),
    ],
)
def test_invalid_transforms_name_their_index(transforms, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(route_config(transforms))


@pytest.mark.parametrize(
    "remove, message",
    [
        ("Cookie", "Mirror.RemoveHeaders: must be an array of header names, got string"),
        (["Cookie", 4], "Mirror.RemoveHeaders\\[1\\]: must be a header name, got number 4"),
        (["X-Mirrored-By"], "Mirror.RemoveHeaders\\[0\\]: 'X-Mirrored-By' is set by wsgimirror and cannot be removed"),
    ],
)
def test_invalid_remove_headers(remove, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(route_config([], {"RemoveHeaders": remove}))


def test_a_valueless_query_parameter_is_removed():
    env = dict(ENV, QUERY_STRING="debug&a=1&debugger=2")
    head = build_head(env, DEST, 0, compile_transforms([{"QueryRemoveParameter": "debug"}], "T")).decode()
    assert head.startswith("POST /api/users/7?a=1&debugger=2 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "prefix, path, expected",
    [
        ("/api", "/api", "/"),
        ("/api", "/api/", "/"),
        ("/api/", "/api/users", "/users"),
        ("/api", "/apis/users", "/apis/users"),
        ("/api", "/v1/api/users", "/v1/api/users"),
        ("/apiX", "/apiX/users", "/users"),
    ],
)
def test_path_remove_prefix_takes_whole_segments_with_or_without_a_trailing_slash(prefix, path, expected):
    env = dict(ENV, PATH_INFO=path, QUERY_STRING="")
    head = build_head(env, DEST, 0, compile_transforms([{"PathRemovePrefix": prefix}], "T")).decode()
    assert head.startswith(f"POST {expected} HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "prefix, path", [("/v2/", "/v2/api/users/7"), ("/X/", "/X/api/users/7"), ("/X", "/X/api/users/7")]
)
def test_a_path_prefix_with_a_trailing_slash_adds_no_double_slash(prefix, path):
    head = build_head(ENV, DEST, 0, compile_transforms([{"PathPrefix": prefix}], "T")).decode()
    assert head.startswith(f"POST {path}?")


def test_a_query_value_set_by_a_transform_is_percent_encoded_slashes_included():
    transforms = compile_transforms([{"QueryValueParameter": "a/b", "Set": "c/d e&f"}], "T")
    head = build_head(dict(ENV, QUERY_STRING="x=1"), DEST, 0, transforms).decode()
    assert head.startswith("POST /api/users/7?x=1&a%2Fb=c%2Fd%20e%26f HTTP/1.1")


def test_a_header_value_beyond_latin_1_set_by_a_transform_goes_out_as_utf_8():
    head = build_head(ENV, DEST, 0, compile_transforms([{"RequestHeader": "X-Team", "Set": "Zoë ☕"}], "T"))
    assert b"\r\nX-Team: Zo\xc3\xab \xe2\x98\x95\r\n" in head
