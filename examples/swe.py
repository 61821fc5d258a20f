"""Train a software-engineering agent with AEM: it edits a repository and is rewarded by the tests.

    accelerate launch examples/swe.py                                               # CPU, offline, minutes
    accelerate launch examples/swe.py --config examples/configs/swe_cpu.yaml        # the same, explicitly
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml \\
        examples/swe.py --config examples/configs/swe.yaml                      # DeepSWE recipe + AEM
    python examples/swe.py --config examples/configs/swe_cpu.yaml --use_aem false    # GRPO control arm

Tasks: by default the offline SWE-smith-style bugs shipped with trl_aem (local namespace sandbox, no
Docker); ``--dataset`` names a Hub dataset or a local .json/.jsonl/.parquet file of real SWE-bench-style
instances, run in their Docker images. Every AEMConfig field can be set in the YAML or on the command line.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field

from trl import TrlParser

import trl_aem.script_setup  # noqa: F401  (first trl_aem import: third-party start-up noise off, torch threads)
from trl_aem import AEMConfig
from trl_aem.cli import parse_config
from trl_aem.envs import SWEEnv
from trl_aem.recipes import train_and_save, warm_start_policy


@dataclass
class SWEArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Hub id / path, or 'tiny' (offline)."})
    dataset: str | None = field(
        default=None, metadata={"help": "Real instances (Hub name or local file); default: offline tasks."}
    )
    train_split: str = field(default="train", metadata={"help": "Dataset split for training (real instances)."})
    eval_split: str = field(default="test", metadata={"help": "Dataset split for evaluation (real instances)."})
    backend: str = field(default="auto", metadata={"help": "'auto', 'local' (offline tasks) or 'docker'."})
    num_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N training tasks."})
    num_eval_tasks: int | None = field(default=None, metadata={"help": "Use only the first N evaluation tasks."})
    command_timeout: float = field(default=30.0, metadata={"help": "Seconds per agent command."})
    eval_timeout: float = field(default=120.0, metadata={"help": "Seconds for the final test run."})
    output_chars: int = field(default=4000, metadata={"help": "Observations are truncated to this many characters."})
    task_seed: int = field(default=0, metadata={"help": "Seed of the offline train/eval partition."})
    sft_demonstrations: int = field(
        default=0, metadata={"help": "If > 0, first fit the model on this many expert episodes (gold patch, submit)."}
    )
    sft_steps: int | None = field(default=None, metadata={"help": "SFT steps of the cold start (default: one epoch)."})


def main() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
        # no config: the CPU-sized offline run (AEMConfig's bare defaults would train for epochs)
        sys.argv[1:1] = [
            "--config",
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "swe_cpu.yaml"),
        ]
    # strict: a misspelled field (file or command line) stops with the closest one instead of being ignored
    parser = TrlParser((SWEArguments, AEMConfig), allow_abbrev=False)
    args, config = parse_config(parser, sys.argv[1:], prog="examples/swe.py")
    # max_steps = max_turns: an episode that never submits is still judged on its final state
    env = functools.partial(
        SWEEnv,
        dataset=args.dataset,
        dataset_splits={"train": args.train_split, "eval": args.eval_split},
        backend=args.backend,
        max_steps=config.max_turns,
        seed=args.task_seed,
        num_train_tasks=args.num_train_tasks,
        num_eval_tasks=args.num_eval_tasks,
        command_timeout=args.command_timeout,
        eval_timeout=args.eval_timeout,
        output_chars=args.output_chars,
    )
    # the tiny model's tokenizer learns this environment's text (expert episodes), which keeps prompts inside its
    # context; with sft_demonstrations it first learns the tool-call format, so its responses end (no truncation)
    model, tokenizer = warm_start_policy(
        args.model_name_or_path,
        env,
        config,
        episodes=args.sft_demonstrations,
        steps=args.sft_steps,
        **({"max_position_embeddings": 4096} if args.model_name_or_path == "tiny" else {}),
    )
    train_and_save(model, env, config, tokenizer)


if __name__ == "__main__":
    main()
