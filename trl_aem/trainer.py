"""``AEMTrainer``: TRL's ``GRPOTrainer`` with AEM advantage modulation per response span.

This module orchestrates; each step of a generation batch lives in its own module. The path of one batch
(:meth:`AEMTrainer._generate_and_score_completions`; ``docs/architecture.md`` walks it file by file):

1. **Rows and base advantages.** Step mode: :mod:`trl_aem.rollout.step_rows` plays the episodes
   (:mod:`trl_aem.rollout.playing`), scores them with TRL's reward code and the configured estimator
   (:mod:`trl_aem.advantages`) and makes one row per turn, each with the token statistics recorded while sampling.
   Everything else (single-turn completions, TRL's ``tools`` loop, trajectory rows through ``rollout_func``,
   :mod:`trl_aem.rollout.trajectory_rows`) is generated and scored by ``GRPOTrainer`` itself, inside one
   :class:`~trl_aem.capture.RolloutCapture` filled by the hooks of :mod:`trl_aem.capture`: ``_generate_single_turn``
   records each token's full-vocabulary entropy and sampled log-prob while ``transformers.generate`` samples
   (:mod:`trl_aem.sampling`); with vLLM, ``_get_per_token_logps_and_entropies`` keeps the entropies of TRL's
   old-log-prob pass. No extra forward pass.
2. **Alpha.** :meth:`AEMTrainer._aem_advantages` turns the rows into responses, gathers them across processes (a group
   may straddle ranks), runs the AEM step (:mod:`trl_aem.aem`) and returns the ``(B, T)`` advantages
   ``A_base * alpha`` that TRL's unchanged ``_compute_loss`` consumes.

Every override of a TRL method is listed, with the TRL lines it replaces, in :mod:`trl_aem.trl_compat`.
"""

from __future__ import annotations

import functools
import logging
import textwrap
from collections.abc import Callable
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer

from .aem import ModulatedBatch, modulate_batch
from .arguments import as_aem_config, bind_trainer_arguments, trainer_signature
from .capture import CaptureHooksMixin, StatsSource, capturing, stats_source
from .distributed import gather_rows
from .hub.trainer_mixin import HubMixin
from .rollout.playing import PlayingMixin, describe_env, env_return
from .rollout.rows import RowGroups
from .rollout.step_rows import StepRowsMixin
from .rollout.trajectory_rows import TrajectoryRowsMixin, trajectory_inputs, trajectory_token_statistics
from .trl_compat import drop_unmeasured_metrics, logged_flat_groups, recount_zero_std

NO_SIGNAL_STREAK = 3  # generation batches in a row without signal before the warning
logger = logging.getLogger(__name__)

__all__ = ["AEMTrainer", "AEM_CITATION"]

AEM_CITATION = textwrap.dedent("""\
    @article{zhao2026aem,
        title        = {{AEM: Adaptive Entropy Modulation for Multi-Turn Agentic Reinforcement Learning}},
        author       = {Haotian Zhao and others},
        year         = 2026,
        eprint       = {arXiv:2605.00425},
    }""")


