"""The Docker back end without a daemon: the commands it builds, a fake daemon's answers, test-log parsing, and a
clear error when Docker is missing."""

from __future__ import annotations

import functools
import subprocess

import pytest

from trl_aem.envs import SWEEnv
from trl_aem.envs.swe import docker as swe_docker
from trl_aem.envs.swe import normalize_task

from .instances import real_rows


class FakeDocker:
    """Records every command; answers like a daemon that has the image."""

    def __init__(self, outputs=None, daemon=True):
        self.calls, self.outputs, self.daemon = [], outputs or {}, daemon

    def __call__(self, argv, input=None, capture_output=True, text=True, timeout=None):
        self.calls.append((argv, input))
        if argv[1] == "info":
            code = 0 if self.daemon else 1
            return subprocess.CompletedProcess(argv, code, "27.0" if self.daemon else "", "" if self.daemon else "x")
        for needle, output in self.outputs.items():
            if needle in " ".join(argv):
                return subprocess.CompletedProcess(argv, 0, output, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_docker_command_construction():
    task = normalize_task(real_rows()[0])
    assert swe_docker.image_for(task) == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert swe_docker.image_for({**task, "docker_image": "namanjain12/orange3_final:abc"}) == (
        "namanjain12/orange3_final:abc"
    )
    limits = swe_docker.DockerLimits(memory="4g", pids=256, cpus=1.5)
    argv = swe_docker.run_argv("img:1", "box", limits)
    joined = " ".join(argv)
    for part in ("--network none", "--memory 4g", "--memory-swap 4g", "--pids-limit 256", "--cpus 1.5"):
        assert part in joined, part
    assert "--cap-drop ALL" in joined and "no-new-privileges" in joined and argv[-4:-1] == ["img:1", "sh", "-c"]
    argv = swe_docker.exec_argv("box", "pytest -q", 30)
    assert argv[:2] == ["docker", "exec"] and "timeout" in argv and argv[-3:] == ["bash", "-c", "pytest -q"]
    assert swe_docker.remove_argv("box") == ["docker", "rm", "--force", "box"]


def test_docker_workspace_with_a_fake_daemon():
    task = normalize_task(real_rows()[0])
    log = (
        "test_ascii_validator (auth_tests.test_validators.UsernameValidatorsTests) ... ok\n"
        "test_help_text (auth_tests.test_validators.UserAttributeSimilarityTests) ... FAIL\n"
    )
    fake = FakeDocker({"runtests": log})
    workspace = swe_docker.DockerWorkspace({**task, "test_cmd": "./tests/runtests.py --verbosity 2"}, runner=fake)
    run = fake.calls[1][0]
    assert run[:2] == ["docker", "run"] and "swebench/sweb.eval.x86_64.django_1776_django-11099:latest" in run
    workspace.run("ls")
    assert fake.calls[-1][0][:2] == ["docker", "exec"] and fake.calls[-1][0][-1] == "ls"
    with pytest.raises(swe_docker.PathEscape):
        workspace.read_text("../../etc/passwd")
    script = workspace.evaluation_script()
    assert "git checkout d26b2424437dabeeca94d7900b37d2df4410da0c -- tests/auth_tests/test_validators.py" in script
    assert "git apply" in script and script.endswith("./tests/runtests.py --verbosity 2")
    report = workspace.evaluate()
    assert report.fail_to_pass == task["FAIL_TO_PASS"] and not report.resolved and report.tests_failed == 1
    # the test patch went into the container on stdin
    assert any(inp == task["test_patch"] for _, inp in fake.calls)
    workspace.close()
    assert fake.calls[-1][0] == ["docker", "rm", "--force", workspace.name]
    # default test command: pytest on the test patch's files
    requests_task = normalize_task({**real_rows()[0], "test_cmd": None})
    assert "python -m pytest -rA" in swe_docker.DockerWorkspace(requests_task, runner=FakeDocker()).test_command()


def test_docker_parses_pytest_and_unittest_logs():
    log = (
        "PASSED tests/test_a.py::test_one\nFAILED tests/test_a.py::test_two - AssertionError\n"
        "ERROR tests/test_b.py::test_three\n"
        "test_x (pkg.tests.T) ... ok\ntest_y (pkg.tests.T) ... ERROR\n"
    )
    assert swe_docker.parse_test_output(log) == {
        "tests/test_a.py::test_one": "passed",
        "tests/test_a.py::test_two": "failed",
        "tests/test_b.py::test_three": "error",
        "test_x (pkg.tests.T)": "passed",
        "test_y (pkg.tests.T)": "failed",
    }


def test_docker_without_a_daemon_is_a_clear_error(monkeypatch):
    task = normalize_task(real_rows()[0])
    with pytest.raises(swe_docker.DockerUnavailable, match="no Docker daemon answers"):
        swe_docker.DockerWorkspace(task, runner=FakeDocker(daemon=False))
    with pytest.raises(swe_docker.DockerUnavailable, match="not installed"):
        swe_docker.check_daemon("trl-aem-no-such-docker")
    # through the environment: a real instance needs Docker, and says so
    monkeypatch.setattr(swe_docker.shutil, "which", lambda name: None)
    with pytest.raises(swe_docker.DockerUnavailable, match="backend='local'"):
        SWEEnv().reset(real_rows()[0])


def test_grading_takes_the_diff_in_the_agents_container_and_tests_it_in_a_fresh_one(monkeypatch):
    task = normalize_task(real_rows()[0])
    fix = (
        "diff --git a/django/contrib/auth/validators.py b/django/contrib/auth/validators.py\n"
        "--- a/django/contrib/auth/validators.py\n+++ b/django/contrib/auth/validators.py\n"
        "@@ -1 +1 @@\n-    regex = r'^[\\w.@+-]+$'\n+    regex = r'^[\\w.@+-]+\\Z'\n"
    )
    hook = "diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n@@ -0,0 +1 @@\n+x\n"
    fake = FakeDocker({"intent-to-add": fix + hook})
    monkeypatch.setattr(swe_docker, "DockerWorkspace", functools.partial(swe_docker.DockerWorkspace, runner=fake))
    env = SWEEnv(backend="docker")
    try:
        env.reset(task)
        agent = env.workspace.name
        result = env.step("<function=submit>\n</function>")
        assert result.done and result.info["ignored_paths"] == ["conftest.py"], result.info
        runs = [argv[argv.index("--name") + 1] for argv, _ in fake.calls if argv[1] == "run"]
        assert runs[0] == agent and len(runs) == 2  # a fresh container for the grading
        fresh = runs[1]
        execs = [(argv, inp) for argv, inp in fake.calls if argv[1] == "exec"]
        diff_at = next(i for i, (argv, _) in enumerate(execs) if "intent-to-add" in argv[-1])
        assert agent in execs[diff_at][0] and "diff --no-color --no-ext-diff" in execs[diff_at][0][-1]
        assert task["base_commit"] in execs[diff_at][0][-1]
        # only the kept part of the diff goes into the fresh container, then git apply, then the tests
        written = [inp for argv, inp in execs if fresh in argv and inp is not None]
        assert written[0] == fix and all("conftest" not in inp for inp in written)
        assert any(fresh in argv and "git apply" in argv[-1] for argv, _ in execs[diff_at:])
        assert ["docker", "rm", "--force", fresh] in [argv for argv, _ in fake.calls]  # removed after grading
        assert not any(agent in argv for argv, _ in execs[diff_at + 1 :])  # nothing more runs in the agent's
    finally:
        env.close()
    assert fake.calls[-1][0] == ["docker", "rm", "--force", agent]
