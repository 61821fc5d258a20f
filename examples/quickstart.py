"""Quickstart: an agent learns a multi-turn task with AEM, offline on a CPU, in about two minutes.

    python examples/quickstart.py                          # the embedded default (keyword game, tiny model)
    python examples/quickstart.py --no-aem                 # the GRPO control arm, same seed
    python examples/quickstart.py --rl-steps 120           # a longer RL phase
    python examples/quickstart.py --env alfworld --model Qwen/Qwen2.5-0.5B-Instruct --sft-steps 0   # on a GPU

Phases (each with its progress bar):
1. a tiny Qwen2-style model is built on the spot (nothing is downloaded; ``--model`` takes a Hub id instead);
2. SFT warm start with TRL's ``SFTTrainer`` on the environment's expert demonstrations (step-mode prompts);
3. held-out evaluation (``trainer.evaluate()`` on the environment's eval tasks);
4. RL with ``AEMTrainer`` in step mode (``use_aem=False`` with ``--no-aem``);
5. held-out evaluation again; the checkpoint, its model card, training curves and ``aem_env.json`` are
   written to ``--output-dir``.

The default is the ``keyword`` game (say the requested words over up to three turns): with the tiny model it
is the environment that shows learning on 2 CPU cores within minutes. ``--env webshop`` / ``--env alfworld``
run the same pipeline on the paper's environments; their long observations need a real model (and a GPU)
to learn.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl_aem import AEMTrainer  # noqa: E402
from trl_aem.envs import get_env
from trl_aem.recipes import STEP_MODE_BUDGETS, make_policy, sft_cold_start, sft_learning_rate, step_mode_config  # noqa: E402
from trl_aem.rollout import tasks_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=sorted(STEP_MODE_BUDGETS), default="keyword")
    parser.add_argument("--model", default="tiny", help="'tiny' (built offline) or a Hub id / local path")
    parser.add_argument("--sft-steps", type=int, default=150, help="SFT warm-start steps (0 skips the phase)")
    parser.add_argument("--rl-steps", type=int, default=80, help="AEMTrainer steps")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="RL learning rate")
    parser.add_argument("--no-aem", action="store_true", help="train plain GRPO (use_aem=False)")
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)  # old name of --rl-steps
    args = parser.parse_args()
    if args.steps is not None:
        args.rl_steps = args.steps
    for name in ("sft_steps", "rl_steps"):
        if getattr(args, name) < (0 if name == "sft_steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'sft_steps' else '>= 1'}")
    started = time.perf_counter()
    env = get_env(args.env)
    config = step_mode_config(
        args.env,
        args.output_dir,
        use_aem=not args.no_aem,
        max_steps=args.rl_steps,
        learning_rate=args.learning_rate,
        logging_steps=max(1, args.rl_steps // 20),
        use_cpu=args.model == "tiny",
        seed=args.seed,
    )

    model, tokenizer = make_policy(args.model, seed=args.seed)
    phases = {}
    if args.sft_steps:
        print(f"\n[1/4] SFT warm start on {args.env} expert demonstrations ({args.sft_steps} steps)")
        phase = time.perf_counter()
        model, tokenizer = sft_cold_start(
            model,
            tokenizer,
            env,
            config,
            num_episodes=len(env().tasks("train")),
            max_steps=args.sft_steps,
            learning_rate=sft_learning_rate(args.model),
        )
        phases["sft"] = time.perf_counter() - phase

    held_out = tasks_dataset(env().tasks("eval"), "eval")
    trainer = AEMTrainer(model, env, config, eval_dataset=held_out, processing_class=tokenizer)
    print("\n[2/4] held-out evaluation before RL")
    before = trainer.evaluate()
    arm = "AEM" if config.use_aem else "GRPO (use_aem=False)"
    print(f"\n[3/4] RL with {arm}, step mode, {args.rl_steps} steps")
    phase = time.perf_counter()
    trainer.train()
    phases["rl"] = time.perf_counter() - phase
    print("\n[4/4] held-out evaluation after RL, saving")
    after = trainer.evaluate()
    trainer.create_model_card()  # the card again, now with the final held-out results (train() saved the weights)

    episodes = int(len(trainer.eval_dataset) * config.num_generations_eval)
    print(
        f"\nheld-out success rate ({episodes} episodes of {args.env} eval tasks): "
        f"{before['eval_env/success_rate']:.2f} before RL -> {after['eval_env/success_rate']:.2f} after "
        f"{args.rl_steps} {arm} steps (return {before['eval_env/return']:.2f} -> {after['eval_env/return']:.2f})"
    )
    timing = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    print(f"wall time {time.perf_counter() - started:.0f} s ({timing}); checkpoint and card in {args.output_dir}")


if __name__ == "__main__":
    main()
