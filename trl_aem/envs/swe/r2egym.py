"""R2E-Gym rows graded by R2E-Gym's own convention (github.com/R2E-Gym/R2E-Gym).

What R2E-Gym does (``src/r2egym/agenthub/runtime/docker.py``, ``src/r2egym/repo_analysis/execution_log_parser.py``):

* **Layout.** Its images (``repo_analysis/base_dockerfiles/``) have the repository at ``/testbed``, checked out at
  the commit before the fix, a ``/testbed/run_tests.sh`` (``.venv/bin/python -W ignore -m pytest -rA r2e_tests``,
  or a unittest runner printing pytest's summary format) and the hidden tests in ``/r2e_tests``. Its runtime
  moves the script and the tests to ``/root`` and links ``/root/r2e_tests`` back into the repository.
* **Test run.** ``timeout 300 bash /root/run_tests.sh`` in ``/testbed``, stdout and stderr together, ANSI colours
  and ``\\r`` removed; on a timeout the output is replaced by a message, so nothing parses.
* **Parsing.** Only the lines after pytest's ``short test summary info``: a line containing ``PASSED`` /
  ``FAILED`` / ``ERROR`` (checked in that order) names the test by its node id without the file, the ``::``
  parts joined by ``.`` (``r2e_tests/test_1.py::TestA::test_b`` -> ``TestA.test_b``); failure messages after
  `` - `` are cut off.
* **Reward.** 1 iff the parsed map equals the row's ``expected_output_json`` exactly (same tests, same statuses,
  keys cut at `` - `` on both sides): a test expected to fail must still fail, a missing or extra test is 0.

Here: :func:`evaluation_script` reproduces that run in the fresh grading container, :func:`parse_log` the
parser, :func:`grade` the rule, as a :class:`~.workspace.TestReport` with ``expected_status`` set (exact match;
``FAIL_TO_PASS``/``PASS_TO_PASS`` stay empty: R2E-Gym rows have none). Detection (:func:`is_r2egym_instance`)
follows R2E-Gym's own split: a row with an ``expected_output_json`` whose ``docker_image`` does not name a
SWE-bench image (R2E-Gym grades those with swebench, as :mod:`.harness` does here).
"""

from __future__ import annotations

import json
import re

from .grading import diff_paths
from .workspace import TestReport

__all__ = [
    "HARNESS_FILES",
    "TEST_TIMEOUT",
    "evaluation_script",
    "expected_status",
    "grade",
    "harness_paths",
    "is_r2egym_instance",
    "parse_log",
]

TEST_TIMEOUT = 300  # seconds, R2E-Gym's DockerRuntime.run_tests
HARNESS_FILES = ("run_tests.sh", "r2e_tests")  # R2E-Gym's SKIP_FILES_NEW: hidden from the agent, never its fix
SUMMARY = "short test summary info"
TIMEOUT_MARKER = "trl-aem: R2E-Gym's test run timed out"
_OUTCOMES = ("PASSED", "FAILED", "ERROR")  # R2E-Gym's order: the first one a line contains wins
_ANSI = re.compile(r"\x1b\[[0-9;]*m|\r")  # what R2E-Gym strips from the output
_COLOUR = re.compile(r"\x1b\[\d+m")  # what its decolor_dict_keys strips from test names


def is_r2egym_instance(task: dict) -> bool:
    """An R2E-Gym row: it carries ``expected_output_json`` and its image is not a SWE-bench one (R2E-Gym's own
    test is ``"swebench" in docker_image``)."""
    return bool(task.get("expected_output_json")) and "swebench" not in str(task.get("docker_image") or "")


def expected_status(task: dict) -> dict[str, str]:
    """The row's ``expected_output_json`` (a JSON string in the datasets, or an already decoded dict)."""
    value = task["expected_output_json"]
    decoded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(decoded, dict):
        raise ValueError(f"expected_output_json must be a JSON object, got {type(decoded).__name__}")
    return {str(k): str(v) for k, v in decoded.items()}


