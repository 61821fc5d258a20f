"""SWE-smith-style offline tasks: bugs injected into small Python projects by AST transformations.

The projects live in ``projects/<name>/`` (package data: a package and a ``tests/`` unittest suite). For
every source file, :func:`mutants` enumerates single-site program transformations, in a fixed order:

- ``flip_comparison``: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``<`` <-> ``>``, ``==`` <-> ``!=``, ``in`` <-> ``not in``, ...
- ``off_by_one``: an integer constant ``n`` becomes ``n + 1`` or ``n - 1``;
- ``wrong_operator``: ``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``%`` -> ``//``, ``**`` -> ``*``, ``+=`` <-> ``-=``;
- ``wrong_boolean``: ``and`` <-> ``or``; ``dropped_not``: ``not x`` -> ``x``;
- ``removed_branch``: an ``if`` statement without ``else`` is deleted;
- ``swapped_arguments``: the first two positional arguments of a call are swapped.

Only the mutated expression (or statement) changes in the source text, and the edited text must parse to
exactly the intended tree. :func:`validate` runs each project's suite on every mutant in the sandbox
(in parallel) and keeps a bug only if some tests fail, some pass, none hangs, and the gold patch (the diff
back) restores the original file, whose suite passes. Results are cached by a fingerprint of the
projects, the runner and this generator: ``offline_tasks.json`` ships with the package; a changed
project is re-validated once into the user cache (``$TRL_AEM_CACHE`` or ``~/.cache/trl_aem``).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .cleanup import remove_tree
from .patch import apply_patch, make_patch
from .sandbox import Sandbox, SandboxLimits

__all__ = ["Mutant", "PROJECTS_DIR", "fingerprint", "mutants", "project_files", "projects", "validate", "run_tests"]

GENERATOR_VERSION = 3
PROJECTS_DIR = Path(__file__).parent / "projects"
RUNNER = Path(__file__).parent / "runner.py"
SHIPPED_CACHE = Path(__file__).parent / "offline_tasks.json"
PER_TEST_SECONDS = 2.0  # a test of these projects takes milliseconds; longer means an endless loop

_COMPARE_FLIPS = {
    ast.Lt: (ast.LtE, ast.Gt),
    ast.LtE: (ast.Lt, ast.GtE),
    ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
_BINOP_SWAPS = {
    ast.Add: (ast.Sub,),
    ast.Sub: (ast.Add,),
    ast.Mult: (ast.Div,),
    ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Div,),
    ast.Mod: (ast.FloorDiv,),
    ast.Pow: (ast.Mult,),
}


@dataclass(frozen=True)
class Mutant:
    """One injected bug: ``file`` of ``project`` with ``source`` instead of ``original``."""

    project: str
    file: str  # project-relative path
    kind: str
    site: int  # index of the mutation site in the file's enumeration
    line: int
    original: str
    source: str

    @property
    def key(self) -> str:
        return f"{self.file}:{self.kind}:{self.site}"

    @property
    def gold_patch(self) -> str:
        return make_patch(self.source, self.original, self.file)

    @property
    def bug_patch(self) -> str:
        return make_patch(self.original, self.source, self.file)


def projects() -> list[str]:
    """Names of the shipped projects."""
    return sorted(p.name for p in PROJECTS_DIR.iterdir() if (p / "tests").is_dir())


def project_files(project: str) -> dict[str, str]:
    """Every text file of a project (relative path -> content), sorted, caches excluded."""
    root = PROJECTS_DIR / project
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out[path.relative_to(root).as_posix()] = path.read_text()
    return out


def fingerprint() -> str:
    """Hash of everything validation depends on (projects, runner, generator version)."""
    digest = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
    for project in projects():
        for name, text in project_files(project).items():
            digest.update(f"{project}/{name}\0{text}\0".encode())
    digest.update(RUNNER.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- mutation
def _segment_offsets(source: str, node: ast.AST) -> tuple[int, int]:
    """Character offsets of ``node`` in ``source`` (AST columns are UTF-8 byte offsets)."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:
        line = lines[lineno - 1]
        return starts[lineno - 1] + len(line.encode()[:col].decode())

    return offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)


