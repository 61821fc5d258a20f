"""Multi-turn training: from a batch of tasks to the rows TRL's loss consumes, top to bottom.

Data path of one generation batch (``AEMTrainer._generate_and_score_completions`` drives it):

1. **Tasks** come from ``train_dataset`` rows (or ``env().tasks("train")``, see :func:`env_datasets`); each row is
   repeated ``num_generations`` times by TRL's sampler, so the ``G`` episodes of one task form one GRPO group.
2. **Episodes**: :meth:`MultiTurnMixin.play_episodes` runs them all together in the
   :class:`~trl_aem.rollout.engine.RolloutEngine` (one batched ``generate`` per turn through TRL's
   ``_generate_single_turn``, environment steps in the :class:`~trl_aem.envs.EnvPool`). Every
   :class:`~trl_aem.rollout.episode.Turn` keeps its response tokens with the entropies and log-probs recorded while
   sampling: the one source of AEM's statistic for environment rows.
3. **Rows**:

   * trajectory mode (one row per episode): TRL's own ``rollout_func`` path runs (:meth:`_trajectory_rollout`,
     registered once at construction): observation tokens are in the completion with ``env_mask = 0``, so old and
     reference log-probs, vLLM importance sampling, rewards and advantages are TRL's code;
   * step mode (one row per turn, a variable count): :meth:`_score_step_rows` scores whole episodes with TRL's
     reward machinery and advantage formula (:mod:`trl_aem.trl_compat`), then makes one row per turn.

4. **Alpha** (``AEMTrainer._modulate_advantages``): the trainer splits rows into response spans, normalises each
   span's mean token entropy within its group and returns ``(B, T)`` advantages ``A * alpha``.
5. **Loss**: TRL's ``_compute_loss``; in step mode a training step's rows run in micro-batches
   (:meth:`MultiTurnMixin.training_step`), each weighted so the summed gradient is the one-batch gradient.

Faulted episodes (an environment error or timeout) are not the policy's doing: their reward is unscorable (``None``
from :func:`env_return`, so TRL leaves them out of the group baseline and gives them advantage 0) and all their
tokens are masked out of the loss. Episodes truncated by the context limit (trajectory mode) keep their reward in
the baseline but are masked, as DAPO's overlong filtering does. Both are counted (``env/errors``, ``env/timeouts``,
``env/truncated``).

The mixin expects from the trainer class it is mixed into (``AEMTrainer``): ``_capture``, the
:class:`~trl_aem.rollout.capture.RolloutCapture` of the batch being generated, and TRL's ``GRPOTrainer`` attributes.
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
from transformers import Trainer

from ..distributed import gather_ragged
from ..envs.pool import EnvPool
from ..gigpo import anchor_key, default_state_key, discounted_returns, step_advantages
from ..trl_compat import (
    group_advantages,
    has_recompute_pass,
    importance_sampling_ratio,
    log_reward_metrics,
    micro_batch_weight,
    reference_logps,
    split_rows,
    take_rows,
)
from .capture import RolloutCapture, capturing
from .engine import Generated, RolloutEngine
from .episode import Episode, Turn
from .prompts import ChatFormatter
from .rows import episode_metrics, pad_rows
from .settings import RolloutSettings

__all__ = ["MultiTurnMixin", "RowGroups", "env_datasets", "env_return", "tasks_dataset"]

TASK_COLUMN = "task_json"
# consecutive training generation batches in which every episode faulted before the run stops: one such batch
# happens (a flaky service); several in a row mean the environment cannot run at all
MAX_FAULTED_BATCHES = 3
_PLACEHOLDER_PROMPT = [{"role": "user", "content": ""}]


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
    """Reward function #0 of every environment run: the episode return (sum of step rewards minus the
    invalid-action penalty); ``None`` for a faulted episode (unscorable, advantage 0)."""
    return list(env_return)


@dataclass
class EnvDescription:
    """What the trainer reads once from a probe instance of the environment."""

    train_dataset: Any
    eval_dataset: Any
    system_prompt: str | None
    history_observation: Callable[[str], str] | None
    state_key: Callable[[str], Any] | None


def env_datasets(env: Callable[[], Any], train_dataset, eval_dataset, *, needs_eval: bool) -> EnvDescription:
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


@dataclass
class RowGroups:
    """Per training row: the GRPO group (task) and the trajectory (episode) it belongs to, as global ids."""

    group: torch.Tensor
    trajectory: torch.Tensor


# ---------------------------------------------------------------------------------------------- the mixin
class MultiTurnMixin:
    """The multi-turn methods of :class:`~trl_aem.AEMTrainer` (active when it was given ``env``)."""

    _capture: RolloutCapture | None
    _env_pool: EnvPool | None = None
    _micro_weight = 1.0  # step mode: the weight of the micro-batch being run (see `training_step`)
    _faulted_batches = 0  # consecutive training batches whose every episode faulted

    def _setup_env(self, env: Callable[[], Any], description: EnvDescription) -> None:
        args = self.args
        self.env_factory = env
        self._formatter = ChatFormatter(
            self._tokenizer,
            args.history_length,
            self.chat_template_kwargs,
            history_observation=description.history_observation,
        )
        self._system_prompt = description.system_prompt
        self._state_key = description.state_key or default_state_key  # GiGPO's anchor state of an observation
        self.last_episodes: list[Episode] = []  # the latest generation batch's episodes, for inspection

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

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.close_environments()

    # ---------------------------------------------------------------- episodes
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
        with capturing(self):  # the turns' token statistics are recorded while sampling
            episodes = engine.run(tasks, [i // num_generations for i in indices], indices)
        self._log_env_metrics(episodes, mode, time.perf_counter() - started)
        self.last_episodes = episodes
        if mode == "train":
            self._stop_if_nothing_runs(episodes)
        return episodes

    def _stop_if_nothing_runs(self, episodes: list[Episode]) -> None:
        """Raise when every episode of :data:`MAX_FAULTED_BATCHES` consecutive training batches (all ranks) faulted:
        the run would otherwise go on training on nothing."""
        local = torch.tensor([sum(e.faulted for e in episodes), len(episodes)], device=self.accelerator.device)
        faulted, total = self.accelerator.gather(local).view(-1, 2).sum(dim=0).tolist()
        self._faulted_batches = self._faulted_batches + 1 if total and faulted == total else 0
        if self._faulted_batches >= MAX_FAULTED_BATCHES:
            first = next((e.error for e in episodes if e.faulted), "on another process") or ""
            raise RuntimeError(
                f"every episode of the last {MAX_FAULTED_BATCHES} generation batches ended in an environment error "
                f"or timeout, so there is nothing to train on; the first: {first.splitlines()[0]}"
            )

    def generate_turn(self, prompts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        """One batched generate call with the current policy, as the rollout engine makes each turn: through TRL's
        ``_generate_single_turn`` (transformers or vLLM), each response capped at ``max_new_tokens``, with the
        token statistics recorded while sampling (NaN where the back end gives none)."""
        with capturing(self) as capture:
            first = len(capture.segments)
            with self._turn_token_limit(max_new_tokens):
                completion_ids, logprobs = self._generate_single_turn(prompts, None, {}, 1)
            segments = capture.segments[first:]
        out = []
        for i, ids in enumerate(completion_ids):
            if i < len(segments):
                entropies, logps = segments[i].entropies, segments[i].logps
            else:  # vLLM / no statistic: entropies come from TRL's recompute pass, if at all
                entropies = logps = torch.full((len(ids),), float("nan"))
            out.append(Generated(list(ids), entropies, logps, None if logprobs is None else list(logprobs[i])))
        return out

    @contextlib.contextmanager
    def _turn_token_limit(self, max_new_tokens: int):
        """Cap one response at ``max_new_tokens`` for the generation back end TRL set up, then restore: vLLM's
        ``max_completion_length``, or transformers' ``generation_config`` and ``generation_kwargs`` (trl 1.16
        L1107-1175 create one or the other)."""
        if self.use_vllm:
            targets = [(self.vllm_generation, "max_completion_length")]
        else:
            targets = [(self.generation_config, "max_new_tokens"), (self.generation_kwargs, "max_new_tokens")]
        saved = [(owner, name, _get(owner, name)) for owner, name in targets]
        for owner, name, _ in saved:
            _set(owner, name, max_new_tokens)
        try:
            yield
        finally:
            for owner, name, value in saved:
                _set(owner, name, value)

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

    # ---------------------------------------------------------------- trajectory mode: TRL's rollout_func path
    def _trajectory_inputs(self, inputs: list[dict], capture: RolloutCapture) -> list[dict]:
        """Hand the batch's tasks to :meth:`_trajectory_rollout` through the capture; TRL's rows need a prompt."""
        capture.tasks = [task_of(row) for row in inputs]
        return [{**row, "prompt": _PLACEHOLDER_PROMPT} for row in inputs]

    def _trajectory_rollout(self, prompts: list, trainer: Any) -> dict[str, list]:
        """TRL's ``rollout_func``: one row per episode, its turns' responses and observations as the completion,
        ``env_mask`` 1 on response tokens only. Extra fields (``env_return``, ``episode``) reach reward functions."""
        capture = self._capture
        mode = "train" if self.model.training else "eval"
        episodes = self.play_episodes(capture.tasks, mode)
        capture.episodes = episodes
        eos = self._tokenizer.eos_token_id
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": []}
        out["env_return"], out["episode"], statistics = [], list(episodes), []
        for episode in episodes:
            completion, mask, sampled, entropies, logps = [], [], [], [], []
            for turn in episode.turns:
                n, m = len(turn.completion_ids), len(turn.observation_ids)
                completion += turn.completion_ids + turn.observation_ids
                mask += [1] * n + [0] * m
                sampled += list(turn.sampling_logps or [0.0] * n) + [0.0] * m
                entropies += turn.entropies.tolist() + [math.nan] * m
                logps += turn.logps.tolist() + [math.nan] * m
            if episode.faulted or episode.ending == "truncated" or not completion:
                mask = [0] * len(completion)  # no gradient: see the module docstring
            if not completion:  # reset failed: one masked token keeps the row well formed
                completion, mask, sampled, entropies, logps = [eos], [0], [0.0], [math.nan], [math.nan]
            out["prompt_ids"].append(episode.initial_prompt_ids or [eos])
            out["completion_ids"].append(completion)
            out["env_mask"].append(mask)
            out["logprobs"].append(sampled)
            out["env_return"].append(None if episode.faulted else episode.env_return)
            statistics.append((entropies, logps))
        capture.row_statistics = statistics
        if not self.use_vllm:
            out["logprobs"] = None  # sampling log-probs only matter to vLLM's importance-sampling correction
        return out

    # ---------------------------------------------------------------- step mode: one row per turn
    def _score_step_rows(self, inputs: list[dict], capture: RolloutCapture) -> tuple[dict[str, Any], RowGroups]:
        """Play the batch's episodes, score them with TRL's reward and advantage code, and return one training row
        per turn of every healthy episode (the episode's advantage on each), with the old and reference log-probs
        TRL's loss needs."""
        args, device = self.args, self.accelerator.device
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        episodes = self.play_episodes([task_of(row) for row in inputs], mode)
        capture.episodes = episodes

        # rewards: TRL's reward machinery on whole episodes (env_return first, then the user's functions)
        rows_in = [
            {**row, "env_return": None if e.faulted else e.env_return, "episode": e}
            for row, e in zip(inputs, episodes, strict=True)
        ]
        prompts = [e.messages()[:2] for e in episodes]
        completions = [[{"role": "assistant", "content": "\n".join(t.response for t in e.turns)}] for e in episodes]
        completion_ids = [sum((t.completion_ids for t in e.turns), []) for e in episodes]
        rewards_per_func = self._calculate_rewards(rows_in, prompts, completions, completion_ids)
        unscorable = torch.isnan(rewards_per_func).all(dim=1)
        rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        advantages, std, _ = group_advantages(rewards, num_generations, self.scale_rewards)
        rank = self.accelerator.process_index
        local_advantages = advantages[rank * len(inputs) : (rank + 1) * len(inputs)].cpu()
        metrics = self._metrics[mode]
        log_reward_metrics(metrics, self.reward_func_names, rewards_per_func, rewards, std)

        # rows: every turn of every healthy episode, with its episode's advantage (GRPO) or GiGPO's two-level one
        turns = [
            (episode, turn, float(advantage))
            for episode, advantage in zip(episodes, local_advantages, strict=True)
            if not episode.faulted
            for turn in episode.turns
        ]
        if args.advantage_estimator == "gigpo":
            turns = self._gigpo_turn_advantages(turns, mode)
        turns = [(episode, turn, advantage) for episode, turn, advantage in turns if turn.completion_ids]
        # masked filler rows (no loss, no span) so that every one of the `steps_per_generation` training steps gets
        # at least one row even when faults left this rank (almost) nothing to learn from
        fillers = max(0, (args.steps_per_generation if mode == "train" else 1) - len(turns))
        eos = self._tokenizer.eos_token_id
        prompt_rows = [t.prompt_ids for _, t, _ in turns] + [[eos]] * fillers
        completion_rows = [t.completion_ids for _, t, _ in turns] + [[eos]] * fillers
        sampled_rows = [t.sampling_logps or [0.0] * len(t.completion_ids) for _, t, _ in turns] + [[0.0]] * fillers
        real = torch.tensor([1] * len(turns) + [0] * fillers)
        groups = RowGroups(
            group=torch.tensor([e.group for e, _, _ in turns] + [-1] * fillers),
            trajectory=torch.tensor([e.index for e, _, _ in turns] + [-1] * fillers),
        )
        capture.row_statistics = [(t.entropies.tolist(), t.logps.tolist()) for _, t, _ in turns] + [
            ([math.nan], [math.nan])
        ] * fillers

        pad_id = self._tokenizer.pad_token_id
        prompt_ids = pad_rows(prompt_rows, pad_id, "left").to(device)
        prompt_mask = pad_rows([[1] * len(r) for r in prompt_rows], 0, "left").to(device)
        completion_ids_t = pad_rows(completion_rows, pad_id, "right").to(device)
        attended = pad_rows([[1] * len(r) for r in completion_rows], 0, "right").to(device)
        completion_mask = attended * real[:, None].to(device)
        lengths = self.accelerator.gather(torch.tensor([len(r) for r in completion_rows], device=device).float())
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/max_length"].append(lengths.max().item())
        metrics["env/rows"].append(float(self.accelerator.gather(real.sum().to(device)).sum()))
        output: dict[str, Any] = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids_t,
            "completion_mask": completion_mask,
            "advantages": torch.tensor([a for _, _, a in turns] + [0.0] * fillers, device=device),
            "num_items_in_batch": self.accelerator.gather(completion_mask.sum()).sum(),
        }

        # old and reference log-probs, as GRPOTrainer._generate_and_score_completions computes them
        input_ids = torch.cat([prompt_ids, completion_ids_t], dim=1)
        attention_mask = torch.cat([prompt_mask, attended], dim=1)
        logits_to_keep = completion_ids_t.size(1)
        batch_size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size
        with torch.no_grad():
            if has_recompute_pass(self):
                old, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                )
                output["old_per_token_logps"] = old
                if self.use_vllm and self.vllm_importance_sampling_correction:
                    output["importance_sampling_ratio"] = importance_sampling_ratio(
                        old,
                        pad_rows(sampled_rows, 0.0, "right", dtype=torch.float32).to(device),
                        completion_mask,
                        self.vllm_importance_sampling_mode,
                        self.vllm_importance_sampling_clip_min,
                        self.vllm_importance_sampling_clip_max,
                    )
            if self.beta != 0.0:
                output["ref_per_token_logps"] = reference_logps(
                    self, input_ids, attention_mask, logits_to_keep, batch_size
                )
        return output, groups

    def _gigpo_turn_advantages(
        self, turns: list[tuple[Episode, Turn, float]], mode: str
    ) -> list[tuple[Episode, Turn, float]]:
        """GiGPO (:mod:`trl_aem.gigpo`): add ``omega * A_step`` to each turn's episode advantage. Anchor groups may
        hold turns of several ranks (a task's episodes can straddle processes), so the turns' (task, state, return)
        are gathered, the step advantages computed on all of them identically on every rank, and this rank's taken
        back."""
        args, penalty = self.args, self.args.invalid_action_penalty
        fields, returns, position = [], {}, {}
        for episode, _, _ in turns:  # turns come episode by episode, in order
            if id(episode) not in returns:
                rewards = [t.reward - penalty * t.invalid for t in episode.turns]  # sums to the env return
                returns[id(episode)] = discounted_returns(rewards, args.gigpo_gamma)
            t = position[id(episode)] = position.get(id(episode), -1) + 1
            observation = episode.first_observation if t == 0 else episode.turns[t - 1].observation
            fields.append(
                [float(episode.group), float(anchor_key(self._state_key(observation))), returns[id(episode)][t]]
            )
        full, counts = gather_ragged(torch.tensor(fields, dtype=torch.float64).view(-1, 3), self.accelerator)
        full = full.cpu()
        steps = step_advantages(full[:, 0].long(), full[:, 1].long(), full[:, 2], scale=self.scale_rewards != "none")
        start = int(counts[: self.accelerator.process_index].sum())
        mine = steps.advantage[start : start + len(turns)]
        if full.size(0):
            metrics = self._metrics[mode]
            groups = float(steps.group_size.double().reciprocal().sum())  # each group's turns add up to 1
            metrics["gigpo/anchor_group_size"].append(full.size(0) / groups)
            metrics["gigpo/step_adv_std"].append(float(steps.advantage.std(unbiased=False)))
            metrics["gigpo/shared_frac"].append(float((steps.group_size > 1).double().mean()))
        return [
            (episode, turn, advantage + args.gigpo_omega * float(step))
            for (episode, turn, advantage), step in zip(turns, mine, strict=True)
        ]

    # ---------------------------------------------------------------- step mode: variable row counts
    def _prepare_inputs(self, generation_batch):
        """``GRPOTrainer._prepare_inputs`` (trl 1.16 L1522-1551) in step mode, its ``split_tensor_dict`` (equal
        chunks, remainder dropped) replaced by :func:`~trl_aem.trl_compat.split_rows`, which keeps every row."""
        if self.env_factory is None or self.args.rollout_mode != "step" or not self.model.training:
            return super()._prepare_inputs(generation_batch)
        if isinstance(generation_batch, dict) and "completion_ids" in generation_batch:
            return generation_batch  # a micro-batch of rows already prepared by `training_step`
        from trl.trainer.utils import shuffle_sequence_dict

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            if "pixel_values" in batch:  # TRL splits images by grid here (split_pixel_values_by_grid)
                raise NotImplementedError("rollout_mode='step' does not support image inputs; use 'trajectory'")
            self._buffered_inputs = split_rows(shuffle_sequence_dict(batch), self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Step mode: a training step may hold many turn rows; they run in micro-batches of at most
        ``per_device_train_batch_size`` rows (the same count on every rank, so DDP backward calls pair up), each
        weighted so the summed gradient equals the one-batch loss's gradient. Replaces
        ``GRPOTrainer.training_step`` (trl 1.16 L1510-1519) and calls ``Trainer.training_step`` per micro-batch."""
        if self.env_factory is None or self.args.rollout_mode != "step":
            return super().training_step(model, inputs, num_items_in_batch)
        started = time.perf_counter()
        # as Trainer.training_step does before preparing inputs: after an evaluation the model is still in eval
        # mode, and generation would otherwise run (and log) as an eval batch
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        rows = inputs["completion_ids"].size(0)
        chunks = split_rows(inputs, self._sync_active(max(1, math.ceil(rows / self.args.per_device_train_batch_size))))
        total_tokens = int(inputs["completion_mask"].sum())
        loss = torch.zeros((), device=self.accelerator.device)
        for i, chunk in enumerate(chunks):
            n = chunk["completion_ids"].size(0)
            if n == 0:  # this rank has fewer rows than another: a masked row keeps the backward calls paired
                chunk = take_rows(inputs, slice(0, 1))
                chunk["completion_mask"] = torch.zeros_like(chunk["completion_mask"])
                self._micro_weight = 0.0
            else:
                tokens = int(chunk["completion_mask"].sum())
                self._micro_weight = micro_batch_weight(self.loss_type, n, rows, tokens, total_tokens)
            sync = i == len(chunks) - 1 or self.accelerator.num_processes == 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(model):
                loss = loss + Trainer.training_step(self, model, chunk, num_items_in_batch)
        self._micro_weight = 1.0
        # GRPOTrainer.training_step's bookkeeping, once per step
        self._step += 1
        self._current_train_step_time += time.perf_counter() - started
        if self._step % self.current_gradient_accumulation_steps == 0:
            self._metrics["train"]["step_time"].append(self._current_train_step_time)
            self._current_train_step_time = 0.0
        return loss

    def _compute_loss(self, model, inputs):
        """``GRPOTrainer._compute_loss`` (trl 1.16 L3020-3292) scaled by the micro-batch weight (1 outside step
        mode)."""
        return super()._compute_loss(model, inputs) * self._micro_weight


def _get(owner: Any, name: str) -> Any:
    return owner[name] if isinstance(owner, dict) else getattr(owner, name)


def _set(owner: Any, name: str, value: Any) -> None:
    if isinstance(owner, dict):
        owner[name] = value
    else:
        setattr(owner, name, value)
