"""The multi-turn rollout engine: batched episodes, turn spans, trajectory and step rows."""

from .engine import Generated, RolloutEngine
from .episode import ENDINGS, Episode, Turn
from .prompts import ChatFormatter
from .settings import RolloutSettings

__all__ = ["ChatFormatter", "ENDINGS", "Episode", "Generated", "RolloutEngine", "RolloutSettings", "Turn"]