def evaluation_script(task: dict) -> str:
    """R2E-Gym's test run in an untouched container of the row's image: its layout first (script and tests under
    ``/root``, the tests linked into ``/testbed``, stale bytecode removed, as its ``setup_env``), then
    ``timeout 300 bash /root/run_tests.sh``. stderr is merged, as R2E-Gym reads both streams as one."""
    del task  # the same script for every row: the row's tests and runner are in its image
    return "\n".join(
        [
            "exec 2>&1",
            "cd /testbed",
            "if [ -f /testbed/run_tests.sh ]; then mv -f /testbed/run_tests.sh /root/run_tests.sh; fi",
            "if [ -d /r2e_tests ]; then rm -rf /root/r2e_tests && mv /r2e_tests /root/r2e_tests; fi",
            "if [ ! -e /testbed/r2e_tests ]; then ln -s /root/r2e_tests /testbed/r2e_tests; fi",
            "find . /root/r2e_tests -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null",
            "find . /root/r2e_tests -name '*.pyc' -delete 2>/dev/null",
            f"timeout {TEST_TIMEOUT} bash /root/run_tests.sh",
            "status=$?",
            f"if [ $status -eq 124 ]; then echo '{TIMEOUT_MARKER}'; fi",
            "exit $status",
        ]
    )


def _outcome(line: str) -> str | None:
    return next((outcome for outcome in _OUTCOMES if outcome in line), None)


def parse_log(log: str) -> dict[str, str]:
    """Test name -> ``PASSED`` | ``FAILED`` | ``ERROR`` from the lines after pytest's short test summary, in
    R2E-Gym's naming (node id without the file, ``::`` -> ``.``; the message after `` - `` dropped)."""
    log = _ANSI.sub("", log or "")
    if SUMMARY not in log:
        return {}
    status: dict[str, str] = {}
    for line in log.split(SUMMARY, 1)[1].strip().split("\n"):
        outcome = _outcome(line)
        if outcome is None:
            continue
        name = ".".join(line.split("::")[1:])
        status[name if outcome == "PASSED" else name.split(" - ")[0]] = outcome
    return status


def _comparable(status: dict[str, str]) -> dict[str, str]:
    """Both sides as R2E-Gym compares them: colour codes out of the names, names cut at `` - ``."""
    clean = {_COLOUR.sub("", name): value for name, value in status.items()}
    return {name.split(" - ")[0]: clean[name] for name in sorted(clean)}


def grade(task: dict, log: str, *, timed_out: bool = False) -> TestReport:
    """A :class:`TestReport` whose ``resolved`` is R2E-Gym's rule: the parsed statuses equal the expected ones.
    A timed-out run parses to nothing (R2E-Gym replaces its output by a message)."""
    expected = {name: value.lower() for name, value in _comparable(expected_status(task)).items()}
    timed_out = timed_out or TIMEOUT_MARKER in (log or "")
    parsed = {} if timed_out else _comparable(parse_log(log))
    error = None
    if timed_out:
        error = f"the tests did not finish (R2E-Gym allows {TEST_TIMEOUT} s)"
    elif SUMMARY not in _ANSI.sub("", log or ""):
        error = "no pytest short test summary in the test output"
    return TestReport(
        status={name: value.lower() for name, value in parsed.items()},
        expected_status=expected,
        timed_out=timed_out,
        error=error,
    )


def harness_paths(baseline_diff: str) -> tuple[str, ...]:
    """Paths never taken from the agent's diff: R2E-Gym's hidden files and whatever the image itself changed
    against ``HEAD`` (``baseline_diff``, the diff of an untouched container: ``run_tests.sh``, ``install.sh``, a
    replaced ``Makefile``...). The grading container has those already, so the agent's copy of them would not
    apply; and a changed ``run_tests.sh`` would change the test command."""
    return tuple(dict.fromkeys([*HARNESS_FILES, *diff_paths(baseline_diff)]))
