"""SWE environment cost: seconds per episode (expert; 10 commands then submit), concurrency, task counts.

    python benchmarks/swe.py               # writes benchmarks/results/swe.json and swe.md
    python benchmarks/swe.py --validate    # also re-validates every generated bug and times it (minutes)
    python benchmarks/swe.py --overhead-only --compare-with REV      # only the jail's per-command overhead,
                                                                     # interleaved with git revision REV's
    python benchmarks/swe.py --docker      # also the Docker back end (a private dockerd; root), see below
    python benchmarks/swe.py --docker-only # only the Docker back end; the local figures are kept

Episodes are offline tasks in the local namespace sandbox. "expert": reset, apply the gold patch, submit
(the final test run). "10-turn": reset, ten shell commands an agent typically runs (listing, grep, cat,
git, running the tests), then submit. "pool": the same expert episodes through the trainer's EnvPool with
one worker and with four, to show that episodes do not serialise.

Docker back end (``--docker``): the same episodes through ``SWEEnv(backend="docker")`` on a small real
instance (a buggy ``calc`` package at ``/testbed`` in a Debian bookworm image) against a private dockerd
started by ``tests/envs/swe/docker_daemon.py`` (or the daemon at ``TRL_AEM_DOCKER_HOST``); also the cost of
one ``docker exec`` of ``true``, of starting a container (reset) and of removing it (close).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trl_aem.envs import EnvCall, EnvPool
from trl_aem.envs.swe import SWEEnv, generator, offline_tasks

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "ls -la",
    "git status --short",
    "grep -rn 'def ' --include=*.py . | head -20",
    "cat tests/__init__.py",
    "find . -name '*.py' -not -path './.git/*' | sort",
    "python -m pytest -q -x 2>&1 | tail -5",
    "grep -rn 'return' --include=*.py . | wc -l",
    "git log --oneline | head -3",
    "python -c 'import sys; print(sys.version_info[:2])'",
    "git diff --stat",
]


def call(name: str, **params) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<function={name}>\n{body}</function>"


def expert_episode(env: SWEEnv, task: dict) -> tuple[float, bool]:
    started = time.perf_counter()
    env.reset(task)
    result = None
    while (action := env.expert_action()) is not None:
        result = env.step(action)
    return time.perf_counter() - started, bool(result and result.info["success"])


def ten_turn_episode(env: SWEEnv, task: dict) -> tuple[float, list[float]]:
    started = time.perf_counter()
    env.reset(task)
    per_command = []
    for command in COMMANDS:
        t0 = time.perf_counter()
        result = env.step(call("bash", command=command))
        per_command.append(time.perf_counter() - t0)
        assert not result.done and not result.info["invalid"], result.observation
    result = env.step(call("submit"))
    assert result.done
    return time.perf_counter() - started, per_command


def docker_env() -> SWEEnv:
    return SWEEnv(backend="docker")


def pool_seconds(tasks: list[dict], workers: int, docker: bool = False) -> float:
    pool = EnvPool(docker_env if docker else SWEEnv, worker_type="thread", max_workers=workers, timeout=600)
    try:
        started = time.perf_counter()
        outcomes = pool.run([EnvCall(k, "reset", t) for k, t in enumerate(tasks)])
        assert all(o.ok for o in outcomes)
        outcomes = pool.run([EnvCall(k, "step", call("apply_patch", patch=t["patch"])) for k, t in enumerate(tasks)])
        outcomes = pool.run([EnvCall(k, "step", call("submit")) for k in range(len(tasks))])
        assert all(o.ok and o.value.reward == 1.0 for o in outcomes), [o.error for o in outcomes]
        return time.perf_counter() - started
    finally:
        pool.close()


# Times Sandbox.run("true") with the sandbox module of the directory argv[1] (loaded as a bare package:
# standard library only, so any revision's copy runs next to the working tree's); prints the median in ms.
MEASURE = """
import importlib, statistics, sys, time, types
package = types.ModuleType("swebox")
package.__path__ = [sys.argv[1]]
sys.modules["swebox"] = package
Sandbox = importlib.import_module("swebox.sandbox").Sandbox
with Sandbox(None) as box:
    box.run("true")  # warm the page cache
    times = []
    for _ in range(int(sys.argv[2])):
        started = time.perf_counter()
        assert box.run("true").exit_code == 0
        times.append((time.perf_counter() - started) * 1000)
