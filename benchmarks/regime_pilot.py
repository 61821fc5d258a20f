"""Pilot for the learning benchmark's regime (issue 26 item 1): SFT warm starts only, no RL, on the vault game.

For each configuration (``--configs``, each ``SIZE/SFT_LR/SFT_STEPS/ELIMINATION/NOISE[/TRAIN_TASKS]``, e.g.
``96x4/1e-3/2400/0.25/0.3``; the SFT sees one noisy expert episode per training task, 256 unless given) one warm start is made exactly as ``benchmarks/learning.py`` makes it (its ``warm_start``, same SFT, same
demonstrations, same tokenizer) and played on the held-out tasks at the RL runs' sampling temperature (1.0) with the
step-mode settings the RL runs use. Measured per configuration: held-out success, the invalid-action rate, and the
per-room accuracy (valid answers that open the right door) split by the room's sign: direct ("take the blue door")
or elimination ("the red door and the green door are locked"; chance is 1/3), read back from the episodes'
observations; and the wall time of the SFT and of the evaluation (one process, ``--threads`` torch threads).

    python benchmarks/regime_pilot.py --configs 64x3/2e-3/1200/0.25/0.3 96x4/1e-3/2400/0.25/0.3

Each finished configuration is appended to ``<work-dir>/runs.jsonl`` (reused by a rerun with the same shared
options; ``--fresh`` starts over) and the table is rewritten after each one to ``benchmarks/results/
regime_pilot.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from learning import RESULTS, _config, _env, detectable_difference, warm_start  # noqa: E402

from trl_aem.runtime import setup_process  # noqa: E402

ROOM = re.compile(r"Doors: (?P<doors>.*?)\. Sign: (?P<sign>.*)\.$")


def parse_config(text: str) -> dict:
    size, lr, steps, elimination, noise, *more = text.split("/")
    hidden, layers = (int(v) for v in size.lower().split("x"))
    extra = {"num_train_tasks": int(more[0])} if more else {}  # the environment's default (256) unless given
    return {
        **extra,
        "name": text,
        "tiny_size": size,
        "tiny_kwargs": {"hidden_size": hidden, "num_layers": layers},
        "sft_learning_rate": float(lr),
        "sft_steps": int(steps),
        "elimination": float(elimination),
        "sft_noise": float(noise),
    }


def room_of(observation: str) -> tuple[list[str], int, bool] | None:
    """``(door colours, right door, elimination sign?)`` of the room an observation describes, or ``None``."""
    match = ROOM.search(observation)
    if match is None:
        return None
    colors = [part.split(" ", 1)[1] for part in match["doors"].split(", ")]
    sign = match["sign"]
    if sign.startswith("take the "):
        return colors, colors.index(sign.removeprefix("take the ").removesuffix(" door")), False
    locked = set(re.findall(r"the (\w+) door", sign))
    (target,) = [i for i, color in enumerate(colors) if color not in locked]
    return colors, target, True


def room_accuracy(episodes) -> dict:
    """Per-room outcomes of the episodes' turns by sign kind: ``{kind: {"valid", "correct", "invalid"}}``."""
    from trl_aem.envs.base import extract_action
    from trl_aem.envs.vault import _door

    counts = {kind: {"valid": 0, "correct": 0, "invalid": 0} for kind in ("direct", "elimination")}
    for episode in episodes:
        observation = episode.first_observation
        for turn in episode.turns:
            room = room_of(observation)
            if room is not None:
                colors, target, elimination = room
                row = counts["elimination" if elimination else "direct"]
                choice = _door(extract_action(turn.response) or turn.response, colors)
                if choice is None:
                    row["invalid"] += 1
                else:
                    row["valid"] += 1
                    row["correct"] += choice == target
            observation = turn.observation
    return counts


