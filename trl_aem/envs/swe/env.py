"""``SWEEnv``: a coding agent fixes a bug in a repository and is rewarded by the repository's tests.

The agent acts through a small tool set in the function-call format of R2E-Gym / DeepSWE, parsed from its
response (see :data:`SYSTEM_PROMPT`): ``bash``, ``view``, ``str_replace``, ``create``, ``apply_patch`` and
``submit``. At ``submit`` (or, with ``max_steps`` set, when the step budget is used up) the agent's diff,
filtered (:mod:`.grading`), is applied to a fresh workspace of the task, the task's tests run there, and the
episode ends with reward 1 iff every FAIL_TO_PASS test passes and every PASS_TO_PASS test still
passes (R2E-Gym rows: iff the tests' statuses equal the row's ``expected_output_json``, :mod:`.r2egym`), else 0. The environment cannot see the trainer's ``max_turns``: pass ``max_steps=max_turns`` (as
``examples/swe.py`` does) so that an episode that never submits is still judged on its final state;
without it, only a submitted episode can earn a reward.

Back ends: ``"local"`` runs offline tasks (:mod:`.generator`) in the namespace :class:`~.sandbox.Sandbox`;
``"docker"`` runs real instances (SWE-bench-Verified, SWE-Gym, R2E-Gym) in their images; ``"auto"`` picks
by task. Each instance owns its workspace, so episodes run concurrently in the trainer's worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass

from ..base import StepResult
from . import r2egym
from .grading import graded_diff
from .sandbox import PathEscape, SandboxError, SandboxLimits, truncate
from .tasks import load_tasks, normalize_task, offline_tasks
from .workspace import TestReport

__all__ = ["SWEEnv", "SYSTEM_PROMPT", "Action", "parse_action", "TOOLS"]

logger = logging.getLogger(__name__)

TOOLS = {
    "bash": (("command",), ()),
    "view": (("path",), ("view_range",)),
    "str_replace": (("path", "old_str", "new_str"), ()),
    "create": (("path", "file_text"), ()),
    "apply_patch": (("patch",), ()),
    "submit": ((), ()),
}  # name -> (required parameters, optional parameters)

SYSTEM_PROMPT = """You are a software engineer fixing a bug in a Python repository. The repository is your \
working directory. Each turn, think briefly, then call exactly one tool, written as

<function=TOOL_NAME>
<parameter=PARAMETER_NAME>value</parameter>
</function>

Tools:
- bash(command): run a bash command in the repository and see its output (no network; {timeout:g} s limit).
- view(path, view_range optional): show a file with line numbers, or list a directory. view_range is \
"START END", 1-based and inclusive; END -1 means the end of the file.
- str_replace(path, old_str, new_str): replace old_str by new_str in a file. old_str must match the file \
exactly, indentation included, and occur exactly once.
- create(path, file_text): create a new file with this content.
- apply_patch(patch): apply a unified diff (git format, paths relative to the repository: --- a/PATH and \
+++ b/PATH).
- submit(): finish. The tests are run: you succeed if the failing tests now pass and the other tests still pass.

Rules: only the last <function=...> block of a response is executed. Parameter values are used verbatim, except \
that one newline right after <parameter=...> and one right before </parameter> are dropped. Paths are relative \
to the repository; paths outside it are refused. Outputs longer than {chars} characters are truncated. Do not \
edit the tests: they are restored before the final run.

