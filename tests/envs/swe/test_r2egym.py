"""R2E-Gym rows graded by R2E-Gym's convention (trl_aem/envs/swe/r2egym.py): its log parser on a log in the
format its run_tests.sh prints, the exact-match rule against expected_output_json, normalize_task on an R2E-Gym
row, and the dispatch through DockerWorkspace and SWEEnv's diff-only grading with a fake daemon (no Docker)."""

from __future__ import annotations

import functools
import json
import subprocess

import pytest

from trl_aem.envs import SWEEnv
from trl_aem.envs.swe import docker as swe_docker
from trl_aem.envs.swe import normalize_task, r2egym

from .instances import real_rows

# What `bash /root/run_tests.sh` (`.venv/bin/python -W ignore -m pytest -rA r2e_tests`) prints, with pytest's
# colours as a terminal-less docker exec can still get them.
LOG = """\x1b[1m============================= test session starts ==============================\x1b[0m
platform linux -- Python 3.9.21, pytest-8.3.4, pluggy-1.5.0
rootdir: /testbed
configfile: pyproject.toml
collected 6 items

r2e_tests/test_1.py \x1b[32m.\x1b[0m\x1b[32m.\x1b[0m\x1b[31mF\x1b[0m\x1b[32m.\x1b[0m\x1b[32m.\x1b[0m\x1b[31mE\x1b[0m\r
                                                                         [100%]

==================================== ERRORS ====================================
___________________ ERROR at setup of TestFrame.test_needs_db ___________________
E       fixture 'db' not found
=================================== FAILURES ===================================
__________________________ test_idx_inequalities_fails __________________________
>       assert S(5) >= i14
E       TypeError: cannot determine truth value of Relational
r2e_tests/test_1.py:139: TypeError
==================================== PASSES ====================================
=========================== short test summary info ============================
PASSED r2e_tests/test_1.py::test_construction
PASSED r2e_tests/test_1.py::TestFrame::test_repr
PASSED r2e_tests/test_1.py::test_param[a-1]
PASSED r2e_tests/test_1.py::TestFrame::test_shape
\x1b[31mFAILED\x1b[0m r2e_tests/test_1.py::test_idx_inequalities_fails - TypeError: cannot determine truth value
ERROR r2e_tests/test_1.py::TestFrame::test_needs_db - fixture 'db' not found
=================== 1 failed, 4 passed, 1 error in 0.57s ===================
"""

EXPECTED = {
    "test_construction": "PASSED",
    "TestFrame.test_repr": "PASSED",
    "test_param[a-1]": "PASSED",
    "TestFrame.test_shape": "PASSED",
    "test_idx_inequalities_fails": "FAILED",  # R2E-Gym keeps tests that fail after the fix too
    "TestFrame.test_needs_db": "ERROR",
}


def r2egym_row(expected: dict | None = None) -> dict:
    """An R2E-Gym-Lite row (the fields of R2E-Gym's DatasetRow, repo_analysis/validate_docker_and_hf.py)."""
    return {
        "repo_name": "sympy",
        "docker_image": "namanjain12/sympy_final:0f5a26ca1bd2f5f0f8e7bbab9e3bd1a5f14a5e3c",
        "commit_hash": "0f5a26ca1bd2f5f0f8e7bbab9e3bd1a5f14a5e3c",
        "parsed_commit_content": json.dumps({"file_diffs": [], "old_commit_hash": "1a2b", "new_commit_hash": "0f5a"}),
        "execution_result_content": "{}",
        "modified_files": ["sympy/tensor/indexed.py", "r2e_tests/test_1.py"],
        "modified_entity_summaries": [],
        "relevant_files": ["sympy/tensor/indexed.py"],
        "num_non_test_files": 1,
        "num_non_test_func_methods": 1,
        "num_non_test_lines": 3,
        "prompt": "...",
        "problem_statement": "[ISSUE]\nIdx comparisons raise TypeError\n[/ISSUE]",
        "expected_output_json": json.dumps(EXPECTED if expected is None else expected, indent=4),
    }


# ---------------------------------------------------------------- the parser
def test_parser_reads_the_short_test_summary_in_r2egyms_naming():
    assert r2egym.parse_log(LOG) == EXPECTED
    assert r2egym.parse_log(LOG.split("short test summary info")[0]) == {}  # nothing before the summary counts
    assert r2egym.parse_log("") == {}


# ---------------------------------------------------------------- the exact-match rule
def test_resolved_iff_the_statuses_equal_the_expected_ones():
    task = normalize_task(r2egym_row())
    report = r2egym.grade(task, LOG)
    assert report.resolved and report.error is None
    assert report.info()["tests_passed"] == 6 and report.info()["tests_failed"] == 0
    assert report.fail_to_pass == [] and report.pass_to_pass == []  # R2E-Gym rows have none


def test_a_missing_test_is_not_resolved():
    missing = LOG.replace("PASSED r2e_tests/test_1.py::TestFrame::test_shape\n", "")
    report = r2egym.grade(normalize_task(r2egym_row()), missing)
    assert not report.resolved and report.info()["failed_tests"] == ["TestFrame.test_shape"]


