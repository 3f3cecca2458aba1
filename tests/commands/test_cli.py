import json
from pathlib import Path

import pytest

from wsgimirror.commands.cli import import_app, main, parse_bind

SEED = Path(__file__).parents[1] / "data" / "seed.json"
EXAMPLE = Path(__file__).parents[2] / "examples" / "mirror.json"


def test_check_prints_the_routing_table(capsys):
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{EXAMPLE}: valid\n")
    assert "1. api (Order 0)" in out
    assert "hosts    127.0.0.1, localhost" in out and "paths    /api/*" in out and "methods  any" in out
    assert "mirror   shadow: Hash by header 'X-Forwarded-For', 2 destinations" in out
    assert "- http://127.0.0.1:9001" in out and "- http://127.0.0.1:9002" in out
    assert "Clusters not mirrored to: app" in out
    assert "Mirror: MaxInFlight 64, MemoryBodyBytes 1 MiB, MaxBodyBytes 64 MiB" in out


def test_check_lists_routes_in_the_order_they_are_tried(tmp_path, capsys):
    config = json.loads(SEED.read_text())
    config["ReverseProxy"]["Routes"]["first"] = {"Order": -5, "Match": {"Methods": ["POST"]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.index("1. first (Order -5)") < out.index("2. a (Order 0)")
    assert "mirror   none (matches, mirrors nothing)" in out and "methods  POST" in out


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"ReverseProxy": {"Routes": {"a": {"Metadata": {"MirrorCluster": "x"}}}}}',
            "ReverseProxy.Routes.a.Metadata.MirrorCluster: cluster 'x' is not defined in ReverseProxy.Clusters",
        ),
        ('{"ReverseProxy": ', "invalid JSON at line 1 column 18"),
    ],
)
def test_check_rejects_bad_configs_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err


def test_check_of_a_missing_file(capsys):
    assert main(["check", "/nonexistent/mirror.json"]) == 2
    assert capsys.readouterr().err == (
        "wsgimirror: invalid config: /nonexistent/mirror.json: cannot read the file: No such file or directory\n"
    )


def test_every_command_has_help(capsys):
    for command in ("serve", "check", "sink", "demo"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert f"usage: wsgimirror {command}" in capsys.readouterr().out


def test_serve_rejects_a_bad_app_or_bind_in_one_line(capsys):
    assert main(["serve", "nonexistent_module_xyz:app", "--config", str(EXAMPLE)]) == 2
    assert "cannot import 'nonexistent_module_xyz'" in capsys.readouterr().err
    assert main(["serve", "examples.legacy_app:nope", "--config", str(EXAMPLE)]) == 2
    assert "module 'examples.legacy_app' has no attribute 'nope'" in capsys.readouterr().err
    assert main(["serve", "examples.legacy_app:application", "--config", str(EXAMPLE), "--bind", "8000"]) == 2
    assert "--bind must be HOST:PORT, got '8000'" in capsys.readouterr().err


def test_import_app_accepts_a_factory():
    app = import_app("examples.flask_app:create_app()")
    assert app.name == "examples.flask_app"
    assert import_app("examples.legacy_app:application").__name__ == "application"


def test_parse_bind():
    assert parse_bind("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert parse_bind("[::1]:9000") == ("::1", 9000)


def test_serve_with_an_invalid_config_exits_2_with_the_key_path(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"ReverseProxy": {"Routes": {"a": {"Order": "x"}}}}')
    assert main(["serve", "examples.legacy_app:application", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        "wsgimirror: invalid config: ReverseProxy.Routes.a.Order: must be an integer, got string 'x'\n"
    )


def test_every_command_has_a_description_and_every_option_says_what_it_does(capsys):
    from wsgimirror.commands.cli import _parser

    parser = _parser()
    [subparsers] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    undocumented = []
    for name, command in subparsers.choices.items():
        if not command.description:
            undocumented.append(f"{name}: no description")
        undocumented += [f"{name} {a.option_strings or a.dest}" for a in command._actions if not a.help]
    assert undocumented == []
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "[--target URL]" in usage and "(required, except with --dry-run)" in usage
