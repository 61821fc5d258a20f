"""Multi-turn training through AEMTrainer: a trainer that keeps each generation batch's output, a fast config."""

import math

import torch

from trl_aem import AEMTrainer


class Recording(AEMTrainer):
    """Keeps every generation batch's output (what TRL's loss consumes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs, self.episodes = [], []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.outputs.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in output.items()})
        self.episodes.append(self.last_episodes)
        return output


def logged(trainer, key):
    return [log[key] for log in trainer.state.log_history if key in log]


def assert_every_logged_value_is_a_finite_number(trainer):
    """What reaches loggers (W&B, TensorBoard, the card's curves) is a number: no None, NaN or inf."""
    bad = {
        (log.get("step"), key): value
        for log in trainer.state.log_history
        for key, value in log.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    }
    assert not bad, bad
