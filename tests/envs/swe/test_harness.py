"""SWE-bench grading through swebench's harness (trl_aem/envs/swe/harness.py): per repository family,
swebench's parser on a hand-written log in that family's real format, the resolved decision, the evaluation
scripts, the generic path for what swebench does not know, and the error without swebench. No Docker daemon."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys

import pytest

from trl_aem.envs.swe import harness
from trl_aem.envs.swe.docker import DockerWorkspace

pytest.importorskip("swebench")

START, END = ": '>>>>> Start Test Output'", ": '>>>>> End Test Output'"


def _patch(path: str) -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,2 @@\n x = 1\n+y = 2\n"


def _task(repo: str, version: str, test_file: str, f2p: list[str], p2p: list[str]) -> dict:
    return {
        "instance_id": repo.replace("/", "__") + "-1",
        "repo": repo,
        "version": version,
        "base_commit": "abc123",
        "test_patch": _patch(test_file),
        "FAIL_TO_PASS": f2p,
        "PASS_TO_PASS": p2p,
    }


def _log(body: str) -> str:
    """A log as swebench's script prints it under ``set -x`` with stderr merged (harness.evaluation_script)."""
    return f"+ git apply -v -\nChecking patch...\n+ {START}\n{body}\n+ {END}\n+ git checkout abc123 x\n"


# ---------------------------------------------------------------- pytest -rA (most repos)
PYTEST_LOG = """============================= test session starts ==============================
collected 4 items

testing/test_mark.py ..F.s                                                [100%]

=================================== FAILURES ===================================
_________________________________ test_broken __________________________________
    def test_broken():
>       assert 0
E       assert 0
testing/test_mark.py:9: AssertionError
=========================== short test summary info ============================
PASSED testing/test_mark.py::test_fixed
PASSED testing/test_mark.py::TestKeep::test_kept[a-1]
PASSED testing/test_mark.py::test_other
FAILED testing/test_mark.py::test_broken - assert 0
SKIPPED [1] testing/test_mark.py:20: needs windows
==================== 1 failed, 3 passed, 1 skipped in 0.12s ===================="""


def test_pytest_family_parser_and_resolved():
    task = _task(
        "pytest-dev/pytest",
        "7.4",
        "testing/test_mark.py",
        ["testing/test_mark.py::test_fixed"],
        ["testing/test_mark.py::TestKeep::test_kept[a-1]", "testing/test_mark.py::test_other"],
    )
    status, error = harness.parse_log(task, _log(PYTEST_LOG))
    assert error is None
    assert status["testing/test_mark.py::test_fixed"] == "PASSED"
    assert status["testing/test_mark.py::TestKeep::test_kept[a-1]"] == "PASSED"
    assert status["testing/test_mark.py::test_broken"] == "FAILED"
    report = harness.grade(task, _log(PYTEST_LOG))
    assert report.resolved and harness.swebench_resolved(task, status)
    broken = dict(task, PASS_TO_PASS=[*task["PASS_TO_PASS"], "testing/test_mark.py::test_broken"])
    report = harness.grade(broken, _log(PYTEST_LOG))
    assert not report.resolved and not harness.swebench_resolved(broken, status)
    assert report.status["testing/test_mark.py::test_broken"] == "failed"
    # a FAIL_TO_PASS test the log never mentions is a failure, as in swebench
    missing = dict(task, FAIL_TO_PASS=["testing/test_mark.py::test_absent"])
    assert not harness.grade(missing, _log(PYTEST_LOG)).resolved


# ---------------------------------------------------------------- django ./tests/runtests.py --verbosity 2
DJANGO_LOG = """Testing against Django installed in '/testbed/django' with up to 1 processes
Importing application admin_views
Skipping setup of unused database(s): other.
Operations to perform:
  Apply all migrations: admin, sites
Running migrations:
  Applying admin.0001_initial... OK
System check identified no issues (0 silenced).
test_fixed (admin_views.tests.AdminViewTests) ... ok
test_kept (admin_views.tests.AdminViewTests) ... ok
test_noisy (admin_views.tests.AdminViewTests) ... Internal Server Error: /admin/
ok
test_broken (admin_views.tests.OtherTests) ... FAIL
test_crash (admin_views.tests.OtherTests) ... ERROR
test_windows (admin_views.tests.OtherTests) ... skipped 'needs windows'

======================================================================
FAIL: test_broken (admin_views.tests.OtherTests)
----------------------------------------------------------------------
Traceback (most recent call last):
AssertionError: 1 != 2

----------------------------------------------------------------------
Ran 6 tests in 0.210s

FAILED (failures=1, errors=1, skipped=1)"""


