"""The Docker back end against a real daemon (a private dockerd, see :mod:`.docker_daemon`; skipped with the
reason where none can start): episodes through ``SWEEnv(backend="docker")``, the limits seen from inside the
container, command timeouts, and the removal of containers a crashed process left behind (and of the daemon
of a killed test session).

Grading is asserted only through rewards and ``info["success"]``, so it holds whichever way the workspace
grades (in the episode's container or a fresh one)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trl_aem.envs import SWEEnv
from trl_aem.envs.swe import docker as swe_docker

from . import docker_daemon as dd
from .docker_daemon import CALC_BUGGY


def call(name: str, **params) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<function={name}>\n{body}</function>"


def containers(setup, prefix: str = "trl-aem-swe-") -> list[str]:
    out = setup.daemon.check("ps", "--all", "--format", "{{.Names}}").decode().split()
    return [name for name in out if name.startswith(prefix)]


def cgroup_value(workspace, v1: str, v2: str) -> str:
    """A file of the container's own cgroup (v1 layout, else v2), as the container sees it."""
    return workspace.run(f"cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}").output.strip()


@pytest.fixture
def env(docker_setup):
    environment = SWEEnv(backend="docker", command_timeout=20)
    yield environment
    environment.close()


def test_episode_with_the_agents_tools(docker_setup, env):
    task = docker_setup.task
    started = time.perf_counter()
    observation = env.reset(task)
    assert "calc/__init__.py" in observation and "tests/test_calc.py" in observation
    name = env.workspace.name
    assert name in containers(docker_setup)
    result = env.step(call("bash", command="python -c 'import calc; print(calc.add(2, 3))'; pwd"))
    assert "-1\n/testbed" in result.observation and "[exit code: 0]" in result.observation
    assert "[exit code: 3]" in env.step(call("bash", command="exit 3")).observation
    view = env.step(call("view", path="calc/__init__.py")).observation
    assert "5\t    return a - b" in view
    assert "__init__.py" in env.step(call("view", path="calc")).observation
    result = env.step(call("view", path="calc/missing.py"))
    assert result.info["invalid"] and "No such file" in result.observation  # docker's error text reaches the agent
    assert env.step(call("view", path="../etc/passwd")).observation.startswith("Refused")
    result = env.step(call("str_replace", path="calc/__init__.py", old_str="return a - b", new_str="return a + b"))
    assert result.info["invalid"] and "occurs 2 times" in result.observation
    edit = call(
        "str_replace",
        path="calc/__init__.py",
        old_str="def add(a, b):\n    return a - b",
        new_str="def add(a, b):\n    return a + b",
    )
    assert not env.step(edit).info["invalid"]
    assert not env.step(call("create", path="notes/todo.txt", file_text="fixed add\n")).info["invalid"]
    assert env.step(call("create", path="notes/todo.txt", file_text="again")).info["invalid"]
    result = env.step(call("bash", command="cat notes/todo.txt; git status --short"))
    assert "fixed add" in result.observation and "M calc/__init__.py" in result.observation
    result = env.step(call("submit"))
    assert result.done and result.reward == 1.0 and result.info["success"], result.observation
    assert time.perf_counter() - started < 60
    env.close()
    assert name not in containers(docker_setup)  # close() removed the container


def test_gold_patch_resolves_and_no_fix_does_not(docker_setup, env):
    task = docker_setup.task
    env.reset(task)
    result = env.step(call("apply_patch", patch=task["patch"]))
    assert not result.info["invalid"], result.observation
    assert env.step(call("bash", command="git diff --stat")).observation.count("calc/__init__.py") == 1
    result = env.step(call("submit"))
    assert result.reward == 1.0 and result.info["success"], result.observation
    env.reset(task)  # a fresh container: the fix above is gone
    result = env.step(call("submit"))
    assert result.done and result.reward == 0.0 and not result.info["success"], result.observation
    env.reset(task)  # a fix that breaks PASS_TO_PASS is not a resolution either
    env.step(call("bash", command="sed -i 's/return a - b/return a + b/' calc/__init__.py"))
    result = env.step(call("submit"))
    assert result.reward == 0.0 and not result.info["success"], result.observation


FORCE_PASS_CONFTEST = (
    "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
    "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n"
)
# outside the repository, where only root in the container can write: every later python imports it
PATCH_ON_IMPORT = """import builtins
_import = builtins.__import__
def _patched(name, *args, **kwargs):
    module = _import(name, *args, **kwargs)
    if name == "calc":
        module.add = lambda a, b: a + b
    return module
builtins.__import__ = _patched
"""
STALE_BYTECODE = (
    "sed -i '0,/return a - b/s//return a + b/' calc/__init__.py && python -c \"import py_compile as c; "
    "c.compile('calc/__init__.py', cfile='calc/__pycache__/__init__.cpython-311.pyc', "
    'invalidation_mode=c.PycInvalidationMode.UNCHECKED_HASH, doraise=True)" && git checkout calc/__init__.py'
)
SITE_HOOK = (
    'site=$(python -c "import site; print(site.getsitepackages()[0])") && mkdir -p $site && '
    f"printf %s {shlex.quote(PATCH_ON_IMPORT)} > $site/zz_trl_hook.py && echo 'import zz_trl_hook' > $site/zz.pth"
)


