"""Multi-turn rollouts: the batched episode engine, its settings, prompts, and the training rows of each mode.

- :mod:`.engine`: :class:`RolloutEngine`, all episodes of a batch together, one ``generate`` call per turn;
- :mod:`.settings`: :class:`RolloutSettings`, the rollout defaults and what checkpoints record;
- :mod:`.episode` / :mod:`.prompts`: turns, episodes and their chat-template prompts (trajectory and step mode);
- :mod:`.playing`: the trainer's environment side: tasks, the pool, playing a batch's episodes (``tasks_dataset``);
- :mod:`.step_rows` / :mod:`.trajectory_rows`: one row per turn / per episode, from episodes to TRL's loss;
- :mod:`.capture`: the token statistics of a batch that TRL's own code generates;
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
        from .playing import tasks_dataset

        return tasks_dataset
    if name == "collect_demonstrations":
        from .demos import collect_demonstrations

        return collect_demonstrations
    raise AttributeError(f"module 'trl_aem.rollout' has no attribute {name!r}")