def test_django_parser_and_resolved():
    task = _task(
        "django/django",
        "4.0",
        "tests/admin_views/tests.py",
        ["test_fixed (admin_views.tests.AdminViewTests)"],
        ["test_kept (admin_views.tests.AdminViewTests)", "test_noisy (admin_views.tests.AdminViewTests)"],
    )
    status, _ = harness.parse_log(task, _log(DJANGO_LOG))
    assert status["test_fixed (admin_views.tests.AdminViewTests)"] == "PASSED"
    assert status["test_noisy (admin_views.tests.AdminViewTests)"] == "PASSED"  # output between "..." and "ok"
    assert status["test_broken (admin_views.tests.OtherTests)"] == "FAILED"
    assert status["test_crash (admin_views.tests.OtherTests)"] == "ERROR"
    assert status["test_windows (admin_views.tests.OtherTests)"] == "SKIPPED"
    assert harness.grade(task, _log(DJANGO_LOG)).resolved
    crash = dict(task, FAIL_TO_PASS=["test_crash (admin_views.tests.OtherTests)"])
    report = harness.grade(crash, _log(DJANGO_LOG))
    assert not report.resolved and report.status["test_crash (admin_views.tests.OtherTests)"] == "error"


# ---------------------------------------------------------------- sympy bin/test -C --verbose
def _sympy_file_end(line: str, mark: str) -> str:
    """bin/test writes a file's [OK]/[FAIL] right-aligned (80 columns) on the line of its last test."""
    return line + " " * (80 - len(line) - len(mark)) + mark


SYMPY_LOG = f"""============================= test process starts ==============================
executable:         /opt/miniconda3/envs/testbed/bin/python  (3.9.19-final-0) [CPython]
architecture:       64-bit
cache:              no
ground types:       python
numpy:              None
random seed:        11784423
hash randomization: on (PYTHONHASHSEED=1571238)

sympy/core/tests/test_power.py[4]
test_fixed ok
test_broken F
test_kept ok
{_sympy_file_end("test_last ok ", "[FAIL]")}

________________________________________________________________________________
______________ sympy/core/tests/test_power.py::test_broken _____________________
Traceback (most recent call last):
AssertionError

============= tests finished: 3 passed, 1 failed, in 0.51 seconds ==============
DO *NOT* COMMIT!"""


def test_sympy_parser_and_resolved():
    task = _task("sympy/sympy", "1.12", "sympy/core/tests/test_power.py", ["test_fixed"], ["test_kept"])
    status, _ = harness.parse_log(task, _log(SYMPY_LOG))
    assert status["test_fixed"] == "PASSED" and status["test_kept"] == "PASSED"
    assert status["test_broken"] == "FAILED"
    assert status["sympy/core/tests/test_power.py::test_broken"] == "FAILED"  # the traceback header
    # swebench's parser does not read a file's last test (its line ends in [OK]/[FAIL]); SWE-bench's own
    # FAIL_TO_PASS/PASS_TO_PASS lists come from the same parser, so grading with it stays consistent with them
    assert "test_last" not in status
    assert harness.grade(task, _log(SYMPY_LOG)).resolved
    assert not harness.grade(dict(task, PASS_TO_PASS=["test_kept", "test_broken"]), _log(SYMPY_LOG)).resolved


# ---------------------------------------------------------------- seaborn: pytest --no-header -rA, verbose lines
SEABORN_LOG = """============================= test session starts ==============================
collected 2 items

tests/test_core.py::TestHue::test_fixed PASSED                           [ 50%]
tests/test_core.py::TestHue::test_broken FAILED                          [100%]

=========================== short test summary info ============================
PASSED tests/test_core.py::TestHue::test_fixed
FAILED tests/test_core.py::TestHue::test_broken - ValueError: bad hue
========================= 1 failed, 1 passed in 0.50s =========================="""


