"""Building blocks the example scripts share: model loading with the offline ``"tiny"`` option, and an
SFT cold start on expert demonstrations with TRL's ``SFTTrainer``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["make_policy", "sft_cold_start", "train_and_save"]


def make_policy(model_name_or_path: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``AEMTrainer``: ``"tiny"`` builds a small model offline
    (:mod:`trl_aem.tiny`); anything else is passed on as a Hub id or path (tokenizer ``None``: the trainer
    loads it)."""
    if model_name_or_path != "tiny":
        return model_name_or_path, None
    from .tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    return build_model(tokenizer, seed=seed), tokenizer


def sft_cold_start(
    model: Any,
    tokenizer: Any,
    env_factory: Callable[[], Any],
    config: Any,
    num_episodes: int,
    *,
    max_steps: int | None = None,
    learning_rate: float | None = None,
) -> tuple[Any, Any]:
    """Fit ``model`` on ``num_episodes`` expert episodes of the environment's train tasks (one epoch, or
    ``max_steps`` steps), in the RL run's rollout mode and history length (so SFT and RL see the same
    prompts); returns the fitted ``(model, tokenizer)``. ``learning_rate`` defaults to ``SFTConfig``'s, which
    suits pretrained models; a randomly initialised one needs about 3e-3. Outputs go to ``<output_dir>/sft``."""
    from trl import SFTConfig, SFTTrainer

    from .envs import collect_demonstrations

    demos = collect_demonstrations(
        env_factory,
        env_factory().tasks("train")[:num_episodes],
        rollout_mode=config.rollout_mode,
        history_length=config.history_length,
        max_turns=config.max_turns,
    )
    sft = SFTTrainer(
        model,
        args=SFTConfig(
            output_dir=os.path.join(config.output_dir, "sft"),
            num_train_epochs=1,
            max_steps=max_steps if max_steps is not None else -1,
            **({"learning_rate": learning_rate} if learning_rate is not None else {}),
            save_strategy="no",
            report_to=config.report_to,
            use_cpu=config.use_cpu,
            bf16=config.bf16,
            fp16=config.fp16,
            seed=config.seed,
        ),
        train_dataset=demos,
        processing_class=tokenizer,
    )
    sft.train()
    return sft.model, sft.processing_class


def train_and_save(model: Any, env_factory: Callable[[], Any], config: Any, tokenizer: Any = None):
    """Train ``AEMTrainer`` on the environment, save the final model (and card) to ``output_dir`` and, with
    ``push_to_hub=True``, push it; returns the trainer."""
    from .trainer import AEMTrainer

    trainer = AEMTrainer(model, env_factory, config, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(config.output_dir)
    if config.push_to_hub:
        trainer.push_to_hub()
    return trainer
