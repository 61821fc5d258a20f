"""``AEMTrainer``'s multi-turn side: tasks, the environment pool, the rollout engine, rows for TRL's loss.

Trajectory mode goes through TRL's own ``rollout_func`` path (one row per episode, observation tokens in
the completion with ``env_mask = 0``), so old/ref log-probs, vLLM importance sampling, rewards and
advantages are TRL's code. Step mode (one row per turn, variable count) is scored here with TRL's
advantage formula, then micro-batched in :meth:`EnvTrainingMixin.training_step`.

Faulted episodes (an environment error or timeout) are not the policy's doing: their reward is
unscorable (``None`` from the ``env_return`` reward, so TRL leaves them out of the group baseline and
gives them advantage 0) and all their tokens are masked out of the loss. Episodes truncated by the
context limit (trajectory mode) keep their reward in the baseline but are masked, as DAPO's overlong
filtering does. Both are counted (``env/errors``, ``env/timeouts``, ``env/truncated``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer
from trl.trainer.utils import nanstd

from ..envs.pool import EnvPool
from .engine import Generated, RolloutEngine
from .episode import Episode
from .prompts import ChatFormatter
from .rows import episode_metrics, group_advantages, importance_sampling_ratio, pad_rows
from .settings import RolloutSettings

TASK_COLUMN = "task_json"
_PLACEHOLDER_PROMPT = [{"role": "user", "content": ""}]


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def env_return(completions, env_return=None, **kwargs) -> list[float | None]:
    """Reward function #0 of every environment run: the episode return (sum of step rewards minus the
    invalid-action penalty); ``None`` for a faulted episode (unscorable, advantage 0)."""
    return list(env_return)


def _task_of(row: dict) -> dict:
    if TASK_COLUMN in row and isinstance(row[TASK_COLUMN], str):
        return json.loads(row[TASK_COLUMN])
    return {k: v for k, v in row.items() if k != "prompt"}


def tasks_dataset(tasks: list[dict], split: str = "train") -> Dataset:
    """A ``datasets.Dataset`` holding task dicts as JSON (one ``task_json`` column), so tasks with different
    keys or nested structures survive Arrow's schema inference intact. Use it for ``train_dataset`` /
    ``eval_dataset`` whenever tasks are not flat and uniform."""
    if not tasks:
        raise ValueError(f"no {split} tasks given")
    return Dataset.from_dict({TASK_COLUMN: [json.dumps(t) for t in tasks]})


def _env_datasets(env, config, train_dataset, eval_dataset):
    """Tasks from the given datasets or from ``env().tasks(split)``; also reads ``env().system_prompt`` and
    ``env().history_observation`` (see :class:`~trl_aem.envs.TextEnv`)."""
    probe = env()
    try:
        system_prompt = getattr(probe, "system_prompt", None)
        history_observation = getattr(probe, "history_observation", None)
        tasks = getattr(probe, "tasks", None)
        if train_dataset is None:
            if not callable(tasks):
                raise ValueError("Pass a train_dataset of task rows, or give the environment a tasks(split) method")
            train_dataset = tasks_dataset(tasks("train"), "train")
        if eval_dataset is None and config.eval_strategy != "no" and callable(tasks):
            eval_dataset = tasks_dataset(tasks("eval"), "eval")
    finally:
        if callable(getattr(probe, "close", None)):
            probe.close()
    return train_dataset, eval_dataset, system_prompt, history_observation


class EnvTrainingMixin:
    """Multi-turn methods of :class:`~trl_aem.AEMTrainer` (active when it was given ``env``)."""

    def _setup_env(self, env, system_prompt: str | None, history_observation=None) -> None:
        args = self.args
        self._env_pool = EnvPool(
            env,
            worker_type=args.env_worker_type,
            max_workers=args.num_env_workers,
            timeout=math.inf if args.env_step_timeout is None else args.env_step_timeout,
        )
        self._formatter = ChatFormatter(
            self._tokenizer, args.history_length, self.chat_template_kwargs, history_observation=history_observation
        )
        self._system_prompt = system_prompt
        self._pending_tasks: list[dict] | None = None
        self.last_episodes: list[Episode] = []  # the latest generation batch's episodes, for inspection

    # ---------------------------------------------------------------- generation for the engine
    @contextlib.contextmanager
    def _turn_token_limit(self, max_new_tokens: int):
        """Cap one response at ``max_new_tokens`` for every back end (transformers, vLLM), then restore."""
        saved = []
        for owner, name in (
            (getattr(self, "generation_config", None), "max_new_tokens"),
            (getattr(self, "vllm_generation", None), "max_completion_length"),
        ):
            if owner is not None and hasattr(owner, name):
                saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, max_new_tokens)
        kwargs = getattr(self, "generation_kwargs", None)
        had = isinstance(kwargs, dict) and "max_new_tokens" in kwargs
        if had:
            saved_kw = kwargs["max_new_tokens"]
            kwargs["max_new_tokens"] = max_new_tokens
        try:
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)
            if had:
                kwargs["max_new_tokens"] = saved_kw

    def _generate_turn(self, prompts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        """One batched generate call through TRL's ``_generate_single_turn`` (transformers or vLLM)."""
        first = len(self._sampled_segments)
        with self._turn_token_limit(max_new_tokens):
            completion_ids, logprobs = self._generate_single_turn(prompts, None, {}, 1)
        segments = self._sampled_segments[first:]
        out = []
        for i, ids in enumerate(completion_ids):
            if self._stats_source == "sampler":
                entropies, logps = segments[i].entropies, segments[i].logps
            else:  # vLLM: entropies come later from TRL's recompute pass
                entropies = logps = torch.full((len(ids),), float("nan"))
            out.append(Generated(list(ids), entropies, logps, None if logprobs is None else list(logprobs[i])))
        return out

    def _sync_active(self, local: int) -> int:
        if self.accelerator.num_processes == 1:
            return local
        counts = self.accelerator.gather(torch.tensor([local], device=self.accelerator.device))
        return int(counts.max())

    def _run_episodes(self, tasks: list[dict], mode: str) -> list[Episode]:
        args = self.args
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        offset = self.accelerator.process_index * len(tasks)
        indices = list(range(offset, offset + len(tasks)))
        settings = RolloutSettings.from_config(
            args, show_progress=not args.disable_tqdm and self.accelerator.is_main_process
        )
        engine = RolloutEngine(
            self._env_pool,
            self._formatter,
            self._generate_turn,
            settings,
            eos_token_ids=list(self.eos_token_ids),
            sync_active=self._sync_active,
        )
        engine.system_prompt = self._system_prompt
        started = time.perf_counter()
        episodes = engine.run(tasks, [i // num_generations for i in indices], indices)
        self._log_env_metrics(episodes, mode, time.perf_counter() - started)
        self.last_episodes = episodes
        return episodes

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

    # ---------------------------------------------------------------- both modes
    def _generate_and_score_episodes(self, inputs: list[dict]) -> dict[str, Any]:
        tasks = [_task_of(row) for row in inputs]
        if self.args.rollout_mode == "trajectory":
            self._pending_tasks = tasks
            self.rollout_func = self._trajectory_rollout
            rows = [{**row, "prompt": _PLACEHOLDER_PROMPT} for row in inputs]
            try:
                return self._generate_and_score_single_turn(rows)
            finally:
                self.rollout_func, self._pending_tasks = None, None
        return self._generate_and_score_steps(tasks, inputs)

    # ---------------------------------------------------------------- trajectory mode (TRL's rollout_func path)
    def _trajectory_rollout(self, prompts, trainer) -> dict[str, list]:
        mode = "train" if self.model.training else "eval"
        episodes = self._run_episodes(self._pending_tasks, mode)
        eos = self._tokenizer.eos_token_id
        out = {
            "prompt_ids": [],
            "completion_ids": [],
            "logprobs": [],
            "env_mask": [],
            "env_return": [],
            "episode": list(episodes),
        }  # extra fields reach reward functions as keyword arguments
        use_logprobs = self.use_vllm
        for episode in episodes:
            completion, mask, logps = [], [], []
            for turn in episode.turns:
                completion += turn.completion_ids + turn.observation_ids
                mask += [1] * len(turn.completion_ids) + [0] * len(turn.observation_ids)
                sampled = turn.sampling_logps or [0.0] * len(turn.completion_ids)
                logps += list(sampled) + [0.0] * len(turn.observation_ids)
            if episode.faulted or episode.ending == "truncated" or not completion:
                mask = [0] * len(completion)  # no gradient: see the module docstring
            if not completion:  # reset failed: one masked token keeps the row well formed
                completion, mask, logps = [eos], [0], [0.0]
            prompt = episode.initial_prompt_ids or [eos]
            out["prompt_ids"].append(prompt)
            out["completion_ids"].append(completion)
            out["env_mask"].append(mask)
            out["logprobs"].append(logps)
            out["env_return"].append(None if episode.faulted else episode.env_return)
        if not use_logprobs:
            out["logprobs"] = None
        return out

    # ---------------------------------------------------------------- step mode (one row per turn)
    def _generate_and_score_steps(self, tasks: list[dict], inputs: list[dict]) -> dict[str, Any]:
        args, device = self.args, self.accelerator.device
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        self._sampled_segments = []
        episodes = self._run_episodes(tasks, mode)

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
        process_slice = slice(
            self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs)
        )
        local_adv = advantages[process_slice].cpu()

        # the reward metrics GRPOTrainer._generate_and_score_completions logs, on episodes
        metrics = self._metrics[mode]
        for i, name in enumerate(self.reward_func_names):
            metrics[f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
            metrics[f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
        metrics["reward"].append(torch.nanmean(rewards).item())
        metrics["reward_std"].append(nanstd(rewards).item())
        metrics["frac_reward_zero_std"].append(torch.isclose(std, torch.zeros_like(std)).float().mean().item())

        # rows: every turn of every healthy episode
        prompt_rows, completion_rows, ent_rows, logp_rows, sampled_rows = [], [], [], [], []
        row_adv, row_group, row_traj = [], [], []
        for episode, adv in zip(episodes, local_adv, strict=True):
            if episode.faulted:
                continue
            for turn in episode.turns:
                if not turn.completion_ids:
                    continue
                prompt_rows.append(turn.prompt_ids)
                completion_rows.append(turn.completion_ids)
                ent_rows.append(turn.entropies.tolist())
                logp_rows.append(turn.logps.tolist())
                sampled_rows.append(turn.sampling_logps or [0.0] * len(turn.completion_ids))
                row_adv.append(float(adv))
                row_group.append(episode.group)
                row_traj.append(episode.index)
        real_rows = len(prompt_rows)
        # Masked filler rows (no loss, no span) so that every one of the `steps_per_generation` training
        # steps gets at least one row even when faults left this rank (almost) nothing to learn from.
        min_rows = args.steps_per_generation if mode == "train" else 1
        eos = self._tokenizer.eos_token_id
        while len(prompt_rows) < min_rows:
            prompt_rows.append([eos])
            completion_rows.append([eos])
            ent_rows.append([math.nan])
            logp_rows.append([math.nan])
            sampled_rows.append([0.0])
            row_adv.append(0.0)
            row_group.append(-1)
            row_traj.append(-1)
        real = (torch.arange(len(prompt_rows)) < real_rows).long()

        pad_id = self._tokenizer.pad_token_id
        prompt_ids = pad_rows(prompt_rows, pad_id, "left").to(device)
        prompt_mask = pad_rows([[1] * len(r) for r in prompt_rows], 0, "left").to(device)
        completion_ids_t = pad_rows(completion_rows, pad_id, "right").to(device)
        completion_mask = (pad_rows([[1] * len(r) for r in completion_rows], 0, "right") * real[:, None]).to(device)
        num_items_in_batch = self.accelerator.gather(completion_mask.sum()).sum()
        lengths = self.accelerator.gather(torch.tensor([len(r) for r in completion_rows], device=device).float())
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/max_length"].append(lengths.max().item())
        metrics["env/rows"].append(float(self.accelerator.gather(real.sum().to(device)).sum()))

        output: dict[str, Any] = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids_t,
            "completion_mask": completion_mask,
            "advantages": torch.tensor(row_adv, device=device),
            "num_items_in_batch": num_items_in_batch,
        }
        input_ids = torch.cat([prompt_ids, completion_ids_t], dim=1)
        attention_mask = torch.cat(
            [prompt_mask, pad_rows([[1] * len(r) for r in completion_rows], 0, "right").to(device)], dim=1
        )
        logits_to_keep = completion_ids_t.size(1)
        batch_size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size
        self._capture_recompute = self._stats_source == "recompute"
        try:
            with torch.no_grad():
                if self._has_recompute_pass:
                    old, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                    )
                    output["old_per_token_logps"] = old
                    if self.use_vllm and self.vllm_importance_sampling_correction:
                        sampled = pad_rows(sampled_rows, 0.0, "right", dtype=torch.float32).to(device)
                        output["importance_sampling_ratio"] = importance_sampling_ratio(
                            old,
                            sampled,
                            completion_mask,
                            self.vllm_importance_sampling_mode,
                            self.vllm_importance_sampling_clip_min,
                            self.vllm_importance_sampling_clip_max,
                        )
                if self.beta != 0.0:
                    output["ref_per_token_logps"] = self._reference_logps(
                        input_ids, attention_mask, logits_to_keep, batch_size
                    )
        finally:
            self._capture_recompute = False

        if self._stats_source == "recompute":
            stats = self._token_statistics(output)
        else:
            stats = (
                pad_rows(ent_rows, math.nan, "right", dtype=torch.float32).to(device),
                pad_rows(logp_rows, math.nan, "right", dtype=torch.float32).to(device),
            )
        output["advantages"] = self._modulate_advantages(
            output,
            row_group=torch.tensor(row_group),
            row_trajectory=torch.tensor(row_traj),
            mode=mode,
            token_stats=stats,
        )
        self._sampled_segments, self._recomputed = [], None
        return output

    def _reference_logps(self, input_ids, attention_mask, logits_to_keep, batch_size):
        """As in ``GRPOTrainer._generate_and_score_completions``: the reference model, or the PEFT base."""
        if self.ref_model is not None:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.ref_model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
            )
            return logps
        from trl.models.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
            )
        return logps

    # ---------------------------------------------------------------- step mode: variable row counts
    def _prepare_inputs(self, generation_batch):
        # Replaces GRPOTrainer._prepare_inputs' `split_tensor_dict` (equal chunks, drops the remainder) with
        # a split that keeps every step-mode row; otherwise unchanged.
        if getattr(self, "env_factory", None) is None or self.args.rollout_mode != "step" or not self.model.training:
            return super()._prepare_inputs(generation_batch)
        if isinstance(generation_batch, dict) and "completion_ids" in generation_batch:
            return generation_batch  # a micro-batch of rows already prepared by `training_step`
        from trl.trainer.utils import shuffle_sequence_dict

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = shuffle_sequence_dict(self._generate_and_score_completions(generation_batch))
            self._buffered_inputs = _split_rows(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Step mode: a training step may hold many turn rows; run them in micro-batches of at most
        # `per_device_train_batch_size` rows (same count on every rank, so DDP backward calls pair up),
        # weighting each micro-batch so the summed gradient equals the one-batch loss's gradient.
        if getattr(self, "env_factory", None) is None or self.args.rollout_mode != "step":
            return super().training_step(model, inputs, num_items_in_batch)
        started = time.perf_counter()
        # as Trainer.training_step does before preparing inputs: after an evaluation the model is still in
        # eval mode, and generation would otherwise run (and log) as an eval batch
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        rows = inputs["completion_ids"].size(0)
        local = max(1, math.ceil(rows / self.args.per_device_train_batch_size))
        count = self._sync_active(local)
        chunks = _split_rows(inputs, count)
        mask = inputs["completion_mask"]
        total_rows, total_tokens = max(1, rows), max(1, int(mask.sum()))
        loss = torch.zeros((), device=self.accelerator.device)
        for i, chunk in enumerate(chunks):
            n = chunk["completion_ids"].size(0)
            if n == 0:
                chunk, weight = _masked_copy(_take(inputs, slice(0, 1))), 0.0
            elif self.loss_type == "bnpo":
                weight = int(chunk["completion_mask"].sum()) / total_tokens
            elif self.loss_type in ("cispo", "dapo", "vespo"):
                weight = 1.0  # normalised by the generation batch's token count already
            else:
                weight = n / total_rows
            self._micro_weight = weight
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
        return super()._compute_loss(model, inputs) * self._micro_weight


def _take(batch: dict, index) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 or isinstance(value, list):
            out[key] = value[index]
        else:
            out[key] = value
    return out


def _masked_copy(batch: dict) -> dict:
    batch = dict(batch)
    batch["completion_mask"] = torch.zeros_like(batch["completion_mask"])
    return batch


def _split_rows(batch: dict, chunks: int) -> list[dict]:
    """Split along rows into ``chunks`` nearly equal parts (sizes differ by at most one; none dropped)."""
    rows = batch["completion_ids"].size(0)
    bounds = torch.linspace(0, rows, chunks + 1).round().long().tolist()
    return [_take(batch, slice(bounds[i], bounds[i + 1])) for i in range(chunks)]