def evaluate_start(args, folder: str, seed: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_aem.evaluation import evaluate
    from trl_aem.rollout.settings import RolloutSettings

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    settings = RolloutSettings.from_config(_config(args, os.path.join(args.work_dir, "eval"), seed))
    report = evaluate(
        model,
        tokenizer,
        _env(args),
        episodes=args.eval_episodes,
        split="eval",
        settings=settings,
        temperature=1.0,
        batch_size=64,
        num_workers=1,
        seed=seed,
    )
    rooms = room_accuracy(report.episodes)
    metrics = report.metrics
    return {
        "success": metrics["success_rate"],
        "invalid_rate": metrics["invalid_rate"],
        "turns": metrics["turns"],
        "episodes": len(report.episodes),
        "direct_accuracy": rooms["direct"]["correct"] / max(1, rooms["direct"]["valid"]),
        "elimination_accuracy": rooms["elimination"]["correct"] / max(1, rooms["elimination"]["valid"]),
        "rooms": rooms,
    }


def run_config(options, config: dict, seed: int) -> dict:
    env_kwargs = {
        "rooms": options.rooms,
        "elimination": config["elimination"],
        "eval_layouts": options.eval_layouts,
        "num_eval_tasks": options.eval_tasks,
        **({"num_train_tasks": config["num_train_tasks"]} if "num_train_tasks" in config else {}),
    }
    key = hashlib.sha1(json.dumps([config, env_kwargs, options.max_turns], sort_keys=True).encode()).hexdigest()[:10]
    args = SimpleNamespace(
        env="vault",
        model="tiny",
        env_kwargs=env_kwargs,
        env_tokenizer=True,
        tiny_kwargs=config["tiny_kwargs"],
        sft_steps=config["sft_steps"],
        sft_learning_rate=config["sft_learning_rate"],
        sft_noise=config["sft_noise"],
        work_dir=os.path.join(options.work_dir, key),
        warm_root=os.path.join(options.work_dir, key),
        config_overrides={"max_turns": options.max_turns, "rollout_waves": 1},
        eval_episodes=options.eval_episodes,
        threads=options.threads,
    )
    os.makedirs(args.work_dir, exist_ok=True)
    started = time.perf_counter()
    folder = warm_start(args, seed)
    sft_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate_start(args, folder, seed)
    return {
        **{k: v for k, v in config.items() if k != "tiny_kwargs"},
        "seed": seed,
        "env_kwargs": env_kwargs,
        "max_turns": options.max_turns,
        **result,
        "sft_minutes": round(sft_seconds / 60, 2),
        "eval_minutes": round((time.perf_counter() - started) / 60, 2),
    }


# ---------------------------------------------------------------------------------------------- power
def seed_variance(path: Path, old_episodes: int) -> dict[str, dict]:
    """Per base of an earlier ``learning_<env>.json``: the s.d. of the seeds' AEM-minus-base final success, the
    part of its variance the evaluation's binomial noise explains (``old_episodes`` per point, each arm's own rate),
    and the rest, the between-seed variance of the paired difference."""
    runs = json.loads(path.read_text())["runs"]
    by = {(r["base"], r["arm"], r["seed"]): r["held_out_success"][-1][1] for r in runs}
    out = {}
    for base in sorted({b for b, a, _ in by if a == "aem"}):
        seeds = sorted(s for b, a, s in by if (b, a) == (base, "aem") and (base, "base", s) in by)
        if len(seeds) < 3:
            continue
        diffs = [by[(base, "aem", s)] - by[(base, "base", s)] for s in seeds]
        noise = statistics.fmean(
            sum(p * (1 - p) for p in (by[(base, "aem", s)], by[(base, "base", s)])) / (old_episodes - 1) for s in seeds
        )
        success = statistics.fmean(by[(base, arm, s)] for s in seeds for arm in ("aem", "base"))
        sd = statistics.stdev(diffs)
        out[base] = {"seeds": len(seeds), "success": success, "sd_difference": sd, "eval_variance": noise,
                     "seed_variance": max(0.0, sd**2 - noise)}  # fmt: skip
    return out


def mdd(seed_var: float, success: float, episodes: int, seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean paired difference: ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd_d / sqrt(n)`` with
    ``sd_d^2 = seed_var + 2 p (1 - p) / m`` (two arms' independent binomial eval noise, no credit for pairing)."""
    sd = (seed_var + 2 * success * (1 - success) / episodes) ** 0.5
    return detectable_difference(sd, seeds, alpha, power)


def power_lines(options) -> list[str]:
    path = Path(options.power_from)
    if not path.exists():
        return []
    found = seed_variance(path, options.power_old_episodes)
    lines = [
        "## Minimum detectable difference of the main design",
        "",
        f"Paired by seed: `d_i` = AEM minus base final held-out success of seed `i`, tested over `n` seeds (two-sided "
        f"alpha 0.05, power 0.8): `MDD = (t_0.975,n-1 + t_0.8,n-1) * sd_d / sqrt(n)`, with `sd_d^2 = s_b^2 + 2 p "
        f"(1 - p) / m`: `s_b^2` the between-seed variance of the paired difference, `m` episodes per eval point, `p` "
        f"the success level. `s_b^2` from `{path.name}` ({options.power_old_episodes} episodes per point): the "
        "observed variance of `d_i` minus its binomial eval part `mean_i [pa(1-pa) + pb(1-pb)] / (m_old - 1)`. The "
        "eval noise term gives no credit for the episode-level pairing (same tasks and sampling seeds per arm, "
        "`--eval-seed`), which only lowers it, so these are upper bounds on that term.",
        "",
        "| base | seeds | final success | s.d. of d_i | eval part of var | s_b (between seeds) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {base} | {v['seeds']} | {v['success']:.3f} | {v['sd_difference']:.4f} | {v['eval_variance']:.5f} | "
            f"{v['seed_variance'] ** 0.5:.4f} |"
            for base, v in found.items()
        ),
        "",
        "`s_b` was measured near the ceiling (success about 0.92), where differences are squeezed; at success `p` it "
        "may be larger. Two readings: `s_b` as measured, and `s_b` scaled by the binomial spread, `s_b * sqrt(p (1 - "
        "p) / (p_old (1 - p_old)))` (pessimistic).",
        "",
        "| base | s_b reading | p | "
        + " | ".join(f"n={n}, m={m}" for n in options.power_seeds for m in options.power_episodes)
        + " |",
        "|---|---|---|" + "---|" * len(options.power_seeds) * len(options.power_episodes),
    ]
    for base, v in found.items():
        for reading in ("as measured", "scaled"):
            for p in options.power_success:
                scale = p * (1 - p) / (v["success"] * (1 - v["success"])) if reading == "scaled" else 1.0
                values = [
                    mdd(v["seed_variance"] * scale, p, m, n)
                    for n in options.power_seeds
                    for m in options.power_episodes
                ]
                lines.append(f"| {base} | {reading} | {p} | " + " | ".join(f"{x:.3f}" for x in values) + " |")
    return lines


def write(options, command: str, runs: list[dict]) -> None:
    results = Path(options.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "regime_pilot", "command": command, "runs": runs, "date": time.strftime("%Y-%m-%d")}
    (results / "regime_pilot.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Regime pilot: SFT warm starts on the vault game, no RL",
        "",
        f"`{command}`, {payload['date']}; one process, {options.threads} torch thread(s), CPU. Rooms "
        f"{options.rooms}, eval_layouts={options.eval_layouts!r}, max_turns {options.max_turns}; held-out success "
        f"over {options.eval_episodes} episodes ({options.eval_tasks} held-out tasks, sampling at temperature 1.0), "
        "per-room accuracy = right door / valid answers, by the room's sign (chance 1/3).",
        "",
        "| config (size/lr/steps/elimination/noise) | seed | held-out success | invalid rate | direct acc | "
        "elimination acc | SFT min | eval min |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['name']} | {r['seed']} | {r['success']:.3f} | {r['invalid_rate']:.3f} | "
            f"{r['direct_accuracy']:.3f} | {r['elimination_accuracy']:.3f} | {r['sft_minutes']:.1f} | "
            f"{r['eval_minutes']:.1f} |"
            for r in runs
        ),
    ]
    lines += ["", *power_lines(options)]
    if options.notes and os.path.exists(options.notes):
        lines += ["", Path(options.notes).read_text().rstrip()]
    (results / "regime_pilot.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", required=True, help="SIZE/SFT_LR/SFT_STEPS/ELIMINATION/NOISE[/TRAIN_TASKS]"
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--rooms", type=int, nargs=2, default=[10, 14])
    parser.add_argument("--eval-layouts", default="unseen", choices=["shared", "unseen"])
    parser.add_argument("--eval-tasks", type=int, default=128, help="held-out tasks (episodes cycle over them)")
    parser.add_argument("--eval-episodes", type=int, default=256)
    parser.add_argument("--max-turns", type=int, default=20, help="room budget + slack for invalid answers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", default="outputs/regime_pilot")
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--notes", default=None, help="a Markdown file appended to the .md (the choice and why)")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument(
        "--power-from",
        default=str(RESULTS / "learning_vault.json"),
        help="earlier learning results whose between-seed variance the power section uses",
    )
    parser.add_argument("--power-old-episodes", type=int, default=128, help="episodes per eval point there")
    parser.add_argument("--power-success", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--power-episodes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--power-seeds", type=int, nargs="+", default=[16, 24])
    options = parser.parse_args()
    configs = [parse_config(text) for text in options.configs]
    command = "python benchmarks/regime_pilot.py " + " ".join(
        [
            f"--configs {' '.join(options.configs)}",
            f"--seeds {options.seeds}",
            f"--rooms {options.rooms[0]} {options.rooms[1]}",
            f"--eval-layouts {options.eval_layouts}",
            f"--eval-tasks {options.eval_tasks}",
            f"--eval-episodes {options.eval_episodes}",
            f"--max-turns {options.max_turns}",
        ]
    )
    setup_process(options.threads)
    os.makedirs(options.work_dir, exist_ok=True)
    log = Path(options.work_dir) / "runs.jsonl"
    if options.fresh and log.exists():
        log.unlink()
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    shared = {"rooms": options.rooms, "eval_layouts": options.eval_layouts, "eval_tasks": options.eval_tasks,
              "eval_episodes": options.eval_episodes, "max_turns": options.max_turns}  # fmt: skip
    runs = []
    for config in configs:
        for seed in range(options.seeds):
            previous = [
                r for r in done
                if r["name"] == config["name"] and r["seed"] == seed and r.get("shared") == shared
            ]  # fmt: skip
            if previous:
                runs.append(previous[-1])
                continue
            result = {**run_config(options, config, seed), "shared": shared}
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            runs.append(result)
            print(json.dumps({k: v for k, v in result.items() if k not in ("rooms", "env_kwargs")}), flush=True)
            write(options, command, runs)
    write(options, command, runs)
    print(f"{'config':32} success invalid direct elim sft_min")
    for r in runs:
        print(
            f"{r['name']:32} {r['success']:.3f} {r['invalid_rate']:.3f} {r['direct_accuracy']:.3f} "
            f"{r['elimination_accuracy']:.3f} {r['sft_minutes']:.1f}"
        )


if __name__ == "__main__":
    main()
