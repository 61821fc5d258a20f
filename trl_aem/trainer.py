"""``AEMTrainer``: TRL's ``GRPOTrainer`` with AEM advantage modulation per response span.

Data path of one generation batch (single-turn completions, or TRL's own ``tools`` loop):

1. ``_generate_single_turn`` (TRL) samples with ``transformers.generate``; a logits processor records
   each token's full-vocabulary entropy and sampled log-prob on the fly (:mod:`trl_aem.sampling`).
   With vLLM the entropies come from the old-log-prob pass TRL already runs. No extra forward pass.
2. ``_generate_and_score_completions`` (TRL) scores the batch and computes the base advantages
   ``A_base`` in group order; our override then splits the loss mask into response spans, averages the
   statistic per span, gathers spans across processes (a group may straddle ranks), computes
   ``alpha`` per group, slices this rank's spans back and returns ``(B, T)`` advantages
   ``A_base * alpha`` that TRL's unchanged ``_compute_loss`` consumes.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import os
import shutil
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from .config import AEMConfig
from .distributed import gather_ragged
from .hub.card import WallClock, write_model_card
from .hub.push import ResilientHubApi, trainer_hub_api
from .hub.results import carry_over_cli_evaluations
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
from .rollout.trainer_env import EnvTrainingMixin, _as_list, _env_datasets, env_return
from .sampling import SampledSegment, record_sampling_stats

logger = logging.getLogger(__name__)

__all__ = ["AEMTrainer", "AEM_CITATION"]


AEM_CITATION = textwrap.dedent("""\
    @article{zhao2026aem,
        title        = {{AEM: Adaptive Entropy Modulation for Multi-Turn Agentic Reinforcement Learning}},
        author       = {Haotian Zhao and others},
        year         = 2026,
        eprint       = {arXiv:2605.00425},
    }""")


# GRPOTrainer.__init__'s parameters after `model`, in order (reward_funcs, args, train_dataset, ...)
_GRPO_PARAMETERS = list(inspect.signature(GRPOTrainer.__init__).parameters.values())[2:]


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


class AEMTrainer(EnvTrainingMixin, GRPOTrainer):
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
        # GRPOTrainer's parameters by the same names and positions (see `__signature__` below the class), plus `env`
        # and `config`. In the multi-turn form `AEMTrainer(model, env, config, reward_funcs=...)` the environment
        # takes `reward_funcs`' position, which Python could not bind with a fixed signature.
        call = _bind_grpo_arguments(positional, named, env)
        env = call.pop("env")
        config = _as_aem_config(call.pop("args"), config, model)
        reward_funcs, train_dataset, eval_dataset = call["reward_funcs"], call["train_dataset"], call["eval_dataset"]
        if env is not None:
            if not callable(env):
                raise TypeError(
                    f"env must be a zero-argument callable returning a TextEnv (usually the class), got {env!r}"
                )
            train_dataset, eval_dataset, system_prompt, history_observation = _env_datasets(
                env, config, train_dataset, eval_dataset
            )
            reward_funcs = [env_return, *_as_list(reward_funcs)]
            if config.rollout_mode == "step" and config.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(
                    "AEMConfig: rollout_mode='step' supports multi_objective_aggregation='sum_then_normalize' only"
                )
        elif not reward_funcs and call["environment_factory"] is None and call["rollout_func"] is None:
            raise ValueError(
                "Single-turn training (env=None) needs `reward_funcs` to score completions (or TRL's "
                "`environment_factory` whose environment owns the reward)."
            )
        self.env_factory = env
        # Per-batch scratch state, filled by the overrides below and consumed in _generate_and_score_completions.
        self._sampled_segments: list[SampledSegment] = []
        self._last_rollout_ids: tuple[list, list, list | None] | None = None
        self._capture_recompute = False
        self._recomputed: tuple[torch.Tensor, torch.Tensor] | None = None
        self._aem_round = 0
        # Hub: every upload goes through a retrying client (see `trl_aem.hub.push`); set before
        # `Trainer.__init__`, which creates the repository when `push_to_hub=True`.
        self._hub_api = ResilientHubApi(retries=config.hub_push_retries, backoff=config.hub_push_backoff)
        self._wall_clock = WallClock()
        self.model_card_dataset: str | None = None  # a Hub dataset id for the card's `datasets`, when known

        call.update(reward_funcs=reward_funcs, train_dataset=train_dataset, eval_dataset=eval_dataset)
        call["callbacks"] = [*(call["callbacks"] or []), self._wall_clock]
        super().__init__(model=model, args=config, **call)
        self._stats_source = self._resolve_stats_source()
        self._micro_weight = 1.0
        if env is not None:
            self._setup_env(env, system_prompt, history_observation)

    # ------------------------------------------------------------------ where the statistic comes from
    @property
    def _has_recompute_pass(self) -> bool:
        """Whether TRL runs its no-grad old-log-prob forward this batch (same test as in
        ``GRPOTrainer._generate_and_score_completions``: misaligned accumulation or vLLM IS correction)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _resolve_stats_source(self) -> str | None:
        """``"sampler"``: recorded while ``transformers.generate`` samples. ``"recompute"``: taken from the
        old-log-prob pass TRL already runs (vLLM, continuous batching). ``None``: the control arm
        (``use_aem=False``) on a configuration where the statistic could only come from an extra forward pass; it
        then trains exactly like ``GRPOTrainer`` and logs no ``aem/*`` statistic. With AEM on, such a configuration
        would need that extra pass, which AEM must not add, so it is refused with the settings that fix it."""
        if not (self.use_vllm or self.use_transformers_continuous_batching):
            return "sampler"
        if self._has_recompute_pass:
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
        # Wraps GRPOTrainer._generate_single_turn: on the transformers path, the `unwrapped_model.generate(...)`
        # call it makes also feeds a SamplingStatsRecorder. vLLM / continuous batching run unchanged.
        if self._stats_source != "sampler":
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        with record_sampling_stats(unwrapped, self.temperature) as recorder:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        entropies, logps = recorder.entropies(), recorder.logps()
        for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
            n = len(completion)
            self._sampled_segments.append(
                SampledSegment(list(prompt), list(completion), entropies[row, :n], logps[row, :n])
            )
        return completion_ids, logprobs

    def _generate(self, prompts: list):
        # Keep the unpadded id lists of the batch (GRPOTrainer._generate returns them first) to align the
        # recorded segments with completion tokens.
        result = super()._generate(prompts)
        prompt_ids, completion_ids, tool_mask = result[0], result[1], result[2]
        self._last_rollout_ids = (prompt_ids, completion_ids, tool_mask)
        return result

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        # With vLLM, TRL's first no-grad call in `_generate_and_score_completions` is the old-log-prob pass
        # (`compute_entropy=False` there). Ask the fused LM head, which computes entropies anyway, to return them.
        if self._capture_recompute and not torch.is_grad_enabled():
            self._capture_recompute = False
            wanted = kwargs.pop("compute_entropy", False)
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, compute_entropy=True, **kwargs
            )
            self._recomputed = (logps.detach(), entropies.detach())
            return logps, (entropies if wanted else None), aux
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )

    # ------------------------------------------------------------------ one generation batch
    def _generate_and_score_completions(self, inputs):
        if self.env_factory is not None:
            return self._generate_and_score_episodes(inputs)
        return self._generate_and_score_single_turn(inputs)

    def _generate_and_score_single_turn(self, inputs):
        self._sampled_segments = []
        self._recomputed = None
        self._capture_recompute = self._stats_source == "recompute"
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._capture_recompute = False
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval

        local_rows = output["completion_ids"].size(0)
        row_offset = self.accelerator.process_index * local_rows  # TRL's `process_slice`: equal rows per rank
        global_rows = torch.arange(row_offset, row_offset + local_rows)
        output["advantages"] = self._modulate_advantages(
            output,
            row_group=global_rows // num_generations,
            row_trajectory=global_rows,
            mode=mode,
        )
        self._sampled_segments = []
        self._last_rollout_ids = None
        self._recomputed = None
        return output

    def _token_statistics(self, output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` token entropies and sampled-token log-probs aligned with ``completion_ids`` (NaN where
        none was recorded)."""
        completion_ids = output["completion_ids"]
        if self._stats_source == "recompute":
            if self._recomputed is None:
                raise RuntimeError("AEM: TRL's old-log-prob pass did not run, so no token entropies are available.")
            logps, entropies = self._recomputed
            return entropies.float(), logps.float()

        entropy = torch.full(completion_ids.shape, float("nan"))
        logp = torch.full(completion_ids.shape, float("nan"))
        if self._last_rollout_ids is None or not self._sampled_segments:
            raise RuntimeError(
                "AEM: no sampling statistics were recorded for this batch. A custom `rollout_func` that does not "
                "generate through the trainer gives AEM nothing to measure; generate with vLLM (the recompute "
                "pass provides entropies) or through `trainer._generate_single_turn`."
            )
        prompt_ids, completion_lists, tool_masks = self._last_rollout_ids
        by_prompt: dict[tuple[int, ...], list[SampledSegment]] = defaultdict(list)
        for segment in self._sampled_segments:
            by_prompt[segment.key].append(segment)
        for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_lists, strict=True)):
            prompt, completion = list(prompt), list(completion)
            model_mask = tool_masks[row] if tool_masks is not None else [1] * len(completion)
            full = prompt + completion
            for start, length in _runs_of_ones(model_mask):
                candidates = by_prompt.get(tuple(full[: len(prompt) + start]))
                if not candidates:
                    continue
                tokens = completion[start : start + length]
                for k, segment in enumerate(candidates):
                    n = min(length, len(segment.completion_ids))
                    if segment.completion_ids[:n] == tokens[:n]:
                        entropy[row, start : start + n] = segment.entropies[:n]
                        logp[row, start : start + n] = segment.logps[:n]
                        del candidates[k]
                        break
        device = completion_ids.device
        return entropy.to(device), logp.to(device)

    def _modulate_advantages(
        self,
        output: dict[str, Any],
        *,
        row_group: torch.Tensor,
        row_trajectory: torch.Tensor,
        mode: str,
        token_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Return the advantages TRL's loss will use: ``(B, T)`` ``A_base * alpha`` per token with AEM on, the
        unchanged base advantages otherwise. Logs the ``aem/*`` metrics in both cases."""
        base = output["advantages"]
        if self._stats_source is None:  # control arm without a statistic (see `_resolve_stats_source`)
            return base
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        spans = response_spans(loss_mask)
        token_entropy, token_logp = token_stats if token_stats is not None else self._token_statistics(output)
        batch = SpanBatch(
            spans=spans,
            entropy=span_means(token_entropy, spans).cpu(),
            surprisal=span_means(-token_logp, spans).cpu(),
            response_surprisal=span_sums(-token_logp, spans).cpu(),
            state=conditioning_keys(output["prompt_ids"], output["prompt_mask"], output["completion_ids"], spans),
            group=row_group.cpu()[spans.row],
            trajectory=row_trajectory.cpu()[spans.row],
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
        full, counts = gather_ragged(fields, self.accelerator)
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
            _, inverse, counts = torch.unique(state, return_inverse=True, return_counts=True)
            metrics["aem/drift_coverage"].append(float((counts[inverse] > 1).float().mean()))
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

        start = int(counts[: self.accelerator.process_index].sum())
        return alpha[start : start + batch.spans.num_spans]

    # ------------------------------------------------------------------ model card and Hub
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        """Write the standard trl_aem model card (``README.md``), the training-curves PNG and ``aem_env.json`` into
        ``output_dir``. Same signature as TRL's: called by ``_save_checkpoint`` at every save (so the card and
        curves travel with every checkpoint push) and by ``push_to_hub``.

        Replaces ``_BaseTrainer.create_model_card`` (trl/trainer/base_trainer.py), whose ``generate_model_card``
        only reads templates from the trl package.
        """
        if not self.is_world_process_zero():
            return
        try:
            card = write_model_card(
                self,
                self.args.output_dir,
                model_name=model_name,
                dataset_name=dataset_name or self.model_card_dataset,
                tags=tags,
            )
            hub_card = self._hub_card() if self.args.push_to_hub else None
            if hub_card is not None:  # keep what `trl-aem eval --push-results` wrote since the last push
                carry_over_cli_evaluations(card, hub_card).save(os.path.join(self.args.output_dir, "README.md"))
        except Exception as error:  # a card problem must never cost the checkpoint it describes
            warnings.warn(f"trl_aem: could not write the model card ({type(error).__name__}: {error})", stacklevel=2)

    def _hub_card(self):
        """The card now on the Hub (one download per save), or ``None`` when there is none or the Hub does not
        answer: the card is then rendered from this run alone, as before any evaluation was pushed."""
        from huggingface_hub import ModelCard

        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        if not repo_id:
            return None
        try:
            return ModelCard.load(repo_id, token=self.args.hub_token)
        except Exception as error:  # absent card, unreachable Hub: nothing to carry over
            logger.info("model card: no card read from %s (%s)", repo_id, type(error).__name__)
            return None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        # Trainer.init_hf_repo's `hf_api().create_repo(...)` raises when the Hub is unreachable; training starts
        # anyway and the first upload that gets through creates the repository (ResilientHubApi).
        try:
            with trainer_hub_api(self._hub_api):
                super().init_hf_repo(token=token, private=private)
        except Exception as error:
            warnings.warn(
                f"trl_aem: could not create the Hub repository yet ({type(error).__name__}: {error}); training "
                "continues and the first successful push creates it",
                RuntimeWarning,
                stacklevel=2,
            )
            self.hub_model_id = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
            self.push_in_progress = None

    def _save_checkpoint(self, model, trial) -> None:
        """``Trainer._save_checkpoint`` whose ``save_total_limit`` rotation keeps checkpoints still waiting to reach
        the Hub. Trainer rotates right after the push starts (``rotate_checkpoints(...)`` at the end of
        ``Trainer._save_checkpoint``); a folder whose upload failed is queued for a replay with the next push, and
        deleting it would lose it from both places. Rotation here runs without those folders, which are rotated
        once their upload went through."""
        limit = self.args.save_total_limit
        if not (self.args.push_to_hub and limit and limit > 0):
            return super()._save_checkpoint(model, trial)
        self.args.save_total_limit = None  # Trainer's rotation off for this save; ours below
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            self._rotate_checkpoints_keeping_pending(limit)

    def _rotate_checkpoints_keeping_pending(self, limit: int) -> None:
        from transformers.trainer_utils import sort_checkpoints

        run_dir = self._get_output_dir(trial=None)
        checkpoints = sort_checkpoints(run_dir, use_mtime=True)
        pending = {os.path.abspath(folder) for folder in self._hub_api.pending_failures}
        protected = {checkpoints[-1]} if checkpoints else set()
        if self.state.best_model_checkpoint is not None:
            protected.add(str(self.state.best_model_checkpoint))
        protected |= {c for c in checkpoints if os.path.abspath(c) in pending}
        remaining = len(checkpoints)
        for checkpoint in checkpoints:
            if remaining <= max(limit, len(protected)):
                break
            if checkpoint not in protected:
                shutil.rmtree(checkpoint, ignore_errors=True)
                remaining -= 1

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Trainer._push_from_checkpoint unchanged (hub_strategy, files copied from the checkpoint, asynchronous
        # `upload_folder(..., run_as_future=True)`), its uploads retried and reported instead of lost or raised.
        self._latest_checkpoint = checkpoint_folder  # even when Trainer skips it (previous push still running)
        with trainer_hub_api(self._hub_api):
            super()._push_from_checkpoint(checkpoint_folder)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """``Trainer.push_to_hub`` (save, card, upload of ``output_dir``) whose upload is retried with backoff and,
        if the Hub stays unreachable, reported with a warning (``None`` is returned) instead of raised: the local
        ``output_dir`` is complete either way. With ``push_merged_model=True`` and a PEFT model, the merged model
        is pushed to ``<hub_model_id>-merged`` as well."""
        with trainer_hub_api(self._hub_api):
            result = super().push_to_hub(
                commit_message=commit_message,
                blocking=blocking,
                token=token,
                revision=revision,
                private=private,
                **kwargs,
            )
        if self.is_world_process_zero():
            self._push_latest_checkpoint(token=token, blocking=blocking)
            if self.args.push_merged_model:
                self._push_merged_model(token=token, blocking=blocking)
        return result

    def _push_latest_checkpoint(self, token: str | None = None, blocking: bool = True):
        """With ``hub_strategy`` ``checkpoint`` / ``all_checkpoints``, upload the newest checkpoint if no upload of
        it went through (its push failed, or Trainer skipped it while an earlier push was still running), so the
        Hub's ``last-checkpoint`` is the one training ended with and resuming from it loses nothing."""
        folder = getattr(self, "_latest_checkpoint", None)
        strategy = getattr(self.args.hub_strategy, "value", self.args.hub_strategy)
        if folder is None or strategy not in ("checkpoint", "all_checkpoints") or not os.path.isdir(folder):
            return None
        path_in_repo = "last-checkpoint" if strategy == "checkpoint" else os.path.basename(folder)
        if self._hub_api.was_uploaded(folder, path_in_repo):
            return None
        return self._hub_api.upload_folder(
            repo_id=self.hub_model_id,
            folder_path=folder,
            path_in_repo=path_in_repo,
            commit_message=f"{os.path.basename(folder)}, checkpoint (catch-up after a failed or skipped push)",
            token=token or self.args.hub_token,
            revision=self.args.hub_revision,
            run_as_future=not blocking,
        )

    def _push_merged_model(self, token: str | None = None, blocking: bool = True):
        """Merge the adapter into a copy of the base model, save it in ``output_dir/_merged`` (``_*`` is skipped by
        Trainer's uploads of ``output_dir``) with a full-model card and push it to ``<hub_model_id>-merged``."""
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, PeftModel):
            warnings.warn("push_merged_model=True has no effect: the model is not a PEFT model", stacklevel=2)
            return None
        if getattr(model.get_base_model().config, "quantization_config", None) is not None:
            warnings.warn(
                "push_merged_model=True: a quantized (QLoRA) base is not merged; push the adapter", stacklevel=2
            )
            return None
        folder = os.path.join(self.args.output_dir, "_merged")
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(folder)
        del merged
        write_model_card(self, folder, kind="merged", adapter_repo=self.hub_model_id, tags=["merged"])
        return self._hub_api.upload_folder(
            repo_id=f"{self.hub_model_id}-merged",
            folder_path=folder,
            commit_message="Merged model, end of training",
            token=token or self.args.hub_token,
            private=self.args.hub_private_repo,
            revision=self.args.hub_revision,
            run_as_future=not blocking,
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Cumulative Hub upload counters (`hub/pushes`, `hub/push_retries`, `hub/push_failures`) in training logs.
        if self.args.push_to_hub and "loss" in logs:
            logs.update(self._hub_api.stats.metrics())
        super().log(logs, start_time)


# What `inspect.signature`, IDEs and `help()` show: GRPOTrainer's parameters, then `env` and `config`.
AEMTrainer.__init__.__signature__ = inspect.Signature(
    [
        *list(inspect.signature(GRPOTrainer.__init__).parameters.values())[:2],
        *_GRPO_PARAMETERS,
        inspect.Parameter("env", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
)


def _log_finite(metrics: dict[str, list[float]], key: str, value: float) -> None:
    """Log ``value`` unless it is NaN/inf (e.g. a drift with no two responses to the same state this batch)."""
    if math.isfinite(value):
        metrics[key].append(value)


def _bind_grpo_arguments(positional: tuple, named: dict[str, Any], env: Any) -> dict[str, Any]:
    """GRPOTrainer's arguments by name (defaults filled in) plus ``env``, from a call in either form:
    ``AEMTrainer(model, reward_funcs, args, train_dataset, ...)`` as for ``GRPOTrainer``, or
    ``AEMTrainer(model, env, config, ...)``, where an environment factory takes ``reward_funcs``' position."""
    names = [p.name for p in _GRPO_PARAMETERS]
    if len(positional) > len(names):
        raise TypeError(f"AEMTrainer takes at most {len(names) + 1} positional arguments, got {len(positional) + 1}")
    slots = list(names)
    if positional and env is None and _is_env_factory(positional[0]):
        slots[0] = "env"
    call: dict[str, Any] = dict(zip(slots[: len(positional)], positional, strict=True))
    for name, value in named.items():
        if name not in names:
            raise TypeError(f"AEMTrainer got an unexpected keyword argument {name!r}")
        if name in call:
            raise TypeError(f"AEMTrainer got multiple values for argument {name!r}")
        call[name] = value
    if env is not None and "env" in call:
        raise TypeError("AEMTrainer got multiple values for argument 'env'")
    call.setdefault("env", env)
    for parameter in _GRPO_PARAMETERS:
        call.setdefault(parameter.name, parameter.default)
    return call


def _is_env_factory(value: Any) -> bool:
    """Whether the second positional argument is an environment factory rather than ``reward_funcs``: a class (reward
    functions are functions or instances) or a callable that needs no argument (reward functions take the
    completions). A built-in environment's name is refused: as a string it would be read as a reward model id."""
    if isinstance(value, str):
        from .envs import ENVIRONMENTS

        if value in ENVIRONMENTS and not os.path.exists(value):
            raise TypeError(
                f"{value!r} would be read as a reward model id; pass the environment itself: "
                f"env=trl_aem.envs.get_env({value!r}) (env must be a zero-argument callable returning a TextEnv)"
            )
        return False
    if isinstance(value, (list, tuple, torch.nn.Module)) or not callable(value):
        return False
    if isinstance(value, type):
        return True
    try:
        parameters = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): leave it to GRPOTrainer
        return False
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return not any(p.default is p.empty and p.kind in kinds for p in parameters)


def _as_aem_config(args: GRPOConfig | None, config: GRPOConfig | None, model) -> AEMConfig:
    """The trainer's :class:`AEMConfig` from ``args`` or ``config`` (aliases). A plain ``GRPOConfig`` becomes an
    ``AEMConfig`` with every field it already resolved kept and AEM's defaults added (re-running
    ``GRPOConfig.__post_init__`` would refuse its own derived ``generation_batch_size``/``steps_per_generation``)."""
    if args is not None and config is not None and args is not config:
        raise TypeError(
            "AEMTrainer: pass the configuration once, as `args=` or `config=` (they are the same argument)"
        )
    config = args if args is not None else config
    if config is None:
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        return AEMConfig(f"{str(model_name).rstrip('/').split('/')[-1]}-AEM")
    if isinstance(config, AEMConfig):
        return config
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"args must be a trl_aem.AEMConfig or a trl.GRPOConfig, got {type(config).__name__}")
    warnings.warn(
        f"AEMTrainer: converted the {type(config).__name__} to an AEMConfig with AEM's defaults (use_aem=True)",
        UserWarning,
        stacklevel=3,
    )
    converted = copy.copy(config)
    converted.__class__ = AEMConfig
    for f in dataclasses.fields(AEMConfig):
        if f.init and f.name not in vars(converted):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(converted, f.name, default)
    converted._validate_aem()
    return converted


def _runs_of_ones(mask: list[int]) -> list[tuple[int, int]]:
    """``[(start, length), ...]`` of the runs of ones in a 0/1 list."""
    runs, start = [], None
    for i, value in enumerate(mask):
        if value and start is None:
            start = i
        elif not value and start is not None:
            runs.append((start, i - start))
            start = None
    if start is not None:
        runs.append((start, len(mask) - start))
    return runs
