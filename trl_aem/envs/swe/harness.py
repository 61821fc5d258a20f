"""SWE-bench grading through SWE-bench's own harness (the ``swebench`` package, extra ``trl-aem[swe]``).

Which instances go where:

* **SWE-bench format** (a row with ``repo`` and ``version`` and no ``test_cmd``: SWE-bench, SWE-bench
  Verified, SWE-Gym): when ``swebench`` knows the repo/version, the evaluation script is swebench's own
  (``conda activate testbed``, reset of the test files to ``base_commit``, ``git apply`` of ``test_patch``,
  the repo's test command: ``./tests/runtests.py`` for django, ``bin/test`` for sympy, ``pytest -rA`` ...),
  the log is read by swebench's parser for that repo and resolved is swebench's rule. Without ``swebench``
  installed, :class:`SWEBenchMissing` is raised: no silent fallback to a home-made grader.
* **R2E-Gym rows** (an ``expected_output_json``) follow R2E-Gym's own convention: :mod:`.r2egym`.
* **Everything else** (a ``test_cmd`` given, repos/versions swebench does not know) keeps the generic path of
  :mod:`.docker`: ``task["test_cmd"]`` or ``python -m pytest -rA`` on the test files.

Only swebench's pure functions are used: :func:`swebench.harness.test_spec.test_spec.make_test_spec` is
avoided because it builds the environment script too, which downloads requirements from GitHub for some
repos.
"""

from __future__ import annotations

from .workspace import TestReport

__all__ = ["SWEBenchMissing", "evaluation_script", "grade", "is_swebench_instance", "uses_harness"]

INSTALL_HINT = 'pip install "trl-aem[swe]"'


class SWEBenchMissing(ImportError):
    """A SWE-bench instance needs the ``swebench`` package, which is not installed."""


def is_swebench_instance(task: dict) -> bool:
    """A row in SWE-bench's format that brings no test command of its own (SWE-bench, Verified, SWE-Gym)."""
    return bool(task.get("repo") and task.get("version") and not task.get("test_cmd"))


def _import_swebench():
    try:
        from swebench.harness import constants, grading, log_parsers
        from swebench.harness.test_spec import create_scripts, test_spec
    except ImportError as error:
        raise SWEBenchMissing(
            f"grading SWE-bench instances needs the swebench package: {INSTALL_HINT} ({error})"
        ) from error
    return constants, grading, log_parsers, create_scripts, test_spec


def uses_harness(task: dict) -> bool:
    """True when the task is graded by swebench's harness; raises :class:`SWEBenchMissing` for a SWE-bench
    instance when ``swebench`` is not installed. False (generic path) for other rows and unknown repo/versions."""
    if not is_swebench_instance(task):
        return False
    constants, _, log_parsers, _, _ = _import_swebench()
    specs = constants.MAP_REPO_VERSION_TO_SPECS.get(task["repo"], {})
    return str(task["version"]) in specs and task["repo"] in log_parsers.MAP_REPO_TO_PARSER


def _instance(task: dict) -> dict:
    """The row as swebench reads it (version as a string, as in its spec tables)."""
    return {**task, "version": str(task["version"])}


def evaluation_script(task: dict) -> str:
    """swebench's evaluation script for the instance, with stderr merged into stdout: the harness finds the test
    output between the ``: '>>>>> Start Test Output'`` markers that ``set -x`` prints on stderr, and the
    Docker back end returns stdout then stderr, which would separate them."""
    constants, _, _, create_scripts, _ = _import_swebench()
    instance = _instance(task)
    specs = constants.MAP_REPO_VERSION_TO_SPECS[instance["repo"]][instance["version"]]
    lines = create_scripts.make_eval_script_list(
        instance, specs, "testbed", "/testbed", instance["base_commit"], instance["test_patch"]
    )
    return "\n".join(["exec 2>&1", "set -uxo pipefail", *lines]) + "\n"


