"""Unified diffs: make them, check the paths they touch, and apply our own (trusted) ones in pure Python.

Model-written patches are applied by ``git apply`` *inside* the sandbox; :func:`patch_paths` /
:func:`check_patch_paths` reject escaping paths before that, so the agent gets a clear error.
"""

from __future__ import annotations

import difflib
import posixpath
import re

__all__ = ["PatchError", "apply_patch", "check_patch_paths", "make_patch", "patch_paths"]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HEADER = re.compile(r"^(?:---|\+\+\+) (?:\"?)([^\t\"\n]+)")
_GIT = re.compile(r"^diff --git (\S+) (\S+)")
_RENAME = re.compile(r"^(?:rename|copy) (?:from|to) (.+)$")


class PatchError(ValueError):
    """A patch is malformed, does not apply, or touches a path outside the repository."""


def make_patch(old: str, new: str, path: str) -> str:
    """A git-style unified diff turning ``old`` into ``new`` for the file ``path`` (repo-relative)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}", n=3
    )
    body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return f"diff --git a/{path} b/{path}\n{body}" if body else ""


def patch_paths(patch: str) -> list[str]:
    """Every path a unified diff names (``---``/``+++`` headers, ``diff --git`` lines, renames), as written."""
    paths = []
    for line in patch.splitlines():
        for regex in (_HEADER, _RENAME):
            match = regex.match(line)
            if match:
                paths.append(match.group(1).strip())
        match = _GIT.match(line)
        if match:
            paths += [match.group(1), match.group(2)]
    return paths


def _strip(path: str) -> str | None:
    if path == "/dev/null":
        return None
    if path.startswith(("a/", "b/")):
        return path[2:]
    return path


def check_patch_paths(patch: str) -> list[str]:
    """The repo-relative paths of ``patch``; :class:`PatchError` when any is absolute or climbs out with
    ``..`` (symlinks inside the repository are checked by the caller against the real filesystem)."""
    paths = patch_paths(patch)
    if not paths:
        raise PatchError("no file headers found: a patch needs '--- a/PATH' and '+++ b/PATH' lines")
    out = []
    for raw in paths:
        path = _strip(raw)
        if path is None:
            continue
        if path.startswith("/") or path.startswith("~"):
            raise PatchError(f"patch path {raw!r} is absolute; paths must be relative to the repository")
        normal = posixpath.normpath(path)
        if normal == ".." or normal.startswith("../") or "/../" in f"/{path}/":
            raise PatchError(f"patch path {raw!r} leaves the repository")
        out.append(normal)
    return sorted(set(out))


def apply_patch(files: dict[str, str], patch: str) -> dict[str, str]:
    """Apply a unified diff to ``files`` (path -> text) exactly (context must match); returns the changed
    files (path -> new text; deleted files map to ``None``). For patches this package made itself."""
    check_patch_paths(patch)
    out: dict[str, str] = {}
    lines = patch.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        if not lines[i].startswith("--- "):
            i += 1
            continue
        old_path = _strip(_HEADER.match(lines[i]).group(1).strip())
        new_path = _strip(_HEADER.match(lines[i + 1]).group(1).strip())
        i += 2
        source = [] if old_path is None else files[old_path].splitlines(keepends=True)
        result, cursor = [], 0
        while i < len(lines) and lines[i].startswith("@@"):
            match = _HUNK.match(lines[i])
            if match is None:
                raise PatchError(f"bad hunk header {lines[i]!r}")
            start = int(match.group(1)) - (0 if match.group(2) == "0" else 1)
            result += source[cursor:start]
            cursor = start
            i += 1
            while i < len(lines) and lines[i][:1] in (" ", "-", "+", "\\"):
                line = lines[i]
                tag, text = line[:1], line[1:]
                if tag == "\\":  # "\ No newline at end of file": the previous line has no newline
                    target = result if lines[i - 1][:1] in (" ", "+") else None
                    if target:
                        target[-1] = target[-1].rstrip("\n")
                elif tag in (" ", "-"):
                    if cursor >= len(source) or source[cursor].rstrip("\n") != text.rstrip("\n"):
                        raise PatchError(f"{old_path}: context does not match at line {cursor + 1}")
                    if tag == " ":
                        result.append(source[cursor])
                    cursor += 1
                else:
                    result.append(text)
                i += 1
        result += source[cursor:]
        out[new_path if new_path is not None else old_path] = None if new_path is None else "".join(result)
    return out
