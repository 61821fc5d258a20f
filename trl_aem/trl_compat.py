"""Every piece of trl_aem that mirrors TRL 1.16 code, in one place, each citing the lines it follows.

``AEMTrainer`` subclasses ``trl.GRPOTrainer`` and reuses its code wherever it can; what it cannot call (because
step mode scores a variable number of rows per episode) is re-stated here, as close to TRL's text as possible.
Line numbers refer to ``trl/trainer/grpo_trainer.py`` of trl 1.16.0 unless another file is named.

Overrides of private TRL / transformers methods (the method's own docstring or comment repeats the reference):

====================================================  ==============================================================
override                                              what it replaces (trl 1.16.0; transformers 5.24)
====================================================  ==============================================================
``AEMTrainer._generate_single_turn``                  wraps ``GRPOTrainer._generate_single_turn`` (L1763-1891): the
                                                      ``unwrapped_model.generate(...)`` call also feeds the recorder
``AEMTrainer._generate``                              wraps ``GRPOTrainer._generate`` (L2193-2322): keeps the unpadded
                                                      id lists it returns first
``AEMTrainer._get_per_token_logps_and_entropies``     wraps L1419-1508: the first no-grad call of a batch (the
                                                      old-log-prob pass, L2642-2657) also returns entropies
``AEMTrainer._generate_and_score_completions``        wraps L2324-2937: ``advantages`` become ``(B, T)`` ``A * alpha``
``AEMTrainer._calculate_rewards``                     wraps L1579-1682: rewards in float64 (exact group statistics)
``MultiTurnMixin._prepare_inputs`` (step mode)        L1522-1551: ``split_tensor_dict`` (equal chunks) replaced by
                                                      :func:`split_rows` (variable row counts); images refused
``MultiTurnMixin.training_step`` (step mode)          L1510-1519 and ``Trainer.training_step``: micro-batches of rows
``MultiTurnMixin._compute_loss`` (step mode)          L3020-3292: the loss scaled by :func:`micro_batch_weight`
``HubMixin.create_model_card``                        ``trl/trainer/base_trainer.py`` ``create_model_card`` (L146-)
``HubMixin._save_checkpoint``                         transformers ``Trainer._save_checkpoint`` (``trainer.py``
                                                      L3363-3430): its ``rotate_checkpoints(...)`` call (L3425)
``HubMixin._push_from_checkpoint`` / ``push_to_hub``  transformers ``Trainer`` L4431-, L4345-: uploads retried
``HubMixin.init_hf_repo``                             transformers ``Trainer.init_hf_repo`` (L4245-): Hub outages
``AEMTrainer.log``                                    ``GRPOTrainer.log`` (L3302-3382): metrics with no value in the
                                                      window dropped first (:func:`drop_unmeasured_metrics`)
``HubMixin.log``                                      ``GRPOTrainer.log`` (L3302-3382): Hub counters added
====================================================  ==============================================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl.trainer.utils import nanstd

__all__ = [
    "TRL_VERSION",
    "drop_unmeasured_metrics",
    "group_advantages",
    "has_recompute_pass",
    "importance_sampling_ratio",
    "log_reward_metrics",
    "micro_batch_weight",
    "reference_logps",
    "split_rows",
    "zero_std_fraction",
]

TRL_VERSION = "1.16.0"  # the release these copies follow; pyproject pins trl to this minor release
ZERO_STD = 1e-6  # a reward spread below this is float rounding, not spread


def has_recompute_pass(trainer: Any) -> bool:
    """Whether TRL runs its no-grad old-log-prob forward for a generation batch (L2642-2645): misaligned gradient
    accumulation, or vLLM with importance-sampling correction (the pass itself: L2646-2657)."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    return trainer.args.gradient_accumulation_steps % generate_every != 0 or (
        trainer.use_vllm and trainer.vllm_importance_sampling_correction
    )


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> tuple[torch.Tensor, ...]:
    """TRL's ``sum_then_normalize`` GRPO advantage (L2761-2788, L2810) on episode returns ``R`` (NaN = unscorable:
    excluded from the baseline, advantage 0): ``A = (R - mean_group R) / (std + 1e-4)`` with ``std`` per group,
    over the batch, or none. Returns ``(advantages, std, mean)`` per episode."""
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    if scale_rewards in ("group", "none"):
        std = (
            nanstd(grouped, dim=1).repeat_interleave(num_generations)
            if num_generations > 1
            else torch.zeros_like(rewards)
        )
    elif scale_rewards == "batch":
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        raise ValueError(f"Invalid value for scale_rewards: {scale_rewards}. Must be 'batch', 'group' or 'none'.")
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0), std, mean


