"""``trl-aem``: the command line.

    trl-aem train --env keyword --output_dir keyword-aem       # tiny model, SFT warm start + AEM RL, CPU, ~2 min
    trl-aem train --config examples/configs/quickstart.yaml
    trl-aem train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/DeepMath-103K \
        --reward accuracy --max_steps 100 --use_aem false
    torchrun --nproc_per_node 2 -m trl_aem.cli train --config my.yaml

``train`` parses :class:`ScriptArguments` and every :class:`~trl_aem.AEMConfig` field TrlParser-style: a
YAML ``--config`` file first, then any field overridden on the command line. With ``--env`` (``environment:`` in a
YAML file) the defaults are the environment's step-mode settings, and with the tiny model a schedule that learns on
a CPU in minutes (``trl_aem.recipes``); anything the file or the command line sets wins.

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


def _environment_help() -> str:
    from .envs.registry import SUMMARIES

    names = "; ".join(f"{name}: {summary}" for name, summary in SUMMARIES.items())
    return (
        "Train multi-turn in an environment (tasks from env().tasks('train')): a built-in name or module:attribute. "
        f"Built-in: {names}. In a YAML config write `environment: NAME` (TrlParser keeps `env:` for environment "
        "variables)."
    )


@dataclass
class ScriptArguments:
    """What to train on (everything about *how* to train lives in AEMConfig)."""

    model_name_or_path: str = field(
        default=TINY_MODEL,
        metadata={"help": f"Hub id or local path of a causal LM; '{TINY_MODEL}' builds the embedded offline model."},
    )
    environment: str | None = field(default=None, metadata={"aliases": ["--env"], "help": _environment_help()})
    env_kwargs: str | None = field(
        default=None, metadata={"help": 'JSON keyword arguments of the environment, e.g. \'{"data_dir": "data"}\'.'}
    )
    sft_steps: int | None = field(
        default=None,
        metadata={
            "help": "Steps of an SFT warm start on the environment's expert demonstrations before RL (0: none). "
            "Default: what the tiny model needs to learn the environment (its EnvSpec.tiny in "
            "trl_aem.envs.registry), 0 for other models."
        },
    )
    sft_noise: float = field(
        default=0.0, metadata={"help": "Share of the expert's actions replaced by random ones in the warm start."}
    )
    task: str = field(
        default="digits",
        metadata={"help": f"Built-in offline single-turn task used when no dataset_name is given: {BUILTIN_TASKS}."},
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


def _chosen(argv: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the first of ``--NAME VALUE`` / ``--NAME=VALUE`` in ``argv`` or, failing that, of ``NAME`` in the
    ``--config`` YAML file."""
    for i, token in enumerate(argv):
        for name in names:
            if token == f"--{name}" and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(f"--{name}="):
                return token.split("=", 1)[1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        import yaml

        path = argv[argv.index("--config") + 1]
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as error:
            raise SystemExit(f"trl-aem train: cannot read --config {path}: {error.strerror}") from error
        for name in names:
            if isinstance(data, dict) and data.get(name) is not None:
                return str(data[name])
    return None


def _environment_defaults(argv: list[str]) -> dict:
    """``AEMConfig`` defaults for a run in an environment, before parsing, so that the config file and the command
    line still win: the step-mode fields (``trl_aem.recipes``), and with the tiny model a schedule that learns on a
    CPU in minutes."""
    from . import recipes

    environment = _chosen(argv, ("environment", "env"))
    if environment is None:
        return {}
    model = _chosen(argv, ("model_name_or_path",)) or TINY_MODEL
    params = recipes.tiny_run_params(environment) if model == TINY_MODEL else recipes.step_mode_params(environment)
    return {key: value for key, value in params.items() if key != "output_dir"}


def _fail(what: str, error: BaseException) -> SystemExit:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return SystemExit(f"trl-aem {what}: {first}")


def _looks_local(name: str) -> bool:
    """A local path rather than a Hub id (``org/name`` or ``name``)."""
    return name.startswith((".", "/", "~")) or os.path.exists(name) or name.count("/") > 1


def _load_failure(kind: str, name: str, error: BaseException) -> SystemExit:
    """One line for a model (or adapter) that cannot be loaded, saying what to check."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if _looks_local(name):
        hint = "no such local folder" if not os.path.exists(name) else "the folder holds no loadable model"
    elif offline:
        hint = "HF_HUB_OFFLINE=1 and it is not in the local cache: download it once online, or give a local folder"
    else:
        hint = "check the repository id (and HF_TOKEN for a private or gated one)"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return SystemExit(f"trl-aem: cannot load the {kind} {name!r}: {hint} ({type(error).__name__}: {first[:200]})")


def train(argv: list[str]) -> None:
    """Parse ``argv`` (after ``train``) and run one training job."""
    import json

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import TrlParser

    from .config import AEMConfig

    parser = TrlParser((ScriptArguments, AEMConfig), prog="trl-aem train")
    parser.set_defaults(**_environment_defaults(argv))
    try:
        script_args, config = parser.parse_args_and_config(argv)
    except ValueError as error:  # AEMConfig/GRPOConfig validation: a message, not a traceback
        raise _fail("train", error) from error

    model, tokenizer = script_args.model_name_or_path, None
    if script_args.environment is not None:
        from .envs import resolve_env

        try:
            factory, _ = resolve_env(script_args.environment)
            kwargs = json.loads(script_args.env_kwargs) if script_args.env_kwargs else {}
        except (ValueError, ImportError, AttributeError) as error:
            raise _fail("train", error) from error
        if kwargs:
            import functools

            factory = functools.partial(factory, **kwargs)
        model, tokenizer = _policy(script_args, config, factory)
        _run(lambda: _trainer(model, factory, config, tokenizer), config)
        return
    if model == TINY_MODEL:
        from .tiny import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        model = build_model(tokenizer, seed=config.seed)
    if script_args.dataset_name is not None:
        from datasets import load_dataset

        if script_args.reward is None:
            raise SystemExit("trl-aem: --dataset_name needs --reward (a trl.rewards function name)")
        try:
            dataset = load_dataset(
                script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split
            )
        except Exception as error:  # noqa: BLE001 - one line instead of a traceback
            raise _load_failure("dataset", script_args.dataset_name, error) from error
        reward_funcs = _resolve_reward(script_args.reward)
    elif script_args.task == "digits":
        from .digits import digit_dataset, digit_reward

        dataset, reward_funcs = digit_dataset(script_args.num_prompts, seed=config.seed), digit_reward
    else:
        raise SystemExit(f"trl-aem: unknown --task {script_args.task!r}; built-in tasks: {BUILTIN_TASKS}")

    def single_turn():
        trainer = _trainer(model, None, config, tokenizer, train_dataset=dataset, reward_funcs=reward_funcs)
        trainer.model_card_dataset = script_args.dataset_name
        return trainer

    _run(single_turn, config)


def _policy(script_args: ScriptArguments, config, factory):
    """The model to train in an environment: the tiny one built offline (its tokenizer trained on the environment's
    text when it has an expert) or the given id; warm-started on the expert's demonstrations when asked (the tiny
    model's default)."""
    from . import recipes

    name = script_args.model_name_or_path
    expert = callable(getattr(factory(), "expert_action", None))
    steps = script_args.sft_steps
    if steps is None:
        steps = recipes.env_recipe(script_args.environment).tiny.sft_steps if name == TINY_MODEL else 0
    if steps and not expert:
        raise SystemExit(f"trl-aem train: --sft_steps needs expert_action(), which {script_args.environment!r} lacks")
    if steps:
        print(f"trl-aem train: SFT warm start, {steps} steps on expert demonstrations", flush=True)
    episodes = len(factory().tasks("train")) if steps else 0
    try:
        model, tokenizer = recipes.warm_start_policy(
            name, factory, config, episodes=episodes, steps=steps, noise=script_args.sft_noise
        )
    except OSError as error:
        raise _load_failure("model", name, error) from error
    return model, tokenizer


def _trainer(model, env, config, tokenizer, **kwargs):
    from .trainer import AEMTrainer

    try:
        return AEMTrainer(model, env=env, args=config, processing_class=tokenizer, **kwargs)
    except OSError as error:  # from_pretrained: unknown id, missing folder, offline and not cached
        raise _load_failure("model", model if isinstance(model, str) else type(model).__name__, error) from error


def _run(make_trainer, config) -> None:
    """Build the trainer, train (which saves the final model, card and settings in output_dir), push if asked; an
    environment that cannot run stops with one line."""
    from .envs import EnvContractError

    trainer = make_trainer()
    try:
        trainer.train()
    except EnvContractError as error:
        raise SystemExit(f"trl-aem train: the environment broke its contract: {error}") from error
    if config.push_to_hub:
        trainer.push_to_hub()
    print(f"trl-aem train: model, card and rollout settings in {config.output_dir}", flush=True)


def build_eval_parser() -> argparse.ArgumentParser:
    from .evaluation import EVAL_BATCH_SIZE, EVAL_EPISODES
    from .rollout.settings import ROLLOUT_MODES

    parser = argparse.ArgumentParser(
        prog="trl-aem eval", description="Play episodes of a model in an environment and report its results."
    )
    add = parser.add_argument
    add("--model", required=True, help="Hub id or local folder of the model (or of a PEFT adapter).")
    add("--adapter", default=None, help="Hub id or local folder of a PEFT adapter to apply to --model.")
    add("--env", default=None, help="Built-in environment name or module:attribute (default: the training env).")
    add("--episodes", type=int, default=EVAL_EPISODES, help="Number of episodes (tasks are cycled).")
    add("--split", default=None, help="Task split of env().tasks(split) (default: eval, else test, else train).")
    add("--push-results", "--push_results", action="store_true", help="Write the results into the card on the Hub.")
    add("--revision", default=None, help="Hub revision of the model (or adapter).")
    add("--rollout-mode", "--rollout_mode", choices=list(ROLLOUT_MODES), default=None)
    add("--max-turns", "--max_turns", type=int, default=None)
    add("--history-length", "--history_length", type=int, default=None)
    add("--max-turn-tokens", "--max_turn_tokens", type=int, default=None)
    add("--max-completion-length", "--max_completion_length", type=int, default=None, help="Trajectory mode budget.")
    add("--temperature", type=float, default=0.0, help="Sampling temperature; 0 is greedy.")
    add("--batch-size", "--batch_size", type=int, default=EVAL_BATCH_SIZE, help="Episodes played together.")
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

    if _looks_local(repo) and not os.path.exists(repo):
        raise SystemExit(f"trl-aem eval: no such local folder {repo!r} (give a Hub id or an existing folder)")
    try:
        trained = read_env_settings(repo, args.revision)
    except Exception as error:  # noqa: BLE001 - unknown repo, offline and not cached: one line
        raise _load_failure("model", repo, error) from error
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
    try:
        model, tokenizer = load_policy(args.model, args.adapter, revision=args.revision)
    except Exception as error:  # noqa: BLE001 - one line saying what to check, not a 40-line traceback
        raise _load_failure("model", args.adapter or args.model, error) from error
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
