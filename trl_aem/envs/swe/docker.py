"""Docker back end: real SWE-bench / SWE-Gym / R2E-Gym instances in their own images.

One container per episode, started from the instance's image with no network, bounded memory, processes
and CPUs, all capabilities dropped; the agent's commands run through ``docker exec`` with a timeout, and
the container is removed at the end. The repository is at ``workdir`` (``/testbed`` in these images).

Image: ``task["docker_image"]`` or ``task["image_name"]`` when present (R2E-Gym, SWE-Gym), else the
SWE-bench naming ``{namespace}/sweb.eval.{arch}.{instance_id with "__" -> "_1776_"}:latest``.

Grading (``SWEEnv``, :mod:`~trl_aem.envs.swe.grading`): the agent's diff against ``base_commit`` is taken in its
container (:meth:`DockerWorkspace.diff`), filtered (no ``conftest.py``, import hooks, bytecode, binaries), applied
to a fresh container of the same image, and evaluated there. Evaluation: SWE-bench instances that the installed
``swebench`` knows (``repo`` + ``version``, no ``test_cmd``) run SWE-bench's own eval script (``testbed``
environment, test-file reset, ``test_patch``, the repository's test command) and are graded by its per-repository
log parser and resolved rule (:mod:`~trl_aem.envs.swe.harness`; ``pip install "trl-aem[swe]"``). R2E-Gym rows run
the image's ``run_tests.sh`` as R2E-Gym does and pass iff the parsed statuses equal ``expected_output_json``
(:mod:`~trl_aem.envs.swe.r2egym`). Other rows (``test_cmd`` rows, SWE-Gym repositories swebench does not list)
take the generic path: the test files
named by ``test_patch`` are reset to ``base_commit``, ``test_patch`` is applied, then ``task["test_cmd"]`` or
``python -m pytest -rA`` on the test files runs, read from pytest's ``-rA`` summary lines and unittest's verbose
lines.

Every command is built by a pure function so the construction is tested without a daemon; the process
launcher is injectable (``runner``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import harness, r2egym
from .patch import check_patch_paths
from .sandbox import CommandResult, PathEscape, SandboxError, truncate
from .workspace import TestReport

__all__ = [
    "DockerLimits",
    "DockerUnavailable",
    "DockerWorkspace",
    "check_daemon",
    "exec_argv",
    "image_for",
    "parse_test_output",
    "remove_argv",
    "remove_orphans",
    "run_argv",
]

Runner = Callable[..., subprocess.CompletedProcess]


class DockerUnavailable(SandboxError):
    """No Docker client or no reachable daemon."""


@dataclass
class DockerLimits:
    memory: str = "8g"
    cpus: float = 2.0
    pids: int = 1024
    timeout: float = 120.0  # per command
    output_chars: int = 10_000
    network: str = "none"


def image_for(task: dict, *, namespace: str = "swebench", arch: str = "x86_64") -> str:
    """The Docker image of an instance (module docstring)."""
    for key in ("docker_image", "image_name"):
        if task.get(key):
            return str(task[key])
    instance = str(task["instance_id"]).lower().replace("__", "_1776_")
    return f"{namespace}/sweb.eval.{arch}.{instance}:latest"


def run_argv(
    image: str,
    name: str,
    limits: DockerLimits,
    *,
    workdir: str = "/testbed",
    docker: str = "docker",
    owner: str | None = None,
) -> list[str]:
    """``docker run`` for an idle, locked-down container the episode then ``exec``s into. ``owner`` labels it
    with the process that started it, so that :func:`remove_orphans` can find it once that process is gone."""
    labels = ["--label", f"{OWNER_LABEL}={owner}"] if owner else []
    return [
        docker,
        "run",
        "--detach",
        "--rm",
        "--name",
        name,
        *labels,
        "--network",
        limits.network,
        "--memory",
        limits.memory,
        "--memory-swap",
        limits.memory,  # = memory: no swap on top
        "--pids-limit",
        str(limits.pids),
        "--cpus",
        str(limits.cpus),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--workdir",
        workdir,
        "--entrypoint",
        "",
        image,
        "sh",
        "-c",
        _IDLE,
    ]


# The container's PID 1: idles, and reaps the processes the kernel hands it (those of ended commands, see
# _KILL_LEFTOVERS). `sleep infinity` as PID 1 never reaps: every killed or orphaned process (a timed-out
# command's shell and children too) stayed a zombie, counted against the pids limit for the rest of the
# episode. `kill -9 -1` ends the sleep too; the loop starts another.
_IDLE = "while :; do sleep 3600 & wait; done"


def exec_argv(
    name: str, command: str, timeout: float, *, workdir: str = "/testbed", stdin: bool = False, docker: str = "docker"
) -> list[str]:
    """``docker exec`` of ``bash -c command`` under ``timeout -s KILL``; when it ends, every process left in the
    container but its PID 1 is killed (:data:`_KILL_LEFTOVERS`)."""
    argv = [docker, "exec"]
    if stdin:
        argv.append("--interactive")
    argv += ["--workdir", workdir, name, "sh", "-c", _KILL_LEFTOVERS]
    argv += ["timeout", "-s", "KILL", f"{max(1, int(timeout))}s", "bash", "-c", command]
    return argv


# Measured against a real daemon: `timeout -s KILL` kills a timed-out command's process group, but background
# processes of a command that ended (`cmd &`, `setsid cmd`) kept running; they could then edit the repository
# while the file tools or the tests run. As in the local sandbox, nothing of the agent runs between its
# commands: after the command, `kill -9 -1` ends every process of the container's PID namespace except its
# PID 1 (_IDLE) and this shell. Commands of one episode never overlap.
_KILL_LEFTOVERS = '"$0" "$@"; status=$?; kill -9 -1 2>/dev/null; exit $status'


def remove_argv(name: str, *, docker: str = "docker") -> list[str]:
    return [docker, "rm", "--force", name]


# ------------------------------------------------------------------ containers of crashed processes
# A container idles (_IDLE) until close() removes it; if the episode's process dies first (killed,
# OOM), nothing would. Each container is labelled with its owner: this machine (boot id and hostname, so a
# PID from another machine or container is never judged here), the owner's PID and that PID's start time (so
# a reused PID is not mistaken for the owner). remove_orphans() removes the containers whose owner is gone.
OWNER_LABEL = "trl-aem.owner"


def _host_key() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()[:8]
    except OSError:
        boot = "noboot"
    return f"{boot}.{os.uname().nodename}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_label(pid: int | None = None) -> str:
    """``HOSTKEY:PID:STARTTIME`` of the process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{_host_key()}:{pid}:{_start_time(pid) or 0}"