def _test_spec(task: dict):
    """A TestSpec for the log parsers (they take one); no scripts, which they do not read."""
    constants, _, _, _, test_spec = _import_swebench()
    instance = _instance(task)
    return test_spec.TestSpec(
        instance_id=instance["instance_id"],
        repo=instance["repo"],
        version=instance["version"],
        repo_script_list=[],
        eval_script_list=[],
        env_script_list=[],
        arch="x86_64",
        FAIL_TO_PASS=list(task["FAIL_TO_PASS"]),
        PASS_TO_PASS=list(task["PASS_TO_PASS"]),
        language=constants.MAP_REPO_TO_EXT[instance["repo"]],
        docker_specs={},
        namespace=None,
    )


def parse_log(task: dict, log: str) -> tuple[dict[str, str], str | None]:
    """swebench's status map (test -> PASSED/FAILED/ERROR/SKIPPED/XFAIL) of a log, and an error when the log
    shows a failed reset/patch/test run or lacks the test-output markers (as ``grading.get_logs_eval``)."""
    constants, _, log_parsers, _, _ = _import_swebench()
    bad = [
        code
        for code in (
            constants.APPLY_PATCH_FAIL,
            constants.RESET_FAILED,
            constants.TESTS_ERROR,
            constants.TESTS_TIMEOUT,
        )
        if code in log
    ]
    if bad:
        return {}, f"evaluation failed: {bad[0]}"
    start, end = constants.START_TEST_OUTPUT, constants.END_TEST_OUTPUT
    if start not in log or end not in log:
        return {}, "the test run did not complete (no test-output markers in the log)"
    parser = log_parsers.MAP_REPO_TO_PARSER[task["repo"]]
    spec = _test_spec(task)
    # as get_logs_eval: between the markers first, the whole log when nothing was found there
    status = parser(log.split(start)[1].split(end)[0], spec) or parser(log, spec)
    return status, None


def swebench_report(task: dict, status: dict[str, str]) -> dict:
    """swebench's FAIL_TO_PASS/PASS_TO_PASS success/failure report of a status map."""
    constants, grading, _, _, _ = _import_swebench()
    eval_type = (
        constants.EvalType.FAIL_ONLY if task["repo"] in constants.FAIL_ONLY_REPOS else constants.EvalType.PASS_AND_FAIL
    )
    gold = {constants.FAIL_TO_PASS: list(task["FAIL_TO_PASS"]), constants.PASS_TO_PASS: list(task["PASS_TO_PASS"])}
    return grading.get_eval_tests_report(status, gold, eval_type=eval_type)


def swebench_resolved(task: dict, status: dict[str, str]) -> bool:
    """swebench's rule: every FAIL_TO_PASS and PASS_TO_PASS test that it counts succeeded (ResolvedStatus.FULL)."""
    constants, grading, _, _, _ = _import_swebench()
    return grading.get_resolution_status(swebench_report(task, status)) == constants.ResolvedStatus.FULL.value


_STATUS = {"PASSED": "passed", "XFAIL": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped"}


def grade(task: dict, log: str, *, timed_out: bool = False) -> TestReport:
    """A :class:`TestReport` of an evaluation log, whose ``resolved`` is swebench's decision: each
    FAIL_TO_PASS/PASS_TO_PASS test is ``passed`` when swebench counts it a success, else its parsed status
    (``failed`` when absent from the log). swebench counts a skipped test neither way, so it is marked passed
    here for the F2P/P2P sets (it does not block resolution there either)."""
    status, error = parse_log(task, log)
    report = TestReport(
        status={test: _STATUS.get(value, value.lower()) for test, value in status.items()},
        fail_to_pass=list(task["FAIL_TO_PASS"]),
        pass_to_pass=list(task["PASS_TO_PASS"]),
        timed_out=timed_out,
        error=error,
    )
    if error is None:
        failures = {t for part in swebench_report(task, status).values() for t in part["failure"]}
        for test in report.fail_to_pass + report.pass_to_pass:
            report.status[test] = report.status.get(test, "failed") if test in failures else "passed"
    return report
