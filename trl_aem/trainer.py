"""``AEMTrainer``: TRL's ``GRPOTrainer`` with AEM advantage modulation per response span.

This module holds the constructor, the hooks that take the response statistic where it already exists, and the
alpha step. Multi-turn orchestration is :mod:`trl_aem.rollout.training` (``MultiTurnMixin``), the Hub side is
:mod:`trl_aem.hub.trainer_mixin` (``HubMixin``), and every piece that mirrors TRL code is in
:mod:`trl_aem.trl_compat`, each with the TRL 1.16 lines it follows.

Data path of one generation batch (:meth:`AEMTrainer._generate_and_score_completions`):

1. A :class:`~trl_aem.rollout.capture.RolloutCapture` is opened for the batch.
2. Completions are generated and scored: by TRL (single-turn, TRL's ``tools`` loop, or multi-turn trajectory rows
   through the ``rollout_func`` TRL calls), or by ``MultiTurnMixin._score_step_rows`` (step mode). While they are
   sampled, the hooks below add to the capture: ``_generate_single_turn`` records each token's full-vocabulary
   entropy and sampled log-prob (:mod:`trl_aem.sampling`); with vLLM, ``_get_per_token_logps_and_entropies``
   keeps the entropies of TRL's old-log-prob pass. No extra forward pass.
3. The capture hands back ``(B, T)`` token statistics; :meth:`AEMTrainer._modulate_advantages` splits the loss mask
   into response spans, averages the statistic per span, gathers spans across processes (a group may straddle
   ranks), computes ``alpha`` per group, slices this rank's spans back and returns ``(B, T)`` advantages
   ``A_base * alpha`` that TRL's unchanged ``_compute_loss`` consumes.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer

from .arguments import as_aem_config, bind_trainer_arguments, trainer_signature
from .distributed import gather_ragged
from .hub.trainer_mixin import HubMixin
from .modulation import (
    ResponseSpans,
    broadcast_to_tokens,
    compute_aem,
    conditioning_keys,
    entropy_drift,
    response_spans,
    shuffle_within_groups,
    span_means,
    span_sums,
)
from .rollout.capture import RolloutCapture, StatsSource, capturing
from .rollout.training import MultiTurnMixin, RowGroups, env_datasets, env_return
from .sampling import SampledSegment, record_sampling_stats
from .trl_compat import drop_unmeasured_metrics, has_recompute_pass, zero_std_fraction

logger = logging.getLogger(__name__)

__all__ = ["AEMTrainer", "AEM_CITATION"]

AEM_CITATION = textwrap.dedent("""\
    @article{zhao2026aem,
        title        = {{AEM: Adaptive Entropy Modulation for Multi-Turn Agentic Reinforcement Learning}},
        author       = {Haotian Zhao and others},
        year         = 2026,
        eprint       = {arXiv:2605.00425},
    }""")


@dataclass
class SpanBatch:
    """Per-response quantities of one generation batch on this rank (``S`` spans)."""

    spans: ResponseSpans
    entropy: torch.Tensor  # (S,) mean token entropy Hbar
    surprisal: torch.Tensor  # (S,) mean token surprisal Sbar
    response_surprisal: torch.Tensor  # (S,) response-level surprisal S(a|s) = -log pi(a|s), the sum over tokens
    state: torch.Tensor  # (S,) key of the conditioning tokens (same key = same state s)
    group: torch.Tensor  # (S,) global task-group id
    trajectory: torch.Tensor  # (S,) global trajectory (episode) id
    advantage: torch.Tensor  # (S,) base advantage of the span's row


class AEMTrainer(MultiTurnMixin, HubMixin, GRPOTrainer):
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
        self._capture: RolloutCapture | None = None  # the generation batch being collected
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
            description = env_datasets(
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
        self._stats_source: StatsSource = self._resolve_stats_source()
        if env is not None:
            self._setup_env(env, description)

    # ------------------------------------------------------------------ where the statistic comes from
    def _resolve_stats_source(self) -> str | None:
        """``"sampler"``: recorded while ``transformers.generate`` samples. ``"recompute"``: taken from the
        old-log-prob pass TRL already runs (vLLM, continuous batching). ``None``: the control arm
        (``use_aem=False``) on a configuration where the statistic could only come from an extra forward pass; it
        then trains exactly like ``GRPOTrainer`` and logs no ``aem/*`` statistic. With AEM on, such a configuration
        would need that extra pass, which AEM must not add, so it is refused with the settings that fix it."""
        if not (self.use_vllm or self.use_transformers_continuous_batching):
            return "sampler"
        if has_recompute_pass(self):
            return "recompute"
        if not self.args.use_aem:
            return None
        args = self.args
        accumulation = (
            f"or make `gradient_accumulation_steps` ({args.gradient_accumulation_steps}) not a multiple of "
            f"`steps_per_generation * num_iterations` ({args.steps_per_generation} * {self.num_iterations}), so that "
            "TRL runs that pass"
        )
        if self.use_vllm:
            fix = f"Set `vllm_importance_sampling_correction=True` (the TRL default), {accumulation}"
            backend = "vLLM generation"
        else:
            fix = f"Set `use_transformers_continuous_batching=False` (AEM then records while sampling), {accumulation}"
            backend = "transformers continuous batching"
        raise ValueError(
            f"AEM with {backend} reads token entropies from TRL's old-log-prob pass, which this configuration "
            f"skips. {fix}; or train the control arm with `use_aem=False`."
        )

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """``GRPOTrainer._generate_single_turn`` (trl 1.16 L1763-1891) whose ``unwrapped_model.generate(...)`` call
        also feeds a :class:`~trl_aem.sampling.SamplingStatsRecorder` (transformers path; vLLM and continuous
        batching run unchanged). The segments go to the open capture."""
        if self._stats_source != "sampler" or self._capture is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        with record_sampling_stats(self.accelerator.unwrap_model(self.model_wrapped), self.temperature) as recorder:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        entropies, logps = recorder.statistics(len(completion_ids), max(map(len, completion_ids), default=0))
        if not bool(torch.isfinite(entropies).any()) and completion_ids:
            self._warn_unrecorded()
        for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
            n = len(completion)
            self._capture.segments.append(
                SampledSegment(list(prompt), list(completion), entropies[row, :n], logps[row, :n])
            )
        return completion_ids, logprobs

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
        """``GRPOTrainer._generate_and_score_completions`` (trl 1.16 L2324-2937) with its ``advantages`` replaced by
        the ``(B, T)`` AEM advantages; step mode scores its own rows (``MultiTurnMixin._score_step_rows``)."""
        mode = "train" if self.model.training else "eval"
        with capturing(self) as capture:
            if self.env_factory is not None and self.args.rollout_mode == "step":
                output, groups = self._score_step_rows(inputs, capture)
            else:
                if self.env_factory is not None:
                    inputs = self._trajectory_inputs(inputs, capture)
                output = super()._generate_and_score_completions(inputs)
                groups = self._trl_row_groups(output["completion_ids"].size(0), mode)
                self._recount_zero_std(mode, output["completion_ids"].size(0) * self.accelerator.num_processes)
            token_stats = capture.token_statistics(output["completion_ids"]) if capture.source else None
        output["advantages"] = self._modulate_advantages(output, groups, mode, token_stats)
        if mode == "train":
            self._warn_without_signal(output)
        return output

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

    def _recount_zero_std(self, mode: str, rows: int) -> None:
        """Recount TRL's ``frac_reward_zero_std`` of the batch just scored (L2788, L2830) without float noise: TRL
        compares the float32 group std with ``torch.isclose`` (tolerance 1e-8), and equal returns such as 9.9 have a
        float32 std of about 1e-7. The batch's rewards are the last ``rows`` TRL logged (all processes)."""
        if self.multi_objective_aggregation != "sum_then_normalize" or self.scale_rewards == "batch":
            return
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        logged = [list(self._logs["rewards"][name])[-rows:] for name in self.reward_func_names]
        metric = self._metrics[mode]["frac_reward_zero_std"]
        if not metric or any(len(values) != rows for values in logged) or rows % num_generations:
            return
        per_func = torch.tensor(logged, dtype=torch.float64).T
        metric[-1] = zero_std_fraction(per_func, self.reward_weights.double().cpu(), num_generations)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """``GRPOTrainer.log`` (L3302-3382) without ``None`` values: a metric with no number in this logging window
        (all NaN) is left out instead (:func:`~trl_aem.trl_compat.drop_unmeasured_metrics`)."""
        drop_unmeasured_metrics(self._metrics["train" if self.model.training else "eval"])
        super().log(logs, start_time)

    def _trl_row_groups(self, local_rows: int, mode: str) -> RowGroups:
        """Groups of rows TRL scored: rank ``r`` holds global rows ``r * local_rows ...`` (TRL's ``process_slice``,
        equal rows per rank) and every ``num_generations`` consecutive rows form a group."""
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        offset = self.accelerator.process_index * local_rows
        rows = torch.arange(offset, offset + local_rows)
        return RowGroups(group=rows // num_generations, trajectory=rows)

    # ------------------------------------------------------------------ the alpha step
    def _modulate_advantages(
        self,
        output: dict[str, Any],
        groups: RowGroups,
        mode: str,
        token_stats: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Return the advantages TRL's loss will use: ``(B, T)`` ``A_base * alpha`` per token with AEM on, the
        unchanged base advantages otherwise. Logs the ``aem/*`` metrics in both cases."""
        base = output["advantages"]
        if token_stats is None:  # control arm without a statistic (see `_resolve_stats_source`)
            return base
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        spans = response_spans(loss_mask)
        token_entropy, token_logp = token_stats
        batch = SpanBatch(
            spans=spans,
            entropy=span_means(token_entropy, spans).cpu(),
            surprisal=span_means(-token_logp, spans).cpu(),
            response_surprisal=span_sums(-token_logp, spans).cpu(),
            state=conditioning_keys(output["prompt_ids"], output["prompt_mask"], output["completion_ids"], spans),
            group=groups.group.cpu()[spans.row],
            trajectory=groups.trajectory.cpu()[spans.row],
            advantage=base.detach().float().cpu().view(-1)[spans.row],
        )
        alpha = self._span_alpha(batch, mode)
        if alpha is None:
            return base
        per_token_alpha = broadcast_to_tokens(alpha.to(base.device, base.dtype), spans, fill=1.0)
        return base.view(-1, 1) * per_token_alpha

    def _span_alpha(self, batch: SpanBatch, mode: str) -> torch.Tensor | None:
        """Gather every rank's spans, compute alpha on the whole batch (identically on every rank), log the
        metrics and return this rank's alpha (``None`` when ``use_aem=False``)."""
        args = self.args
        columns = [
            batch.entropy,
            batch.surprisal,
            batch.response_surprisal,
            batch.advantage,
            batch.group,
            batch.trajectory,
        ]
        # state keys are < 2**48, exact in float64
        fields = torch.stack([c.double() for c in [*columns, batch.state]], dim=1)
        full, rank_counts = gather_ragged(fields, self.accelerator)
        full = full.cpu()
        entropy, surprisal, response_surprisal, advantage = full[:, 0], full[:, 1], full[:, 2], full[:, 3]
        group, trajectory, state = full[:, 4].long(), full[:, 5].long(), full[:, 6].long()
        stat = entropy if args.aem_statistic == "entropy" else surprisal
        metrics = self._metrics[mode]
        finite = torch.isfinite(stat)
        metrics["aem/missing_frac"].append(float((~finite).float().mean()) if stat.numel() else 0.0)
        if bool(torch.isfinite(entropy).any()):
            metrics["aem/response_entropy"].append(float(entropy[torch.isfinite(entropy)].mean()))
        if state.numel():  # responses that share their state with another one: those the drift estimate uses
            _, inverse, per_state = torch.unique(state, return_inverse=True, return_counts=True)
            metrics["aem/drift_coverage"].append(float((per_state[inverse] > 1).float().mean()))
        drift_base = float(entropy_drift(advantage, response_surprisal, state))

        if not args.use_aem:
            _log_finite(metrics, "aem/drift", drift_base)
            return None

        if args.aem_scope == "group":
            scope_ids = group
        elif args.aem_scope == "trajectory":
            scope_ids = trajectory
        else:
            scope_ids = torch.zeros_like(group)
        result = compute_aem(stat.float(), scope_ids, lam=args.aem_lambda, min_range=args.aem_min_range)
        alpha = result.alpha
        if args.aem_shuffle:
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + self._aem_round)
            alpha = shuffle_within_groups(alpha, scope_ids, generator)
        self._aem_round += 1

        if alpha.numel():
            valid = alpha[finite] if bool(finite.any()) else alpha
            metrics["aem/alpha_mean"].append(float(valid.mean()))
            metrics["aem/alpha_std"].append(float(valid.std(unbiased=False)))
            metrics["aem/alpha_min"].append(float(valid.min()))
            metrics["aem/alpha_max"].append(float(valid.max()))
            metrics["aem/guarded_frac"].append(float(result.group_guarded.float().mean()))
        _log_finite(metrics, "aem/drift", float(entropy_drift(advantage * alpha.double(), response_surprisal, state)))
        _log_finite(metrics, "aem/drift_base", drift_base)

        start = int(rank_counts[: self.accelerator.process_index].sum())
        return alpha[start : start + batch.spans.num_spans]


AEMTrainer.__init__.__signature__ = trainer_signature()


def _log_finite(metrics: dict[str, list[float]], key: str, value: float) -> None:
    """Log ``value`` unless it is NaN/inf (e.g. a drift with no two responses to the same state this batch)."""
    if math.isfinite(value):
        metrics[key].append(value)
