"""SWE environment cost: seconds per episode (expert; 10 commands then submit), concurrency, task counts.

    python benchmarks/swe.py               # writes benchmarks/results/swe.json and swe.md
    python benchmarks/swe.py --validate    # also re-validates every generated bug and times it (minutes)
    python benchmarks/swe.py --overhead-only [--record-baseline]   # only the sandbox's per-command overhead

Episodes are offline tasks in the local namespace sandbox. "expert": reset, apply the gold patch, submit
(the final test run). "10-turn": reset, ten shell commands an agent typically runs (listing, grep, cat,
git, running the tests), then submit. "pool": the same expert episodes through the trainer's EnvPool with
one worker and with four, to show that episodes do not serialise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path

from trl_aem.envs import EnvCall, EnvPool
from trl_aem.envs.swe import Sandbox, SWEEnv, generator, offline_tasks

RESULTS = Path(__file__).parent / "results"
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


def pool_seconds(tasks: list[dict], workers: int) -> float:
    pool = EnvPool(SWEEnv, worker_type="thread", max_workers=workers, timeout=600)
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


def command_overhead(runs: int = 60, rounds: int = 3) -> dict:
    """Milliseconds for ``Sandbox.run("true")``: the jail's own cost per command (the command does nothing).
    The best of ``rounds`` medians over ``runs`` commands each, so a busy moment of the machine does not count."""
    medians = []
    with Sandbox(None) as box:
        box.run("true")  # warm the page cache and the process table
        for _ in range(rounds):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                result = box.run("true")
                times.append((time.perf_counter() - started) * 1000)
                assert result.exit_code == 0, result.output
            medians.append(statistics.median(times))
    return {"median_ms": round(min(medians), 1), "medians_ms": [round(m, 1) for m in medians], "runs": runs}


def git_revision() -> str:
    """The checkout's commit (the sandbox code the figure belongs to), or '?' outside a git checkout."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return proc.stdout.strip() or "?"


def ratio(now: dict, before: dict) -> float:
    return round(now["median_ms"] / before["median_ms"], 3)


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
        "--record-baseline", action="store_true", help="store the overhead measured now as the 'before' figure"
    )
    args = parser.parse_args()
    previous = json.loads((RESULTS / "swe.json").read_text()) if (RESULTS / "swe.json").is_file() else {}
    overhead = command_overhead()
    baseline = previous.get("command_overhead_before")
    if args.record_baseline:
        baseline = {**overhead, "date": time.strftime("%Y-%m-%d"), "git": git_revision()}
    print(f"per-command overhead (Sandbox.run('true')): {overhead['median_ms']} ms median {overhead['medians_ms']}")
    if baseline:
        print(f"before: {baseline['median_ms']} ms ({baseline.get('git', '?')}); ratio {ratio(overhead, baseline)}")
    if args.overhead_only:
        if args.record_baseline:
            previous["command_overhead_before"] = baseline
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "swe.json").write_text(json.dumps(previous, indent=2) + "\n")
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
        "expert_episode_seconds": summary([s for s, _ in expert]),
        "expert_success_rate": sum(ok for _, ok in expert) / len(expert),
        "ten_turn_episode_seconds": summary([s for s, _ in ten]),
        "command_seconds": summary([c for _, cs in ten for c in cs]),
        "pool_8_expert_episodes_seconds": {"1_worker": round(pool_1, 2), "4_workers": round(pool_4, 2)},
        "tasks": {"train": len(train), "eval": len(evaluation), "total_distinct": len(train) + len(evaluation)},
        "projects": projects,
        "validation_seconds": validation_seconds,
        "validation_reproduces_cache": same if args.validate else None,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "swe.json").write_text(json.dumps(payload, indent=2) + "\n")
    e, t, c = payload["expert_episode_seconds"], payload["ten_turn_episode_seconds"], payload["command_seconds"]
    lines = [
        "# SWE environment",
        "",
        f"`python benchmarks/swe.py{' --validate' if args.validate else ''}` on {payload['machine']}, "
        f"{payload['date']}; offline tasks, local namespace sandbox.",
        "",
        "| episode | seconds (mean) | median | min | max | n |",
        "|---|---|---|---|---|---|",
        f"| expert (reset, gold patch, submit) | {e['mean']} | {e['median']} | {e['min']} | {e['max']} | {e['n']} |",
        f"| 10 commands then submit | {t['mean']} | {t['median']} | {t['min']} | {t['max']} | {t['n']} |",
        f"| one command (in those episodes) | {c['mean']} | {c['median']} | {c['min']} | {c['max']} | {c['n']} |",
        "",
        f"Expert success rate: {payload['expert_success_rate']:.2f}. Eight expert episodes through the EnvPool: "
        f"{pool_1:.2f} s with 1 worker, {pool_4:.2f} s with 4 workers.",
        "",
        f"Distinct generated tasks: {len(train)} train + {len(evaluation)} eval = {len(train) + len(evaluation)} "
        "(disjoint splits, seed 0).",
        "",
        "| project | tests | mutants tried | bugs kept |",
        "|---|---|---|---|",
        *(f"| {n} | {p['tests']} | {p['mutants']} | {p['kept']} |" for n, p in projects.items()),
    ]
    if validation_seconds is not None:
        lines += [
            "",
            f"Re-validating every mutant took {validation_seconds} s "
            f"({'same verdicts as the shipped cache' if same else 'verdicts DIFFER from the shipped cache'}).",
        ]
    (RESULTS / "swe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
