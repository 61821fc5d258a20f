"""Playing episodes with the trainer's policy: tasks in, finished :class:`~trl_aem.rollout.episode.Episode`\\ s out.

:class:`PlayingMixin` gives :class:`~trl_aem.AEMTrainer` its environment side, used by both rollout modes
(:mod:`.step_rows`, :mod:`.trajectory_rows`) and by evaluation: the tasks (``train_dataset`` rows, or
``env().tasks(split)``), the environment pool, one :class:`~trl_aem.rollout.engine.RolloutEngine` run per generation
batch (one batched ``generate`` per turn through :meth:`PlayingMixin.generate_turn`), the ``env/*`` metrics and the
stop when nothing runs. Every :class:`~trl_aem.rollout.episode.Turn` keeps the token entropies and log-probs
recorded while its response was sampled: the one source of AEM's statistic for environment rows.

Faulted episodes (an environment error or timeout) are not the policy's doing: their reward is unscorable (``None``
from :func:`env_return`, so TRL leaves them out of the group baseline and gives them advantage 0) and their tokens
are masked out of the loss. Both are counted (``env/errors``, ``env/timeouts``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from ..envs.pool import EnvFailedError, EnvPool
from ..gigpo import default_state_key
from ..sampling import sample_with_statistics
from ..trl_compat import temporarily
from .engine import Generated, RolloutEngine
from .episode import Episode
from .prompts import ChatFormatter
from .settings import RolloutSettings

__all__ = ["EnvDescription", "PlayingMixin", "describe_env", "env_return", "task_of", "tasks_dataset"]

TASK_COLUMN = "task_json"
# consecutive training generation batches in which every episode faulted before the run stops: one such batch
# happens (a flaky service); several in a row mean the environment cannot run at all
MAX_FAULTED_BATCHES = 3


# ---------------------------------------------------------------------------------------------- tasks and rewards
def tasks_dataset(tasks: list[dict], split: str = "train") -> Dataset:
    """A ``datasets.Dataset`` holding task dicts as JSON (one ``task_json`` column), so tasks with different keys
    or nested structures survive Arrow's schema inference intact. Use it for ``train_dataset`` / ``eval_dataset``
    whenever tasks are not flat and uniform."""
    if not tasks:
        raise ValueError(f"no {split} tasks given")
    return Dataset.from_dict({TASK_COLUMN: [json.dumps(t) for t in tasks]})


def task_of(row: dict) -> dict:
    """The task spec of a dataset row (a ``task_json`` column, or the row itself without TRL's ``prompt``)."""
    if TASK_COLUMN in row and isinstance(row[TASK_COLUMN], str):
        return json.loads(row[TASK_COLUMN])
    return {k: v for k, v in row.items() if k != "prompt"}


def env_return(completions, env_return=None, **kwargs) -> list[float | None]:
    """Reward function #0 of every environment run (logged as ``rewards/env_return``): the ``env_return`` field each
    row carries, i.e. the episode return (sum of step rewards minus the invalid-action penalty), ``None`` for a
    faulted episode (unscorable, advantage 0)."""
    return list(env_return)


@dataclass
class EnvDescription:
    """What the trainer reads once from a probe instance of the environment."""

    train_dataset: Any
    eval_dataset: Any
    system_prompt: str | None
    history_observation: Callable[[str], str] | None
    state_key: Callable[[str], Any] | None


def describe_env(env: Callable[[], Any], train_dataset, eval_dataset, *, needs_eval: bool) -> EnvDescription:
    """Tasks from the given datasets or from ``env().tasks(split)``; also reads ``env().system_prompt``,
    ``env().history_observation`` and ``env().state_key`` (see :class:`~trl_aem.envs.TextEnv`)."""
    probe = env()
    try:
        tasks = getattr(probe, "tasks", None)
        if train_dataset is None:
            if not callable(tasks):
                raise ValueError("Pass a train_dataset of task rows, or give the environment a tasks(split) method")
            train_dataset = tasks_dataset(tasks("train"), "train")
        if eval_dataset is None and needs_eval and callable(tasks):
            eval_dataset = tasks_dataset(tasks("eval"), "eval")
        return EnvDescription(
            train_dataset,
            eval_dataset,
            getattr(probe, "system_prompt", None),
            getattr(probe, "history_observation", None),
            getattr(probe, "state_key", None),
        )
    finally:
        if callable(getattr(probe, "close", None)):
            probe.close()


# ---------------------------------------------------------------------------------------------- the mixin
class PlayingMixin:
    """The environment side of :class:`~trl_aem.AEMTrainer` (active when it was given ``env``)."""

    _env_pool: EnvPool | None = None
    _faulted_batches = 0  # consecutive training batches whose every episode faulted

    def _setup_env(self, description: EnvDescription) -> None:
        """Prompt formatting, system prompt and GiGPO state key from the environment's description (after
        ``GRPOTrainer.__init__``, which loads the tokenizer)."""
        self._formatter = ChatFormatter(
            self._tokenizer,
            self.args.history_length,
            self.chat_template_kwargs,
            history_observation=description.history_observation,
        )
        self._system_prompt = description.system_prompt
        self._state_key = description.state_key or default_state_key  # GiGPO's anchor state of an observation

    def _pool(self) -> EnvPool:
        if self._env_pool is None:
            args = self.args
            timeout = math.inf if args.env_step_timeout is None else args.env_step_timeout
            self._env_pool = EnvPool(
                self.env_factory, worker_type=args.env_worker_type, max_workers=args.num_env_workers, timeout=timeout
            )
        return self._env_pool

    def close_environments(self) -> None:
        """Close every environment instance and stop their workers (``train()`` does this when it ends; a later
        ``evaluate()`` or ``play_episodes()`` starts new ones)."""
        if self._env_pool is not None:  # created on first use by `_pool()`
            self._env_pool.close()
            self._env_pool = None

    def play_episodes(self, tasks: list[dict], mode: str = "train") -> list[Episode]:
        """Play one episode per task with the current policy and the training rollout settings (this rank's share
        of a generation batch: consecutive ``num_generations`` tasks form a group), log the ``env/*`` metrics of
        ``mode`` and return the finished episodes."""
        args = self.args
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        offset = self.accelerator.process_index * len(tasks)
        indices = list(range(offset, offset + len(tasks)))
        settings = RolloutSettings.from_config(
            args, show_progress=not args.disable_tqdm and self.accelerator.is_main_process
        )
        engine = RolloutEngine(
            self._pool(),
            self._formatter,
            self.generate_turn,
            settings,
            eos_token_ids=list(self.eos_token_ids),
            sync_active=self._sync_active,
        )
        engine.system_prompt = self._system_prompt
        started = time.perf_counter()
        episodes = engine.run(tasks, [i // num_generations for i in indices], indices)
        self._log_env_metrics(episodes, mode, time.perf_counter() - started)
        self.last_episodes = episodes
        if mode == "train":
            self._stop_if_nothing_runs(episodes)
        return episodes

    def generate_turn(self, prompts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        """One batched generate call with the current policy, as the rollout engine makes each turn: TRL's
        ``_generate_single_turn`` (transformers or vLLM, :func:`~trl_aem.sampling.sample_with_statistics`), each
        response capped at ``max_new_tokens``, with the token statistics recorded while sampling (NaN where the back end gives none: vLLM's come from TRL's
        recompute pass)."""
        with self._turn_token_limit(max_new_tokens):
            completion_ids, logprobs, statistics = sample_with_statistics(self, prompts, None, {}, 1)
        out = []
        for i, ids in enumerate(completion_ids):
            if statistics is not None:
                entropies, logps = statistics[0][i, : len(ids)], statistics[1][i, : len(ids)]
            else:
                entropies = logps = torch.full((len(ids),), float("nan"))
            out.append(Generated(list(ids), entropies, logps, None if logprobs is None else list(logprobs[i])))
        return out

    @contextlib.contextmanager
    def _turn_token_limit(self, max_new_tokens: int):
        """Cap one response at ``max_new_tokens`` for the generation back end TRL set up (trl 1.16 L1107-1175 create
        one or the other): vLLM's ``max_completion_length``, or transformers' ``generation_config`` and
        ``generation_kwargs``."""
        with contextlib.ExitStack() as stack:
            if self.use_vllm:
                stack.enter_context(
                    temporarily("turn_tokens_vllm", self.vllm_generation, "max_completion_length", max_new_tokens)
                )
            else:
                stack.enter_context(
                    temporarily("turn_tokens_transformers", self.generation_config, "max_new_tokens", max_new_tokens)
                )
                stack.enter_context(
                    temporarily("turn_tokens_transformers", self.generation_kwargs, "max_new_tokens", max_new_tokens)
                )
            yield

    def _sync_active(self, local: int) -> int:
        """The largest number of running episodes over all ranks (every rank must make the same generate calls)."""
        if self.accelerator.num_processes == 1:
            return local
        counts = self.accelerator.gather(torch.tensor([local], device=self.accelerator.device))
        return int(counts.max())

    def _log_env_metrics(self, episodes: list[Episode], mode: str, seconds: float) -> None:
        stats = self.accelerator.gather(episode_metrics(episodes).to(self.accelerator.device)).cpu()
        metrics = self._metrics[mode]
        n = max(1, stats.size(0))
        turns = stats[:, 2].sum()
        metrics["env/success_rate"].append(float(stats[:, 0].mean()) if stats.numel() else 0.0)
        metrics["env/return"].append(float(stats[:, 1].mean()) if stats.numel() else 0.0)
        metrics["env/turns"].append(float(turns / n))
        metrics["env/invalid_rate"].append(float(stats[:, 3].sum() / turns) if turns > 0 else 0.0)
        metrics["env/errors"].append(float(stats[:, 4].sum()))
        metrics["env/timeouts"].append(float(stats[:, 5].sum()))
        metrics["env/truncated"].append(float(stats[:, 6].sum()))
        metrics["env/rollout_seconds"].append(seconds)

    def _stop_if_nothing_runs(self, episodes: list[Episode]) -> None:
        """Raise when every episode of :data:`MAX_FAULTED_BATCHES` consecutive training batches (all ranks) faulted:
        the run would otherwise go on training on nothing."""
        local = torch.tensor([sum(e.faulted for e in episodes), len(episodes)], device=self.accelerator.device)
        faulted, total = self.accelerator.gather(local).view(-1, 2).sum(dim=0).tolist()
        self._faulted_batches = self._faulted_batches + 1 if total and faulted == total else 0
        if self._faulted_batches >= MAX_FAULTED_BATCHES:
            first = next((e.error for e in episodes if e.faulted), "on another process") or ""
            raise EnvFailedError(
                f"every episode of the last {MAX_FAULTED_BATCHES} generation batches ended in an environment error "
                f"or timeout, so there is nothing to train on; the first: {first.splitlines()[0]}"
            )


def episode_metrics(episodes: list[Episode]) -> torch.Tensor:
    """Per-episode ``[success, return, turns, invalid turns, error, timeout, truncated]`` (float, for gathering)."""
    return torch.tensor(
        [
            [
                float(e.success),
                e.env_return,
                len(e.turns),
                e.num_invalid,
                float(e.ending == "error"),
                float(e.ending == "timeout"),
                float(e.ending == "truncated"),
            ]
            for e in episodes
        ],
        dtype=torch.float64,
    ).view(-1, 7)