def test_seaborn_parser():
    task = _task("mwaskom/seaborn", "0.12", "tests/test_core.py", ["tests/test_core.py::TestHue::test_fixed"], [])
    status, _ = harness.parse_log(task, _log(SEABORN_LOG))
    assert status == {
        "tests/test_core.py::TestHue::test_fixed": "PASSED",
        "tests/test_core.py::TestHue::test_broken": "FAILED",
    }
    assert harness.grade(task, _log(SEABORN_LOG)).resolved


# ---------------------------------------------------------------- matplotlib: pytest -rA, MouseButton ids
MATPLOTLIB_LOG = """=========================== short test summary info ============================
PASSED lib/matplotlib/tests/test_widgets.py::test_span[MouseButton.LEFT]
FAILED lib/matplotlib/tests/test_widgets.py::test_lasso - AssertionError"""


def test_matplotlib_parser_normalizes_mouse_buttons():
    f2p = ["lib/matplotlib/tests/test_widgets.py::test_span[1]"]
    task = _task("matplotlib/matplotlib", "3.7", "lib/matplotlib/tests/test_widgets.py", f2p, [])
    status, _ = harness.parse_log(task, _log(MATPLOTLIB_LOG))
    assert status["lib/matplotlib/tests/test_widgets.py::test_span[1]"] == "PASSED"
    assert status["lib/matplotlib/tests/test_widgets.py::test_lasso"] == "FAILED"
    assert harness.grade(task, _log(MATPLOTLIB_LOG)).resolved


def test_sphinx_runs_tox_and_reads_pytest_lines():
    task = _task("sphinx-doc/sphinx", "7.2", "tests/test_build.py", ["tests/test_build.py::test_fixed"], [])
    assert "tox --current-env -epy39 -v -- tests/test_build.py" in harness.evaluation_script(task)
    log = _log(
        "py39: commands[0]> python -X dev -m pytest -rA tests/test_build.py\nPASSED tests/test_build.py::test_fixed"
    )
    assert harness.grade(task, log).resolved


def test_failed_patch_or_missing_markers_is_an_error():
    task = _task("pytest-dev/pytest", "7.4", "testing/test_mark.py", ["testing/test_mark.py::test_fixed"], [])
    report = harness.grade(task, ">>>>> Patch Apply Failed\n" + _log(PYTEST_LOG))
    assert not report.resolved and "Patch Apply Failed" in report.error
    report = harness.grade(task, "PASSED testing/test_mark.py::test_fixed\n", timed_out=True)
    assert not report.resolved and report.timed_out and "markers" in report.error


# ---------------------------------------------------------------- evaluation scripts
def _assert_common(script: str, task: dict, test_file: str) -> None:
    assert script.startswith("exec 2>&1\n")  # xtrace markers (stderr) stay in order with the test output
    assert "source /opt/miniconda3/bin/activate" in script and "conda activate testbed" in script
    assert f"git checkout abc123 {test_file}" in script  # reset of the test files
    assert "git apply -v - <<'EOF_114329324912'\n" + task["test_patch"] in script
    assert START in script and END in script


def test_django_eval_script():
    task = _task("django/django", "4.0", "tests/admin_views/tests.py", ["t"], [])
    script = harness.evaluation_script(task)
    _assert_common(script, task, "tests/admin_views/tests.py")
    assert "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 admin_views.tests" in script


def test_sympy_eval_script():
    task = _task("sympy/sympy", "1.12", "sympy/core/tests/test_power.py", ["t"], [])
    script = harness.evaluation_script(task)
    _assert_common(script, task, "sympy/core/tests/test_power.py")
    assert "bin/test -C --verbose sympy/core/tests/test_power.py" in script


def test_pytest_family_eval_script():
    task = _task("pytest-dev/pytest", "7.4", "testing/test_mark.py", ["t"], [])
    script = harness.evaluation_script(task)
    _assert_common(script, task, "testing/test_mark.py")
    assert "pytest -rA testing/test_mark.py" in script