print(statistics.median(times))
"""
SWE_DIR = Path(__file__).resolve().parents[1] / "trl_aem" / "envs" / "swe"


def overhead_ms(swe_dir: Path, runs: int) -> float:
    """Median milliseconds of ``Sandbox.run("true")``: the jail's own cost per command."""
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(swe_dir), str(runs)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return float(proc.stdout.strip().splitlines()[-1])


def command_overhead(compare_with: str | None, rounds: int = 5, runs: int = 30) -> dict:
    """The working tree's per-command overhead, and, with ``compare_with``, that git revision's: measured in
    alternation (round by round), so that the load of a shared machine weighs on both alike."""
    before_dir = export_revision(compare_with) if compare_with else None
    after, before = [], []
    try:
        for _ in range(rounds):
            if before_dir is not None:
                before.append(overhead_ms(before_dir, runs))
            after.append(overhead_ms(SWE_DIR, runs))
    finally:
        if before_dir is not None:
            shutil.rmtree(before_dir.parents[2], ignore_errors=True)
    out = {"after_ms": round(statistics.median(after), 1), "rounds_after_ms": [round(m, 1) for m in after]}
    out.update({"runs_per_round": runs, "revision_after": git_revision()})
    if before:
        out.update(
            before_ms=round(statistics.median(before), 1),
            rounds_before_ms=[round(m, 1) for m in before],
            revision_before=compare_with,
            ratio=round(statistics.median(after) / statistics.median(before), 3),
        )
    return out


def export_revision(revision: str) -> Path:
    """``trl_aem/envs/swe`` of git revision ``revision``, exported to a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="trl-aem-bench-swe-"))
    archive = subprocess.run(
        ["git", "archive", revision, "trl_aem/envs/swe"], capture_output=True, check=True, cwd=SWE_DIR.parents[2]
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "trl_aem" / "envs" / "swe"


def git_revision() -> str:
    """The checkout's commit (the sandbox code the figure belongs to), or '?' outside a git checkout."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return proc.stdout.strip() or "?"