def log_reward_metrics(
    metrics: dict[str, list[float]],
    reward_func_names: list[str],
    rewards_per_func: torch.Tensor,
    rewards: torch.Tensor,
    std: torch.Tensor,
) -> None:
    """The reward metrics TRL logs per generation batch (L2821-2830): per function mean/std, reward, reward_std and
    ``frac_reward_zero_std``, where a std below ``ZERO_STD`` counts as zero (TRL's ``torch.isclose`` has a 1e-8
    tolerance, under the float32 rounding of equal returns such as 9.9, which made equal groups count as spread)."""
    for i, name in enumerate(reward_func_names):
        metrics[f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
        metrics[f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
    metrics["reward"].append(torch.nanmean(rewards).item())
    metrics["reward_std"].append(nanstd(rewards).item())
    metrics["frac_reward_zero_std"].append((std.abs() < ZERO_STD).float().mean().item())


def zero_std_fraction(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> float:
    """The share of groups whose weighted reward (TRL's ``sum_then_normalize`` sum, L2761-2764, unscorable rows left
    out) has no spread, counting a std below ``ZERO_STD`` as none."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    std = nanstd(rewards.view(-1, num_generations), dim=1) if num_generations > 1 else torch.zeros(1)
    return float((torch.nan_to_num(std, nan=0.0).abs() < ZERO_STD).float().mean())


def drop_unmeasured_metrics(metrics: dict[str, list[float]]) -> list[str]:
    """Remove the metrics of a logging window that hold no number (every value NaN: e.g. rewards of a batch whose
    episodes all faulted); returns their names. ``GRPOTrainer.log`` (L3304-3311) logs such a metric as ``None``,
    which breaks numeric loggers and curves; a missing point says the same thing honestly."""
    empty = [key for key, values in metrics.items() if all(isinstance(v, float) and math.isnan(v) for v in values)]
    for key in empty:
        del metrics[key]
    return empty


def importance_sampling_ratio(
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    clip_min: float | None,
    clip_max: float | None,
) -> torch.Tensor:
    """TRL's vLLM importance-sampling correction (L2660-2707): same modes, same clipping and masking."""
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -math.inf
    high = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def reference_logps(
    trainer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, batch_size: int
) -> torch.Tensor:
    """Per-token log-probs of the reference policy (L2710-2739): the reference model, or for a PEFT model the base
    (adapters disabled) or the adapter loaded as ``"ref"``."""
    if trainer.ref_model is not None:
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.ref_model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
        )
        return logps
    from trl.models.utils import use_adapter

    model = trainer.accelerator.unwrap_model(trainer.model)
    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
        )
    return logps


def micro_batch_weight(loss_type: str, rows: int, total_rows: int, tokens: int, total_tokens: int) -> float:
    """Weight of one micro-batch's loss when a training step's rows run in several micro-batches, so that the summed
    gradient equals that of one pass over all rows under TRL's per-loss-type normalisation (L3153-3184): a mean over
    rows (grpo, sapo, dr_grpo, luspo) weighs by rows, a mean over tokens (bnpo) by tokens, and the losses already
    normalised by the generation batch's token count (cispo, dapo, vespo) add up unweighted."""
    if loss_type == "bnpo":
        return tokens / max(1, total_tokens)
    if loss_type in ("cispo", "dapo", "vespo"):
        return 1.0
    return rows / max(1, total_rows)


def split_rows(batch: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """Split a batch along rows into ``chunks`` nearly equal parts (sizes differ by at most one, none dropped), where
    TRL's ``split_tensor_dict`` (``trl/trainer/utils.py``) needs the row count to be a multiple of ``chunks``."""
    rows = batch["completion_ids"].size(0)
    bounds = torch.linspace(0, rows, chunks + 1).round().long().tolist()
    return [take_rows(batch, slice(bounds[i], bounds[i + 1])) for i in range(chunks)]


def take_rows(batch: dict[str, Any], index: slice) -> dict[str, Any]:
    """The rows ``index`` of every per-row tensor or list of ``batch`` (scalars are shared)."""
    return {
        key: value[index] if (isinstance(value, torch.Tensor) and value.ndim > 0) or isinstance(value, list) else value
        for key, value in batch.items()
    }
