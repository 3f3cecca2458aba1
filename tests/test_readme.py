"""The README is the project's front door: its commands are the ones that run, its reference is complete."""

import re
from pathlib import Path

from wsgimirror.config.model import (
    KNOWN_AGENT_KEYS,
    KNOWN_COMPARE_KEYS,
    KNOWN_HTTP_CLIENT_KEYS,
    KNOWN_MIRROR_KEYS,
    KNOWN_MIRROR_METADATA,
    KNOWN_RECORD_KEYS,
)
from wsgimirror.config.transforms import _APPLY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, re.S)


def test_the_readme_test_command_is_what_ci_runs():
    test_command = shell_blocks()[1].strip()
    assert test_command == 'sh tests/system-packages.sh && python3 -m pip install -e ".[test]" && python3 -m pytest -q'
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_the_first_command_runs_the_demo():
    assert shell_blocks()[0].strip() == 'python3 -m pip install -e ".[demo]" && wsgimirror demo'


def test_every_config_key_and_transform_is_documented():
    for key in (*KNOWN_MIRROR_KEYS, *KNOWN_MIRROR_METADATA, "HashBy", "Key", "LoadBalancingPolicy", "Destinations"):
        assert f"`{key}`" in README or f"`Metadata.{key}`" in README, key
    for key in KNOWN_HTTP_CLIENT_KEYS:
        assert f"`HttpClient.{key}`" in README, key
    for key in KNOWN_COMPARE_KEYS:
        assert f"`Compare.{key}`" in README, key
    for key in KNOWN_RECORD_KEYS:
        assert f"`Record.{key}`" in README, key
    for key in KNOWN_AGENT_KEYS:
        assert f"`Agent.{key}`" in README, key
    for transform in _APPLY:
        assert f'{{"{transform}"' in README, transform


def test_every_drop_and_failure_reason_is_documented():
    reasons = (
        "loop sampled_out circuit_open body_too_large incomplete_body expect_continue backlog_full upgrade "
        "bad_request closed internal_error refused connect_timeout connect_error timeout reset bad_response "
        "socket_error no_input capture_error spill_budget not_closed tls_error disk_full io_error disk_budget "
        "not_recorded overloaded head_too_large memory_budget agent_busy agent_unavailable agent_lost unknown_config"
    )
    for reason in reasons.split():
        assert f"`{reason}`" in README, reason


def test_the_cost_section_holds_measured_figures():
    section = README.split("## What mirroring costs", 1)[1].split("\n## ", 1)[0]
    assert "COST_SECTION" not in section
    assert re.search(
        r"\| one keep-alive connection, a 200 ms mirror: p50, Flask / plain \| [^|]+ \| [\d.]+ / [\d.]+ ms", section
    )
    assert re.search(
        r"\| Flask: app process CPU per request at 400/s, every request mirrored \| [^|]+ \| [\d,]+ µs", section
    )


def test_the_configuration_example_is_valid():
    from wsgimirror import load_config

    example = re.search(r"```json\n(.*?)```", README, re.S).group(1)
    import json

    config = load_config(json.loads(example))
    (route,) = config.routes
    assert route.mirror_clusters == ("candidate", "audit") and len(route.transforms) == 2
    assert config.clusters["candidate"].percent == 10


def test_every_guarantee_names_tests_that_exist():
    design = (ROOT / "docs" / "design.md").read_text()  # the README summarises them and links to the full table
    assert "docs/design.md#what-wsgimirror-guarantees-under-faults" in README
    section = design.split("## What wsgimirror guarantees under faults", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 29
    for row in rows:
        current = None
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", row.split(" | ")[-1]):
            path, _, name = ref.partition("::")
            current = path or current
            source = (ROOT / current).read_text()
            if name:
                assert f"def {name}(" in source, ref


def test_the_readme_is_a_users_document_and_everything_it_links_exists():
    assert len(README.splitlines()) <= 480  # about 450: a user's document, the notebook is in docs/
    for target in re.findall(r"\]\(((?:docs|bench|examples|tests)/[^)#]+)", README):
        assert (ROOT / target).exists(), target
    for doc in ("design", "performance", "development"):
        assert f"docs/{doc}.md" in README
    for doc, anchor in re.findall(r"\]\(docs/(\w+)\.md#([\w-]+)\)", README):
        headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / f"{doc}.md").read_text(), re.M)
        slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
        assert anchor in slugs, f"docs/{doc}.md#{anchor}"


def test_every_test_the_readme_names_exists():
    """A guarantee or a security point names the tests that hold it: a file, or a file and a test."""
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", README)
    assert len(named) >= 12
    for path, name in named:
        source = (ROOT / path).read_text()
        assert not name or f"def {name}(" in source, f"{path}::{name}"