def docker_figures(episodes: int) -> dict:
    """The Docker back end's costs (module docstring), against a private daemon stopped at the end."""
    sys.path.insert(0, str(ROOT))
    from tests.envs.swe import docker_daemon as dd  # the daemon and images of the tests

    reason = dd.unavailable_reason()
    if reason:
        raise SystemExit(f"--docker: no daemon can start here: {reason}")
    load = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    daemon = dd.start_daemon()
    setup = {"date": time.strftime("%Y-%m-%d"), "load_average_at_start": load}
    setup["daemon_start_s"] = round(time.perf_counter() - started, 2)
    with dd.serving(daemon):  # the workspaces' docker commands go to this daemon
        started = time.perf_counter()
        setup["base_image"] = dd.ensure_base_image(daemon)[1]
        setup["base_image_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        task = dd.calc_task(*dd.ensure_task_image(daemon))
        setup["task_image_s"] = round(time.perf_counter() - started, 1)
        return {**setup, **docker_episodes(task, episodes)}


def docker_episodes(task: dict, episodes: int) -> dict:
    env = SWEEnv(backend="docker")
    try:
        expert_episode(env, task)  # warm: the first container start reads the image from disk
        expert = [expert_episode(env, task) for _ in range(episodes)]
        ten = [ten_turn_episode(env, task) for _ in range(max(1, episodes // 2))]
        resets, closes, exec_true = [], [], []
        for _ in range(5):
            t0 = time.perf_counter()
            env.reset(task)
            t1 = time.perf_counter()
            exec_true += [timed(env.workspace.run, "true") for _ in range(6)]
            t2 = time.perf_counter()
            env.close()
            resets.append(t1 - t0)
            closes.append(time.perf_counter() - t2)
    finally:
        env.close()
    return {
        "expert_episode_seconds": summary([s for s, _ in expert]),
        "expert_success_rate": sum(ok for _, ok in expert) / len(expert),
        "ten_turn_episode_seconds": summary([s for s, _ in ten]),
        "command_seconds": summary([c for _, cs in ten for c in cs]),
        "exec_true_seconds": summary(exec_true),
        "reset_seconds": summary(resets),
        "close_seconds": summary(closes),
        "pool_8_expert_episodes_seconds": {
            "1_worker": round(pool_seconds([task] * 8, 1, docker=True), 2),
            "4_workers": round(pool_seconds([task] * 8, 4, docker=True), 2),
        },
    }


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def summary(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 3),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20, help="expert episodes (and 10-turn episodes / 2)")
    parser.add_argument("--validate", action="store_true", help="re-validate every generated bug and time it")
    parser.add_argument("--overhead-only", action="store_true", help="only measure the per-command overhead")
    parser.add_argument(
        "--compare-with", metavar="REV", help="also measure git revision REV's sandbox, interleaved (before/after)"
    )
    parser.add_argument("--docker", action="store_true", help="also measure the Docker back end (private dockerd)")
    parser.add_argument("--docker-only", action="store_true", help="only the Docker back end; keep the rest")
    args = parser.parse_args()
    if args.docker_only:
        run_docker_only(args.episodes)
        return
    load = [round(x, 2) for x in os.getloadavg()]  # a shared machine: other work slows every figure
    previous = json.loads((RESULTS / "swe.json").read_text()) if (RESULTS / "swe.json").is_file() else {}
    overhead = command_overhead(args.compare_with)
    if not args.compare_with and previous.get("command_overhead", {}).get("before_ms"):
        overhead = {**previous["command_overhead"], "after_ms_rerun": overhead["after_ms"]}  # keep the pair
    print(f"per-command overhead (Sandbox.run('true')): {json.dumps(overhead)}")
    if args.overhead_only:
        previous.pop("command_overhead_before", None)  # the first, single-run record: superseded by the pair
        previous["command_overhead"] = overhead
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "swe.json").write_text(json.dumps(previous, indent=2) + "\n")
        write_markdown(previous)
        return
    rng = random.Random(0)
    train, evaluation = offline_tasks("train"), offline_tasks("eval")
    tasks = rng.sample(train + evaluation, args.episodes)

    env = SWEEnv()
    try:
        expert = [expert_episode(env, t) for t in tasks]
        ten = [ten_turn_episode(env, t) for t in tasks[: max(1, args.episodes // 2)]]
    finally:
        env.close()
    pool_tasks = tasks[:8]
    pool_1, pool_4 = pool_seconds(pool_tasks, 1), pool_seconds(pool_tasks, 4)

    document = json.loads(generator.SHIPPED_CACHE.read_text())
    projects = {
        name: {"tests": len(info["tests"]), "mutants": info["mutants"], "kept": len(info["kept"])}
        for name, info in document["projects"].items()
    }
    validation_seconds = None
    if args.validate:
        started = time.perf_counter()
        fresh = generator.validate()
        validation_seconds = round(time.perf_counter() - started, 1)
        same = {n: [e["key"] for e in i["kept"]] for n, i in fresh["projects"].items()} == {
            n: [e["key"] for e in i["kept"]] for n, i in document["projects"].items()
        }
    payload = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_start": load,
        "expert_episode_seconds": summary([s for s, _ in expert]),
        "expert_success_rate": sum(ok for _, ok in expert) / len(expert),
        "ten_turn_episode_seconds": summary([s for s, _ in ten]),
        "command_seconds": summary([c for _, cs in ten for c in cs]),
        "pool_8_expert_episodes_seconds": {"1_worker": round(pool_1, 2), "4_workers": round(pool_4, 2)},
        "tasks": {"train": len(train), "eval": len(evaluation), "total_distinct": len(train) + len(evaluation)},
        "projects": projects,
        "validation_seconds": validation_seconds,
        "validation_reproduces_cache": same if args.validate else None,
        "command_overhead": overhead,
    }
    if args.docker:
        payload["docker"] = docker_figures(args.episodes)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "swe.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(payload)


def run_docker_only(episodes: int) -> None:
    """Measure the Docker back end and merge its figures into the results file (the rest is kept)."""
    path = RESULTS / "swe.json"
    payload = json.loads(path.read_text()) if path.is_file() else {}
    payload["docker"] = docker_figures(episodes)
    print(json.dumps(payload["docker"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(payload)


def docker_lines(docker: dict) -> list[str]:
    """The Docker back end's section of swe.md."""
    e, t, c = docker["expert_episode_seconds"], docker["ten_turn_episode_seconds"], docker["command_seconds"]
    x, r, k = docker["exec_true_seconds"], docker["reset_seconds"], docker["close_seconds"]
    pool = docker["pool_8_expert_episodes_seconds"]
    when = f"{docker['date']}, load average {docker['load_average_at_start'][0]} at the start"
    image = docker["base_image"].split(" ")[0]  # present, loaded (from the cache folder) or built
    rows = [
        ("expert (reset, gold patch, submit)", e),
        ("10 commands then submit", t),
        ("one command (in those episodes)", c),
        ("`docker exec` of `true`", x),
        ("reset (start a container)", r),
        ("close (remove it)", k),
    ]
    return [
        "",
        "##### Docker back end",
        "",
        f"`python benchmarks/swe.py --docker-only` (or `--docker`), {when}: one small real instance (a buggy "
        "`calc` package at `/testbed` in a Debian bookworm image, pytest) against a private dockerd "
        f"(`tests/envs/swe/docker_daemon.py`: started in {docker['daemon_start_s']} s, base image {image} in "
        f"{docker['base_image_s']} s).",
        "",
        "| Docker back end | seconds (mean) | median | min | max | n |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {v['mean']} | {v['median']} | {v['min']} | {v['max']} | {v['n']} |" for name, v in rows),
        "",
        f"Expert success rate: {docker['expert_success_rate']:.2f}. Eight expert episodes through the EnvPool: "
        f"{pool['1_worker']:.2f} s with 1 worker, {pool['4_workers']:.2f} s with 4 workers.",
    ]


def write_markdown(payload: dict) -> None:
    """benchmarks/results/swe.md from the results document (also after an --overhead-only run)."""
    if "expert_episode_seconds" not in payload:
        return
    e, t, c = payload["expert_episode_seconds"], payload["ten_turn_episode_seconds"], payload["command_seconds"]
    pool, tasks, projects = payload["pool_8_expert_episodes_seconds"], payload["tasks"], payload["projects"]
    validation_seconds = payload.get("validation_seconds")
    lines = [
        "# SWE environment",
        "",
        f"`python benchmarks/swe.py{' --validate' if validation_seconds is not None else ''}` on "
        f"{payload['machine']}, {payload['date']}; offline tasks, local namespace sandbox"
        + (
            f"; load average {payload['load_average_at_start'][0]} at the start"
            if "load_average_at_start" in payload
            else ""
        )
        + ".",
        "",
        "| episode | seconds (mean) | median | min | max | n |",
        "|---|---|---|---|---|---|",
        f"| expert (reset, gold patch, submit) | {e['mean']} | {e['median']} | {e['min']} | {e['max']} | {e['n']} |",
        f"| 10 commands then submit | {t['mean']} | {t['median']} | {t['min']} | {t['max']} | {t['n']} |",
        f"| one command (in those episodes) | {c['mean']} | {c['median']} | {c['min']} | {c['max']} | {c['n']} |",
        "",
        f"Expert success rate: {payload['expert_success_rate']:.2f}. Eight expert episodes through the EnvPool: "
        f"{pool['1_worker']:.2f} s with 1 worker, {pool['4_workers']:.2f} s with 4 workers.",
    ]
    overhead = payload.get("command_overhead")
    if overhead:
        line = f'The jail\'s own cost per command (`Sandbox.run("true")`, median): {overhead["after_ms"]} ms'
        if overhead.get("before_ms"):
            line += (
                f", {overhead['before_ms']} ms at {overhead['revision_before']} (ratio {overhead['ratio']}; "
                f"the two measured in alternation, {len(overhead['rounds_after_ms'])} rounds of "
                f"{overhead['runs_per_round']} commands: `python benchmarks/swe.py --overhead-only "
                f"--compare-with {overhead['revision_before']}`)"
            )
        lines += ["", line + "."]
    lines += [
        "",
        f"Distinct generated tasks: {tasks['train']} train + {tasks['eval']} eval = {tasks['total_distinct']} "
        "(disjoint splits, seed 0).",
        "",
        "| project | tests | mutants tried | bugs kept |",
        "|---|---|---|---|",
        *(f"| {n} | {p['tests']} | {p['mutants']} | {p['kept']} |" for n, p in projects.items()),
    ]
    if validation_seconds is not None:
        same = payload.get("validation_reproduces_cache")
        lines += [
            "",
            f"Re-validating every mutant took {validation_seconds} s "
            f"({'same verdicts as the shipped cache' if same else 'verdicts DIFFER from the shipped cache'}).",
        ]
    if payload.get("docker"):
        lines += docker_lines(payload["docker"])
    (RESULTS / "swe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
