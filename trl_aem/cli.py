"""``trl-aem``: the command line.

    trl-aem train --config examples/configs/quickstart.yaml
    trl-aem train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/DeepMath-103K \
        --reward accuracy --max_steps 100 --use_aem false
    torchrun --nproc_per_node 2 -m trl_aem.cli train --config my.yaml

``train`` parses :class:`ScriptArguments` and every :class:`~trl_aem.AEMConfig` field TrlParser-style: a
YAML ``--config`` file first, then any field overridden on the command line.

    trl-aem eval --model user/keyword-aem --env keyword --episodes 128 --push-results

``eval`` plays episodes of a model (and PEFT adapter) from the Hub or disk in a built-in or ``module:attr``
environment, prints a results table and, with ``--push-results``, writes them into the card's ``model-index``.
Rollout settings default to the ones the model was trained with (``aem_env.json`` beside its card).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass, field

__all__ = ["ScriptArguments", "main", "build_parser"]

TINY_MODEL = "tiny"
BUILTIN_TASKS = ("digits",)


@dataclass
class ScriptArguments:
    """What to train on (everything about *how* to train lives in AEMConfig)."""

    model_name_or_path: str = field(
        default=TINY_MODEL,
        metadata={"help": f"Hub id or local path of a causal LM; '{TINY_MODEL}' builds the embedded offline model."},
    )
    task: str = field(
        default="digits",
        metadata={"help": f"Built-in offline single-turn task used when no dataset_name is given: {BUILTIN_TASKS}."},
    )
    env: str | None = field(
        default=None,
        metadata={"help": "Train multi-turn in a built-in environment (tasks from env().tasks('train')): 'keyword'."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or local path of a prompt dataset (a 'prompt' column) for datasets.load_dataset."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    reward: str | None = field(
        default=None,
        metadata={"help": "Reward for dataset_name: a TRL reward name from trl.rewards (e.g. 'accuracy_reward')."},
    )
    num_prompts: int = field(default=64, metadata={"help": "Number of prompts of the built-in task."})


def _resolve_reward(name: str):
    import trl.rewards

    candidates = [name, f"{name}_reward"]
    for candidate in candidates:
        if hasattr(trl.rewards, candidate):
            return getattr(trl.rewards, candidate)
    available = sorted(n for n in dir(trl.rewards) if n.endswith("_reward"))
    raise SystemExit(f"trl-aem: unknown --reward {name!r}; trl.rewards provides {available}")


def train(argv: list[str]) -> None:
    """Parse ``argv`` (after ``train``) and run one training job."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import TrlParser

    from .config import AEMConfig
    from .trainer import AEMTrainer

    parser = TrlParser((ScriptArguments, AEMConfig), prog="trl-aem train")
    try:
        script_args, config = parser.parse_args_and_config(argv)
    except ValueError as error:  # AEMConfig/GRPOConfig validation: a message, not a traceback
        raise SystemExit(f"trl-aem train: {error}") from error

    model, tokenizer = script_args.model_name_or_path, None
    if model == TINY_MODEL:
        from .tiny import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        model = build_model(tokenizer, seed=config.seed)

    if script_args.env is not None:
        from .envs import get_env

        try:
            env = get_env(script_args.env)
        except ValueError as error:
            raise SystemExit(f"trl-aem train: {error}") from error
        trainer = AEMTrainer(model, env, config, processing_class=tokenizer)
        trainer.train()
        trainer.save_model(config.output_dir)
        if config.push_to_hub:
            trainer.push_to_hub()
        return
    if script_args.dataset_name is not None:
        from datasets import load_dataset

        if script_args.reward is None:
            raise SystemExit("trl-aem: --dataset_name needs --reward (a trl.rewards function name)")
        dataset = load_dataset(
            script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split
        )
        reward_funcs = _resolve_reward(script_args.reward)
    elif script_args.task == "digits":
        from .digits import digit_dataset, digit_reward

        dataset, reward_funcs = digit_dataset(script_args.num_prompts, seed=config.seed), digit_reward
    else:
        raise SystemExit(f"trl-aem: unknown --task {script_args.task!r}; built-in tasks: {BUILTIN_TASKS}")

    trainer = AEMTrainer(
        model, config=config, train_dataset=dataset, processing_class=tokenizer, reward_funcs=reward_funcs
    )
    trainer.model_card_dataset = script_args.dataset_name
    trainer.train()
    trainer.save_model(config.output_dir)
    if config.push_to_hub:
        trainer.push_to_hub()