def _owner_gone(label: str) -> bool:
    host, _, rest = label.partition(":")
    pid, _, started = rest.partition(":")
    if host != _host_key() or not pid.isdigit() or started in ("", "0"):
        return False  # another machine's or container's, or no start time to compare: not ours to judge
    return _start_time(int(pid)) != started


def remove_orphans(docker: str = "docker", runner: Runner = subprocess.run) -> list[str]:
    """Remove the ``trl-aem-swe-*`` containers whose owner process (on this machine) is gone; returns their
    names. Never raises: a daemon that does not answer leaves them for a later sweep."""
    listing = [docker, "ps", "--all", "--filter", f"label={OWNER_LABEL}", "--format"]
    listing.append(f'{{{{.Names}}}}\t{{{{.Label "{OWNER_LABEL}"}}}}')
    try:
        proc = runner(listing, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    orphans = []
    for line in (proc.stdout or "").splitlines() if proc.returncode == 0 else []:
        name, _, label = line.partition("\t")
        if name.startswith("trl-aem-swe-") and _owner_gone(label):
            orphans.append(name)
    for name in orphans:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            runner(remove_argv(name, docker=docker), capture_output=True, text=True, timeout=120)
    return orphans


_swept: set[tuple[str, str | None]] = set()  # (client, DOCKER_HOST) pairs found answering, and swept
_swept_lock = threading.Lock()


def _sweep_once(docker: str, runner: Runner) -> None:
    """:func:`check_daemon`, then :func:`remove_orphans`, once per process, client and daemon: ``docker info``
    and ``docker ps`` cost about a tenth of a second, too much to pay for every episode."""
    if runner is not subprocess.run:  # a fake runner: check every time, no sweep (its tests count the calls)
        check_daemon(docker, runner)
        return
    key = (docker, os.environ.get("DOCKER_HOST"))
    with _swept_lock:
        if key in _swept and shutil.which(docker) is not None:
            return
        check_daemon(docker, runner)
        remove_orphans(docker, runner)
        _swept.add(key)


def check_daemon(docker: str = "docker", runner: Runner = subprocess.run) -> None:
    """Raise :class:`DockerUnavailable` with a clear message unless a Docker daemon answers."""
    if runner is subprocess.run and shutil.which(docker) is None:
        raise DockerUnavailable(
            f"the Docker back end needs the `{docker}` client and a running daemon; `{docker}` is not installed. "
            "Install Docker (and pull the instances' images), or use the offline tasks with backend='local'."
        )
    try:
        proc = runner([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        raise DockerUnavailable(f"could not run `{docker} info`: {error}") from error
    if proc.returncode != 0:
        raise DockerUnavailable(
            f"no Docker daemon answers (`{docker} info` failed: {(proc.stderr or proc.stdout or '').strip()[:300]}). "
            "Start the daemon (and pull the instances' images), or use the offline tasks with backend='local'."
        )


_PYTEST_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\s+(\S+)")
_UNITTEST_LINE = re.compile(r"^(\S+ \([\w.]+\)) \.\.\. (ok|FAIL|ERROR|skipped.*|expected failure)$")


def parse_test_output(output: str) -> dict[str, str]:
    """Test id -> ``passed`` | ``failed`` | ``error`` from pytest ``-rA`` or unittest verbose output."""
    status: dict[str, str] = {}
    for line in output.splitlines():
        match = _PYTEST_LINE.match(line.strip())
        if match:
            outcome, test = match.groups()
            status[test] = {"PASSED": "passed", "XFAIL": "passed", "ERROR": "error"}.get(outcome, "failed")
            continue
        match = _UNITTEST_LINE.match(line.strip())
        if match:
            test, outcome = match.groups()
            status[test] = "passed" if outcome in ("ok", "expected failure") else "failed"
    return status


def _test_files(test_patch: str) -> list[str]:
    return check_patch_paths(test_patch) if test_patch.strip() else []


# docker exec's own answer when the container was removed or stopped under the episode (daemon restart, OOM of
# its PID 1, someone's `docker rm`): a broken sandbox, not a command's output
_CONTAINER_GONE = re.compile(r"Error response from daemon: (No such container|Container \S+ is not running)")


def _available_cpus(proc: subprocess.CompletedProcess) -> float | None:
    """The daemon's CPU count when ``docker run`` refused ``--cpus`` as more than it has, else None."""
    match = re.search(r"Range of CPUs is from [\d.]+ to ([\d.]+)", _error_text(proc) if proc.returncode else "")
    return float(match.group(1)) if match else None


def _error_text(proc: subprocess.CompletedProcess) -> str:
    """What went wrong: the command's stderr, else stdout, where ``docker exec`` prints its own errors
    (e.g. ``OCI runtime exec failed: ... chdir to cwd``)."""
    return ((proc.stderr or "").strip() or (proc.stdout or "").strip()) or f"exit code {proc.returncode}"


class DockerWorkspace:
    """One real instance in its own container (see the module docstring)."""

    def __init__(
        self,
        task: dict,
        *,
        limits: DockerLimits | None = None,
        image: str | None = None,
        workdir: str = "/testbed",
        docker: str = "docker",
        runner: Runner = subprocess.run,
        namespace: str = "swebench",
    ):
        self.task, self.limits, self.workdir = task, limits or DockerLimits(), workdir
        self.docker, self.runner = docker, runner
        self.repo_label = workdir
        _sweep_once(docker, runner)
        self.image = image or image_for(task, namespace=namespace)
        self.name = f"trl-aem-swe-{uuid.uuid4().hex[:12]}"
        proc = self._start()
        cpus = _available_cpus(proc)
        if cpus is not None and cpus < self.limits.cpus:  # the daemon's machine has fewer: use them all
            self.limits = dataclasses.replace(self.limits, cpus=cpus)
            proc = self._start()
        if proc.returncode != 0:
            raise SandboxError(f"could not start a container from {self.image}: {_error_text(proc)}")
        self.closed = False

    def _start(self) -> subprocess.CompletedProcess:
        """``docker run`` of this episode's container, labelled with this process (see remove_orphans)."""
        argv = run_argv(
            self.image, self.name, self.limits, workdir=self.workdir, docker=self.docker, owner=owner_label()
        )
        return self._call(argv, 600)

    def _call(self, argv: list[str], timeout: float, input: str | None = None) -> subprocess.CompletedProcess:
        try:
            return self.runner(argv, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            out = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout or ""
            return subprocess.CompletedProcess(argv, 124, out, "timeout")

    def _exec(self, argv: list[str], timeout: float, input: str | None = None) -> subprocess.CompletedProcess:
        """A ``docker exec``; raises :class:`SandboxError` (the episode ends) when the container is gone."""
        proc = self._call(argv, timeout, input)
        if proc.returncode == 1 and _CONTAINER_GONE.match(proc.stderr or ""):
            raise SandboxError(f"the episode's container is gone: {proc.stderr.strip()[:300]}")
        return proc

    def run(self, command: str, timeout: float | None = None, *, output_chars: int | None = None) -> CommandResult:
        timeout = self.limits.timeout if timeout is None else timeout
        chars = self.limits.output_chars if output_chars is None else output_chars
        argv = exec_argv(self.name, command, timeout, workdir=self.workdir, docker=self.docker)
        started = time.monotonic()
        proc = self._exec(argv, timeout + 30)
        output = (proc.stdout or "") + (proc.stderr or "")
        # 137 is also a command's own SIGKILL (the memory limit's OOM kill): only a full timeout is a timeout
        timed_out = proc.returncode in (124, 137) and time.monotonic() - started >= 0.9 * timeout
        shown = truncate(output, chars)
        if timed_out:
            shown += f"\n[command killed: no result within {timeout:g} seconds]"
        return CommandResult(
            output=shown,
            exit_code=None if timed_out else proc.returncode,
            timed_out=timed_out,
            output_truncated=len(output) > chars,
        )

    # ------------------------------------------------------------------ files, confined to the repository
    def _path(self, path: str) -> str:
        if not isinstance(path, str) or not path.strip() or "\x00" in path:
            raise PathEscape(f"invalid path {path!r}")
        full = posixpath.normpath(posixpath.join(self.workdir, path.strip()))
        if not (full == self.workdir or full.startswith(self.workdir.rstrip("/") + "/")):
            raise PathEscape(f"{path!r} is outside the repository")
        return full

    def read_text(self, path: str) -> str:
        full = self._path(path)
        command = f"cat -- {shlex.quote(full)}"
        proc = self._exec(exec_argv(self.name, command, 60, workdir=self.workdir, docker=self.docker), 90)
        if proc.returncode != 0:
            raise FileNotFoundError(f"{path}: {_error_text(proc)[:200]}")
        return proc.stdout

    def write_text(self, path: str, text: str) -> str:
        full = self._path(path)
        quoted = shlex.quote(full)
        command = f"mkdir -p -- $(dirname -- {quoted}) && cat > {quoted}"
        argv = exec_argv(self.name, command, 60, workdir=self.workdir, stdin=True, docker=self.docker)
        proc = self._exec(argv, 90, input=text)
        if proc.returncode != 0:
            raise OSError(f"could not write {path}: {_error_text(proc)[:200]}")
        return posixpath.relpath(full, self.workdir)

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {shlex.quote(self._path(path))}", 30).exit_code == 0

    def is_dir(self, path: str) -> bool:
        return self.run(f"test -d {shlex.quote(self._path(path))}", 30).exit_code == 0

    def list_dir(self, path: str, depth: int = 2) -> list[str]:
        full = shlex.quote(self._path(path))
        command = f"find {full} -mindepth 1 -maxdepth {depth} -not -path '*/.*' \\( -type d -printf '%P/\\n' -o -printf '%P\\n' \\)"
        return sorted(line for line in self.run(command, 60, output_chars=1 << 20).output.splitlines() if line)

    def apply_patch(self, patch: str, timeout: float | None = None) -> CommandResult:
        check_patch_paths(patch)
        self.write_text(".trl-aem-action.patch", patch if patch.endswith("\n") else patch + "\n")
        return self.run(
            "git apply --verbose --whitespace=nowarn .trl-aem-action.patch; status=$?; "
            "rm -f .trl-aem-action.patch; exit $status",
            timeout,
        )

    # ------------------------------------------------------------------ evaluation
    def test_command(self) -> str:
        task = self.task
        if task.get("test_cmd"):
            return str(task["test_cmd"])
        files = _test_files(task.get("test_patch", ""))
        return "python -m pytest -rA -p no:cacheprovider " + " ".join(shlex.quote(f) for f in files)

    def evaluation_script(self) -> str:
        """The shell script of :meth:`evaluate` (reset test files, apply test_patch, run the tests): swebench's own
        for the SWE-bench instances it knows (:mod:`.harness`), R2E-Gym's for its rows (:mod:`.r2egym`), else the
        generic one below."""
        task = self.task
        if r2egym.is_r2egym_instance(task):  # R2E-Gym's run_tests.sh, in its layout
            return r2egym.evaluation_script(task)
        if harness.uses_harness(task):
            return harness.evaluation_script(task)
        files = _test_files(task.get("test_patch", ""))
        lines = ["set -u"]
        if files and task.get("base_commit"):
            quoted = " ".join(shlex.quote(f) for f in files)
            lines.append(f"git checkout {shlex.quote(task['base_commit'])} -- {quoted} 2>/dev/null || true")
        if task.get("test_patch", "").strip():
            lines.append("git apply --whitespace=nowarn .trl-aem-test.patch || echo 'trl-aem: test_patch failed'")
            lines.append("rm -f .trl-aem-test.patch")
        lines.append(self.test_command())
        return "\n".join(lines)

    def evaluate(self, timeout: float = 1800.0) -> TestReport:
        task = self.task
        if r2egym.is_r2egym_instance(task):  # R2E-Gym's parser and exact-match rule (.r2egym)
            result = self.run(r2egym.evaluation_script(task), timeout, output_chars=1 << 22)
            return r2egym.grade(task, result.output, timed_out=result.timed_out)
        if harness.uses_harness(task):  # the test patch travels inside swebench's script (a heredoc)
            result = self.run(harness.evaluation_script(task), timeout, output_chars=1 << 22)
            return harness.grade(task, result.output, timed_out=result.timed_out)
        if task.get("test_patch", "").strip():
            self.write_text(".trl-aem-test.patch", task["test_patch"])
        result = self.run(self.evaluation_script(), timeout, output_chars=1 << 22)
        report = TestReport(
            status=parse_test_output(result.output),
            fail_to_pass=list(task["FAIL_TO_PASS"]),
            pass_to_pass=list(task["PASS_TO_PASS"]),
            timed_out=result.timed_out,
        )
        if "trl-aem: test_patch failed" in result.output:
            report.error = "the test patch did not apply"
        return report

    def close(self) -> None:
        if not getattr(self, "closed", True):
            self.closed = True
            self._call(remove_argv(self.name, docker=self.docker), 120)

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort at interpreter shutdown
            self.close()

    def diff(self, timeout: float = 120.0) -> str:
        """The agent's text diff against ``task["base_commit"]`` (else HEAD), taken by git inside the container
        (see :mod:`.grading`)."""
        from .grading import MAX_DIFF_CHARS, diff_command, diff_output

        base = str(self.task.get("base_commit") or "HEAD")
        return diff_output(self.run(diff_command(base), timeout, output_chars=MAX_DIFF_CHARS))
