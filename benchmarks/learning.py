"""Learning curves: AEM against its base algorithm (``use_aem=False``), several seeds, same budget, plus the
paper's ablations on one seed.

Every run: a model (``--model``, default the offline tiny one) warm-started with ``SFTTrainer`` on the
environment's expert demonstrations (the same for every arm of a seed), then ``--steps`` RL steps of
``AEMTrainer`` in step mode, evaluated on the held-out tasks (``trainer.evaluate()``) before RL and every
``--eval-every`` steps. Arms: ``aem`` and ``base`` for each loss in ``--losses`` (``grpo``, ``dapo``), and on
the first seed with GRPO the ablations ``reversed`` (lambda = -1), ``shuffled`` (alpha permuted within the
batch), ``trajectory`` and ``batch`` (normalisation scope). Response entropy (``aem/response_entropy``) is
logged per step to show whether AEM keeps it up early and lowers it later.

    python benchmarks/learning.py                              # keyword game, tiny model, CPU: minutes
    python benchmarks/learning.py --env alfworld --env-kwargs '{"task_types": ["pick_and_place_simple"],
        "max_object_classes": 2, "num_eval_tasks": 16}' --max-turns 15 --tiny-size 128x4 --env-tokenizer \
        --sft-steps 300 --sft-learning-rate 3e-3 --steps 20 --eval-every 10
        # ALFWorld sized for a CPU: it runs, but this tiny model stays at 0 success (see the README)
    python benchmarks/learning.py --env alfworld --model Qwen/Qwen2.5-0.5B-Instruct --steps 150   # GPU

Writes ``benchmarks/results/learning_<env>.json``, ``.md`` (final held-out success, mean and standard
deviation over seeds) and ``.png`` (held-out success against step).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from trl_aem import AEMTrainer  # noqa: E402
from trl_aem.envs import get_env  # noqa: E402
from trl_aem.recipes import (  # noqa: E402
    STEP_MODE_BUDGETS,
    env_corpus,
    make_policy,
    sft_cold_start,
    sft_learning_rate,
    step_mode_config,
)
from trl_aem.rollout import tasks_dataset  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ABLATIONS = {
    "reversed": {"aem_lambda": -1.0},
    "shuffled": {"aem_shuffle": True},
    "trajectory": {"aem_scope": "trajectory"},
    "batch": {"aem_scope": "batch"},
}


def run(args, env, seed: int, loss: str, arm: str, warm: dict, held_out) -> dict:
    """One RL run from the seed's warm-started weights; held-out success at step 0 and every eval step."""
    overrides = dict(ABLATIONS.get(arm, {}))
    if loss == "gigpo":  # GiGPO's two-level advantage with TRL's GRPO loss
        overrides["advantage_estimator"] = "gigpo"
    model, tokenizer = warm["model_factory"]()
    config = step_mode_config(
        args.env,
        os.path.join(args.work_dir, f"{loss}-{arm}-{seed}"),
        use_aem=arm != "base",
        **args.config_overrides,
        loss_type="grpo" if loss == "gigpo" else loss,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        eval_strategy="steps",
        eval_steps=args.eval_every,
        logging_steps=1,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        seed=seed,
        disable_tqdm=True,
        **overrides,
    )
    trainer = AEMTrainer(model, env, config, eval_dataset=held_out, processing_class=tokenizer)
    # every arm of a seed starts from the same weights and evaluates with the same seed: measure it once
    if "start" not in warm:
        warm["start"] = trainer.evaluate()["eval_env/success_rate"]
    start = warm["start"]
    trainer.train()
    history = trainer.state.log_history
    curve = [(0, start)] + [
        (log["step"], log["eval_env/success_rate"]) for log in history if "eval_env/success_rate" in log
    ]
    entropy = [(log["step"], log["aem/response_entropy"]) for log in history if "aem/response_entropy" in log]
    return {"seed": seed, "loss": loss, "arm": arm, "held_out_success": curve, "response_entropy": entropy}


def warm_start(args, env, seed: int) -> dict:
    """SFT once per seed; every arm of the seed starts from a copy of these weights."""
    model, tokenizer = make_policy(args.model, seed=seed, corpus=args.corpus, **args.tiny_kwargs)
    if args.sft_steps:
        config = step_mode_config(
            args.env,
            os.path.join(args.work_dir, f"sft-{seed}"),
            use_cpu=not torch.cuda.is_available(),
            bf16=torch.cuda.is_available(),
            seed=seed,
            **args.config_overrides,
        )
        model, tokenizer = sft_cold_start(
            model,
            tokenizer,
            env,
            config,
            num_episodes=len(env().tasks("train")),
            max_steps=args.sft_steps,
            learning_rate=args.sft_learning_rate or sft_learning_rate(args.model),
        )
    # trainers patch the model they get (a deepcopy of a trained model keeps patches bound to the original),
    # so every run loads the warm-started weights afresh from disk
    folder = os.path.join(args.work_dir, f"warm-{seed}")
    model.save_pretrained(folder)

    def model_factory():
        return AutoModelForCausalLM.from_pretrained(folder), tokenizer

    return {"model_factory": model_factory}


