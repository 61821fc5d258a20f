"""``AEMTrainer``: TRL's ``GRPOTrainer`` with AEM advantage modulation per response span.

This module orchestrates; each step of a generation batch lives in its own module. The path of one batch
(:meth:`AEMTrainer._generate_and_score_completions`; ``docs/architecture.md`` walks it file by file):

1. **Rows and base advantages.** Step mode: :mod:`trl_aem.rollout.step_rows` plays the episodes
   (:mod:`trl_aem.rollout.playing`), scores them with TRL's reward code and the configured estimator
   (:mod:`trl_aem.advantages`) and makes one row per turn, each with the token statistics recorded while sampling.
   Everything else (single-turn completions, TRL's ``tools`` loop, trajectory rows through ``rollout_func``,
   :mod:`trl_aem.rollout.trajectory_rows`) is generated and scored by ``GRPOTrainer`` itself, inside one
   :class:`~trl_aem.rollout.capture.RolloutCapture` that the hooks below fill: ``_generate_single_turn`` records each
   token's full-vocabulary entropy and sampled log-prob while ``transformers.generate`` samples
   (:mod:`trl_aem.sampling`); with vLLM, ``_get_per_token_logps_and_entropies`` keeps the entropies of TRL's
   old-log-prob pass. No extra forward pass.
2. **Alpha.** :meth:`AEMTrainer._aem_advantages` turns the rows into responses, gathers them across processes (a group
   may straddle ranks), runs the AEM step (:mod:`trl_aem.aem`) and returns the ``(B, T)`` advantages
   ``A_base * alpha`` that TRL's unchanged ``_compute_loss`` consumes.

Every override of a TRL method is listed, with the TRL lines it replaces, in :mod:`trl_aem.trl_compat`.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer

from .aem import Responses, aem_step, collect_responses, modulated_advantages
from .arguments import as_aem_config, bind_trainer_arguments, trainer_signature
from .distributed import gather_ragged
from .hub.trainer_mixin import HubMixin
from .rollout.capture import StatsSource, capturing, stats_source
from .rollout.playing import PlayingMixin, describe_env, env_return
from .rollout.rows import RowGroups
from .rollout.step_rows import StepRowsMixin
from .rollout.trajectory_rows import TrajectoryRowsMixin, trajectory_inputs, trajectory_token_statistics
from .sampling import record_sampling_stats
from .trl_compat import drop_unmeasured_metrics, recount_zero_std

logger = logging.getLogger(__name__)

__all__ = ["AEMTrainer", "AEM_CITATION"]

AEM_CITATION = textwrap.dedent("""\
    @article{zhao2026aem,
        title        = {{AEM: Adaptive Entropy Modulation for Multi-Turn Agentic Reinforcement Learning}},
        author       = {Haotian Zhao and others},
        year         = 2026,
        eprint       = {arXiv:2605.00425},
    }""")


class AEMTrainer(StepRowsMixin, TrajectoryRowsMixin, PlayingMixin, HubMixin, GRPOTrainer):
    """GRPO-family trainer whose advantages are rescaled per response by AEM (arXiv:2605.00425).

    A drop-in for ``trl.GRPOTrainer``: it takes every ``GRPOTrainer.__init__`` argument by the same name and
    position (``AEMTrainer(model=..., reward_funcs=..., args=config, ...)``), and a plain ``GRPOConfig`` is
    converted to an :class:`AEMConfig` with AEM's defaults. The multi-turn form is ``AEMTrainer(model, env, config)``.

    Args:
        model: model id, local path, ``PreTrainedModel`` or ``PeftModel`` (as for ``GRPOTrainer``).
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
        self.env_factory = env
        self.last_episodes = []  # multi-turn: the latest generation batch's episodes, for inspection
        self._system_prompt: str | None = None  # multi-turn: the environment's (set by `_setup_env`)
        self._capture = None  # the RolloutCapture of the TRL-generated batch being collected
        self._aem_round = 0  # seeds the shuffled-alpha ablation per batch
        self._warned_unrecorded = False
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
            self._setup_env(env, description)

    # ------------------------------------------------------------------ hooks where the statistic already exists
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """``GRPOTrainer._generate_single_turn`` whose samples' token statistics (:meth:`_sample`) go to the open
        capture, for TRL-generated batches."""
        completion_ids, logprobs, statistics = self._sample(
            prompt_ids, images, multimodal_fields, num_generations, has_tool_images
        )
        if statistics is not None and self._capture is not None:
            self._capture.add_samples(prompt_ids, completion_ids, *statistics)
        return completion_ids, logprobs

    def _sample(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """``GRPOTrainer._generate_single_turn`` plus, with the sampler source, the ``(rows, T)`` token entropies and
        sampled-token log-probs its ``generate`` call recorded (:mod:`trl_aem.sampling`; NaN where none); ``None``
        for other back ends. Returns ``(completion_ids, logprobs, statistics)``."""
        if self._stats_source != "sampler":
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
            return completion_ids, logprobs, None
        with record_sampling_stats(self.accelerator.unwrap_model(self.model_wrapped), self.temperature) as recorder:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        statistics = recorder.statistics(len(completion_ids), max(map(len, completion_ids), default=0))
        if not bool(torch.isfinite(statistics[0]).any()) and completion_ids:
            self._warn_unrecorded()
        return completion_ids, logprobs, statistics

    def _warn_unrecorded(self) -> None:
        if not self._warned_unrecorded:
            self._warned_unrecorded = True
            logger.warning(
                "AEM: generate produced completions without calling the logits processors row by row (beam search, "
                "or a patched generate), so no token entropies were recorded: those responses keep alpha = 1 "
                "(counted in aem/missing_frac). Sample (num_beams=1) or use vLLM for AEM to act."
            )

    def _generate(self, prompts: list):
        """``GRPOTrainer._generate`` (trl 1.16 L2193-2322); the unpadded id lists it returns first go to the capture,
        to align the recorded segments with completion tokens (TRL's ``tools`` loop joins several per row)."""
        result = super()._generate(prompts)
        if self._capture is not None:
            self._capture.rollout_ids = (result[0], result[1], result[2])
        return result

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """``GRPOTrainer._get_per_token_logps_and_entropies`` (trl 1.16 L1419-1508). Recompute source: the batch's
        first no-grad call is TRL's old-log-prob pass (L2646-2657, ``compute_entropy=False`` there); it is asked
        for the entropies too, which the LM head computes from the same logits, and they go to the capture."""
        capture = self._capture
        if capture is None or not capture.wants_recompute or torch.is_grad_enabled():
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        wanted = kwargs.pop("compute_entropy", False)
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, compute_entropy=True, **kwargs
        )
        capture.recomputed = (logps.detach(), entropies.detach())
        return logps, (entropies if wanted else None), aux

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
        output["advantages"] = self._aem_advantages(output, groups, token_stats, mode)
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
    ) -> torch.Tensor:
        """The advantages TRL's loss will use: ``(B, T)`` ``A_base * alpha`` per token with AEM on, the unchanged
        base advantages otherwise. Logs the ``aem/*`` metrics in both cases."""
        base = output["advantages"]
        if token_stats is None:  # control arm without a statistic (see `stats_source`)
            return base
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        responses, spans = collect_responses(
            loss_mask,
            base,
            *token_stats,
            output["prompt_ids"],
            output["prompt_mask"],
            output["completion_ids"],
            groups.group,
            groups.episode,
        )
        alpha = self._span_alpha(responses, mode)
        return base if alpha is None else modulated_advantages(base, alpha, spans)

    def _span_alpha(self, responses: Responses, mode: str) -> torch.Tensor | None:
        """Gather every rank's responses, run the AEM step on the whole batch (identically on every rank), log its
        metrics and return this rank's alpha (``None`` when ``use_aem=False``)."""
        args = self.args
        full, rank_counts = gather_ragged(responses.as_matrix(), self.accelerator)
        generator = None
        if args.use_aem and args.aem_shuffle:
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + self._aem_round)
        step = aem_step(
            Responses.from_matrix(full),
            use_aem=args.use_aem,
            lam=args.aem_lambda,
            min_range=args.aem_min_range,
            scope=args.aem_scope,
            statistic=args.aem_statistic,
            shuffle_generator=generator,
        )
        for key, value in step.metrics.items():
            self._metrics[mode][key].append(value)
        if step.alpha is None:
            return None
        self._aem_round += 1  # seeds the next batch's shuffle
        start = int(rank_counts[: self.accelerator.process_index].sum())
        return step.alpha[start : start + len(responses)]

    def _warn_without_signal(self, output: dict[str, Any]) -> None:
        """Warn when no token of the whole generation batch (all ranks) has a non-zero advantage: every group's
        episodes got the same return, or every completion was masked (truncated, faulted). Such a batch trains
        nothing; a run made of them (an untrained policy that never acts validly, a budget that truncates every
        response) learns nothing while it looks healthy."""
        mask = output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        advantages = output["advantages"]
        advantages = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand_as(mask)
        local = ((advantages != 0) & (mask != 0)).any().float().reshape(1)
        if bool(self.accelerator.gather(local).any()):
            return
        self._batches_without_signal += 1
        count = self._batches_without_signal
        if count <= 3 or count % 50 == 0:
            masked = 1.0 - float(mask.any(dim=1).float().mean()) if mask.numel() else 1.0
            logger.warning(
                "trl_aem: generation batch %d (%d so far) carries no learning signal: every advantage is zero "
                "(%.0f%% of rows fully masked; the rest had no reward spread within their group). Check the rewards, "
                "the token budgets (max_turn_tokens, max_completion_length) and whether the policy can act at all "
                "(an SFT warm start helps an untrained one).",
                self.state.global_step,
                count,
                100 * masked,
            )

    # ------------------------------------------------------------------ around TRL's loop
    def train(self, *args, **kwargs):
        """``Trainer.train``, then the final save and card (:meth:`HubMixin._finish_training`); the environments
        are closed however it ends."""
        try:
            result = super().train(*args, **kwargs)
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


AEMTrainer.__init__.__signature__ = trainer_signature()
