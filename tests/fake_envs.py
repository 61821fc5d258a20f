"""Deterministic environments for the tests (importable by spawned worker processes)."""

from trl_aem.envs import StepResult
from trl_aem.envs.keyword import KeywordEnv


class SpreadEnv(KeywordEnv):
    """KeywordEnv whose step reward is ``len(response) % 3``: random tiny models get reward spread."""

    def step(self, action: str) -> StepResult:
        result = super().step(action)
        return StepResult(result.observation, float(len(action) % 3), result.done, result.info)


class FixedTurnsEnv(SpreadEnv):
    """Every task lasts exactly ``turns`` turns."""

    turns = 3

    def tasks(self, split):
        return [{"words": ["apple", "mug", "lamp", "desk"][: self.turns]} for _ in range(16)]


class OneTurnEnv(FixedTurnsEnv):
    turns = 1


def make_faulty_tasks(fault: str, fault_turn: int = 0, count: int = 8, faulty: int = 2) -> list[dict]:
    """``count`` two-word tasks; task number ``faulty`` faults at step ``fault_turn``."""
    return [
        {"words": ["apple", "mug"], "fault": fault if i == faulty else "", "fault_turn": fault_turn}
        for i in range(count)
    ]
