"""Where an SWE episode happens: a checkout with commands, file access, patching and the final test run.

:class:`LocalWorkspace` sets up an offline task in a :class:`~.sandbox.Sandbox` (project copy, injected
bug, a fresh git repository so ``git diff`` works). :class:`~.docker.DockerWorkspace` does the same for
real instances in their Docker image. Both give :class:`TestReport` from :meth:`evaluate`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from .generator import PROJECTS_DIR, _fresh_dir, _user_cache, run_tests
from .grading import MAX_DIFF_CHARS, diff_command, diff_output
from .patch import PatchError, apply_patch, check_patch_paths
from .sandbox import CommandResult, PathEscape, Sandbox, SandboxLimits

__all__ = ["LocalWorkspace", "TestReport"]

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "trl-aem",
    "GIT_AUTHOR_EMAIL": "trl-aem@localhost",
    "GIT_COMMITTER_NAME": "trl-aem",
    "GIT_COMMITTER_EMAIL": "trl-aem@localhost",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
}


@dataclass
class TestReport:
    """Outcome of the final test run: ``resolved`` iff every FAIL_TO_PASS and PASS_TO_PASS test passed, or, when
    ``expected_status`` is set (R2E-Gym rows, :mod:`.r2egym`), iff ``status`` equals it exactly."""

    status: dict[str, str] = field(default_factory=dict)  # test id -> passed | failed | error
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    timed_out: bool = False
    error: str | None = None
    # R2E-Gym's rule: the run must reproduce this map (tests expected to fail included), no test more or less
    expected_status: dict[str, str] | None = None

    def _passed(self, tests: list[str]) -> int:
        return sum(self.status.get(t) == "passed" for t in tests)

    def _mismatched(self) -> list[str]:
        """Exact-match mode: the tests whose status differs from the expected one, missing or unexpected ones."""
        expected = self.expected_status or {}
        names = list(expected) + [t for t in self.status if t not in expected]
        return [t for t in names if self.status.get(t) != expected.get(t)]

    @property
    def tests_passed(self) -> int:
        if self.expected_status is not None:
            return sum(self.status.get(t) == s for t, s in self.expected_status.items())
        return self._passed(self.fail_to_pass) + self._passed(self.pass_to_pass)

    @property
    def tests_failed(self) -> int:
        if self.expected_status is not None:
            return len(self._mismatched())
        return len(self.fail_to_pass) + len(self.pass_to_pass) - self.tests_passed

    @property
    def resolved(self) -> bool:
        if self.expected_status is not None:
            return self.error is None and bool(self.expected_status) and self.status == self.expected_status
        return (
            self.error is None
            and bool(self.fail_to_pass)
            and self._passed(self.fail_to_pass) == len(self.fail_to_pass)
            and self._passed(self.pass_to_pass) == len(self.pass_to_pass)
        )

    def info(self) -> dict:
        if self.expected_status is not None:
            failed = self._mismatched()
        else:
            failed = [t for t in self.fail_to_pass + self.pass_to_pass if self.status.get(t) != "passed"]
        return {
            "tests_passed": self.tests_passed,
            "tests_failed": self.tests_failed,
            "fail_to_pass_passed": self._passed(self.fail_to_pass),
            "fail_to_pass_total": len(self.fail_to_pass),
            "pass_to_pass_passed": self._passed(self.pass_to_pass),
            "pass_to_pass_total": len(self.pass_to_pass),
            "failed_tests": failed[:20],
            "test_timeout": self.timed_out,
        }

    def summary(self) -> str:
        if self.expected_status is not None:
            lines = [
                f"Expected test statuses: {self.tests_passed}/{len(self.expected_status)} match; "
                f"{self.tests_failed} test(s) differ, are missing or unexpected."
            ]
        else:
            lines = [
                f"FAIL_TO_PASS: {self._passed(self.fail_to_pass)}/{len(self.fail_to_pass)} pass; "
                f"PASS_TO_PASS: {self._passed(self.pass_to_pass)}/{len(self.pass_to_pass)} pass."
            ]
        if self.error:
            lines.append(f"Evaluation error: {self.error}")
        return " ".join(lines)


class LocalWorkspace:
    """An offline task (``task["source"] == "offline"``) checked out in a fresh :class:`Sandbox`."""

    repo_label = "."

    def __init__(self, task: dict, *, limits: SandboxLimits | None = None, allow_network: bool = False):
        project = task.get("project")
        if task.get("source") != "offline" or not project or not (PROJECTS_DIR / project).is_dir():
            raise ValueError(
                f"the local back end runs offline tasks (generated by trl_aem); task {task.get('instance_id')!r} "
                "is a real instance: use backend='docker'"
            )
        self.task = task
        # the sandbox masks trl_aem's package (the pristine sources and gold patches) and its checkout; the
        # re-validated task caches would be an answer key too
        self.sandbox = Sandbox(
            PROJECTS_DIR / project, limits=limits, allow_network=allow_network, hide=(str(_user_cache()),)
        )
        try:
            self._inject_bug()
        except BaseException:
            self.sandbox.close()
            raise

    def _inject_bug(self) -> None:
        repo = self.sandbox.repo
        files = {}
        for path in check_patch_paths(self.task["bug_patch"]):
            with open(os.path.join(repo, path)) as handle:
                files[path] = handle.read()
        for path, text in apply_patch(files, self.task["bug_patch"]).items():
            with open(os.path.join(repo, path), "w") as handle:
                handle.write(text)
        # A git repository so the agent can `git diff` / `git status`. Created before the agent exists:
        # the parent never runs git in the repo afterwards (an agent-written .git/config could run hooks).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.sandbox.home, **_GIT_IDENTITY}
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        git = ["git", "-c", "safe.directory=*"]  # the files already belong to the sandbox's uid
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
            subprocess.run(git + argv, cwd=repo, env=env, check=True, capture_output=True, timeout=60)
        head = subprocess.run(
            git + ["rev-parse", "HEAD"], cwd=repo, env=env, check=True, capture_output=True, timeout=60
        )
        self.base_commit = head.stdout.decode().strip()  # the agent's diff is taken against this, not HEAD
        self.sandbox.chown(self.sandbox.repo)

    # ------------------------------------------------------------------ the agent's tools
    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        return self.sandbox.run(command, timeout)

    def read_text(self, path: str) -> str:
        return self.sandbox.read_text(path)

    def write_text(self, path: str, text: str) -> str:
        return self.sandbox.write_text(path, text)

    def exists(self, path: str) -> bool:
        return os.path.exists(self.sandbox.resolve(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.sandbox.resolve(path))

    def list_dir(self, path: str, depth: int = 2) -> list[str]:
        """Non-hidden entries under ``path`` up to ``depth`` levels, repo-relative, directories with '/'."""
        real = self.sandbox.resolve(path)
        out = []
        for parent, dirs, files in os.walk(real):
            level = os.path.relpath(parent, real).count(os.sep) + (0 if parent == real else 1)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            if level >= depth:
                dirs[:] = []
            for name in dirs:
                out.append(self.sandbox.relative(os.path.join(parent, name)) + "/")
            out += [self.sandbox.relative(os.path.join(parent, f)) for f in sorted(files) if not f.startswith(".")]
        return sorted(out)

    def apply_patch(self, patch: str, timeout: float | None = None) -> CommandResult:
        """Apply a model-written unified diff with ``git apply`` inside the sandbox, after checking that
        every path it names stays in the repository (also through symlinks)."""
        for path in check_patch_paths(patch):
            self.sandbox.resolve(path)  # PathEscape for a symlink pointing out of the repo
        patch_file = os.path.join(self.sandbox.private_dir(".patch"), "action.patch")
        with open(patch_file, "w") as handle:
            handle.write(patch if patch.endswith("\n") else patch + "\n")
        os.chmod(patch_file, 0o644)
        return self.sandbox.run(f"git apply --verbose --whitespace=nowarn {patch_file}", timeout)

    def diff(self, timeout: float = 120.0) -> str:
        """The agent's text diff against the task's base, taken by git inside the sandbox (see :mod:`.grading`)."""
        result = self.sandbox.run(diff_command(self.base_commit), timeout, output_chars=MAX_DIFF_CHARS)
        return diff_output(result)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, timeout: float = 120.0) -> TestReport:
        """Restore the project's tests (the agent's edits to them do not count), then run FAIL_TO_PASS and
        PASS_TO_PASS in the sandbox."""
        task = self.task
        pristine = PROJECTS_DIR / task["project"] / "tests"
        tests_dir = os.path.join(self.sandbox.repo, "tests")
        _fresh_dir(tests_dir)
        os.rmdir(tests_dir)
        shutil.copytree(pristine, tests_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.sandbox.chown(tests_dir)
        ids = list(dict.fromkeys(task["FAIL_TO_PASS"] + task["PASS_TO_PASS"]))
        records, timed_out = run_tests(self.sandbox, ids, timeout)
        return TestReport(
            status={t: r["status"] for t, r in records.items()},
            fail_to_pass=list(task["FAIL_TO_PASS"]),
            pass_to_pass=list(task["PASS_TO_PASS"]),
            timed_out=timed_out,
        )

    def close(self) -> None:
        self.sandbox.close()


# re-exported for the environment's error handling
__all__ += ["PatchError", "PathEscape"]