def _expression_variants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(kind, replacement node) for one expression node."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        for op in _COMPARE_FLIPS.get(type(node.ops[0]), ()):
            new = copy.deepcopy(node)
            new.ops = [op()]
            yield "flip_comparison", new
    elif isinstance(node, ast.BinOp):
        for op in _BINOP_SWAPS.get(type(node.op), ()):
            new = copy.deepcopy(node)
            new.op = op()
            yield "wrong_operator", new
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield "off_by_one", ast.Constant(node.value + delta)
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "wrong_boolean", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "dropped_not", copy.deepcopy(node.operand)
    elif (
        isinstance(node, ast.Call)
        and len(node.args) >= 2
        and not any(isinstance(a, ast.Starred) for a in node.args)
        and ast.dump(node.args[0]) != ast.dump(node.args[1])
    ):
        new = copy.deepcopy(node)
        new.args[0], new.args[1] = new.args[1], new.args[0]
        yield "swapped_arguments", new


def _replace_in_tree(tree: ast.AST, target: ast.AST, replacement: ast.AST | None) -> ast.AST:
    """A copy of ``tree`` with ``target`` (found by identity in ``tree``) replaced or, for a statement and
    ``replacement=None``, removed."""
    marker = id(target)

    class Swap(ast.NodeTransformer):
        def generic_visit(self, node):
            if id(node) == marker:
                return replacement
            return super().generic_visit(node)

    # deep copy everything except `target`, which keeps its identity so Swap finds it in the copy
    return Swap().visit(copy.deepcopy(tree, memo={marker: target}))


def mutants(project: str) -> list[Mutant]:
    """Every single-site mutant of every source file of ``project`` (tests excluded), deduplicated, in a
    fixed order."""
    out, seen = [], set()
    for name, original in project_files(project).items():
        if not name.endswith(".py") or name.startswith("tests/") or name.endswith("__init__.py"):
            continue
        tree = ast.parse(original)
        site = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and not node.orelse:
                variants: list[tuple[str, ast.AST | None]] = [("removed_branch", None)]
            elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
                new = copy.deepcopy(node)
                new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
                variants = [("wrong_operator", new)]
            elif isinstance(node, ast.expr):
                variants = list(_expression_variants(node))
            else:
                continue
            for kind, replacement in variants:
                site += 1
                source = _edit(original, tree, node, replacement)
                if source is None or source in seen:
                    continue
                seen.add(source)
                out.append(Mutant(project, name, kind, site, node.lineno, original, source))
    return out


_SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
    ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.And: "and", ast.Or: "or",
}  # fmt: skip


def _minimal_text(original: str, node: ast.AST, replacement: ast.AST) -> str | None:
    """The mutated expression written by editing only its operator (or argument order) in the original
    text, so the diff shows nothing but the bug (``ast.unparse`` would also restyle quotes and spacing)."""

    def span(n: ast.AST) -> tuple[int, int]:
        return _segment_offsets(original, n)

    start, end = span(node)
    if isinstance(node, (ast.Compare, ast.BinOp, ast.BoolOp)):
        if isinstance(node, ast.Compare):
            children, old, new = [node.left, *node.comparators], node.ops[0], replacement.ops[0]
        elif isinstance(node, ast.BinOp):
            children, old, new = [node.left, node.right], node.op, replacement.op
        else:
            children, old, new = node.values, node.op, replacement.op
        pieces, cursor = [], start
        for left, right in zip(children, children[1:], strict=False):
            gap_start, gap_end = span(left)[1], span(right)[0]
            gap = original[gap_start:gap_end]
            edited = gap.replace(f" {_SYMBOLS[type(old)]} ", f" {_SYMBOLS[type(new)]} ", 1)
            if edited == gap:
                return None
            pieces += [original[cursor:gap_start], edited]
            cursor = gap_end
        return "".join(pieces) + original[cursor:end]
    if isinstance(node, ast.Call) and isinstance(replacement, ast.Call):
        (a0, a1), (b0, b1) = span(node.args[0]), span(node.args[1])
        return original[start:a0] + original[b0:b1] + original[a1:b0] + original[a0:a1] + original[b1:end]
    if isinstance(node, ast.UnaryOp):
        a, b = span(node.operand)
        return original[a:b]
    return None


