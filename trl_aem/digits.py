"""The built-in single-turn task of ``trl-aem train`` (``--task digits``): one a tiny model learns on CPU in minutes.

Nothing here downloads anything. The model is a random-init Qwen2-style network with a byte-level BPE
tokenizer trained on the spot (:mod:`trl_aem.tiny`); the task asks for a given digit repeated, and the
reward is the fraction of the completion's characters that are that digit. A random policy scores
about 0.05; a few dozen GRPO/AEM steps lift it visibly (the overhead benchmark trains on it).
"""

from __future__ import annotations

import random

from datasets import Dataset

__all__ = ["digit_dataset", "digit_reward"]


def digit_dataset(num_prompts: int = 64, seed: int = 0) -> Dataset:
    """Conversational prompts ``"write the digit 7 many times"`` with the target digit as a column."""
    rng = random.Random(seed)
    digits = [str(rng.randrange(10)) for _ in range(num_prompts)]
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": f"write the digit {d} many times"}] for d in digits],
            "digit": digits,
        }
    )


def digit_reward(completions: list, digit: list[str], **kwargs) -> list[float]:
    """Mean per-character credit over the completion's non-space characters (0 when empty).

    The requested digit earns 1, any other digit 0.5, anything else 0: a dense signal a random tiny
    model can climb, first towards digits, then towards the right one.
    """
    rewards = []
    for completion, target in zip(completions, digit, strict=True):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        chars = [c for c in text if not c.isspace()]
        credit = sum(1.0 if c == target else 0.5 if c.isdigit() else 0.0 for c in chars)
        rewards.append(credit / len(chars) if chars else 0.0)
    return rewards