@pytest.mark.parametrize(
    "attack",
    [
        call("create", path="conftest.py", file_text=FORCE_PASS_CONFTEST),
        call("bash", command=STALE_BYTECODE),
        call("bash", command=SITE_HOOK),
        call("create", path="sitecustomize.py", file_text=PATCH_ON_IMPORT),
    ],
    ids=["conftest", "stale-bytecode", "pth-outside-the-repo", "sitecustomize"],
)
def test_what_the_agent_leaves_outside_its_diff_earns_0(docker_setup, env, attack):
    """The first three pass the tests in the agent's own container with the source still buggy (checked by hand;
    the .pth one below); a sitecustomize.py in the repository is the same family (an import hook left behind).
    Graded on the diff alone in a fresh container, they all earn 0 (issue 24 item 1, against the real daemon)."""
    env.reset(docker_setup.task)
    result = env.step(attack)
    assert not result.info["invalid"] and "[exit code: 1" not in result.observation, result.observation
    assert "return a - b" in env.workspace.read_text("calc/__init__.py")
    if "pth" in attack:  # outside the repository: evaluating in place would be fooled
        assert env.workspace.evaluate(60).resolved
    result = env.step(call("submit"))
    assert result.done and result.reward == 0.0 and not result.info["success"], result.observation


def test_a_patch_that_does_not_apply_is_an_invalid_action(docker_setup, env):
    env.reset(docker_setup.task)
    bad = docker_setup.task["patch"].replace("return a - b\n+", "return a * b\n+")
    result = env.step(call("apply_patch", patch=bad))
    assert result.info["invalid"] and not result.done and "patch" in result.observation.lower()
    result = env.step(call("apply_patch", patch="diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n"))
    assert result.info["invalid"]
    assert env.workspace.read_text("calc/__init__.py") == CALC_BUGGY  # nothing changed


def test_command_timeout_kills_and_the_container_stays_usable(docker_setup):
    env = SWEEnv(backend="docker", command_timeout=2)
    try:
        env.reset(docker_setup.task)
        started = time.perf_counter()
        result = env.step(call("bash", command="echo before; sleep 61; echo after"))
        elapsed = time.perf_counter() - started
        assert "command killed" in result.observation and "[exit code: killed]" in result.observation
        assert "before" in result.observation and "after" not in result.observation and elapsed < 15
        # nothing of the killed command, nor of a background one, runs on; no zombies pile up; the next command works
        assert (
            "[exit code: 0]"
            in env.step(call("bash", command="(sleep 62; touch late) & setsid sleep 63 &")).observation
        )
        processes = "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; grep -h '^State' /proc/[0-9]*/status"
        listing = env.step(call("bash", command=processes)).observation
        assert not any(f"sleep {n}" in listing for n in (61, 62, 63)) and "zombie" not in listing, listing
        assert "[exit code: 0]" in env.step(call("bash", command="true")).observation
    finally:
        env.close()


def test_limits_are_applied_inside_the_container(docker_setup):
    limits = swe_docker.DockerLimits(memory="128m", pids=64, cpus=1.0, timeout=30)
    workspace = swe_docker.DockerWorkspace(docker_setup.task, limits=limits)
    try:
        # no network: only the loopback interface, and connecting out fails at once
        assert workspace.run("ls /sys/class/net").output.split() == ["lo"]
        probe = "import socket; s = socket.socket(); s.settimeout(3); s.connect(('1.1.1.1', 53))"
        result = workspace.run(f'python -c "{probe}"')
        assert result.exit_code != 0 and "unreachable" in result.output.lower(), result.output
        # no capabilities, no new privileges (root in the container can do nothing root-only)
        status = workspace.run("grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status").output
        assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
        assert "NoNewPrivs:\t1" in status
        assert workspace.run("chown nobody /testbed/calc/__init__.py").exit_code != 0
        # memory: allocating past the limit kills the command (SIGKILL: 137), not the container
        result = workspace.run("python -c 'x = bytearray(400 * 1024 * 1024); x[::4096] = b\"1\" * len(x[::4096])'")
        assert result.exit_code == 137 and not result.timed_out, result.output
        assert cgroup_value(workspace, "memory/memory.limit_in_bytes", "memory.max") == str(128 << 20)
        # processes: the cgroup's pids limit, and a 100-thread program cannot start its threads
        assert cgroup_value(workspace, "pids/pids.max", "pids.max") == "64"
        threads = textwrap.dedent("""
            import threading, time
            started = 0
            try:
                for _ in range(100):
                    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                    started += 1
            except RuntimeError:
                pass
            print(started)
        """)
        result = workspace.run(f"python -c {shlex.quote(threads)}")
        assert int(result.output.split()[-1]) < 64, result.output
        assert workspace.run("echo alive").output == "alive\n"
    finally:
        workspace.close()