def _edit(original: str, tree: ast.AST, node: ast.AST, replacement: ast.AST | None) -> str | None:
    """The source with ``node`` replaced (only its text changes); ``None`` when the edit is not faithful."""
    if replacement is None:  # delete whole lines of a statement that is not alone in its block
        lines = original.splitlines(keepends=True)
        before = lines[node.lineno - 1][: node.col_offset]
        after = lines[node.end_lineno - 1].encode()[node.end_col_offset :].decode()
        if before.strip() or after.strip():
            return None
        source = "".join(lines[: node.lineno - 1] + lines[node.end_lineno :])
    else:
        start, end = _segment_offsets(original, node)
        if "\n" in original[start:end]:
            return None
        text = _minimal_text(original, node, replacement) or ast.unparse(replacement)
        source = original[:start] + text + original[end:]
    try:
        expected = ast.dump(_replace_in_tree(tree, node, replacement))
        if ast.dump(ast.parse(source)) != expected:
            return None
        compile(source, "<mutant>", "exec")
    except (SyntaxError, ValueError, TypeError):
        return None
    return source


# ---------------------------------------------------------------------------- running tests
def test_ids(project: str) -> list[str]:
    """Node ids (``tests/test_x.py::Class::test_y``) of a project's tests, read statically."""
    ids = []
    for name, text in project_files(project).items():
        if not (name.startswith("tests/") and os.path.basename(name).startswith("test_") and name.endswith(".py")):
            continue
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        ids.append(f"{name}::{node.name}::{item.name}")
    return ids


def run_tests(
    sandbox: Sandbox, ids: list[str], timeout: float, per_test: float = PER_TEST_SECONDS
) -> tuple[dict[str, dict], bool]:
    """Run test ``ids`` in ``sandbox``'s repo with the shipped runner; returns ({id: record}, timed_out).
    A test longer than ``per_test`` seconds is reported with status ``timeout``; tests without a record
    (the whole run was cut at ``timeout``) as ``error``."""
    harness = sandbox.private_dir(".harness")  # read-only for commands: the runner cannot be swapped
    with open(os.path.join(harness, "runner.py"), "w") as handle:
        handle.write(RUNNER.read_text())
    marker = f"@@trl-aem-{secrets.token_hex(8)}"
    # repeated ids are run once; the command line stays well under ARG_MAX for hundreds of tests
    # -I ignores PYTHONDONTWRITEBYTECODE: -B, and no stale bytecode, or a mutant written within the same
    # second as the previous one (same size, same mtime) would run the previous one's cached code. The
    # bytecode is removed by the jailed command itself: `find` walks trees of any depth without recursing,
    # and the parent never walks what the agent made (a 1200-level directory crashed a recursive walk).
    runner = os.path.join(harness, "runner.py")
    tests = " ".join(["python", "-I", "-S", "-B", runner, marker, f"{per_test:g}", *map(_quote, ids)])
    command = f"{_REMOVE_BYTECODE} 2>/dev/null; {tests}"
    result = sandbox.run(command, timeout=timeout, output_chars=1 << 22)
    records: dict[str, dict] = {}
    for line in result.output.splitlines():
        if line.startswith(marker + " "):
            try:
                record = json.loads(line[len(marker) + 1 :])
            except json.JSONDecodeError:
                continue
            if record.get("id") in ids:
                records[record["id"]] = record
    for test in ids:
        if test not in records:
            reason = "timed out" if result.timed_out else (result.output[-300:] or "no result")
            records[test] = {"id": test, "status": "error", "message": f"no result: {reason}"}
    return records, result.timed_out


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# every __pycache__ directory and .pyc file under the repository (find never follows symlinks by default). Not
# `-delete`: it implies -depth, which disables -prune, and find then refused the whole expression (stale
# bytecode of a fixed module survived and earned reward 1 when the agent's workspace was graded)
_REMOVE_BYTECODE = (
    r"find . \( -type d -name __pycache__ -prune -exec rm -rf {} + \) -o \( -type f -name '*.pyc' -exec rm -f {} + \)"
)


def _fresh_dir(path: str) -> None:
    """Replace whatever is at ``path`` (a directory tree of any depth, a file, a symlink planted by the agent)
    by an empty directory."""
    if not remove_tree(path):
        raise OSError(f"cannot remove {path}")
    os.makedirs(path)


