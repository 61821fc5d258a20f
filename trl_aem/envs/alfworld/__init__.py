"""ALFWorld: household tasks in text, real (``alfworld-download``) or generated offline from ALFRED's floor plans.

- :mod:`.env`: :class:`AlfWorldEnv` (the TextEnv), played by TextWorld's PDDL engine with ALFWorld's wrappers;
- :mod:`.generator`: offline ALFRED-style games and their splits;
- :mod:`.expert`: the expert that replans from the game's true facts.
"""

from .env import AlfWorldEnv, real_tasks
from .generator import SPLITS, TASK_TYPES, generate_game, offline_tasks

__all__ = ["SPLITS", "TASK_TYPES", "AlfWorldEnv", "generate_game", "offline_tasks", "real_tasks"]
