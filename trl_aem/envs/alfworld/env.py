"""``AlfWorldEnv``: ALFWorld's household tasks in text, real or generated offline, one episode at a time.

Both sources are played by the same engine ALFWorld uses: TextWorld's PDDL environment (Fast Downward)
wrapped in ALFWorld's ``AlfredDemangler`` and ``AlfredInfos``, over the ALFRED domain and grammar of the
``alfworld`` wheel. So observations (``You arrive at countertop 1. On the countertop 1, you see ...``),
admissible commands and the win condition are ALFWorld's own.

* Real games: ``AlfWorldEnv(data_dir=os.environ["ALFWORLD_DATA"])`` after ``alfworld-download``. Tasks are
  the ``json_2.1.1/<split>/**/game.tw-pddl`` files with ALFWorld's filters (no movable-receptacle or sliced
  variants, solvable games only, the six task types). Splits: ``train``, ``eval_in_distribution``
  (``valid_seen``) and ``eval_out_of_distribution`` (``valid_unseen``); ``eval`` means the latter, as in
  verl-agent.
* Offline (default): games generated from ALFRED's floor plans by :mod:`trl_aem.envs.alfworld.generator`.

Prompts follow verl-agent: the system prompt asks for reasoning in ``<think>`` and one admissible action
in ``<action>``; every observation ends with the admissible actions. A response without an action, or
with an action that is not admissible, is flagged ``invalid`` (the trainer subtracts
``invalid_action_penalty``) and answered ``Nothing happens.`` as ALFWorld does. Reward: ``success_reward``
(10, the paper's protocol) when the goal is reached, which ends the episode; 0 otherwise.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from ..base import StepResult, extract_action
from .expert import WorldView, next_command
from .generator import SPLITS, TASK_TYPES, generate_game, offline_tasks

__all__ = ["AlfWorldEnv", "real_tasks"]

SYSTEM_PROMPT = (
    "You are an expert agent operating in the ALFRED embodied household environment. Each turn you see your "
    "task, what you observe, and the actions that are admissible now. First reason step by step about the "
    "situation; this reasoning MUST be enclosed in <think></think> tags. Then choose exactly one admissible "
    "action and give it inside <action></action> tags, for example <action>go to countertop 1</action>."
)
_REAL_SPLIT_DIRS = {"train": "train", "eval_in_distribution": "valid_seen", "eval_out_of_distribution": "valid_unseen"}
_ADMISSIBLE_PREFIX = "\nYour admissible actions of the current situation are: "
_HIDDEN_COMMANDS = {"help"}  # verl-agent drops it from the admissible list
# TextWorld parses the domain and grammar with tatsu on every load, and that parser is not thread-safe
# (concurrent loads fail inside tatsu); Fast Downward's translator also mutates process globals (its
# `options` module, `sys.stdout` while it runs, and `sys.argv`, which it never restores). Loads in one
# process take turns; process workers (env_worker_type="process") load in parallel.
_LOAD_LOCK = threading.Lock()


class _TranslationCache:
    """A stand-in for the ``fast_downward`` module inside TextWorld's PDDL logic whose ``pddl2sas`` remembers
    its last ``size`` results (a pure function of domain, problem and ``optimize``).

    The G episodes of a GRPO group play the same game, and every ``PddlState`` translates its problem twice
    (``textworld/envs/pddl/logic/__init__.py``: ``fast_downward.pddl2sas(...)`` plain and ``optimize=True``),
    so without it a group repeats the same ~1 s translation 2G times. ``PddlState`` only reads the translated
    task. Every other attribute is the real module's.
    """

    def __init__(self, module, size: int = 32):
        self._module, self._size = module, size
        self._results: OrderedDict[tuple, tuple] = OrderedDict()

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def pddl2sas(self, domain: str, problem: str, verbose: bool = False, optimize: bool = False):
        key = (domain, problem, bool(optimize))
        if key in self._results:
            self._results.move_to_end(key)
            return self._results[key]
        result = self._module.pddl2sas(domain, problem, verbose=verbose, optimize=optimize)
        self._results[key] = result
        if len(self._results) > self._size:
            self._results.popitem(last=False)
        return result


def _install_translation_cache() -> None:
    from textworld.envs.pddl import logic

    if not isinstance(logic.fast_downward, _TranslationCache):
        logic.fast_downward = _TranslationCache(logic.fast_downward)


class _ParseCache:
    """A memoizing, thread-safe stand-in for a TextWorld module's ``_parse_and_convert(text, rule_name=...)``.

    Every ``step`` re-parses the same grammar templates and rule conditions with tatsu
    (``textworld/envs/pddl/textgen/__init__.py``: ``ContextSensitiveGrammar.derive`` and
    ``textworld/logic/__init__.py``: ``Rule.parse_conjunctive_query``): about 60% of a step's time, and tatsu's
    module-level parsers are not thread-safe. Results are a pure function of the arguments; callers mutate
    what they get (symbols receive a context), so each call returns a deep copy of the cached result.
    """

    def __init__(self, parse, size: int = 4096):
        self._parse = functools.lru_cache(maxsize=size)(parse)
        self._lock = threading.Lock()  # one parse at a time: the lru_cache alone lets misses run concurrently

    def __call__(self, *args, **kwargs):
        with self._lock:
            result = self._parse(*args, **kwargs)
        return copy.deepcopy(result)


def _install_parse_caches() -> None:
    import textworld.logic
    from textworld.envs.pddl import textgen

    for module in (textgen, textworld.logic):
        if not isinstance(module._parse_and_convert, _ParseCache):
            module._parse_and_convert = _ParseCache(module._parse_and_convert)


def _split_name(split: str) -> str:
    split = {"eval": "eval_out_of_distribution"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {('eval', *SPLITS)}, got {split!r}")
    return split


def real_tasks(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """The real ALFWorld games of a split under ``data_dir`` (the ``ALFWORLD_DATA`` folder), filtered the
    way ALFWorld's ``AlfredTWEnv.collect_game_files`` does, in sorted (deterministic) order."""
    root = Path(data_dir).expanduser() / "json_2.1.1" / _REAL_SPLIT_DIRS[_split_name(split)]
    if not root.is_dir():
        raise FileNotFoundError(
            f"no ALFWorld games at {root}: run `alfworld-download` and pass its folder (ALFWORLD_DATA) as "
            "data_dir, or leave data_dir unset to play generated games offline"
        )
    tasks = []
    for traj_path in sorted(root.rglob("traj_data.json")):
        folder = traj_path.parent
        relative = folder.relative_to(root).as_posix()
        game_path = folder / "game.tw-pddl"
        if "movable" in relative or "Sliced" in relative or not game_path.is_file():
            continue
        traj = json.loads(traj_path.read_text())
        if traj.get("task_type") not in TASK_TYPES or not json.loads(game_path.read_text()).get("solvable"):
            continue
        params = traj.get("pddl_params", {})
        tasks.append(
            {
                "task_id": f"{_split_name(split)}/{relative}",
                "gamefile": str(game_path),
                "task_type": traj["task_type"],
                "targets": {k: params.get(k) or "" for k in ("object_target", "parent_target", "toggle_target")},
            }
        )
    if not tasks:
        raise FileNotFoundError(f"no playable ALFWorld game (traj_data.json + solvable game.tw-pddl) under {root}")
    return tasks