def build_eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-aem eval", description="Play episodes of a model in an environment and report its results."
    )
    add = parser.add_argument
    add("--model", required=True, help="Hub id or local folder of the model (or of a PEFT adapter).")
    add("--adapter", default=None, help="Hub id or local folder of a PEFT adapter to apply to --model.")
    add("--env", default=None, help="Built-in environment name or module:attribute (default: the training env).")
    add("--episodes", type=int, default=32, help="Number of episodes (tasks are cycled).")
    add("--split", default=None, help="Task split of env().tasks(split) (default: eval, else test, else train).")
    add("--push-results", "--push_results", action="store_true", help="Write the results into the card on the Hub.")
    add("--revision", default=None, help="Hub revision of the model (or adapter).")
    add("--rollout-mode", "--rollout_mode", choices=["step", "trajectory"], default=None)
    add("--max-turns", "--max_turns", type=int, default=None)
    add("--history-length", "--history_length", type=int, default=None)
    add("--max-turn-tokens", "--max_turn_tokens", type=int, default=None)
    add("--max-completion-length", "--max_completion_length", type=int, default=None, help="Trajectory mode budget.")
    add("--temperature", type=float, default=0.0, help="Sampling temperature; 0 is greedy.")
    add("--batch-size", "--batch_size", type=int, default=32, help="Episodes played together.")
    add(
        "--step-timeout",
        "--step_timeout",
        type=float,
        default=None,
        help="Seconds one env step may take (default: the training run's env_step_timeout; SWE needs more than its "
        "test-run timeout).",
    )
    add("--seed", type=int, default=0)
    add("--output", default=None, help="Also write the metrics and per-episode summary to this JSON file.")
    return parser


def evaluate_command(argv: list[str]) -> None:
    """Parse ``argv`` (after ``eval``), play the episodes, print the table, optionally push the results."""
    args = build_eval_parser().parse_args(argv)
    if args.episodes < 1:
        raise SystemExit("trl-aem eval: --episodes must be >= 1")
    repo = args.adapter or args.model
    if args.push_results and os.path.isdir(repo):
        raise SystemExit(f"trl-aem eval: --push-results needs a Hub repository id, not the local folder {repo!r}")
    from .envs import resolve_env
    from .evaluation import evaluate, load_policy, read_env_settings, save_report

    trained = read_env_settings(repo, args.revision)
    env_arg = args.env or trained.get("env_spec") or trained.get("env")
    if env_arg is None:
        raise SystemExit("trl-aem eval: --env is required (the model has no aem_env.json naming its environment)")
    try:
        factory, env_name = resolve_env(env_arg)
    except (ValueError, ImportError, AttributeError) as error:
        raise SystemExit(f"trl-aem eval: {error}") from error
    if trained.get("env") in (env_arg, env_name) or trained.get("env_spec") == env_arg:
        if trained.get("env"):
            env_name = trained["env"]
        if trained.get("env_kwargs"):  # the environment's arguments in training, e.g. AlfWorldEnv(task_types=...)
            factory = functools.partial(factory, **trained["env_kwargs"])

    from .rollout.settings import RolloutSettings

    settings = RolloutSettings.from_record(
        trained,
        rollout_mode=args.rollout_mode,
        max_turns=args.max_turns,
        history_length=args.history_length,
        max_turn_tokens=args.max_turn_tokens,
        max_completion_length=args.max_completion_length,
        env_step_timeout=args.step_timeout,
    )
    model, tokenizer = load_policy(args.model, args.adapter, revision=args.revision)
    report = evaluate(
        model,
        tokenizer,
        factory,
        episodes=args.episodes,
        split=args.split,
        env_name=env_name,
        settings=settings,
        temperature=args.temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(report.table())
    if args.output:
        save_report(report, args.output)
    if args.push_results:
        from .hub.results import push_eval_results

        push_eval_results(
            repo,
            report.metrics,
            env_name=env_name,
            split=report.split,
            episodes=len(report.episodes),
            revision=args.revision,
        )
        print(f"results written into the model card of {repo}")


COMMANDS = {"train": train, "eval": evaluate_command}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-aem", description="Train LLM agents with AEM on TRL.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do; `trl-aem COMMAND --help` for options")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        build_parser().parse_args(argv[:1] or ["--help"])
        return
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
