"""Grading the agent's diff alone in a fresh workspace: what the filter keeps, and the attacks through files left in
the workspace (bytecode, conftest.py, sitecustomize.py, .pth) earn nothing while real fixes still earn 1."""

from __future__ import annotations

import os

import pytest

from trl_aem.envs import SWEEnv
from trl_aem.envs.swe.grading import graded_diff
from trl_aem.envs.swe.patch import apply_patch, check_patch_paths

from .test_env import sample_tasks, tool

MODULE = "diff --git a/pkg/mod.py b/pkg/mod.py\nindex 1..2 100644\n--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -1 +1 @@\n-a\n+b\n"
NEW = "diff --git a/pkg/new.py b/pkg/new.py\nnew file mode 100644\nindex 0..3\n--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1 @@\n+x\n"
DELETED = "diff --git a/pkg/old.py b/pkg/old.py\ndeleted file mode 100644\n--- a/pkg/old.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
RENAMED = "diff --git a/pkg/a.py b/pkg/b.py\nsimilarity index 100%\nrename from pkg/a.py\nrename to pkg/b.py\n"
BINARY = "diff --git a/data.bin b/data.bin\nnew file mode 100644\nindex 0..4\nBinary files /dev/null and b/data.bin differ\n"


def section(path: str) -> str:
    return NEW.replace("pkg/new.py", path)


def test_graded_diff_keeps_source_edits_new_deleted_and_renamed_files():
    diff = MODULE + NEW + DELETED + RENAMED
    assert graded_diff(diff) == (diff, [])
    assert graded_diff("") == ("", [])
    spaced = section("pkg/my mod.py")
    assert graded_diff(spaced) == (spaced, [])


@pytest.mark.parametrize(
    "path",
    [
        "conftest.py",
        "pkg/conftest.py",
        "sitecustomize.py",
        "usercustomize.py",
        "hook.pth",
        "pkg/__pycache__/mod.cpython-311.pyc",
        "pkg/__pycache__/notes.txt",
        "mod.pyc",
    ],
)
def test_graded_diff_drops_import_hooks_and_test_infrastructure(path):
    kept, ignored = graded_diff(MODULE + section(path) + DELETED)
    assert kept == MODULE + DELETED and ignored == [path]


def test_graded_diff_drops_binary_files_ignored_dirs_and_renames_into_hooks():
    kept, ignored = graded_diff(MODULE + BINARY + section("tests/test_mod.py"), ignore_dirs=("tests",))
    assert kept == MODULE and ignored == ["data.bin", "tests/test_mod.py"]
    assert graded_diff(section("tests_extra.py"), ignore_dirs=("tests",))[1] == []  # a prefix is not a dir
    to_hook = RENAMED.replace("pkg/b.py", "conftest.py")
    assert graded_diff(MODULE + to_hook) == (MODULE, ["conftest.py", "pkg/a.py"])


# ---------------------------------------------------------------------------- episodes, local back end
@pytest.fixture(scope="module")
def task():
    return sample_tasks(4, seed=5)[0]


def fixed_files(env: SWEEnv, task: dict) -> dict[str, tuple[str, str]]:
    """path -> (buggy text in the workspace, text after the gold patch)."""
    paths = check_patch_paths(task["patch"])
    buggy = {p: env.workspace.read_text(p) for p in paths}
    return {p: (buggy[p], text) for p, text in apply_patch(buggy, task["patch"]).items()}


def play(task: dict, *actions: str, setup=None):
    env = SWEEnv()
    try:
        env.reset(task)
        if setup is not None:
            setup(env)
        for action in actions:
            env.step(action)
        result = env.step(tool("submit"))
        assert result.done
        return result
    finally:
        env.close()


