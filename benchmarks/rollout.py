"""Rollout throughput: the batched engine vs a sequential per-episode loop, instant and 50 ms environments.

Same model (the embedded tiny model), same environment (KeywordEnv, 4 turns per episode), same
generation function (the trainer's `_generate_turn`, i.e. transformers `generate` with the entropy
recorder), 32 concurrent episodes. Reports episodes per second and, for the engine, the fraction of
rollout wall time spent outside generation (environment latency that was *added*, not hidden).

    python benchmarks/rollout.py          # writes benchmarks/results/rollout.json and rollout.md
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl_aem.runtime import setup_process  # noqa: E402

setup_process()  # before torch and trl: known third-party noise off, torch threads (TRL_AEM_THREADS overrides)

import torch  # noqa: E402

from trl_aem import AEMConfig, AEMTrainer  # noqa: E402
from trl_aem.envs.keyword import WORDS, KeywordEnv  # noqa: E402
from trl_aem.rollout import ChatFormatter, Episode, Turn  # noqa: E402
from trl_aem.tiny import build_model, build_tokenizer  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def make_trainer(delay: float, args, out: str) -> AEMTrainer:
    tokenizer = build_tokenizer()
    config = AEMConfig(
        output_dir=out,
        per_device_train_batch_size=args.episodes,
        num_generations=8,
        max_turns=args.turns,
        max_turn_tokens=args.turn_tokens,
        max_completion_length=args.turns * (args.turn_tokens + 64),
        num_env_workers=args.episodes,
        report_to=[],
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        rollout_mode="step",
    )
    env = functools.partial(KeywordEnv, delay=delay)
    return TimedTrainer(
        build_model(tokenizer, hidden_size=args.hidden_size, seed=0), env, config, processing_class=tokenizer
    )


class TimedTrainer(AEMTrainer):
    """AEMTrainer whose per-turn generate calls are timed (``generate_turn`` is the engine's public hook)."""

    generate_seconds = 0.0

    def generate_turn(self, prompts, max_new_tokens):
        started = time.perf_counter()
        try:
            return super().generate_turn(prompts, max_new_tokens)
        finally:
            self.generate_seconds += time.perf_counter() - started


def engine_run(trainer: TimedTrainer, tasks: list[dict]) -> tuple[float, float, list[Episode]]:
    trainer.generate_seconds = 0.0
    started = time.perf_counter()
    episodes = trainer.play_episodes(tasks, "train")
    return time.perf_counter() - started, trainer.generate_seconds, episodes


def sequential_run(trainer: TimedTrainer, tasks: list[dict], delay: float) -> float:
    """The obvious loop: one episode at a time, one generate call per turn, env stepped inline."""
    formatter = ChatFormatter(trainer.processing_class, trainer.args.history_length)
    started = time.perf_counter()
    for task in tasks:
        env = KeywordEnv(delay=delay)
        episode = Episode(
            task=task, group=0, index=0, system_prompt=KeywordEnv.system_prompt, first_observation=env.reset(task)
        )
        for _ in range(trainer.args.max_turns):
            gen = trainer.generate_turn([formatter.step_prompt(episode)], trainer.args.max_turn_tokens)[0]
            text = trainer.processing_class.decode(gen.completion_ids, skip_special_tokens=True)
            result = env.step(text)
            episode.turns.append(
                Turn(
                    prompt_ids=[],
                    completion_ids=gen.completion_ids,
                    entropies=gen.entropies,
                    logps=gen.logps,
                    response=text,
                    observation=result.observation,
                )
            )
            if result.done:
                break
    return time.perf_counter() - started


def trl_loop_comparison(args, delays) -> list[dict]:
    """Same tool-calling tiny model, same game, 32 episodes of 4 generations: TRL's environment_factory loop
    vs this engine (trajectory mode). Times one `_generate_and_score_completions` (rollout + rewards) on both: the
    one private method a benchmark here calls, because it is the function both trainers run per generation batch
    and TRL has no public entry point for one batch."""
    import sys

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(Path(__file__).parent))
    from tool_model import KeywordTools, build_tool_model

    model, tokenizer, fit_loss = build_tool_model(hidden_size=args.hidden_size)
    model.train()  # trainers read their mode ("train" metrics, num_generations) from model.training
    words = [[WORDS[(i + k) % len(WORDS)] for k in range(args.turns)] for i in range(args.episodes)]
    rows = []
    for delay in delays:
        Tools = type("Tools", (KeywordTools,), {"step_delay": delay})

        common = dict(
            per_device_train_batch_size=args.episodes,
            num_generations=8,
            report_to=[],
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
            max_completion_length=args.turns * (args.turn_tokens + 64),
        )
        with tempfile.TemporaryDirectory() as out:
            dataset = Dataset.from_dict(
                {"prompt": [[{"role": "user", "content": "Play."}]] * args.episodes, "words": words}
            )
            trl_trainer = GRPOTrainer(
                model,
                reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                args=GRPOConfig(output_dir=out, max_tool_calling_iterations=args.turns - 1, **common),
                train_dataset=dataset,
                processing_class=tokenizer,
                environment_factory=Tools,
            )
            trl_trainer.generation_config.max_new_tokens = args.turn_tokens * 2
            batch = [dict(r) for r in dataset]
            trl_trainer._generate_and_score_completions(batch[:8])  # warm-up
            trl_times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                trl_trainer._generate_and_score_completions([dict(r) for r in batch])
                trl_times.append(time.perf_counter() - started)
            calls = trl_trainer._metrics["train"].get("tools/call_frequency", [0.0])
            trl_tokens = trl_trainer._metrics["train"]["completions/mean_length"][-1]

            config = AEMConfig(
                output_dir=out,
                max_turns=args.turns,
                max_turn_tokens=args.turn_tokens * 2,
                num_env_workers=args.episodes,
                rollout_mode="trajectory",
                **common,
            )
            ours = AEMTrainer(
                model,
                functools.partial(KeywordEnv, delay=delay),
                config,
                train_dataset=Dataset.from_dict({"words": words}),
                processing_class=tokenizer,
            )
            ours._generate_and_score_completions([{"words": w} for w in words[:8]])  # warm-up
            our_times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                ours._generate_and_score_completions([{"words": w} for w in words])
                our_times.append(time.perf_counter() - started)
            our_turns = sum(len(e.turns) for e in ours.last_episodes)
            our_tokens = ours._metrics["train"]["completions/mean_length"][-1]
            ours.close_environments()
        rows.append(
            {
                "env_delay_s": delay,
                "episodes": args.episodes,
                "tool_model_fit_loss": fit_loss,
                "trl_environment_factory_episodes_per_s": args.episodes / min(trl_times),
                "trl_tool_calls_per_episode": calls[-1],
                "engine_episodes_per_s": args.episodes / min(our_times),
                "engine_turns_per_episode": our_turns / len(words),
                "speedup_vs_trl_loop": min(trl_times) / min(our_times),
                "trl_model_tokens_per_episode": trl_tokens,
                "engine_model_tokens_per_episode": our_tokens,
            }
        )
        print(json.dumps(rows[-1], indent=2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--turn-tokens", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-delay", type=float, default=0.05)
    parser.add_argument("--skip-trl", action="store_true", help="skip the TRL environment_factory comparison")
    args = parser.parse_args()
    torch.manual_seed(0)
    tasks = [{"words": [WORDS[(i + k) % len(WORDS)] for k in range(args.turns)]} for i in range(args.episodes)]
    rows = []
    for delay in (0.0, args.slow_delay):
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(delay, args, out)
            engine_run(trainer, tasks[:8])  # warm-up (thread start, first generate)
            engine = [engine_run(trainer, tasks) for _ in range(args.repeats)]
            seq = [sequential_run(trainer, tasks, delay) for _ in range(args.repeats)]
            trainer.close_environments()
        wall = min(w for w, _, _ in engine)
        gen = min(g for _, g, _ in engine)
        turns = sum(len(e.turns) for e in engine[0][2])
        seq_wall = min(seq)
        rows.append(
            {
                "env_delay_s": delay,
                "episodes": args.episodes,
                "turns_total": turns,
                "engine_episodes_per_s": args.episodes / wall,
                "sequential_episodes_per_s": args.episodes / seq_wall,
                "speedup_vs_sequential": seq_wall / wall,
                "engine_wall_s": wall,
                "engine_generate_s": gen,
                "wall_over_generate": wall / gen,
            }
        )
        print(json.dumps(rows[-1], indent=2))
    trl_rows = [] if args.skip_trl else trl_loop_comparison(args, (0.0, args.slow_delay))
    settings = {k: v for k, v in vars(args).items() if k != "skip_trl"}
    result = {
        "benchmark": "rollout",
        "command": "python benchmarks/rollout.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items()),
        "rows": rows,
        "trl_environment_factory": trl_rows,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Rollout throughput",
        "",
        f"`{result['command']}` on {result['machine']['platform']}, "
        f"{result['machine']['threads']} torch threads, {result['date']}.",
        "",
        "| env step | engine ep/s | sequential ep/s | speed-up | engine wall / generate time |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env_delay_s'] * 1000:.0f} ms | {r['engine_episodes_per_s']:.1f} | "
            f"{r['sequential_episodes_per_s']:.1f} | {r['speedup_vs_sequential']:.1f}x | "
            f"{r['wall_over_generate']:.2f} |"
        )
    lines += [
        "",
        "Against TRL's own `environment_factory` tool loop, on a tiny model fitted to emit tool calls "
        "(benchmarks/tool_model.py): both loops generate with that model; one rollout + rewards is timed.",
        "",
        "| env step | TRL loop ep/s | engine ep/s | speed-up | TRL tool calls / ep | engine turns / ep "
        "| model tokens / ep (TRL, engine) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in trl_rows:
        lines.append(
            f"| {r['env_delay_s'] * 1000:.0f} ms | {r['trl_environment_factory_episodes_per_s']:.1f} | "
            f"{r['engine_episodes_per_s']:.1f} | {r['speedup_vs_trl_loop']:.1f}x | "
            f"{r['trl_tool_calls_per_episode']:.2f} | {r['engine_turns_per_episode']:.2f} | "
            f"{r['trl_model_tokens_per_episode']:.0f}, {r['engine_model_tokens_per_episode']:.0f} |"
        )
    lines.append("")
    (RESULTS / "rollout.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
