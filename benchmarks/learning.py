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
    python benchmarks/learning.py --env alfworld --model Qwen/Qwen2.5-0.5B-Instruct --steps 150   # GPU

Writes ``benchmarks/results/learning_<env>.json``, ``.md`` (final held-out success, mean and standard
deviation over seeds) and ``.png`` (held-out success against step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from trl_aem import AEMTrainer  # noqa: E402
from trl_aem.envs import get_env, tasks_dataset  # noqa: E402
from trl_aem.recipes import STEP_MODE_BUDGETS, make_policy, sft_cold_start, sft_learning_rate, step_mode_config  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ABLATIONS = {
    "reversed": {"aem_lambda": -1.0},
    "shuffled": {"aem_shuffle": True},
    "trajectory": {"aem_scope": "trajectory"},
    "batch": {"aem_scope": "batch"},
}


def run(args, env, seed: int, loss: str, arm: str, warm: dict, held_out) -> dict:
    """One RL run from the seed's warm-started weights; held-out success at step 0 and every eval step."""
    overrides = ABLATIONS.get(arm, {})
    model, tokenizer = warm["model_factory"]()
    config = step_mode_config(
        args.env,
        os.path.join(args.work_dir, f"{loss}-{arm}-{seed}"),
        use_aem=arm != "base",
        loss_type=loss,
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
    start = trainer.evaluate()["eval_env/success_rate"]
    trainer.train()
    history = trainer.state.log_history
    curve = [(0, start)] + [
        (log["step"], log["eval_env/success_rate"]) for log in history if "eval_env/success_rate" in log
    ]
    entropy = [(log["step"], log["aem/response_entropy"]) for log in history if "aem/response_entropy" in log]
    return {"seed": seed, "loss": loss, "arm": arm, "held_out_success": curve, "response_entropy": entropy}


def warm_start(args, env, seed: int) -> dict:
    """SFT once per seed; every arm of the seed starts from a copy of these weights."""
    model, tokenizer = make_policy(args.model, seed=seed)
    if args.sft_steps:
        config = step_mode_config(
            args.env,
            os.path.join(args.work_dir, f"sft-{seed}"),
            use_cpu=not torch.cuda.is_available(),
            bf16=torch.cuda.is_available(),
            seed=seed,
        )
        model, tokenizer = sft_cold_start(
            model,
            tokenizer,
            env,
            config,
            num_episodes=len(env().tasks("train")),
            max_steps=args.sft_steps,
            learning_rate=sft_learning_rate(args.model),
        )
    # trainers patch the model they get (a deepcopy of a trained model keeps patches bound to the original),
    # so every run loads the warm-started weights afresh from disk
    folder = os.path.join(args.work_dir, f"warm-{seed}")
    model.save_pretrained(folder)

    def model_factory():
        return AutoModelForCausalLM.from_pretrained(folder), tokenizer

    return {"model_factory": model_factory}


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
    parser.add_argument("--losses", nargs="+", default=["grpo", "dapo"], choices=["grpo", "dapo", "dr_grpo", "bnpo"])
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--work-dir", default="outputs/learning")
    args = parser.parse_args()
    env = get_env(args.env)
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
    command = (
        f"python benchmarks/learning.py --env {args.env} --model {args.model} --seeds {args.seeds} "
        f"--losses {' '.join(args.losses)} --steps {args.steps} --eval-every {args.eval_every} "
        f"--sft-steps {args.sft_steps} --learning-rate {args.learning_rate}"
    )
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
        f"{args.steps} RL steps ({len(held_out)} eval tasks x 8 episodes); ablations on seed 0 only.",
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
