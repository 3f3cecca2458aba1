"""Mutation testing, one core module at a time, each against the tests that are about it.

    python3 tests/mutation_run.py [MODULE ...]      (tox -e mutate runs it, then mutation_scores.py)

mutmut runs, for each mutant, every selected test that calls the mutated function. Every
end-to-end test loads a config and sends mirrors, so with the whole suite selected a config
mutant would run hundreds of slow tests. Each module is therefore mutated in its own copy of
the tree under ``.mutation/<module>/`` with the tests listed below. Tests that run the package
in child processes cannot kill a mutant and are not listed, nor are the hypothesis fuzz tests
(about ten seconds a mutant; the explicit tests hold what they found).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"

# module -> the tests about it (in-process only)
TESTS: dict[str, list[str]] = {
    # configuration
    **{f"config.{part}": ["tests/config/test_config.py", "tests/config/test_config_messages.py",
                          "tests/config/test_appsettings.py", "tests/config/test_transforms.py",
                          "tests/e2e/test_tls.py::test_invalid_http_client_values_name_their_key",
                          "tests/e2e/test_tls.py::test_tls_settings_as_appsettings_spell_them_load"]
       for part in ("model", "load", "sections", "rules")},
    "config.appsettings": ["tests/config/test_appsettings.py", "tests/config/test_config.py"],
    "config.transforms": ["tests/config/test_transforms.py", "tests/config/test_appsettings.py"],
    "util.syntax": ["tests/send/test_head.py", "tests/capture/test_routing.py", "tests/config/test_config.py",
                    "tests/config/test_transforms.py"],
    # capture on the request path
    "capture.routing": ["tests/capture/test_routing.py", "tests/e2e/test_transparency.py"],
    "capture.body": ["tests/capture/test_body.py", "tests/e2e/test_mirroring.py", "tests/e2e/test_transparency.py"],
    "capture.answer": ["tests/capture/test_answer.py", "tests/compare/test_diff.py", "tests/e2e/test_compare.py"],
    # picking and sending
    "send.pick": ["tests/send/test_pick.py", "tests/send/test_sampling.py", "tests/send/test_breaker.py"],
    "send.head": ["tests/send/test_head.py", "tests/config/test_transforms.py", "tests/e2e/test_hostile_requests.py",
                  "-k", "not gunicorn and not werkzeug"],
    **{module: ["tests/send/test_breaker.py", "tests/test_stats.py", "tests/e2e/test_breaker.py",
                "tests/e2e/test_reload.py", "tests/e2e/test_control_faults.py", "tests/e2e/test_record.py",
                "tests/e2e/test_compare.py", "tests/e2e/test_resilience.py", "tests/e2e/test_mirroring.py",
                "tests/e2e/test_stats.py",
                "tests/e2e/test_transparency.py::test_with_a_loop_token_a_forged_mark_is_stripped_and_the_request_mirrored",
                "tests/e2e/test_mirror_faults.py::test_a_destination_that_never_accepts_fails_as_connect_timeout_after_connect_timeout",
                "-k",
                "not sigterm and not sighup and not check_and_serve and not gunicorn"]
       for module in ("send.breaker", "send.executors", "send.pools", "agent.runtime", "agent.dispatch")},
    "send.transport": ["tests/send/test_transport.py", "tests/e2e/test_mirror_faults.py", "tests/e2e/test_tls.py",
                       "tests/send/test_breaker.py", "tests/e2e/test_compare.py",
                       "tests/e2e/test_resilience.py::test_a_burst_leaves_only_keep_alive_connections_resting_and_those_close_when_idle"],
    # shadow comparison
    "compare.trees": ["tests/compare/test_diff.py", "tests/e2e/test_compare.py"],
    "compare.diff": ["tests/compare/test_diff.py", "tests/e2e/test_compare.py"],
    "compare.endpoints": ["tests/compare/test_diff.py", "tests/e2e/test_compare.py"],
    "compare.analysis": ["tests/compare/test_diff.py", "tests/compare/test_verdicts.py", "tests/e2e/test_compare.py",
                         "tests/e2e/test_compare_report.py"],
    "compare.verdicts": ["tests/compare/test_verdicts.py", "tests/compare/test_diff.py"],
    "compare.comparer": ["tests/compare/test_comparer.py", "tests/e2e/test_compare.py",
                         "tests/e2e/test_record.py::test_answers_are_cut_at_compare_max_body_bytes_and_keep_their_own_content_length"],
    "compare.difflog": ["tests/compare/test_difflog.py", "tests/e2e/test_compare.py",
                        "tests/e2e/test_compare_report.py"],
    # record and replay (replay's own runs are child processes: only its in-process tests count)
    "record.gor": ["tests/record/test_gor.py", "tests/record/test_replay.py", "tests/e2e/test_record.py"],
    "record.recorder": ["tests/e2e/test_record.py", "-k", "not gunicorn"],
    # (two pacing tests take 2 to 10 s each, and the pty and Ctrl-C ones run the command as a child process)
    **{module: ["tests/record/test_replay.py", "tests/e2e/test_replay.py", "-k",
                "not pacing and not on_a_terminal and not ctrl_c and not fixed_rate"]
       for module in ("record.source", "record.replay", "record.summary")},

}  # fmt: skip
COPIED = ("wsgimirror", "tests", "examples", "setup.py", "README.md")


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def prepare(module: str) -> Path:
    """A fresh copy of the tree whose pyproject mutates ``module`` against its tests."""
    work = WORK / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(source, work / name)
    base = (ROOT / "pyproject.toml").read_text().split("[tool.mutmut]")[0]
    (work / "pyproject.toml").write_text(
        base
        + "[tool.mutmut]\n"
        + 'source_paths = ["wsgimirror/"]\n'
        + f'only_mutate = ["wsgimirror/{module.replace(".", "/")}.py"]\n'
        + 'process_isolation = "forkserver"\n'
        + 'also_copy = ["examples/", "setup.py", "README.md"]\n'
        + f"pytest_add_cli_args_test_selection = {toml_list(TESTS[module])}\n"
    )
    return work


def main(argv: list[str]) -> int:
    modules = argv or list(TESTS)
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        print(f"unknown modules {unknown}; known: {', '.join(TESTS)}", file=sys.stderr)
        return 2
    for module in modules:
        print(f"== {module}", flush=True)
        work = prepare(module)
        run = subprocess.run(["mutmut", "run", "--max-children", "2"], cwd=work, stdout=subprocess.DEVNULL)
        if run.returncode != 0:
            print(f"mutmut failed for {module} (exit {run.returncode})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