def command_line(args) -> str:
    """The command that reproduces this run (every option that is set), for the results file."""
    parts = ["python benchmarks/learning.py"]
    for name, value in vars(args).items():
        if name == "work_dir" or value is None or value is False or value == {}:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(value)}")
        elif isinstance(value, dict):
            parts.append(f"{flag} {shlex.quote(json.dumps(value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def summarise(runs: list[dict]) -> dict:
    table = {}
    for key in sorted({(r["loss"], r["arm"]) for r in runs}):
        finals = [r["held_out_success"][-1][1] for r in runs if (r["loss"], r["arm"]) == key]
        starts = [r["held_out_success"][0][1] for r in runs if (r["loss"], r["arm"]) == key]
        table[f"{key[0]}/{key[1]}"] = {
            "seeds": len(finals),
            "start_mean": statistics.mean(starts),
            "final_mean": statistics.mean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        }
    return table


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["loss"], r["arm"]) for r in runs}):
        group = [r for r in runs if (r["loss"], r["arm"]) == key]
        steps = [s for s, _ in group[0]["held_out_success"]]
        values = [[v for _, v in r["held_out_success"]] for r in group]
        mean = [statistics.mean(col) for col in zip(*values, strict=True)]
        std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*values, strict=True)]
        (line,) = ax.plot(steps, mean, marker="o", label=f"{key[0]}/{key[1]} (n={len(group)})")
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
        entropy = [[v for _, v in r["response_entropy"]] for r in group]
        ax2.plot(
            [s for s, _ in group[0]["response_entropy"]],
            [statistics.mean(c) for c in zip(*entropy, strict=True)],
            color=line.get_color(),
            label=f"{key[0]}/{key[1]}",
        )
    ax.set(xlabel="RL step", ylabel="held-out success rate", title=title)
    ax2.set(xlabel="RL step", ylabel="response entropy (nats)", title="mean per-response entropy (train)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=sorted(STEP_MODE_BUDGETS), default="keyword")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--losses",
        nargs="+",
        default=["grpo", "dapo", "gigpo"],
        choices=["grpo", "dapo", "dr_grpo", "bnpo", "gigpo"],
        help="base algorithms; gigpo = GiGPO's advantage with the GRPO loss (arms gigpo/base and gigpo/aem)",
    )
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--sft-learning-rate", type=float, default=None, help="default: recipes.sft_learning_rate")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON dict for the environment class")
    parser.add_argument("--max-turns", type=int, default=None, help="default: recipes.STEP_MODE_BUDGETS")
    parser.add_argument("--eval-episodes", type=int, default=8, help="episodes per held-out task")
    parser.add_argument("--tiny-size", default=None, help="HIDDENxLAYERS of the tiny model, e.g. 128x4")
    parser.add_argument("--env-tokenizer", action="store_true", help="train the tiny tokenizer on the env's text")
    parser.add_argument("--work-dir", default="outputs/learning")
    args = parser.parse_args()
    command = command_line(args)
    env = functools.partial(get_env(args.env), **args.env_kwargs)
    args.config_overrides = {"num_generations_eval": args.eval_episodes}
    if args.max_turns is not None:
        args.config_overrides["max_turns"] = args.max_turns
    args.tiny_kwargs = {}
    if args.tiny_size:
        try:
            hidden, layers = (int(v) for v in args.tiny_size.lower().split("x"))
        except ValueError:
            parser.error(f"--tiny-size must look like 128x4 (hidden size x layers), got {args.tiny_size!r}")
        args.tiny_kwargs = {"hidden_size": hidden, "num_layers": layers}
    args.corpus = env_corpus(env) if args.env_tokenizer else None
    held_out = tasks_dataset(env().tasks("eval"), "eval")
    started = time.time()
    runs = []
    for seed in range(args.seeds):
        warm = warm_start(args, env, seed)
        arms = [(loss, arm) for loss in args.losses for arm in ("aem", "base")]
        if seed == 0 and not args.no_ablations:
            arms += [("grpo", name) for name in ABLATIONS]
        for loss, arm in arms:
            runs.append(run(args, env, seed, loss, arm, warm, held_out))
            print(f"seed {seed} {loss}/{arm}: held-out success {runs[-1]['held_out_success']}", flush=True)
    table = summarise(runs)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    name = f"learning_{args.env}"
    payload = {
        "benchmark": "learning",
        "command": command,
        "table": table,
        "runs": runs,
        "device": device,
        "platform": platform.platform(),
        "wall_s": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(runs, RESULTS / f"{name}.png", f"{args.env}: held-out success (mean ± std over seeds)")
    lines = [
        f"# Learning: AEM vs base on {args.env} ({args.model} model, {device})",
        "",
        f"`{command}`, {payload['date']}, {payload['wall_s']:.0f} s. Held-out success rate before RL and after "
        f"{args.steps} RL steps ({len(held_out)} eval tasks x {args.eval_episodes} episodes); ablations on seed 0 "
        "only.",
        "",
        "| loss / arm | seeds | before RL | after RL (mean) | std |",
        "|---|---|---|---|---|",
        *(
            f"| {key} | {row['seeds']} | {row['start_mean']:.3f} | {row['final_mean']:.3f} | {row['final_std']:.3f} |"
            for key, row in table.items()
        ),
        "",
        f"![held-out success]({name}.png)",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
