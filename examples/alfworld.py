"""Train an ALFWorld agent with AEM (offline generated games by default; see trl_aem.envs.alfworld).

    python examples/alfworld.py --config examples/configs/alfworld_cpu.yaml               # CPU, minutes
    accelerate launch examples/alfworld.py --config examples/configs/alfworld_paper.yaml  # the paper's protocol
    python examples/alfworld.py --config examples/configs/alfworld_cpu.yaml --use_aem false   # GRPO control arm

Real ALFWorld games: run `alfworld-download` once (it needs internet) and pass `--data_dir $ALFWORLD_DATA`.
Every AEMConfig field can be set in the YAML or overridden on the command line (TrlParser).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field

# this script is named like the `alfworld` package: keep its folder from shadowing the package on import
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from trl import TrlParser  # noqa: E402

import trl_aem.script_setup  # noqa: E402, F401  (first trl_aem import: third-party start-up noise off, torch threads)
from trl_aem import AEMConfig  # noqa: E402
from trl_aem.envs import AlfWorldEnv  # noqa: E402
from trl_aem.recipes import train_and_save, warm_start_policy  # noqa: E402


@dataclass
class AlfWorldArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Hub id / path, or 'tiny' (offline)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "ALFWORLD_DATA folder of real games; unset plays generated games offline."}
    )
    success_reward: float = field(default=10.0, metadata={"help": "Reward when the goal is reached."})
    task_types: list[str] | None = field(
        default=None, metadata={"help": "Restrict to some of ALFWorld's six task types (default: all)."}
    )
    max_object_classes: int | None = field(
        default=None, metadata={"help": "Offline games: keep this many object classes per room (faster, simpler)."}
    )
    num_train_tasks: int = field(default=3000, metadata={"help": "Offline train tasks."})
    num_eval_tasks: int = field(default=200, metadata={"help": "Offline eval tasks (unseen rooms)."})
    sft_demonstrations: int = field(
        default=0, metadata={"help": "If > 0, first fit the model on this many expert episodes (cold start)."}
    )
    sft_steps: int | None = field(default=None, metadata={"help": "SFT steps of the cold start (default: one epoch)."})


def main() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    script_args, config = TrlParser((AlfWorldArguments, AEMConfig)).parse_args_and_config()
    kwargs = {}
    if script_args.task_types:
        kwargs["task_types"] = tuple(script_args.task_types)
    env = functools.partial(
        AlfWorldEnv,
        data_dir=script_args.data_dir,
        success_reward=script_args.success_reward,
        max_object_classes=script_args.max_object_classes,
        num_train_tasks=script_args.num_train_tasks,
        num_eval_tasks=script_args.num_eval_tasks,
        **kwargs,
    )
    model, tokenizer = warm_start_policy(
        script_args.model_name_or_path,
        env,
        config,
        episodes=script_args.sft_demonstrations,
        steps=script_args.sft_steps,
    )
    train_and_save(model, env, config, tokenizer)


if __name__ == "__main__":
    main()
