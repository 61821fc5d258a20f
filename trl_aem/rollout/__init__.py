"""Multi-turn rollouts: the batched episode engine, its settings, prompts, and training rows for TRL's loss.

- :mod:`.engine`: :class:`RolloutEngine`, all episodes of a batch together, one ``generate`` call per turn;
- :mod:`.settings`: :class:`RolloutSettings`, the rollout defaults and what checkpoints record;
- :mod:`.episode` / :mod:`.prompts`: turns, episodes and their chat-template prompts (trajectory and step mode);
- :mod:`.capture`: what one generation batch leaves for AEM;
- :mod:`.training`: the trainer's multi-turn side, from tasks to rows (``tasks_dataset``);
- :mod:`.demos`: expert demonstrations for SFT cold starts (``collect_demonstrations``).
"""

from .engine import Generated, RolloutEngine
from .episode import Episode, Turn
from .prompts import ChatFormatter
from .settings import RolloutSettings

__all__ = [
    "ChatFormatter",
    "Episode",
    "Generated",
    "RolloutEngine",
    "RolloutSettings",
    "Turn",
    "collect_demonstrations",
    "tasks_dataset",
]


def __getattr__(name: str):
    # the training side imports TRL and datasets: only when asked for
    if name == "tasks_dataset":
        from .training import tasks_dataset

        return tasks_dataset
    if name == "collect_demonstrations":
        from .demos import collect_demonstrations

        return collect_demonstrations
    raise AttributeError(f"module 'trl_aem.rollout' has no attribute {name!r}")