# ---------------------------------------------------------------------------- validation
def validate(
    project_names: list[str] | None = None,
    *,
    workers: int | None = None,
    timeout: float = 60.0,
    allow_network: bool = False,
    keys: set[str] | None = None,
) -> dict:
    """Run every mutant's tests (or only those whose :attr:`Mutant.key` is in ``keys``); return the cache
    document ``{"fingerprint", "projects": {name: {"tests", "mutants", "kept"}}}``."""
    names = project_names or projects()
    workers = workers or max(1, os.cpu_count() or 1)
    # a small address space: a mutant that grows a list forever fails fast with MemoryError (deterministically)
    limits = SandboxLimits(timeout=timeout, cpu_seconds=int(timeout) + 2, memory_bytes=256 << 20)
    local = threading.local()  # one sandbox per (worker thread, project): files are rewritten, not copied

    def sandbox_for(project: str) -> Sandbox:
        boxes = getattr(local, "boxes", None)
        if boxes is None:
            boxes = local.boxes = {}
            _all_boxes.append(boxes)
        if project not in boxes:
            boxes[project] = Sandbox(PROJECTS_DIR / project, limits=limits, allow_network=allow_network)
        return boxes[project]

    _all_boxes: list[dict] = []
    document = {"fingerprint": fingerprint(), "generator_version": GENERATOR_VERSION, "projects": {}}
    try:
        for project in names:
            ids = test_ids(project)
            clean, timed_out = run_tests(sandbox_for(project), ids, timeout)
            broken = [t for t, r in clean.items() if r["status"] != "passed"]
            if broken or timed_out:
                raise RuntimeError(f"project {project}: the original suite does not pass: {broken}")
            candidates = [m for m in mutants(project) if keys is None or m.key in keys]

            def check(mutant: Mutant, ids=ids, project=project) -> dict | None:
                # gold patch restores the original exactly (so the original's passing suite is the gold run)
                if apply_patch({mutant.file: mutant.source}, mutant.gold_patch)[mutant.file] != mutant.original:
                    return None
                box = sandbox_for(project)
                path = os.path.join(box.repo, mutant.file)
                with open(path, "w") as handle:
                    handle.write(mutant.source)
                try:
                    records, timed_out = run_tests(box, ids, timeout)
                finally:
                    with open(path, "w") as handle:
                        handle.write(mutant.original)
                failing = {t: r["message"] for t, r in records.items() if r["status"] != "passed"}
                hang = timed_out or any(r["status"] == "timeout" for r in records.values())
                if hang or not failing or len(failing) == len(ids):
                    return None  # an endless loop, a surviving mutant, or nothing left passing
                return {"key": mutant.key, "fail": failing}  # passing: the project's other tests

            with ThreadPoolExecutor(workers) as pool:
                kept = [r for r in pool.map(check, candidates) if r is not None]
            document["projects"][project] = {"tests": ids, "mutants": len(candidates), "kept": kept}
    finally:
        for boxes in _all_boxes:
            for box in boxes.values():
                box.close()
    return document


def _user_cache() -> Path:
    base = os.environ.get("TRL_AEM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trl_aem")
    return Path(base) / "swe"


def load_validated(*, allow_network: bool = False) -> dict:
    """The validation document for the current projects: the shipped one, a cached one, or a fresh run."""
    current = fingerprint()
    for path in (SHIPPED_CACHE, _user_cache() / f"offline_tasks-{current}.json"):
        if path.is_file():
            try:
                document = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if document.get("fingerprint") == current:
                return document
    document = validate(allow_network=allow_network)
    path = _user_cache() / f"offline_tasks-{current}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: concurrent processes never read a half-written cache
    return document


def main() -> None:
    """``python -m trl_aem.envs.swe.generator``: re-validate and rewrite the shipped cache."""
    import time

    started = time.perf_counter()
    document = validate()
    SHIPPED_CACHE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    for name, info in document["projects"].items():
        print(f"{name}: {len(info['tests'])} tests, {info['mutants']} mutants, {len(info['kept'])} kept")
    print(f"validated in {time.perf_counter() - started:.1f} s -> {SHIPPED_CACHE}")


if __name__ == "__main__":
    main()