def test_an_extra_failure_or_a_changed_status_is_not_resolved():
    task = normalize_task(r2egym_row())
    extra = LOG.replace("ERROR r2e_tests", "FAILED r2e_tests/test_1.py::test_new - boom\nERROR r2e_tests")
    report = r2egym.grade(task, extra)
    assert not report.resolved and report.info()["failed_tests"] == ["test_new"]
    # the test expected to fail now passes: a different status, so R2E-Gym gives 0 as well
    fixed = LOG.replace(
        "\x1b[31mFAILED\x1b[0m r2e_tests/test_1.py::test_idx_inequalities_fails - TypeError",
        "PASSED r2e_tests/test_1.py::test_idx_inequalities_fails",
    )
    assert not r2egym.grade(task, fixed).resolved


def test_a_timed_out_or_summary_less_run_is_not_resolved():
    task = normalize_task(r2egym_row())
    report = r2egym.grade(task, LOG + f"\n{r2egym.TIMEOUT_MARKER}\n")
    assert report.timed_out and not report.resolved and report.status == {}
    report = r2egym.grade(task, "bash: /root/run_tests.sh: No such file or directory\n")
    assert not report.resolved and "summary" in report.error
    assert not r2egym.grade(task, LOG, timed_out=True).resolved


# ---------------------------------------------------------------- normalize_task
def test_normalize_task_accepts_an_r2egym_row():
    row = r2egym_row()
    assert r2egym.is_r2egym_instance(row)
    task = normalize_task(row)
    assert task["instance_id"] == row["docker_image"] and task["repo"] == "sympy"
    assert task["problem_statement"] == "Idx comparisons raise TypeError"  # as R2E-Gym shows it
    assert task["FAIL_TO_PASS"] == [] and task["patch"] == "" and task["base_commit"] == ""
    with pytest.raises(ValueError, match="empty expected_output_json"):
        normalize_task(r2egym_row(expected={}))
    with pytest.raises(ValueError, match="docker_image"):
        normalize_task({**row, "docker_image": "", "instance_id": "x"})


def test_other_rows_keep_their_behaviour():
    swebench_row = real_rows()[0]
    assert not r2egym.is_r2egym_instance(swebench_row)
    assert normalize_task(swebench_row)["FAIL_TO_PASS"]
    with pytest.raises(ValueError, match="no FAIL_TO_PASS"):
        normalize_task({**swebench_row, "FAIL_TO_PASS": "[]"})
    # R2E-Gym's SWE-bench images are graded by swebench there, and by the harness here
    assert not r2egym.is_r2egym_instance({**r2egym_row(), "docker_image": "slimshetty/swebench-verified:sweb.eval"})


# ---------------------------------------------------------------- the Docker back end
class FakeDocker:
    """A daemon that has the image: the test run prints ``log``; the ``diffs`` answer git diff in order."""

    def __init__(self, log: str = "", diffs: tuple[str, ...] = ()):
        self.calls, self.log, self.diffs = [], log, list(diffs)

    def __call__(self, argv, input=None, capture_output=True, text=True, timeout=None):
        self.calls.append((argv, input))
        out = "27.0" if argv[1] == "info" else ""
        if argv[1] == "exec" and "run_tests.sh" in argv[-1]:
            out = self.log
        elif argv[1] == "exec" and "intent-to-add" in argv[-1]:
            out = self.diffs.pop(0) if self.diffs else ""
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_docker_workspace_dispatches_r2egym_rows():
    task = normalize_task(r2egym_row())
    fake = FakeDocker(LOG)
    workspace = swe_docker.DockerWorkspace(task, runner=fake)
    try:
        assert workspace.image == task["docker_image"]
        script = workspace.evaluation_script()
        assert "timeout 300 bash /root/run_tests.sh" in script and "pytest" not in script
        assert script.index("mv /r2e_tests /root/r2e_tests") < script.index("ln -s /root/r2e_tests /testbed/r2e_tests")
        report = workspace.evaluate(600)
        assert report.resolved
        ran = [argv[-1] for argv, _ in fake.calls if argv[1] == "exec"]
        assert ran[-1] == script  # R2E-Gym's script, not the generic test_cmd / pytest -rA path
    finally:
        workspace.close()


def _new_file(path: str, line: str) -> str:
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


def test_diff_only_grading_leaves_out_the_images_own_files(monkeypatch):
    fix = (
        "diff --git a/sympy/tensor/indexed.py b/sympy/tensor/indexed.py\n"
        "--- a/sympy/tensor/indexed.py\n+++ b/sympy/tensor/indexed.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    )
    # the image's untracked run_tests.sh/install.sh appear in both containers' diffs against HEAD
    image_files = _new_file("run_tests.sh", "pytest -rA r2e_tests") + _new_file("install.sh", "uv venv")
    fake = FakeDocker(LOG, diffs=(fix + image_files, image_files))
    monkeypatch.setattr(swe_docker, "DockerWorkspace", functools.partial(swe_docker.DockerWorkspace, runner=fake))
    env = SWEEnv(backend="docker")
    try:
        env.reset(r2egym_row())
        assert env.expert_action() is None  # no gold patch in R2E-Gym rows
        result = env.step("<function=submit>\n</function>")
        assert result.done and result.reward == 1.0, result.info
        assert result.info["ignored_paths"] == ["install.sh", "run_tests.sh"]
        diffs = [argv[-1] for argv, _ in fake.calls if argv[1] == "exec" and "intent-to-add" in argv[-1]]
        assert all("diff --no-color --no-ext-diff" in d and " HEAD " in d for d in diffs)  # base: the image's HEAD
        written = [inp for argv, inp in fake.calls if argv[1] == "exec" and inp is not None]
        assert written == [fix]  # only the fix goes into the grading container
    finally:
        env.close()
