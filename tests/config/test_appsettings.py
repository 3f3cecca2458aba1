"""appsettings.json as people write it: comments, trailing commas, keys in any case."""

import re

import pytest

from wsgimirror import ConfigError, load_config
from wsgimirror.commands.cli import main

APPSETTINGS = """\ufeff{
  // Logging is the host's business; wsgimirror ignores it.
  "Logging": { "LogLevel": { "Default": "Information", }, },
  /* The proxy's section,
     pasted as it is. */
  "ReverseProxy": {
    "Routes": {
      "api": {
        "clusterId": "Backend",              // any case, for keys and cluster ids
        "match": { "hosts": ["api.example:80",], "paths": ["/api/*"] },
        "metadata": { "mirrorcluster": "shadow", "MIRRORPERCENT": 50 },
        "transforms": [ { "pathprefix": "/v2" }, { "requestheader": "X-Env", "set": "shadow" }, ],
      },
    },
    "Clusters": {
      "backend": { "Destinations": { "d1": { "Address": "https://backend.example/" } } },
      "Shadow": {
        "loadBalancingPolicy": "hash",
        "metadata": { "hashby": "header", "key": "X-Forwarded-For" },
        "destinations": [ { "address": "http://127.0.0.1:9001/a//b" }, ],  // a URL keeps its //
      },
    },
  },
  "mirror": { "maxinflight": 8, "removeheaders": ["Cookie",], },
}
"""


def test_an_appsettings_file_with_comments_trailing_commas_and_any_case_loads(tmp_path):
    path = tmp_path / "appsettings.json"
    path.write_text(APPSETTINGS, encoding="utf-8")
    config = load_config(str(path))
    (route,) = config.routes
    assert (route.cluster_id, route.mirror_clusters, route.hosts, route.paths) == (
        "backend", ("Shadow",), ("api.example:80",), ("/api/*",)
    )  # fmt: skip
    assert [t.kind for t in route.transforms] == ["PathPrefix", "RequestHeader"]
    shadow = config.clusters["Shadow"]
    assert (shadow.policy, shadow.hash_by, shadow.hash_key, shadow.percent) == (
        "Hash",
        "header",
        "X-Forwarded-For",
        100,
    )
    assert shadow.destinations[0].base_path == "/a//b"
    assert config.mirror.max_in_flight == 8 and config.mirror.remove_headers == {"cookie"}
    assert config.routes[0].id == "api"


def test_wsgimirror_check_accepts_the_same_file(tmp_path, capsys):
    path = tmp_path / "appsettings.json"
    path.write_text(APPSETTINGS, encoding="utf-8")
    assert main(["check", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, where",
    [
        ('{\n  // a comment\n  "ReverseProxy": {\n    "Routes": { "a": }\n  }\n}', "line 4 column 22: Expecting value"),
        ('{ /* one */ "a": 1 /* two */ "b": 2 }', "line 1 column 30: Expecting ',' delimiter"),
        ('{\n  "a": [1, 2,, ]\n}', "line 2 column 14: Expecting value"),
        ('{"a": [, ]}', "line 1 column 8: Expecting value"),
        ('{"a": {, }}', "line 1 column 8: Expecting property name"),
        ('{ "a": 1 }\n/* never closed', "line 2 column 1: unterminated /\\* comment"),
        ('{ "a": "text" // fine\n, }', None),
    ],
)
def test_a_syntax_error_names_its_line_and_column_in_the_original_text(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    if where is None:  # a trailing comma after a comment is still a trailing comma
        with pytest.raises(
            ConfigError,
            match="^ReverseProxy: is missing: the config needs a ReverseProxy section with Routes and Clusters$",
        ):
            load_config(str(path))
        return
    with pytest.raises(ConfigError, match=f"^{path}: invalid JSON at {where}"):
        load_config(str(path))


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"ReverseProxy": {"Routes": {}}, "reverseProxy": {}},
            "^config: keys 'ReverseProxy' and 'reverseProxy' differ only by case",
        ),
        (
            {"ReverseProxy": {"Routes": {"api": {}, "API": {}}}},
            "^ReverseProxy.Routes: keys 'api' and 'API' differ only by case",
        ),
        (
            {"ReverseProxy": {"Routes": {"r": {"Metadata": {"MirrorCluster": "m", "mirrorCluster": "n"}}}}},
            "^ReverseProxy.Routes.r.Metadata: keys 'MirrorCluster' and 'mirrorCluster' differ only by case",
        ),
        (
            {"ReverseProxy": {"Routes": {"r": {"Transforms": [{"PathPrefix": "/a", "pathprefix": "/b"}]}}}},
            "^ReverseProxy.Routes.r.Transforms\\[0\\]: keys 'PathPrefix' and 'pathprefix' differ only by case",
        ),
        (
            {"ReverseProxy": {"Clusters": {"m": {"Destinations": {"a": {"Address": "http://a"},
                                                                  "A": {"Address": "http://b"}}}}}},
            "^ReverseProxy.Clusters.m.Destinations: keys 'a' and 'A' differ only by case",
        ),
    ],
)  # fmt: skip
def test_two_keys_that_differ_only_by_case_are_refused_naming_both(config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_strings_that_look_like_comments_or_trailing_commas_are_kept(tmp_path):
    path = tmp_path / "strings.json"
    path.write_text('{"ReverseProxy": {"Routes": {"r": {"Match": {"Paths": ["/a//b", "/c,]", "/d/*"]}}}}}')
    (route,) = load_config(str(path)).routes
    assert route.paths == ("/a//b", "/c,]", "/d/*")


def test_an_escaped_quote_does_not_end_a_string(tmp_path):
    path = tmp_path / "escaped.json"
    path.write_text('{"Logging": "a \\" // still a string", "ReverseProxy": {}, }')
    assert load_config(str(path)).routes == ()


@pytest.mark.parametrize(
    "text, message",
    [
        ("]", "line 1 column 1: Expecting value"),
        (",]", "line 1 column 1: Expecting value"),  # a comma after nothing is not a trailing comma
        ("[1,\n]", None),
        ('// first line\n{"a": 1}', None),
        ('{"a": 1} // no line break after this comment', None),
        ('{"a": 1} /* closed */', None),
        ("[" * 100_000 + "]" * 100_000, "the JSON is nested too deeply"),
        ('{"a": 1 /* a *//* b */}', None),  # two comments side by side
        ('{"a": 1 /**/}', None),  # an empty comment
        ("[1, /* c */ ]", None),  # a comment between a trailing comma and its bracket
        ("[1,/* c */]", None),
        ('{\n/* one\ntwo */ "a": }', "line 3 column 13: Expecting value"),  # a block comment keeps its line breaks
        ('\n\n{"a": 1} /* open\n\n', "line 3 column 10: unterminated /\\* comment"),
        ('\n{"a": 1} /* open', "line 2 column 10: unterminated /\\* comment"),  # the only line break comes first
        ('{"a":,}', "line 1 column 6: Expecting value"),  # a comma after ":" is no trailing comma
        ('{"a": "", "b": "x\\\\",}', None),  # an empty string, an escaped backslash, then a trailing comma
        ('{"a": "open', "line 1 column 7: Unterminated string starting at"),
    ],
)
def test_edges_of_the_reader(text, message):
    from wsgimirror.config.appsettings import loads

    if message is None:
        assert loads(text, "f.json") in ([1], {"a": 1}, {"a": "", "b": "x\\"})
        return
    with pytest.raises(ConfigError) as info:
        loads(text, "f.json")
    assert re.fullmatch(f"f.json: (invalid JSON at )?{message}", str(info.value)), str(info.value)