def _engine_class():
    """TextWorld's ``PddlEnv`` whose first ``reset()`` after ``load()`` reuses the state ``load()`` built.

    TextWorld translates the problem with Fast Downward in ``load`` (to name the entities) and again in
    ``reset`` (``pddl.py``: ``self._pddl_state = pddl_logic.PddlState(...)``); the translation dominates an
    episode's cost (about 1 s per pass in a 30-receptacle kitchen), so the override below skips the second.
    The rest of ``reset`` is TextWorld's, unchanged.
    """
    from textworld.core import GameState
    from textworld.envs import PddlEnv

    class ReusingPddlEnv(PddlEnv):
        def load(self, filename_or_data) -> None:
            super().load(filename_or_data)
            self._fresh = True

        def reset(self):
            if not getattr(self, "_fresh", False):
                return super().reset()
            self._fresh = False  # the state from load() has never been stepped: play it
            self.prev_state, self.state = None, GameState()
            self._last_action, self._moves = None, 0
            context = {
                "state": self._pddl_state,
                "facts": list(self._pddl_state.facts),
                "variables": {},
                "mapping": {},
                "entity_infos": self._entity_infos,
            }
            self.state.feedback = self._logic.grammar.derive("#intro#", context)
            self.state.raw = self.state.feedback
            self._gather_infos()
            return self.state

    return ReusingPddlEnv