Example:
<function=str_replace>
<parameter=path>pkg/module.py</parameter>
<parameter=old_str>    return a - b</parameter>
<parameter=new_str>    return a + b</parameter>
</function>"""

_FUNCTION = re.compile(r"<function\s*=\s*([A-Za-z_][\w-]*)\s*>(.*?)</function>", re.DOTALL)
_OPEN_FUNCTION = re.compile(r"<function\s*=\s*([A-Za-z_][\w-]*)\s*>(.*)$", re.DOTALL)
_PARAMETER = re.compile(r"<parameter\s*=\s*([A-Za-z_]\w*)\s*>(.*?)</parameter>", re.DOTALL)


@dataclass
class Action:
    name: str
    params: dict[str, str]


def _verbatim(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def parse_action(response: str) -> Action | str:
    """The last tool call of ``response``, or an error message saying why there is none."""
    calls = _FUNCTION.findall(response)
    if not calls:
        # a response cut by the token limit may lack the final </function> (e.g. `submit`): accept the last one
        match = _OPEN_FUNCTION.search(response.rsplit("</function>", 1)[-1])
        if match is None:
            return "No tool call found: write one <function=NAME>...</function> block."
        calls = [match.groups()]
    name, body = calls[-1]
    if name not in TOOLS:
        return f"Unknown tool {name!r}; the tools are: {', '.join(TOOLS)}."
    params = {key: _verbatim(value) for key, value in _PARAMETER.findall(body)}
    required, optional = TOOLS[name]
    missing = [p for p in required if p not in params]
    if missing:
        return f"{name} needs the parameter(s) {', '.join(missing)}."
    unknown = [p for p in params if p not in required + optional]
    if unknown:
        return f"{name} does not take the parameter(s) {', '.join(unknown)}."
    return Action(name, params)


class SWEEnv:
    """Software-engineering episodes (module docstring).

    Args:
        dataset: ``None`` for the offline generated tasks, else a Hub dataset name or a local
            ``.json``/``.jsonl``/``.parquet`` file of real instances (run with the Docker back end).
        dataset_splits: dataset split names used for ``tasks("train")`` / ``tasks("eval")``.
        backend: ``"auto"``, ``"local"`` or ``"docker"``.
        max_steps: evaluate and end the episode after this many steps (set it to the trainer's ``max_turns``).
        seed / eval_fraction: the offline train/eval partition.
        num_train_tasks / num_eval_tasks: cap ``tasks(split)`` (``None``: all).
        command_timeout: wall-clock seconds per command; eval_timeout: seconds for the final test run.
        output_chars: observations are truncated to this many characters (with a marker).
        allow_network: explicit opt-out where namespaces are unavailable (local back end; see the sandbox).
        limits / docker_limits: resource limits of each back end (see :class:`~.sandbox.SandboxLimits`).

    ``step()`` never raises for anything the agent did: a tool's failure is an invalid action, a broken jail
    or a failed evaluation ends the episode unresolved (``info["error"]``, logged with its traceback).
    """

    def __init__(
        self,
        dataset: str | None = None,
        *,
        dataset_splits: dict[str, str] | None = None,
        backend: str = "auto",
        max_steps: int | None = None,
        seed: int = 0,
        eval_fraction: float = 0.2,
        num_train_tasks: int | None = None,
        num_eval_tasks: int | None = None,
        command_timeout: float = 30.0,
        eval_timeout: float = 120.0,
        output_chars: int = 4000,
        allow_network: bool = False,
        limits: SandboxLimits | None = None,
        docker_limits=None,
    ):
        if backend not in ("auto", "local", "docker"):
            raise ValueError(f"backend must be 'auto', 'local' or 'docker', got {backend!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be None or >= 1, got {max_steps}")
        self.dataset, self.backend, self.max_steps = dataset, backend, max_steps
        self.dataset_splits = dataset_splits or {"train": "train", "eval": "test"}
        self.seed, self.eval_fraction = seed, eval_fraction
        self.num_tasks = {"train": num_train_tasks, "eval": num_eval_tasks}
        self.command_timeout, self.eval_timeout, self.output_chars = command_timeout, eval_timeout, output_chars
        self.allow_network = allow_network
        self.limits = limits or SandboxLimits(timeout=command_timeout, output_chars=output_chars)
        self.docker_limits = docker_limits
        self.system_prompt = SYSTEM_PROMPT.format(timeout=command_timeout, chars=output_chars)
        self.workspace = None
        self.task: dict = {}
        self.steps, self.done, self._gold_applied = 0, False, False

    # ------------------------------------------------------------------ TextEnv
    def tasks(self, split: str) -> list[dict]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        limit = self.num_tasks[split]
        if self.dataset is None:
            tasks = offline_tasks(split, seed=self.seed, eval_fraction=self.eval_fraction)
            return tasks if limit is None else tasks[:limit]
        return load_tasks(self.dataset, self.dataset_splits[split], limit=limit)

    def reset(self, task: dict) -> str:
        self.close()
        task = task if task.get("source") == "offline" else normalize_task(task)
        self.task, self.steps, self.done, self._gold_applied = task, 0, False, False
        self.workspace = self._open(task)
        try:
            listing = self.workspace.list_dir(".", depth=2)
        except (OSError, SandboxError):
            listing = []
        files = "\n".join(f"  {name}" for name in listing[:200])
        return (
            f"<issue>\n{task['problem_statement'].strip()}\n</issue>\n\n"
            f"Repository {task['repo']} is checked out in your working directory. Files:\n{files}\n\n"
            "Fix the issue in the source code, then call submit."
        )

    def _open(self, task: dict):
        backend = self.backend
        if backend == "auto":
            backend = "local" if task.get("source") == "offline" else "docker"
        if backend == "local":
            from .workspace import LocalWorkspace

            return LocalWorkspace(task, limits=self.limits, allow_network=self.allow_network)
        from .docker import DockerLimits, DockerWorkspace

        limits = self.docker_limits or DockerLimits(timeout=self.command_timeout, output_chars=self.output_chars)
        return DockerWorkspace(task, limits=limits)

    def step(self, action: str) -> StepResult:
        if self.workspace is None:
            raise RuntimeError("call reset(task) before step()")
        if self.done:
            return StepResult("The episode is over.", 0.0, True, {"invalid": True, "success": False})
        try:
            return self._step(action)
        except Exception as error:  # noqa: BLE001 - never out of step(): what the agent caused ends its episode
            logger.warning("SWEEnv: a step failed, the episode ends", exc_info=True)
            self.done = True
            reason = f"{type(error).__name__}: {error}"
            info = {"invalid": True, "success": False, "ended_by": "error", "error": reason}
            return StepResult(f"Episode over: the environment failed ({reason}).", 0.0, True, info)

    def _step(self, action: str) -> StepResult:
        self.steps += 1
        parsed = parse_action(action)
        if isinstance(parsed, str):
            observation, info = f"Invalid action: {parsed}", {"invalid": True}
        elif parsed.name == "submit":
            return self._finish("submit")
        else:
            observation, invalid = self._execute(parsed)
            info = {"invalid": invalid, "tool": parsed.name}
        if self.max_steps is not None and self.steps >= self.max_steps:
            return self._finish("max_steps", observation, info)
        return StepResult(observation, 0.0, False, info)

    def expert_action(self) -> str | None:
        """Apply the gold patch, then submit (None without one: R2E-Gym rows carry no ``patch``)."""
        if self.done or not self.task or not self.task.get("patch", "").strip():
            return None
        if not self._gold_applied:
            return f"<function=apply_patch>\n<parameter=patch>\n{self.task['patch']}</parameter>\n</function>"
        return "<function=submit>\n</function>"

    def close(self) -> None:
        """Remove the workspace; never raises (reset() calls it, and nothing of the last episode may make
        the next one fail: a directory that cannot be removed now is removed by a later sweep)."""
        if self.workspace is not None:
            workspace, self.workspace = self.workspace, None
            try:
                workspace.close()
            except Exception:  # noqa: BLE001 - logged; the sandbox's own cleanup does not raise either
                logger.warning("SWEEnv: closing the workspace failed", exc_info=True)

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort at interpreter shutdown
            self.close()

    # ------------------------------------------------------------------ tools
    def _execute(self, action: Action) -> tuple[str, bool]:
        """(observation, invalid) for a non-submit tool call; errors the agent can fix are observations."""
        p, ws = action.params, self.workspace
        try:
            if action.name == "bash":
                result = ws.run(p["command"], self.command_timeout)
                code = "killed" if result.exit_code is None else result.exit_code
                return f"{result.output}\n[exit code: {code}]", False
            if action.name == "view":
                return self._view(p["path"], p.get("view_range")), False
            if action.name == "str_replace":
                return self._str_replace(p["path"], p["old_str"], p["new_str"])
            if action.name == "create":
                if ws.exists(p["path"]):
                    return f"{p['path']} already exists; edit it with str_replace.", True
                written = ws.write_text(p["path"], p["file_text"])
                return f"Created {written}.", False
            if action.name == "apply_patch":
                result = ws.apply_patch(p["patch"], self.command_timeout)
                if result.exit_code == 0 and p["patch"].strip() == self.task.get("patch", "").strip():
                    self._gold_applied = True
                return truncate(result.output, self.output_chars) or "Patch applied.", result.exit_code != 0
        except PathEscape as error:
            return f"Refused: {error}.", True
        except OSError as error:  # missing, a directory, not a regular file, symlink loop, name too long...
            return f"Error: {error}", True
        except ValueError as error:  # PatchError and malformed arguments
            return f"Error: {error}", True
        except SandboxError:
            raise  # the jail itself failed: step() ends the episode
        except Exception as error:  # noqa: BLE001 - anything else a tool met is the agent's invalid action
            logger.warning("SWEEnv: the %s tool failed", action.name, exc_info=True)
            return f"Error: {type(error).__name__}: {error}", True
        raise AssertionError(f"unhandled tool {action.name}")

    def _view(self, path: str, view_range: str | None) -> str:
        ws = self.workspace
        if ws.is_dir(path):
            return truncate("\n".join(ws.list_dir(path, depth=2)) or "(empty directory)", self.output_chars)
        lines = ws.read_text(path).splitlines()
        start, end = 1, len(lines)
        if view_range:
            numbers = re.findall(r"-?\d+", view_range)
            if len(numbers) != 2:
                raise ValueError(f"view_range must be 'START END', got {view_range!r}")
            start, end = int(numbers[0]), int(numbers[1])
            end = len(lines) if end == -1 else end
            if not 1 <= start <= max(1, end) or end > len(lines):
                raise ValueError(f"view_range {view_range!r} is outside the file's lines 1-{len(lines)}")
        shown = "\n".join(f"{i:6d}\t{lines[i - 1]}" for i in range(start, end + 1))
        return truncate(shown or "(empty file)", self.output_chars)

    def _str_replace(self, path: str, old: str, new: str) -> tuple[str, bool]:
        ws = self.workspace
        text = ws.read_text(path)
        count = text.count(old) if old else 0
        if count != 1:
            problem = "does not occur" if count == 0 else f"occurs {count} times"
            return f"No replacement: old_str {problem} in {path}; it must occur exactly once.", True
        updated = text.replace(old, new, 1)
        ws.write_text(path, updated)
        line = text[: text.index(old)].count("\n") + 1
        snippet = updated.splitlines()[max(0, line - 4) : line + new.count("\n") + 3]
        numbered = "\n".join(f"{i:6d}\t{s}" for i, s in enumerate(snippet, start=max(1, line - 3)))
        return truncate(f"Edited {path}. The changed region now reads:\n{numbered}", self.output_chars), False

    # ------------------------------------------------------------------ the end
    def _grade(self, graded: dict) -> TestReport:
        """Apply the agent's filtered diff to a fresh workspace of the task and run the tests there: the
        reward is a function of the diff alone (see :mod:`.grading`). ``graded`` gets the ignored paths."""
        diff = self.workspace.diff(self.eval_timeout)
        offline = self.task.get("source") == "offline"
        fresh = self._open(self.task)
        try:
            ignore_dirs = ("tests",) if offline else ()
            if r2egym.is_r2egym_instance(self.task):  # the image's own changes (run_tests.sh...) are not the fix
                ignore_dirs = r2egym.harness_paths(fresh.diff(self.eval_timeout))
            kept, graded["ignored_paths"] = graded_diff(diff, ignore_dirs=ignore_dirs)
            if kept.strip():
                result = fresh.apply_patch(kept, self.eval_timeout)
                if result.exit_code != 0:
                    return TestReport(error=f"the agent's diff does not apply: {truncate(result.output, 500)}")
            return fresh.evaluate(self.eval_timeout)
        finally:
            fresh.close()

    def _finish(self, ended_by: str, observation: str = "", info: dict | None = None) -> StepResult:
        self.done = True
        graded: dict = {"ignored_paths": []}
        try:
            report = self._grade(graded)
        except Exception as error:  # noqa: BLE001 - a failed evaluation is an unresolved episode, not a crash
            logger.warning("SWEEnv: the final test run failed", exc_info=True)
            report = TestReport(error=f"{type(error).__name__}: {error}")
        success = report.resolved
        info = {**(info or {"invalid": False}), **report.info(), **graded, "success": success, "ended_by": ended_by}
        if report.error:
            info["error"] = report.error
        verdict = "Resolved: the tests pass." if success else "Not resolved."
        text = f"{observation}\n\n" if observation else ""
        text += f"Episode over ({ended_by}). {report.summary()} {verdict}"
        return StepResult(text, 1.0 if success else 0.0, True, info)