def test_the_gold_patch_and_a_str_replace_fix_earn_1(task):
    result = play(task, tool("apply_patch", patch=task["patch"]))
    assert result.reward == 1.0 and result.info["ignored_paths"] == [], result.observation

    def edit(env):
        for path, (buggy, fixed) in fixed_files(env, task).items():
            env.step(tool("str_replace", path=path, old_str=buggy, new_str=fixed))

    # a fix next to a conftest.py and edited tests: the fix counts, the rest is ignored and reported
    result = play(
        task, tool("bash", command="echo 'x = 1' > conftest.py; echo '# x' >> tests/__init__.py"), setup=edit
    )
    assert result.reward == 1.0, result.observation
    assert result.info["ignored_paths"] == ["conftest.py", "tests/__init__.py"]


def test_stale_unchecked_hash_bytecode_of_the_fixed_module_earns_0(task):
    def attack(env):
        for path, (buggy, fixed) in fixed_files(env, task).items():
            env.workspace.write_text(path, fixed)
            compile_ = (
                "import importlib.util as u, py_compile as c; "
                f"c.compile({path!r}, cfile=u.cache_from_source({path!r}), "
                "invalidation_mode=c.PycInvalidationMode.UNCHECKED_HASH, doraise=True)"
            )
            assert env.step(tool("bash", command=f'python -c "{compile_}"')).observation.endswith("[exit code: 0]")
            env.workspace.write_text(path, buggy)  # the source stays buggy
        pycs = env.step(tool("bash", command="find . -name '*.pyc'")).observation
        assert "__pycache__" in pycs, pycs

    result = play(task, setup=attack)
    assert result.reward == 0.0 and not result.info["success"], result.observation

    def attack_and_evaluate_in_place(env):
        attack(env)
        # defence in depth: the test run removes bytecode first, so even the agent's own workspace is not fooled
        assert not env.workspace.evaluate(60).resolved

    play(task, setup=attack_and_evaluate_in_place)


HOOK = "import sys\nsys.modules.setdefault('trl_aem_hook', sys)\n"
CONFTEST = (
    "import pytest\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
    "    outcome = yield\n    report = outcome.get_result()\n    report.outcome = 'passed'\n"
)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("conftest.py", CONFTEST),
        ("tests/conftest.py", CONFTEST),
        ("sitecustomize.py", HOOK),
        ("usercustomize.py", HOOK),
        ("hook.pth", "import trl_aem_hook_module\n"),
    ],
)
def test_import_hooks_left_in_the_workspace_earn_0(task, path, text):
    def attack(env):
        env.workspace.write_text(path, text)
        if path.endswith(".pth"):
            env.workspace.write_text("trl_aem_hook_module.py", HOOK)

    result = play(task, setup=attack)
    assert result.reward == 0.0, result.observation
    assert path in result.info["ignored_paths"]


def test_a_diff_that_does_not_apply_is_unresolved_with_a_clear_error(task, monkeypatch):
    env = SWEEnv()
    try:
        env.reset(task)
        path = check_patch_paths(task["patch"])[0]
        bogus = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-no such line\n+x\n"
        monkeypatch.setattr(env.workspace, "diff", lambda timeout=0: bogus)
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0
        assert "does not apply" in result.info["error"], result.info
        assert os.path.isdir(env.workspace.sandbox.repo)  # the agent's workspace is closed by close()/reset()
    finally:
        env.close()


def test_a_committed_fix_counts_and_git_config_cannot_change_the_diff(task):
    def edit(env):
        for path, (buggy, fixed) in fixed_files(env, task).items():
            env.step(tool("str_replace", path=path, old_str=buggy, new_str=fixed))

    hostile = (
        "git -c user.name=a -c user.email=a@b commit -qam fix && "  # the diff is taken against the base, not HEAD
        "git config diff.noprefix true && git config diff.mnemonicPrefix true && git config color.diff always && "
        "git config diff.external /bin/false && git config diff.evil.textconv 'echo forged' && "
        "echo '*.py diff=evil' > .git/info/attributes && git config core.quotePath false"
    )

    def edit_commit_and_configure(env):
        edit(env)
        assert env.step(tool("bash", command=hostile)).observation.endswith("[exit code: 0]")
        assert env.step(tool("bash", command="git diff HEAD")).observation.startswith("\n[exit code")  # committed

    result = play(task, setup=edit_commit_and_configure)
    assert result.reward == 1.0 and result.info["ignored_paths"] == [], result.observation
