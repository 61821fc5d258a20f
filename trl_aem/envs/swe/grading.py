"""Grade the agent's diff alone, as SWE-bench grades a model patch.

What the agent leaves in its workspace besides source edits can change what the tests import: bytecode in
``__pycache__`` (an unchecked-hash ``.pyc`` of a fixed module next to buggy source), a ``conftest.py``, a
``sitecustomize.py`` / ``usercustomize.py``, a ``.pth`` file. So the workspace is never graded: at the end of
an episode the agent's text diff against the task's base is taken (:func:`diff_command`, run *inside* the
sandbox or container, never by the parent in the agent's repository), filtered (:func:`graded_diff`), applied to
a fresh checkout of the task, and the tests run there.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from .patch import patch_paths
from .sandbox import CommandResult

__all__ = [
    "DiffError",
    "IGNORED_NAMES",
    "IGNORED_SUFFIXES",
    "diff_command",
    "diff_output",
    "diff_paths",
    "graded_diff",
]

# import hooks and test infrastructure: never a fix, and each can change what the graded tests import
IGNORED_NAMES = frozenset({"conftest.py", "sitecustomize.py", "usercustomize.py"})
IGNORED_SUFFIXES = (".pth", ".pyc", ".pyo")
MAX_DIFF_CHARS = 1 << 22

_SECTION = re.compile(r"^diff --git ", re.MULTILINE)
_BINARY = re.compile(r"^(?:Binary files .* differ|GIT binary patch)$", re.MULTILINE)

# Overrides of whatever the agent wrote in .git/config or ~/.gitconfig that could change the diff's format or
# run a program (git runs in the sandbox, so a program could only spoil the agent's own diff).
_GIT = (
    "git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.quotePath=true -c safe.directory='*' "
    "-c diff.noprefix=false -c diff.mnemonicPrefix=false -c diff.relative=false -c core.autocrlf=false"
)
_DIFF_FLAGS = "--no-color --no-ext-diff --no-textconv --no-renames --src-prefix=a/ --dst-prefix=b/"


class DiffError(RuntimeError):
    """The agent's diff could not be taken (git failed, timed out, or the diff is too large)."""


def diff_command(base: str) -> str:
    """The shell command printing the agent's diff against ``base``: tracked changes plus new untracked,
    non-ignored files (``add --intent-to-add``); binary files appear as ``Binary files ... differ``."""
    env = "export GIT_NO_REPLACE_OBJECTS=1 GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_DIR=.git GIT_WORK_TREE=."
    return (
        f"{env}; {_GIT} add --all --intent-to-add >/dev/null 2>&1 && "
        f"{_GIT} diff {_DIFF_FLAGS} {shlex.quote(base)} -- 2>/dev/null"
    )


def diff_output(result: CommandResult) -> str:
    """The diff printed by :func:`diff_command`, or :class:`DiffError`."""
    if result.timed_out or result.exit_code != 0:
        raise DiffError(f"git diff failed (exit code {result.exit_code}): {result.output[-300:]}")
    if result.output_truncated:
        raise DiffError(f"the agent's diff is larger than {MAX_DIFF_CHARS} characters")
    return result.output


def _sections(diff: str) -> list[str]:
    """The per-file sections of a git diff (text before the first ``diff --git`` line is dropped)."""
    starts = [m.start() for m in _SECTION.finditer(diff)]
    return [diff[a:b] for a, b in zip(starts, [*starts[1:], len(diff)], strict=False)]


def _paths(section: str) -> list[str]:
    """The repo-relative paths a section names (both sides of a rename)."""
    raw = patch_paths(section)
    head = section.split("\n", 1)[0][len("diff --git ") :]
    half = (len(head) - 1) // 2  # "a/P b/P" for a path P with spaces and no rename
    if head[half : half + 1] == " " and head[:half][2:] == head[half + 1 :][2:]:
        raw.append(head[:half])
    paths = []
    for path in raw:
        path = path.strip().strip('"')
        if path != "/dev/null":
            paths.append(path[2:] if path.startswith(("a/", "b/")) else path)
    return sorted(set(paths))


def diff_paths(diff: str) -> list[str]:
    """Every repo-relative path a git diff names, sorted."""
    return sorted({path for section in _sections(diff) for path in _paths(section)})


def _ignored(path: str, ignore_dirs: tuple[str, ...]) -> bool:
    parts = posixpath.normpath(path).split("/")
    name = parts[-1]
    return (
        name in IGNORED_NAMES
        or name.endswith(IGNORED_SUFFIXES)
        or "__pycache__" in parts
        or any(path == d or path.startswith(d.rstrip("/") + "/") for d in ignore_dirs)
    )


def graded_diff(diff: str, *, ignore_dirs: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """(the part of ``diff`` that is graded, the paths left out). Left out: any section naming an import hook
    or test infrastructure (:data:`IGNORED_NAMES`, :data:`IGNORED_SUFFIXES`, ``__pycache__/``), a file under
    ``ignore_dirs`` (e.g. the tests, which the grader replaces anyway), and binary files (no text to apply)."""
    kept, ignored = [], []
    for section in _sections(diff):
        paths = _paths(section)
        if _BINARY.search(section) or any(_ignored(p, ignore_dirs) for p in paths):
            ignored += paths
        else:
            kept.append(section)
    return "".join(kept), sorted(set(ignored))
