"""Any input to the loader gives a Config or a ConfigError naming a key path, never another exception.

A config that loads must also be one the middleware can serve with: the router and the
dispatcher are built from it and a request is matched against it.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgimirror import ConfigError, load_config
from wsgimirror.config.model import Config
from wsgimirror.middleware import MirrorMiddleware

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Text that looks like what goes into hosts, addresses, names and numbers, hostile bytes included.
TRICKY = st.sampled_from(
    ["app.local:²", "api.com:80", "*", "", " ", "[::1]:8080", "http://127.0.0.1:9/x", "https://[::1", "Hash",
     "First", "header", "X-Forwarded-For", "1e400", "NaN", "-1", "true", "a\r\nb", "\x00", "/shadow", "m", "m,m",
     "http://h/a b", "Authorization:", "X_Api_Key", "ftp://x", "٣", "99999999999999999999"]
)  # fmt: skip
LEAF = SCALARS | TRICKY | JSON


@st.composite
def seed_shaped(draw):
    """A config with the seed's shape whose values are drawn from hostile and ordinary ones."""

    def value(default):
        return draw(st.one_of(st.just(default), LEAF))

    cluster = {
        "LoadBalancingPolicy": value("Hash"),
        "Metadata": value({"HashBy": value("header"), "Key": value("X-Forwarded-For"), "MirrorPercent": value(50)}),
        "Destinations": value([{"Address": value("http://127.0.0.1:9")}, {"Address": value("http://[::1]:9/p")}]),
    }
    route = {
        "Order": value(0),
        "Match": value({"Hosts": value([value("app.local:80")]), "Paths": value([value("/api*")]),
                        "Methods": value([value("GET")])}),
        "Metadata": value({"MirrorCluster": value("m")}),
        "Transforms": value([{"RequestHeader": value("X-Env"), "Set": value("shadow")},
                             {"PathPrefix": value("/v2")}, {"QueryRemoveParameter": value("token")}]),
    }  # fmt: skip
    mirror = {
        key: value(default)
        for key, default in [("MaxInFlight", 8), ("MemoryBodyBytes", 1024), ("Timeout", 1), ("Executor", "auto"),
                             ("RemoveHeaders", ["Cookie"]), ("LoopToken", "0123456789abcdef"),
                             ("CaptureMemoryBytes", 1 << 20), ("BreakerSeconds", 1)]
    }  # fmt: skip
    return {"ReverseProxy": {"Routes": {"r": route}, "Clusters": {"m": cluster}}, "Mirror": mirror}


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def load_or_config_error(data):
    try:
        config = load_config(data)
    except ConfigError as err:
        assert err.path, err
        assert str(err).startswith(f"{err.path}: ")
        return None
    assert isinstance(config, Config)
    mw = MirrorMiddleware(app, config)  # builds the router and the dispatcher, as serve does
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/x", "HTTP_HOST": "app.local:²", "wsgi.input": None}
    mw._generation.router.match(environ)
    return config


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(JSON)
def test_any_json_value_loads_or_names_its_error(data):
    if isinstance(data, dict):
        load_or_config_error(data)
    else:
        with pytest.raises(ConfigError):
            load_config(data)


@FUZZ
@given(seed_shaped())
def test_seed_shaped_configs_with_hostile_values_load_or_name_their_error(data):
    load_or_config_error(data)


@FUZZ
@given(JSON)
def test_any_json_file_loads_or_names_its_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    path.write_text(json.dumps(data))
    try:
        load_config(str(path))
    except ConfigError as err:
        assert err.path


@pytest.mark.parametrize("depth", [1_000, 200_000])
def test_deeply_nested_json_is_a_config_error(tmp_path, depth):
    path = tmp_path / "deep.json"
    path.write_text('{"ReverseProxy": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ConfigError, match=r"deep.json: the JSON is nested too deeply|ReverseProxy: must be an object"):
        load_config(str(path))


def test_a_deeply_nested_dict_is_a_config_error():
    data: list = []
    for _ in range(100_000):
        data = [data]
    with pytest.raises(ConfigError, match=r"^ReverseProxy.Routes.r.Transforms\[0\]: must be an object such as"):
        load_config({"ReverseProxy": {"Routes": {"r": {"Transforms": [data]}}}})


@pytest.mark.parametrize("host", ["app.local:²", "app.local:٣", "app.local:1²", "app.local:999999"])
def test_a_port_of_non_ascii_digits_is_a_config_error(host):
    config = {"ReverseProxy": {"Routes": {"r": {"Match": {"Hosts": [host]}}}}}
    with pytest.raises(ConfigError, match=r"^ReverseProxy.Routes.r.Match.Hosts\[0\]: the port must be a number"):
        load_config(config)


def test_a_path_with_a_nul_character_is_a_config_error():
    with pytest.raises(ConfigError, match="^'config\\\\x00.json': a file path cannot contain a NUL character"):
        load_config("config\x00.json")


def test_non_string_keys_in_a_dict_config_are_a_config_error():
    with pytest.raises(ConfigError, match="^ReverseProxy.Routes: keys must be strings, got number 1"):
        load_config({"ReverseProxy": {"Routes": {1: {}}}})


@FUZZ
@given(st.text(alphabet=st.sampled_from('{}[],:"\\/*\n abc1'), max_size=60))
def test_any_text_reads_as_a_value_or_a_config_error(text):
    from wsgimirror.config.appsettings import loads

    try:
        loads(text, "f.json")
    except ConfigError as err:
        assert str(err).startswith("f.json: ")


@FUZZ
@given(JSON)
def test_plain_json_reads_as_json_does(data):
    from wsgimirror.config.appsettings import loads

    text = json.dumps(data)
    if "NaN" in text or "Infinity" in text:
        return  # NaN is not equal to itself; json.loads and loads read it alike
    assert loads(text, "f.json") == json.loads(text)
