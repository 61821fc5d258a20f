"""Train a WebShop agent with AEM (offline generated catalog; see trl_aem.envs.webshop).

    python examples/webshop.py --config examples/configs/webshop_cpu.yaml               # CPU, minutes
    accelerate launch examples/webshop.py --config examples/configs/webshop_paper.yaml  # the paper's protocol
    python examples/webshop.py --config examples/configs/webshop_cpu.yaml --use_aem false   # GRPO control arm
    python examples/webshop.py --config examples/configs/webshop_paper.yaml --data_dir WebShop/data  # real data

Every AEMConfig field can be set in the YAML or overridden on the command line (TrlParser).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from trl import TrlParser

import trl_aem.script_setup  # noqa: F401  (first trl_aem import: third-party start-up noise off, torch threads)
from trl_aem import AEMConfig
from trl_aem.envs import WebShopEnv
from trl_aem.recipes import train_and_save, warm_start_policy


@dataclass
class WebShopArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Hub id / path, or 'tiny' (offline)."})
    reward: str = field(default="success", metadata={"help": "'success' (10 x success, the paper) or 'score'."})
    success_reward: float = field(default=10.0, metadata={"help": "Reward of a successful purchase."})
    num_products: int = field(default=1000, metadata={"help": "Size of the generated catalog."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of WebShop's own data (setup.sh downloads); unset plays the generated catalog."},
    )
    sft_demonstrations: int = field(
        default=0, metadata={"help": "If > 0, first fit the model on this many expert episodes (cold start)."}
    )
    sft_steps: int | None = field(default=None, metadata={"help": "SFT steps of the cold start (default: one epoch)."})


def main() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    script_args, config = TrlParser((WebShopArguments, AEMConfig)).parse_args_and_config()
    env = functools.partial(
        WebShopEnv,
        num_products=script_args.num_products,
        reward=script_args.reward,
        success_reward=script_args.success_reward,
        data_dir=script_args.data_dir,
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