class AlfWorldEnv:
    """One ALFWorld episode at a time (see the module docstring).

    Args:
        data_dir: the ``ALFWORLD_DATA`` folder of real games; ``None`` plays generated games offline.
        num_train_tasks / num_eval_tasks: how many generated tasks ``tasks(split)`` returns (offline).
        task_seed: seed of the offline task streams.
        task_types: restrict to some of ALFWorld's six task types.
        max_object_classes: offline games keep only this many of the room's object classes (faster loads,
            fewer distractors); ``None`` places all of them as ALFRED does.
        success_reward: reward when the goal is reached.
        show_admissible: end each observation with the admissible actions (verl-agent's prompt).
        expert: ``"state"`` (replans from the true facts every step; falls back to the planner when its
            command is not admissible) or ``"planner"`` (TextWorld's Fast Downward every step; optimal but
            slow on ``pick_two`` rooms).
    """

    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        num_train_tasks: int = 3000,
        num_eval_tasks: int = 200,
        task_seed: int = 0,
        task_types: tuple[str, ...] | list[str] = TASK_TYPES,
        success_reward: float = 10.0,
        show_admissible: bool = True,
        expert: str = "state",
        max_object_classes: int | None = None,
    ):
        if expert not in ("state", "planner"):
            raise ValueError(f"expert must be 'state' or 'planner', got {expert!r}")
        unknown = set(task_types) - set(TASK_TYPES)
        if unknown or not task_types:
            raise ValueError(f"task_types must be a non-empty subset of {TASK_TYPES}, got {list(task_types)}")
        for name, value in (("num_train_tasks", num_train_tasks), ("num_eval_tasks", num_eval_tasks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.num_tasks = {"train": num_train_tasks, "eval": num_eval_tasks}
        self.task_seed, self.task_types = task_seed, tuple(task_types)
        self.success_reward, self.show_admissible, self.expert = success_reward, show_admissible, expert
        if max_object_classes is not None and (not isinstance(max_object_classes, int) or max_object_classes < 1):
            raise ValueError(f"max_object_classes must be a positive integer or None, got {max_object_classes!r}")
        self.max_object_classes = max_object_classes
        self._engine = self._pddl = None
        self._state = None
        self.task: dict = {}

    # ---------------------------------------------------------------- TextEnv
    def tasks(self, split: str) -> list[dict]:
        """Task rows of ``split`` (``train``, ``eval`` = ``eval_out_of_distribution``, ``eval_in_distribution``)."""
        split = _split_name(split)
        if self.data_dir is not None:
            return [t for t in real_tasks(self.data_dir, split) if t["task_type"] in self.task_types]
        count = self.num_tasks["train" if split == "train" else "eval"]
        return offline_tasks(
            split, count, seed=self.task_seed, task_types=self.task_types, max_object_classes=self.max_object_classes
        )

    def reset(self, task: dict) -> str:
        if "gamefile" in task:
            game = task["gamefile"]
        else:
            missing = {"scene", "task_type", "seed"} - set(task)
            if missing:
                raise ValueError(f"an offline ALFWorld task needs {sorted(missing)} (rows come from tasks(split))")
            generated = generate_game(
                int(task["scene"]), task["task_type"], int(task["seed"]), task.get("max_object_classes")
            )
            if generated is None:
                raise ValueError(f"FloorPlan{task['scene']} cannot host a {task['task_type']} task")
            game = generated.game
            task = {**task, "targets": generated.targets}
        self.task = task
        self._load(game)
        return self._observation(self._state.feedback.strip())

    def step(self, action: str) -> StepResult:
        if self._state is None:
            raise RuntimeError("reset() must be called before step()")
        command = extract_action(action)
        admissible = self._admissible()
        command = None if command is None else " ".join(command.lower().rstrip(".").split())
        if command is None or command not in admissible:
            # ALFWorld answers inadmissible commands this way; the state does not change
            return StepResult(self._observation("Nothing happens."), 0.0, False, self._info(invalid=True))
        self._state, _, _ = self._engine.step(command)
        won = bool(self._state["won"])
        reward = self.success_reward if won else 0.0
        return StepResult(self._observation(self._state.feedback.strip()), reward, won, self._info(invalid=False))

    def expert_action(self) -> str | None:
        """The next expert command as a response (``<action>...</action>``); ``None`` once the goal holds."""
        if self._state is None or self._state["won"]:
            return None
        command = None
        if self.expert == "state":
            view = WorldView.from_facts(self._state["facts"])
            command = next_command(view, self.task["task_type"], self.task["targets"])
        if command is None or command not in self._admissible():
            plan = self._pddl._pddl_state.replan(self._pddl._entity_infos)  # Fast Downward from the current state
            command = plan[0] if plan else None
        return None if command is None else f"<action>{command}</action>"

    def admissible_actions(self) -> list[str]:
        """The commands ALFWorld accepts in the current state (``help`` left out, as verl-agent does)."""
        if self._state is None:
            raise RuntimeError("reset() must be called before admissible_actions()")
        return self._admissible()

    def close(self) -> None:
        self._engine = self._pddl = self._state = None

    # ---------------------------------------------------------------- internals
    def _load(self, game) -> None:
        if self._engine is None:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

            infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True)
            self._pddl = _engine_class()(infos)
            _install_translation_cache()
            _install_parse_caches()
            self._engine = AlfredInfos(AlfredDemangler(self._pddl, shuffle=False))
        with _LOAD_LOCK:
            argv = list(sys.argv)
            try:
                self._engine.load(game)
                self._state = self._engine.reset()
            finally:
                sys.argv[:] = argv  # Fast Downward's translator overwrites it

    @staticmethod
    def history_observation(observation: str) -> str:
        """The observation without its admissible-action list: step-mode prompts list the admissible actions
        of the current observation only (verl-agent's ALFWorld prompt)."""
        return observation.split(_ADMISSIBLE_PREFIX, 1)[0]

    @staticmethod
    def state_key(observation: str) -> tuple[str, tuple[str, ...]]:
        """GiGPO's anchor state of an observation: its feedback text (whitespace collapsed) and the set of admissible
        actions, so the order TextWorld lists them in does not split one state in two."""
        feedback, _, actions = observation.partition(_ADMISSIBLE_PREFIX)
        admissible = tuple(sorted(a.strip(" '") for a in actions.strip().removesuffix(".").strip("[]").split("', '")))
        return " ".join(feedback.split()), admissible if actions else ()

    def _admissible(self) -> list[str]:
        return [c for c in self._state["admissible_commands"] if c not in _HIDDEN_COMMANDS]

    def _observation(self, feedback: str) -> str:
        if not self.show_admissible:
            return feedback
        actions = ", ".join(f"'{c}'" for c in self._admissible())
        return f"{feedback}{_ADMISSIBLE_PREFIX}[{actions}]."

    def _info(self, invalid: bool) -> dict:
        won = bool(self._state["won"])
        return {
            "success": won,
            "won": won,
            "invalid": invalid,
            "admissible": self._admissible(),
            "task_type": self.task.get("task_type"),
        }
