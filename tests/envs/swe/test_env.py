"""SWEEnv: the expert solves the offline tasks, talk earns nothing, tools, concurrency through the EnvPool, attacks
through step() that once got through, and the CPU example."""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from trl_aem.envs import ENVIRONMENTS, EnvCall, EnvPool, SWEEnv, get_env
from trl_aem.envs.swe import cleanup, generator, offline_tasks, parse_action
from trl_aem.envs.swe.sandbox import SandboxLimits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def tool(name: str, **params) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"I will call {name}.\n<function={name}>\n{body}</function>"


def sample_tasks(n: int, seed: int = 0) -> list[dict]:
    tasks = offline_tasks("train") + offline_tasks("eval")
    by_project: dict[str, list] = {}
    for task in tasks:
        by_project.setdefault(task["project"], []).append(task)
    rng = random.Random(seed)
    per = max(1, n // len(by_project))
    return [t for name in sorted(by_project) for t in rng.sample(by_project[name], per)]


# ---------------------------------------------------------------------------- episodes
def play_expert(env: SWEEnv, task: dict):
    env.reset(task)
    for _ in range(5):
        result = env.step(env.expert_action())
        if result.done:
            return result
    raise AssertionError("the expert did not finish")


def test_expert_solves_every_sampled_task():
    env = SWEEnv()
    try:
        for task in sample_tasks(12):
            result = play_expert(env, task)
            assert result.reward == 1.0 and result.info["success"], (task["instance_id"], result.observation)
            assert result.info["tests_failed"] == 0
            assert result.info["tests_passed"] == len(task["FAIL_TO_PASS"]) + len(task["PASS_TO_PASS"])
            assert env.expert_action() is None
    finally:
        env.close()


def test_an_agent_that_only_talks_gets_nothing():
    env = SWEEnv(max_steps=4)
    try:
        for task in sample_tasks(4, seed=1):
            env.reset(task)
            for turn in range(4):
                result = env.step("I think the bug is in the loop. Let me fix it by being careful.")
                assert result.info["invalid"] and result.reward == 0.0
                assert result.done == (turn == 3)
            assert result.info["ended_by"] == "max_steps" and not result.info["success"]
            assert result.info["fail_to_pass_passed"] < result.info["fail_to_pass_total"]
        # submitting without a fix is not rewarded either
        env.reset(sample_tasks(4, seed=1)[0])
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0 and result.info["ended_by"] == "submit"
    finally:
        env.close()


def test_the_turn_limit_judges_the_final_state():
    env = SWEEnv(max_steps=1)
    try:
        task = sample_tasks(4, seed=2)[0]
        env.reset(task)
        result = env.step(env.expert_action())  # applies the fix; the budget is spent: evaluated anyway
        assert result.done and result.reward == 1.0 and result.info["ended_by"] == "max_steps"
    finally:
        env.close()


def test_tools_and_observations():
    env = SWEEnv(output_chars=600)
    try:
        task = next(t for t in offline_tasks("eval") if t["project"] == "textkit")
        first = env.reset(task)
        assert "<issue>" in first and "textkit/core.py" in first and task["FAIL_TO_PASS"][0] in first
        assert "<function=TOOL_NAME>" in env.system_prompt and "submit" in env.system_prompt
        result = env.step(tool("view", path="textkit/core.py", view_range="1 3"))
        assert not result.info["invalid"] and result.observation.splitlines()[0].strip().startswith("1\t")
        assert len(result.observation.splitlines()) == 3
        result = env.step(tool("view", path="textkit/core.py"))
        assert "truncated" in result.observation and len(result.observation) < 800
        result = env.step(tool("bash", command="python -c 'print(40 + 2)'; exit 3"))
        assert "42" in result.observation and "[exit code: 3]" in result.observation and not result.info["invalid"]
        result = env.step(tool("bash", command="yes | head -c 100000"))
        assert "truncated" in result.observation and len(result.observation) < 800
        result = env.step(tool("str_replace", path="textkit/core.py", old_str="def ", new_str="def  "))
        assert result.info["invalid"] and "occurs" in result.observation  # not unique
        result = env.step(tool("str_replace", path="textkit/core.py", old_str="def slugify(", new_str="def slugify2("))
        assert not result.info["invalid"] and "slugify2" in env.workspace.read_text("textkit/core.py")
        result = env.step(tool("create", path="notes/todo.txt", file_text="  indented\n"))
        assert not result.info["invalid"] and env.workspace.read_text("notes/todo.txt") == "  indented\n"
        assert env.step(tool("create", path="notes/todo.txt", file_text="x")).info["invalid"]  # exists
        for bad in (
            tool("view", path="../../etc/passwd"),
            tool("view", path="/etc/passwd"),
            tool("create", path="../escape.txt", file_text="x"),
            tool("apply_patch", patch="--- a/../escape.py\n+++ b/../escape.py\n@@ -0,0 +1 @@\n+x\n"),
            tool("frobnicate", path="x"),
            tool("str_replace", path="textkit/core.py"),
            "no tool call at all",
        ):
            result = env.step(bad)
            assert result.info["invalid"] and not result.done, bad
        assert not os.path.exists(os.path.join(os.path.dirname(env.workspace.sandbox.repo), "escape.txt"))
        # the agent's commands cannot read the trainer's secrets
        os.environ["HF_TOKEN"] = "hf_swe_secret"
        try:
            result = env.step(tool("bash", command="env; cat /proc/*/environ | tr '\\0' '\\n'"))
            assert "hf_swe_secret" not in result.observation
        finally:
            del os.environ["HF_TOKEN"]
    finally:
        env.close()


def test_file_tool_os_errors_are_invalid_actions_not_environment_errors():
    # regression: only some OSError subclasses were caught, the others ended the episode as an env fault
    env = SWEEnv()
    try:
        env.reset(next(t for t in offline_tasks("eval") if t["project"] == "textkit"))
        repo = env.workspace.sandbox.repo
        os.symlink("loop_b", os.path.join(repo, "loop_a"))
        os.symlink("loop_a", os.path.join(repo, "loop_b"))
        os.mkfifo(os.path.join(repo, "pipe"))
        for action in (
            tool("create", path="textkit/core.py/x.py", file_text="x"),  # a file used as a directory
            tool("create", path="textkit/__init__.py/sub/x.py", file_text="x"),
            tool("view", path="loop_a"),  # a symlink loop
            tool("str_replace", path="loop_a", old_str="a", new_str="b"),
            tool("view", path="x" * 300),  # a name too long
            tool("create", path="x" * 300, file_text="x"),
            tool("view", path="pipe"),  # a FIFO: refused, not read (which would block forever)
            tool("str_replace", path="pipe", old_str="a", new_str="b"),
        ):
            result = env.step(action)
            assert result.info["invalid"] and not result.done, action
            assert result.observation.startswith("Error: "), result.observation
        assert "not a regular file" in result.observation
        assert not env.step(tool("view", path="textkit/core.py", view_range="1 2")).info["invalid"]
    finally:
        env.close()


def test_editing_the_tests_does_not_help():
    env = SWEEnv()
    try:
        task = sample_tasks(4, seed=3)[0]
        env.reset(task)
        path = task["FAIL_TO_PASS"][0].split("::")[0]
        neutered = "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n"
        env.step(tool("bash", command=f"for f in tests/test_*.py; do printf '%s' {json.dumps(neutered)} > $f; done"))
        assert "test_ok" in env.workspace.read_text(path)
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0  # the tests were restored before the final run
    finally:
        env.close()


def test_parse_action():
    action = parse_action("<function=bash>\n<parameter=command>\n  ls -la\n</parameter>\n</function>")
    assert action.name == "bash" and action.params == {"command": "  ls -la"}
    last = parse_action(tool("view", path="a.py") + "\n" + tool("submit"))
    assert last.name == "submit"
    assert parse_action("<function=submit>").name == "submit"  # cut by the token limit
    assert isinstance(parse_action("<function=view></function>"), str)
    assert isinstance(parse_action("<action>bash: ls</action>"), str)


def test_registered_and_in_the_contract():
    assert ENVIRONMENTS["swe"] == "trl_aem.envs.swe:SWEEnv" and get_env("swe") is SWEEnv
    env = SWEEnv()
    assert callable(env.tasks) and callable(env.expert_action) and isinstance(env.system_prompt, str)


def test_episodes_run_concurrently_in_the_env_pool():
    tasks = sample_tasks(4, seed=4)
    pool = EnvPool(SWEEnv, worker_type="thread", max_workers=4, timeout=120)
    try:
        outcomes = pool.run([EnvCall(k, "reset", t) for k, t in enumerate(tasks)])
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        started = time.monotonic()
        outcomes = pool.run([EnvCall(k, "step", tool("bash", command="sleep 2; echo slept")) for k in range(4)])
        elapsed = time.monotonic() - started
        assert all(o.ok and "slept" in o.value.observation for o in outcomes)
        assert elapsed < 6.0, elapsed  # serialized: 8 s
        # every slot fixes its bug and submits, in parallel, through the pool's workers
        fixes = [tool("apply_patch", patch=task["patch"]) for task in tasks]
        outcomes = pool.run([EnvCall(k, "step", fix) for k, fix in enumerate(fixes)])
        assert all(o.ok and not o.value.info["invalid"] for o in outcomes), [o.value.observation for o in outcomes]
        outcomes = pool.run([EnvCall(k, "step", tool("submit")) for k in range(4)])
        assert all(o.ok and o.value.done and o.value.reward == 1.0 for o in outcomes)
    finally:
        pool.close()


# ---------------------------------------------------------------------------- attacks (issue 17)
# What an RL policy could learn to do through step(): each of these got through once.
def test_the_answer_key_is_out_of_reach():
    # the pristine sources shipped in trl_aem's package (and its checkout's git history) were readable:
    # copying the pristine file over the buggy one earned reward 1 without a fix
    from trl_aem.envs.swe.patch import check_patch_paths
    from trl_aem.envs.swe.sandbox import _package_dir, _source_checkout

    env = SWEEnv()
    try:
        task = sample_tasks(4, seed=5)[0]
        (path,) = check_patch_paths(task["bug_patch"])
        pristine = generator.PROJECTS_DIR / task["project"] / path
        checkout = _source_checkout(_package_dir()) or "/nonexistent"
        env.reset(task)
        attack = (
            f"cp {pristine} {path}; cat {generator.SHIPPED_CACHE} | head -c 300; ls -A {_package_dir()}; "
            f"git --git-dir={checkout}/.git -c safe.directory='*' show HEAD:trl_aem/envs/swe/offline_tasks.json "
            "| head -c 300"
        )
        result = env.step(tool("bash", command=attack))
        assert '"fingerprint"' not in result.observation and "bug_patch" not in result.observation
        assert env.workspace.read_text(path) != pristine.read_text()  # nothing was copied
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0
    finally:
        env.close()


def test_a_deep_directory_neither_crashes_nor_leaks():
    # a 1200-level directory (in the repo and in tests/, with bytecode at the bottom), then submit: the
    # recursive bytecode cleanup raised RecursionError out of step(), reset() failed removing the tree
    env = SWEEnv()
    try:
        task = sample_tasks(4, seed=6)[0]
        env.reset(task)
        root = env.workspace.sandbox.root
        deep = "import os\nfor _ in range(1200):\n    os.mkdir('d'); os.chdir('d')\nopen('x.pyc', 'w').close()\n"
        result = env.step(tool("create", path="deep.py", file_text=deep))
        assert not result.info["invalid"], result.observation
        result = env.step(tool("bash", command="python deep.py && cd tests && python ../deep.py && echo built"))
        assert "built" in result.observation, result.observation
        result = env.step(tool("view", path="."))  # the listing walks only two levels
        assert not result.info["invalid"] and "deep.py" in result.observation
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0 and "error" not in result.info, result.info
        env.reset(sample_tasks(4, seed=6)[1])  # removes the old tree, however deep
        assert not os.path.lexists(root) and not os.path.lexists(root + ".lock")
        assert os.path.isdir(env.workspace.sandbox.root)
    finally:
        env.close()


def test_step_never_raises_whatever_fails():
    # any failure of a step is an invalid action or an ended episode, never an exception
    env = SWEEnv()
    try:
        env.reset(sample_tasks(4, seed=7)[0])

        def broken(*args, **kwargs):
            raise RecursionError("maximum recursion depth exceeded")

        env.workspace.list_dir = broken
        result = env.step(tool("view", path="."))
        assert result.info["invalid"] and not result.done and "RecursionError" in result.observation
        env.workspace.run = broken
        env.workspace.diff = broken  # the grading takes the agent's diff, then evaluates in a fresh workspace
        result = env.step(tool("submit"))
        assert result.done and result.reward == 0.0 and "RecursionError" in result.observation
        env.workspace.close = broken
    finally:
        env.close()  # a failing close is logged, not raised
    env.reset(sample_tasks(4, seed=7)[1])
    env.close()


def test_the_workspace_disk_is_bounded():
    # one command wrote about 1 GB in 50 MiB files (only the per-file size was limited)
    limits = SandboxLimits(timeout=30, output_chars=4000, disk_bytes=48 << 20, file_bytes=16 << 20)
    env = SWEEnv(limits=limits)
    try:
        env.reset(sample_tasks(4, seed=8)[0])
        sandbox = env.workspace.sandbox
        fill = (
            'for d in . "$HOME" "$TMPDIR"; do for i in 1 2 3 4; do '
            'head -c 16M /dev/zero > "$d/fill$i" || { echo FULL; break 2; }; done; done'
        )
        result = env.step(tool("bash", command=fill))
        assert "No space left on device" in result.observation and "FULL" in result.observation
        written = sum(os.lstat(p).st_size for p in cleanup.walk_paths(sandbox.root) if os.path.isfile(p))
        assert written <= 48 << 20, written
        assert sandbox.bounds["disk"].startswith("tmpfs size=50331648")
        # the agent can free its space and go on
        result = env.step(tool("bash", command='rm -f fill* "$HOME"/fill* "$TMPDIR"/fill*; echo ok > x; cat x'))
        assert "ok" in result.observation and not result.info["invalid"]
    finally:
        env.close()


def test_total_memory_through_step_is_bounded():
    # 3 processes of 250 MiB under a 600 MiB budget for the whole sandbox (each allowed 1 GiB alone)
    env = SWEEnv(limits=SandboxLimits(timeout=30, memory_bytes=1 << 30, total_memory_bytes=600 << 20))
    try:
        env.reset(sample_tasks(4, seed=9)[0])
        hold = (
            'for i in 1 2 3; do python -c \'import time; x = b"x" * (250 << 20); time.sleep(1); print("held")\' & '
            "done; wait"
        )
        result = env.step(tool("bash", command=hold))
        assert result.observation.splitlines().count("held") <= 2, result.observation
    finally:
        env.close()


def test_vsock_and_user_namespaces_are_refused_through_step():
    env = SWEEnv()
    try:
        env.reset(sample_tasks(4, seed=10)[0])
        probe = (
            "python -c 'import socket\ntry:\n    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n"
            '    print("VSOCK-OPEN")\nexcept OSError as e:\n    print("vsock", e.errno)\'; '
            "unshare --user --map-root-user true && echo USERNS-OPEN"
        )
        result = env.step(tool("bash", command=probe))
        assert "vsock 97" in result.observation, result.observation  # EAFNOSUPPORT
        assert "VSOCK-OPEN" not in result.observation and "USERNS-OPEN" not in result.observation
    finally:
        env.close()


def test_concurrent_episodes_cannot_read_each_other_outside_tmp(monkeypatch):
    # sandboxes are made in tempfile.gettempdir(); with TMPDIR outside /tmp they could see each other
    parent = "/var/lib" if os.geteuid() == 0 else os.path.expanduser("~")
    base = tempfile.mkdtemp(prefix="trl-aem-test-tmpdir-", dir=parent)
    monkeypatch.setattr(tempfile, "tempdir", base)
    first, second = SWEEnv(), SWEEnv()
    try:
        task = sample_tasks(4, seed=11)[0]
        first.reset(task)
        second.reset(task)
        first.step(tool("create", path="notes.txt", file_text="FIRST-SECRET"))
        assert os.path.dirname(first.workspace.sandbox.root) == base
        other = first.workspace.sandbox.repo
        listing = second.step(tool("bash", command=f"ls -a {base}; find {base} -maxdepth 2")).observation
        assert os.path.basename(first.workspace.sandbox.root) not in listing
        assert os.path.basename(second.workspace.sandbox.root) in listing
        result = second.step(tool("bash", command=f"cat {other}/notes.txt; grep -rl SECRET {base}"))
        assert "FIRST-SECRET" not in result.observation and "notes.txt\n" not in result.observation
    finally:
        first.close()
        second.close()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------- the example
def test_swe_example_runs_with_accelerate_on_cpu(tmp_path):
    """The example end to end under ``accelerate launch`` (warm start, one RL step, the saved model), on the CPU
    config shrunk to what the check needs: 4 demonstrations, 10 SFT steps, one step of 2 episodes x 2 turns x 32
    tokens. About 35 s on 2 busy cores; the full CPU config took 190 s idle and failed a 600 s timeout on a loaded
    machine (issue 23 item 10), mostly from accelerate's default of one torch thread per physical core, which two
    busy cores cannot serve. The timeout only catches a hang."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    shrink = {
        "--sft_demonstrations": "4",
        "--sft_steps": "10",
        "--num_generations": "2",
        "--per_device_train_batch_size": "2",
        "--max_turns": "2",
        "--max_turn_tokens": "32",
        "--num_env_workers": "2",
        "--max_steps": "1",
    }
    proc = subprocess.run(
        [
            launcher,
            "launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_cpu_threads_per_process",  # accelerate's default is every physical core (docs/cpu.md)
            "1",
            "examples/swe.py",  # no --config: the CPU-sized offline run, shrunk by the flags below
            *[part for flag in shrink.items() for part in flag],
            "--output_dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "env/success_rate" in out and "'env/errors': '0'" in out and (tmp_path / "model.safetensors").exists()


def test_paper_config_is_the_deepswe_recipe_with_aem():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import swe as example
    finally:
        sys.path.pop(0)
    from trl import TrlParser

    from trl_aem import AEMConfig

    path = os.path.join(ROOT, "examples", "configs", "swe.yaml")
    # bf16 needs a GPU: the rest of the recipe is checked on this CPU machine as written
    args, config = TrlParser((example.SWEArguments, AEMConfig)).parse_args_and_config(
        args=["--config", path, "--bf16", "false", "--use_cpu", "true"]
    )
    assert args.model_name_or_path == "Qwen/Qwen3-32B" and config.use_aem
    assert config.scale_rewards == "none" and config.epsilon_high == 0.28 and config.beta == 0.0
    assert config.mask_truncated_completions and config.use_vllm and config.vllm_mode == "server"
    assert config.max_completion_length >= 32768 and config.max_turns >= 50
    from accelerate.commands.config.config_args import ClusterConfig

    kinds = {}
    for name in ("ddp", "zero3", "fsdp2"):
        cluster = ClusterConfig.from_yaml_file(os.path.join(ROOT, "examples", "accelerate_configs", f"{name}.yaml"))
        kinds[name] = (str(cluster.distributed_type), cluster.deepspeed_config or cluster.fsdp_config)
    assert kinds["ddp"][0].endswith("MULTI_GPU")
    assert kinds["zero3"][0].endswith("DEEPSPEED") and kinds["zero3"][1]["zero_stage"] == 3
    assert kinds["fsdp2"][0].endswith("FSDP") and kinds["fsdp2"][1]["fsdp_version"] == 2