class AEMTrainer(CaptureHooksMixin, StepRowsMixin, TrajectoryRowsMixin, PlayingMixin, HubMixin, GRPOTrainer):
    """GRPO-family trainer whose advantages are rescaled per response by AEM (arXiv:2605.00425).

    A drop-in for ``trl.GRPOTrainer``: it takes every ``GRPOTrainer.__init__`` argument by the same name and
    position (``AEMTrainer(model=..., reward_funcs=..., args=config, ...)``), and a plain ``GRPOConfig`` is
    converted to an :class:`AEMConfig` with AEM's defaults. The multi-turn form is ``AEMTrainer(model, env, config)``.

    Args:
        model: model id, local path, ``PreTrainedModel`` or ``PeftModel`` (as for ``GRPOTrainer``), or ``"tiny"``: a
            small model built offline (:func:`trl_aem.recipes.tiny_policy`; no warm start).
        reward_funcs: as in ``GRPOTrainer``. In this position an environment factory (a class with ``reset`` and
            ``step``, or a callable taking no arguments) is read as ``env``.
        args: an :class:`AEMConfig` (or a ``GRPOConfig``, converted). ``config=`` is the same argument. Defaults to
            ``AEMConfig("<model name>-AEM")``.
        train_dataset, eval_dataset, processing_class, reward_processing_classes, callbacks, optimizers,
            quantization_config, peft_config, tools, rollout_func, environment_factory: as in ``GRPOTrainer``.
        env: zero-argument callable returning a fresh :class:`~trl_aem.envs.TextEnv` for multi-turn training
            (tasks from ``train_dataset`` rows, else ``env().tasks("train")``). ``None`` trains on single-turn
            completions of ``train_dataset`` prompts scored by ``reward_funcs`` (or TRL's ``tools`` /
            ``environment_factory`` loop), with AEM applied.
        config: keyword alias of ``args``.
    """

    _tag_names = ["trl", "grpo", "aem"]
    _name = "AEM"
    _paper = {
        "title": "AEM: Adaptive Entropy Modulation for Multi-Turn Agentic Reinforcement Learning",
        "id": "2605.00425",
        "citation": AEM_CITATION,
    }

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        *positional: Any,
        env: Callable[[], Any] | None = None,
        config: GRPOConfig | None = None,
        **named: Any,
    ):
        # GRPOTrainer's parameters by the same names and positions (`__signature__` below the class), plus `env` and
        # `config`; in `AEMTrainer(model, env, config, reward_funcs=...)` the environment takes `reward_funcs`'
        # position, which a fixed signature could not bind (see trl_aem.arguments).
        call = bind_trainer_arguments(positional, named, env)
        env = call.pop("env")
        config = as_aem_config(call.pop("args"), config, model)
        from .recipes import tiny_policy  # "tiny": a small model built offline, tokenizer trained on the env's text

        model, call["processing_class"] = tiny_policy(model, env, call["processing_class"], config.seed)
        self.env_factory = env
        self.last_episodes = []  # multi-turn: the latest generation batch's episodes, for inspection
        self._system_prompt: str | None = None  # multi-turn: the environment's (set by `_setup_env`)
        self._capture = None  # the RolloutCapture of the TRL-generated batch being collected
        self._aem_round = 0  # seeds the shuffled-alpha ablation per batch
        self._batches_without_signal = 0
        if env is not None:
            if not callable(env):
                raise TypeError(
                    f"env must be a zero-argument callable returning a TextEnv (usually the class), got {env!r}"
                )
            if config.rollout_mode == "step" and config.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(
                    "AEMConfig: rollout_mode='step' supports multi_objective_aggregation='sum_then_normalize' only"
                )
            description = describe_env(
                env, call["train_dataset"], call["eval_dataset"], needs_eval=config.eval_strategy != "no"
            )
            extra_rewards = call["reward_funcs"]
            extra_rewards = list(extra_rewards) if isinstance(extra_rewards, (list, tuple)) else [extra_rewards]
            call.update(
                train_dataset=description.train_dataset,
                eval_dataset=description.eval_dataset,
                reward_funcs=[env_return, *(r for r in extra_rewards if r is not None)],
            )
            if config.rollout_mode == "trajectory":  # one row per episode, through TRL's own rollout_func path
                call["rollout_func"] = self._trajectory_rollout
        elif not call["reward_funcs"] and call["environment_factory"] is None and call["rollout_func"] is None:
            raise ValueError(
                "Single-turn training (env=None) needs `reward_funcs` to score completions (or TRL's "
                "`environment_factory` whose environment owns the reward)."
            )
        call["callbacks"] = [*(call["callbacks"] or []), self._setup_hub(config)]
        super().__init__(model=model, args=config, **call)
        self._stats_source: StatsSource = stats_source(self)
        if env is not None:
            self._setup_env(description)

    # ------------------------------------------------------------------ one generation batch
    def _generate_and_score_completions(self, inputs):
        """``GRPOTrainer._generate_and_score_completions`` with its ``advantages`` replaced by the ``(B, T)`` AEM
        advantages; step mode scores its own rows (:mod:`trl_aem.rollout.step_rows`)."""
        mode = "train" if self.model.training else "eval"
        if self._is_step_mode():
            batch = self._score_step_rows(inputs)
            output, groups, token_stats = batch.output, batch.groups, batch.token_stats
        else:
            output, groups, token_stats = self._score_with_trl(inputs, mode)
        modulated = self._aem_advantages(output, groups, token_stats, mode)
        if modulated is not None:
            output["advantages"] = modulated.advantages
        if mode == "train":
            self._warn_without_signal(output)
        return output

    def _score_with_trl(self, inputs: list[dict], mode: str):
        """Single-turn rows, TRL's tools loop and trajectory rows: ``GRPOTrainer`` generates and scores them; returns
        its output, each row's group and episode, and the ``(B, T)`` token statistics (``None`` without a source)."""
        rows = trajectory_inputs(inputs) if self.env_factory is not None else inputs
        with capturing(self) as capture:
            output = super()._generate_and_score_completions(rows)
        local_rows = output["completion_ids"].size(0)
        recount_zero_std(self, mode, local_rows * self.accelerator.num_processes)
        if self.env_factory is not None:
            # episodes whose group got one return (up to float rounding) carry no signal: TRL's (R - mean) /
            # (std + 1e-4) leaves rounding noise of about 1e-3 there (L2788-2810); single-turn rows keep TRL's numbers
            flat = logged_flat_groups(self, mode, local_rows * self.accelerator.num_processes)
            if flat is not None:
                start = self.accelerator.process_index * local_rows
                local_flat = flat[start : start + local_rows].to(output["advantages"].device)
                output["advantages"] = output["advantages"].masked_fill(local_flat, 0.0)
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        # TRL's process_slice: rank r holds global rows r * local_rows ...; `num_generations` consecutive rows a group
        ids = torch.arange(local_rows) + self.accelerator.process_index * local_rows
        groups = RowGroups(group=ids // num_generations, episode=ids)
        if self._stats_source is None:
            return output, groups, None
        if self.env_factory is not None and self._stats_source == "sampler":
            # the episodes TRL wrote into the rows (the rollout's extra field `episode`) carry their statistics
            width, device = output["completion_ids"].size(1), output["completion_ids"].device
            stats = trajectory_token_statistics([row["episode"] for row in rows], width)
            return output, groups, (stats[0].to(device), stats[1].to(device))
        return output, groups, capture.token_statistics(output["completion_ids"])

    def _aem_advantages(
        self,
        output: dict[str, Any],
        groups: RowGroups,
        token_stats: tuple[torch.Tensor, torch.Tensor] | None,
        mode: str,
    ) -> ModulatedBatch | None:
        """AEM on the batch TRL's loss will see (:func:`~trl_aem.aem.modulate_batch`: every process's responses
        gathered, alpha computed identically everywhere, this process's applied); logs the ``aem/*`` metrics. ``None``
        for the control arm on a configuration without a statistic (see :func:`~trl_aem.capture.stats_source`)."""
        if token_stats is None:
            return None
        args = self.args
        shuffle = None
        if args.use_aem and args.aem_shuffle:
            shuffle = torch.Generator().manual_seed(args.seed * 1_000_003 + self._aem_round)
        result = modulate_batch(
            output,
            groups.group,
            groups.episode,
            token_stats,
            args,
            gather=functools.partial(gather_rows, accelerator=self.accelerator),
            shuffle_generator=shuffle,
        )
        for key, value in result.metrics.items():
            self._metrics[mode][key].append(value)
        if args.use_aem:
            self._aem_round += 1  # seeds the next batch's shuffle
        return result

    def _warn_without_signal(self, output: dict[str, Any]) -> None:
        """Warn when generation batches in a row carry no learning signal: no token of the whole batch (all ranks)
        has a non-zero advantage, because every group's episodes got the same return (up to float rounding) or every
        completion was masked (truncated, faulted). A run made of such batches (an untrained policy that never acts
        validly, a budget that truncates every response) learns nothing while it looks healthy. One such batch is
        normal (a policy that solved or failed all of the batch's tasks alike), so the warning waits for
        ``NO_SIGNAL_STREAK`` in a row, and repeats every 50 while the streak lasts."""
        mask = output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        advantages = output["advantages"]
        advantages = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand_as(mask)
        local = ((advantages != 0) & (mask != 0)).any().float().reshape(1)
        if bool(self.accelerator.gather(local).any()):
            self._batches_without_signal = 0
            return
        self._batches_without_signal += 1
        streak = self._batches_without_signal
        if streak == NO_SIGNAL_STREAK or (streak > NO_SIGNAL_STREAK and streak % 50 == 0):
            masked = 1.0 - float(mask.any(dim=1).float().mean()) if mask.numel() else 1.0
            logger.warning(
                "trl_aem: the last %d generation batches (up to step %d) carried no learning signal: every advantage "
                "is zero (in the last, %.0f%% of rows fully masked; the rest had no reward spread within their "
                "group). Check the rewards, the token budgets (max_turn_tokens, max_completion_length) and whether "
                "the policy can act at all (an SFT warm start helps an untrained one).",
                streak,
                self.state.global_step,
                100 * masked,
            )

    # ------------------------------------------------------------------ around TRL's loop
    def train(self, *args, **kwargs):
        """``Trainer.train``, then the final save and card (:meth:`HubMixin._finish_training`); the environments
        are closed however it ends. An evaluation run before training (``trainer.evaluate()`` at step 0) is kept in
        the new run's log, so the card shows the results before and after RL."""
        # Trainer.train starts a new TrainerState (Trainer._inner_training_loop), which drops the log so far
        before = [dict(entry) for entry in self.state.log_history if entry.get("step") == 0 and _is_evaluation(entry)]
        try:
            result = super().train(*args, **kwargs)
            if before and not any(e.get("step") == 0 and _is_evaluation(e) for e in self.state.log_history):
                self.state.log_history[:0] = before
            self._finish_training()
            return result
        finally:
            self.close_environments()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """``GRPOTrainer.log`` without ``None`` values (a metric with no number in this logging window is left out:
        :func:`~trl_aem.trl_compat.drop_unmeasured_metrics`) and with the Hub upload counters."""
        drop_unmeasured_metrics(self._metrics["train" if self.model.training else "eval"])
        logs.update(self._hub_metrics(logs))
        super().log(logs, start_time)


def _is_evaluation(entry: dict[str, Any]) -> bool:
    return any(key.startswith("eval_") for key in entry)


AEMTrainer.__init__.__signature__ = trainer_signature()
