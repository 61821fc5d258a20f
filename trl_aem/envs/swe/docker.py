"""Docker back end: real SWE-bench / SWE-Gym / R2E-Gym instances in their own images.

One container per episode, started from the instance's image with no network, bounded memory, processes
and CPUs, all capabilities dropped; the agent's commands run through ``docker exec`` with a timeout, and
the container is removed at the end. The repository is at ``workdir`` (``/testbed`` in these images).

Image: ``task["docker_image"]`` or ``task["image_name"]`` when present (R2E-Gym, SWE-Gym), else the
SWE-bench naming ``{namespace}/sweb.eval.{arch}.{instance_id with "__" -> "_1776_"}:latest``.

Evaluation as SWE-bench's harness does it: the test files named by ``test_patch`` are reset to
``base_commit`` (the agent's edits to them do not count), ``test_patch`` is applied, then the test
command runs: ``task["test_cmd"]`` when present (e.g. Django's ``./tests/runtests.py --verbosity 2``), else
``python -m pytest -rA`` on the test files. Results are read from pytest's ``-rA`` summary lines
(``PASSED id`` / ``FAILED id``) and unittest's verbose lines (``test (module.Class) ... ok``).

Every command is built by a pure function so the construction is tested without a daemon; the process
launcher is injectable (``runner``).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass

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


def run_argv(image: str, name: str, limits: DockerLimits, *, workdir: str = "/testbed", docker: str = "docker"):
    """``docker run`` for an idle, locked-down container the episode then ``exec``s into."""
    return [
        docker,
        "run",
        "--detach",
        "--rm",
        "--name",
        name,
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
        "sleep",
        "infinity",
    ]


def exec_argv(
    name: str, command: str, timeout: float, *, workdir: str = "/testbed", stdin: bool = False, docker: str = "docker"
) -> list[str]:
    """``docker exec`` of ``bash -c command`` under ``timeout -s KILL`` (killed in the container too)."""
    argv = [docker, "exec"]
    if stdin:
        argv.append("--interactive")
    argv += ["--workdir", workdir, name, "timeout", "-s", "KILL", f"{max(1, int(timeout))}s", "bash", "-c", command]
    return argv


def remove_argv(name: str, *, docker: str = "docker") -> list[str]:
    return [docker, "rm", "--force", name]


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
        check_daemon(docker, runner)
        self.image = image or image_for(task, namespace=namespace)
        self.name = f"trl-aem-swe-{uuid.uuid4().hex[:12]}"
        proc = self._call(run_argv(self.image, self.name, self.limits, workdir=workdir, docker=docker), 600)
        if proc.returncode != 0:
            raise SandboxError(f"could not start a container from {self.image}: {proc.stderr.strip()[:500]}")
        self.closed = False

    def _call(self, argv: list[str], timeout: float, input: str | None = None) -> subprocess.CompletedProcess:
        try:
            return self.runner(argv, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            out = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout or ""
            return subprocess.CompletedProcess(argv, 124, out, "timeout")

    def run(self, command: str, timeout: float | None = None, *, output_chars: int | None = None) -> CommandResult:
        timeout = self.limits.timeout if timeout is None else timeout
        chars = self.limits.output_chars if output_chars is None else output_chars
        argv = exec_argv(self.name, command, timeout, workdir=self.workdir, docker=self.docker)
        proc = self._call(argv, timeout + 30)
        output = (proc.stdout or "") + (proc.stderr or "")
        timed_out = proc.returncode in (124, 137)
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
        proc = self._call(exec_argv(self.name, f"cat -- {shlex.quote(full)}", 60, docker=self.docker), 90)
        if proc.returncode != 0:
            raise FileNotFoundError(f"{path}: {proc.stderr.strip()[:200]}")
        return proc.stdout

    def write_text(self, path: str, text: str) -> str:
        full = self._path(path)
        quoted = shlex.quote(full)
        command = f"mkdir -p -- $(dirname -- {quoted}) && cat > {quoted}"
        proc = self._call(exec_argv(self.name, command, 60, stdin=True, docker=self.docker), 90, input=text)
        if proc.returncode != 0:
            raise OSError(f"could not write {path}: {proc.stderr.strip()[:200]}")
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
        """The shell script of :meth:`evaluate` (reset test files, apply test_patch, run the tests)."""
        task = self.task
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
