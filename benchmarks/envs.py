"""Environment speed and difficulty: steps/s, task generation time, expert vs random success on eval tasks.

    python benchmarks/envs.py                  # both envs; writes benchmarks/results/envs.json and envs.md
    python benchmarks/envs.py --eval-tasks 20  # quicker

Built-in environments measured: webshop (offline catalog) and alfworld (offline generated games, unseen
rooms, ALFRED's object density). The random policy picks uniformly among the admissible actions (WebShop:
a random two-word search on the search page). Steps/s counts ``step()`` calls only; ALFWorld's per-episode
``reset()`` (Fast Downward translating the game) is reported separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from trl_aem.envs.alfworld import AlfWorldEnv
from trl_aem.envs.alfworld.generator import generate_game, offline_tasks
from trl_aem.envs.webshop import WebShopEnv
from trl_aem.envs.webshop.catalog import build_catalog

RESULTS = Path(__file__).parent / "results"
SEARCH_WORDS = ["black", "organic", "wireless", "shoes", "lamp", "cotton", "large", "case"]


def random_policy(rng: random.Random):
    def act(admissible: list[str]) -> str:
        action = rng.choice(admissible)
        if action.startswith("search"):
            action = f"search[{' '.join(rng.sample(SEARCH_WORDS, 2))}]"
        return f"<action>{action}</action>"

    return act


def evaluate(env, tasks: list[dict], policy, max_turns: int) -> dict:
    """Play every task; success rate, mean score (WebShop's score, or the success flag), speed, turns."""
    reset_s = step_s = 0.0
    steps = successes = 0
    scores = 0.0
    for task in tasks:
        started = time.perf_counter()
        env.reset(task)
        reset_s += time.perf_counter() - started
        success, score = False, 0.0
        for _ in range(max_turns):
            action = policy(env.admissible_actions())
            started = time.perf_counter()
            result = env.step(action)
            step_s += time.perf_counter() - started
            steps += 1
            if result.done:
                success = bool(result.info.get("success"))
                score = float(result.info.get("score", success))
                break
        successes, scores = successes + success, scores + score
    return {
        "success_rate": successes / len(tasks),
        "mean_score": scores / len(tasks),
        "steps_per_s": steps / step_s,
        "reset_s_per_episode": reset_s / len(tasks),
        "mean_turns": steps / len(tasks),
    }


def measure_webshop(num_eval: int, seed: int) -> dict:
    build_catalog.cache_clear()
    started = time.perf_counter()
    build_catalog(1000, 0)
    catalog_s = time.perf_counter() - started
    env = WebShopEnv()
    started = time.perf_counter()
    tasks = env.tasks("eval")[:num_eval]
    tasks_s = (time.perf_counter() - started) / max(1, len(tasks))
    out = {"catalog_build_s": catalog_s, "task_generation_s_per_task": tasks_s, "max_turns": 15}
    out["expert"] = evaluate(env, tasks, lambda admissible: env.expert_action(), 15)
    out["random"] = evaluate(env, tasks, random_policy(random.Random(seed)), 15)
    return out


def measure_alfworld(num_eval: int, seed: int, distinct_probe: int) -> dict:
    env = AlfWorldEnv(num_eval_tasks=num_eval)
    started = time.perf_counter()
    train = offline_tasks("train", distinct_probe)
    generation_s = (time.perf_counter() - started) / distinct_probe
    digests = {generate_game(t["scene"], t["task_type"], t["seed"]).digest for t in train}
    tasks = env.tasks("eval")  # eval_out_of_distribution: rooms never used for training
    out = {
        "task_generation_s_per_task": generation_s,
        "distinct_train_tasks_of_probe": len(digests),
        "probe_size": distinct_probe,
        "eval_split": "eval_out_of_distribution",
        "max_turns": 50,
    }
    out["expert"] = evaluate(env, tasks, lambda admissible: env.expert_action(), 50)
    out["random"] = evaluate(env, tasks, random_policy(random.Random(seed)), 50)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--envs", nargs="+", default=["webshop", "alfworld"], choices=["webshop", "alfworld"])
    parser.add_argument("--distinct-probe", type=int, default=5000, help="ALFWorld train tasks checked for duplicates")
    args = parser.parse_args()
    results = {}
    if "webshop" in args.envs:
        results["webshop"] = measure_webshop(args.eval_tasks, 0)
    if "alfworld" in args.envs:
        results["alfworld"] = measure_alfworld(args.eval_tasks, 0, args.distinct_probe)
    payload = {
        "benchmark": "envs",
        "command": "python benchmarks/envs.py"
        + (f" --eval-tasks {args.eval_tasks}" if args.eval_tasks != 100 else ""),
        "eval_tasks": args.eval_tasks,
        "results": results,
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "envs.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Environments",
        "",
        f"`{payload['command']}` on {payload['machine']}, {payload['date']}; {args.eval_tasks} eval tasks each.",
        "",
        "| env | policy | success | mean score | steps/s | reset s/episode | turns | task generation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_name, r in results.items():
        for policy in ("expert", "random"):
            p = r[policy]
            lines.append(
                f"| {env_name} | {policy} | {p['success_rate']:.2f} | {p['mean_score']:.3f} | "
                f"{p['steps_per_s']:.0f} | {p['reset_s_per_episode']:.3f} | {p['mean_turns']:.1f} | "
                f"{r['task_generation_s_per_task'] * 1e3:.2f} ms |"
            )
    if "alfworld" in results:
        a = results["alfworld"]
        lines += [
            "",
            f"ALFWorld: {a['distinct_train_tasks_of_probe']} distinct games among the first {a['probe_size']} "
            f"generated train tasks; eval on {a['eval_split']} (unseen rooms), at most {a['max_turns']} turns.",
        ]
    (RESULTS / "envs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