# ---------------------------------------------------------------- which path, through DockerWorkspace
class _Recorder:
    """A fake docker client: records argv, answers every command with ``output``."""

    def __init__(self, output: str = ""):
        self.calls: list[list[str]] = []
        self.output = output

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, self.output, "")


def _workspace(task: dict, output: str = "") -> tuple[DockerWorkspace, _Recorder]:
    runner = _Recorder(output)
    return DockerWorkspace(task, runner=runner, image="img"), runner


def test_docker_workspace_grades_swebench_instances_with_the_harness():
    task = _task("sympy/sympy", "1.12", "sympy/core/tests/test_power.py", ["test_fixed"], ["test_kept"])
    workspace, runner = _workspace(task, _log(SYMPY_LOG))
    assert "bin/test -C --verbose" in workspace.evaluation_script()
    report = workspace.evaluate()
    assert report.resolved and report.info()["fail_to_pass_passed"] == 1
    assert any("conda activate testbed" in " ".join(call) for call in runner.calls)


@pytest.mark.parametrize(
    "task",
    [
        {"repo": "acme/widgets", "version": "1.0"},  # swebench does not know the repo
        {"repo": "getmoto/moto", "version": "4.1"},  # SWE-Gym repo outside swebench's tables
        {"repo": "django/django", "version": "4.0", "test_cmd": "./tests/runtests.py x"},  # own test command
        {"repo": "acme/widgets", "version": None, "docker_image": "namanjain12/acme:1"},  # R2E-Gym style row
    ],
)
def test_other_instances_keep_the_generic_path(task):
    task = {**_task("x/y", "0", "tests/test_a.py", ["tests/test_a.py::test_a"], []), **task}
    assert not harness.uses_harness(task)
    workspace, _ = _workspace(task)
    script = workspace.evaluation_script()
    assert "conda activate" not in script
    assert task.get("test_cmd", "python -m pytest -rA") in script


def test_swebench_instance_without_swebench_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_swebench(name, *args, **kwargs):
        if name.startswith("swebench"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_swebench)
    task = _task("django/django", "4.0", "tests/admin_views/tests.py", ["t"], [])
    with pytest.raises(harness.SWEBenchMissing, match=r'pip install "trl-aem\[swe\]"'):
        harness.uses_harness(task)
    workspace, _ = _workspace(task)
    with pytest.raises(harness.SWEBenchMissing):
        workspace.evaluate()
    # rows that are not SWE-bench instances need no swebench
    assert not harness.uses_harness(dict(task, test_cmd="pytest"))


# ---------------------------------------------------------------- the script itself, run by bash
@pytest.mark.skipif(os.path.exists("/testbed"), reason="the script cds into /testbed: not on a machine that has one")
def test_eval_script_runs_under_bash_and_grades(tmp_path):
    """swebench's script for a pytest-family row, run by bash in a git repo here (no conda: its activation
    lines fail and the script goes on, as it is written to): the test file is reset, the test patch applied,
    pytest -rA runs, and with stderr merged the markers frame its output, so the log grades as resolved."""
    repo = tmp_path / "repo"
    (repo / "testing").mkdir(parents=True)
    (repo / "testing" / "test_mark.py").write_text("def test_old():\n    assert True\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "testing" / "test_mark.py").write_text("def test_old():\n    assert False  # the agent's edit\n")
    test_patch = (
        "diff --git a/testing/test_mark.py b/testing/test_mark.py\n--- a/testing/test_mark.py\n"
        "+++ b/testing/test_mark.py\n@@ -1,2 +1,5 @@\n def test_old():\n     assert True\n+\n"
        "+def test_new():\n+    assert True\n"
    )
    task = {
        **_task("pytest-dev/pytest", "7.4", "testing/test_mark.py", ["testing/test_mark.py::test_new"], []),
        "base_commit": base,
        "test_patch": test_patch,
        "PASS_TO_PASS": ["testing/test_mark.py::test_old"],
    }
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    proc = subprocess.run(
        ["bash", "-c", harness.evaluation_script(task)], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stderr == ""  # all of it on stdout, in order
    report = harness.grade(task, proc.stdout)
    assert report.error is None and report.resolved, proc.stdout[-3000:]