def test_a_container_gone_mid_episode_ends_it(docker_setup, env):
    env.reset(docker_setup.task)
    docker_setup.daemon.check("rm", "--force", env.workspace.name)
    result = env.step(call("bash", command="ls"))
    assert result.done and result.reward == 0.0 and "container is gone" in result.info["error"]


def test_more_cpus_than_the_daemon_has_means_all_of_them(docker_setup):
    limits = swe_docker.DockerLimits(cpus=512.0)
    workspace = swe_docker.DockerWorkspace(docker_setup.task, limits=limits)
    try:
        assert 1 <= workspace.limits.cpus < 512 and limits.cpus == 512  # the caller's limits are not changed
        quota = cgroup_value(workspace, "cpu/cpu.cfs_quota_us", "cpu.max").split()[0]
        assert int(quota) == int(workspace.limits.cpus * 100_000), quota
    finally:
        workspace.close()


def test_files_outside_testbed_and_error_texts(docker_setup):
    """A workdir the image does not have (the reported rc 126: read_text/write_text ran in /testbed)."""
    workspace = swe_docker.DockerWorkspace({}, image=docker_setup.base_image, workdir="/work/repo")
    try:
        assert workspace.write_text("pkg/mod.py", "x = 1\n") == "pkg/mod.py"
        assert workspace.read_text("pkg/mod.py") == "x = 1\n"
        assert workspace.exists("pkg/mod.py") and workspace.is_dir("pkg") and not workspace.exists("nope")
        assert workspace.list_dir(".") == ["pkg/", "pkg/mod.py"]
        assert workspace.run("pwd").output == "/work/repo\n"
        with pytest.raises(FileNotFoundError, match="No such file"):
            workspace.read_text("missing.py")
        with pytest.raises(swe_docker.PathEscape):
            workspace.write_text("../outside.py", "")
    finally:
        workspace.close()
    with pytest.raises(swe_docker.SandboxError, match="Unable to find image|No such image"):
        swe_docker.DockerWorkspace({}, image="local/trl-aem-no-such-image:1")


CRASHING_EPISODE = """
import os, signal, sys
from trl_aem.envs import SWEEnv
env = SWEEnv(backend="docker")
env.reset(json.loads(sys.argv[1]))
print(env.workspace.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the episode's process dies without closing anything
"""


def test_containers_of_a_killed_process_are_removed(docker_setup, env):
    env.reset(docker_setup.task)  # a live episode of this process: its container must survive the sweep
    live = env.workspace.name
    proc = subprocess.run(
        [sys.executable, "-c", "import json" + CRASHING_EPISODE, json.dumps(docker_setup.task)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    orphan = proc.stdout.split()[-1]
    assert orphan.startswith("trl-aem-swe-") and orphan in containers(docker_setup)
    assert swe_docker.remove_orphans() == [orphan]
    left = containers(docker_setup)
    assert orphan not in left and live in left
    env.close()
    assert containers(docker_setup) == []


KILLED_SESSION = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.envs.swe import docker_daemon as dd
daemon = dd.start_daemon()
print(daemon.root, daemon.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a test session killed before its teardown
"""


def test_a_killed_sessions_daemon_is_stopped_by_the_next(docker_setup, monkeypatch):
    if docker_setup.daemon.process is None:
        pytest.skip("a daemon given by TRL_AEM_DOCKER_HOST: this test starts private ones")
    monkeypatch.delenv("TRL_AEM_DOCKER_HOST", raising=False)
    root = str(Path(__file__).resolve().parents[3])
    proc = subprocess.run([sys.executable, "-c", KILLED_SESSION, root], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    daemon_root, pid = proc.stdout.split()
    assert Path(f"/proc/{pid}").exists()  # its dockerd outlived it
    assert Path(daemon_root) in dd.stop_stale_daemons()
    assert not Path(f"/proc/{pid}").exists() and not Path(daemon_root).exists()
    assert docker_setup.daemon.docker("info").returncode == 0  # the live session's daemon is left alone


def test_without_root_or_dockerd_the_reason_is_given(monkeypatch):
    monkeypatch.delenv("TRL_AEM_DOCKER_HOST", raising=False)
    monkeypatch.setattr(dd.shutil, "which", lambda name: None if name == "dockerd" else f"/usr/bin/{name}")
    assert "apt-get install docker.io debootstrap" in dd.unavailable_reason()
    monkeypatch.setattr(dd.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dd.os, "geteuid", lambda: 1000)
    assert dd.unavailable_reason() == "a private dockerd needs root"
    monkeypatch.setenv("TRL_AEM_DOCKER_HOST", "unix:///tmp/x/sock")
    assert dd.unavailable_reason() is None
