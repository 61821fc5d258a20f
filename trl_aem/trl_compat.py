"""Everything in trl_aem that depends on TRL 1.16's internals, in one place: the table of overrides and runtime
patches, and the pieces of TRL code re-stated because step mode cannot call them (each citing the lines it follows).

Line numbers refer to ``trl/trainer/grpo_trainer.py`` of trl 1.16.0 unless another file is named. ``pyproject.toml``
pins trl to this minor release because of this table. :data:`OVERRIDES` lists every method of a ``GRPOTrainer``
ancestor that a trl_aem class defines again, and :data:`PATCHES` every attribute trl_aem swaps for a while at run
time (always through :func:`temporarily`); ``tests/test_trl_compat.py`` compares both with the code, so an override
or patch added without an entry here fails the tests.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from trl.trainer.utils import nanstd

__all__ = [
    "flat_groups",
    "OVERRIDES",
    "PATCHES",
    "TRL_VERSION",
    "drop_unmeasured_metrics",
    "has_recompute_pass",
    "importance_sampling_ratio",
    "log_reward_metrics",
    "micro_batch_weight",
    "logged_flat_groups",
    "recount_zero_std",
    "reference_logps",
    "split_rows",
    "take_rows",
    "temporarily",
    "without_spread",
    "zero_std_fraction",
]

TRL_VERSION = "1.16.0"  # the release these copies follow; pyproject pins trl to this minor release
ZERO_STD = 1e-6  # a reward spread below this (relative to the rewards' size, at least 1) is float rounding


def without_spread(grouped: torch.Tensor) -> torch.Tensor:
    """Per group (a row of ``grouped``, NaN = unscorable, left out): whether its rewards are equal up to float
    rounding, i.e. their std is below ``ZERO_STD`` times their largest magnitude (at least 1). Equal float32 returns
    such as 9.9 have a std of about 1e-7, which TRL's ``(R - mean) / (std + 1e-4)`` turns into advantages of about
    1e-3: gradient from rounding, not from the environment."""
    if grouped.size(1) < 2:
        return torch.ones(grouped.size(0), dtype=torch.bool, device=grouped.device)
    std = torch.nan_to_num(nanstd(grouped, dim=1), nan=0.0)
    magnitude = torch.nan_to_num(grouped.abs(), nan=0.0).amax(dim=1).clamp(min=1.0)
    return std.abs() < ZERO_STD * magnitude


# "Class.method" -> what it replaces (trl 1.16.0; transformers 5.23) and why. Every such method calls super().
OVERRIDES: dict[str, str] = {
    "CaptureHooksMixin._generate_single_turn": "GRPOTrainer._generate_single_turn (L1763-1891): the "
    "`unwrapped_model.generate(...)` call also feeds the token-statistics recorder (trl_aem.sampling); the "
    "segments go to the batch's capture",
    "CaptureHooksMixin._generate": "GRPOTrainer._generate (L2193-2322): the unpadded id lists it returns go to the capture, "
    "to align recorded segments with completion tokens (TRL's tools loop joins several per row)",
    "CaptureHooksMixin._get_per_token_logps_and_entropies": "GRPOTrainer._get_per_token_logps_and_entropies (L1419-1508): "
    "the batch's old-log-prob pass (L2642-2657, compute_entropy=False there) also returns the entropies, for AEM "
    "with vLLM / continuous batching",
    "AEMTrainer._generate_and_score_completions": "GRPOTrainer._generate_and_score_completions (L2324-2937): "
    "`advantages` become the (B, T) A * alpha; step mode scores its own rows (rollout/step_rows.py); trajectory "
    "rows go through TRL's rollout_func and come back in the rows TRL merged its extra fields into (L2741-2747)",
    "AEMTrainer.train": "Trainer.train (transformers trainer.py): then the final save and card "
    "(save_final_model), the list of uploads that did not reach the Hub, and the environment pool closed",
    "AEMTrainer.log": "GRPOTrainer.log (L3302-3382): metrics with no number in the window dropped first "
    "(drop_unmeasured_metrics), Hub upload counters added",
    "StepRowsMixin._prepare_inputs": "GRPOTrainer._prepare_inputs (L1522-1551), step mode: split_tensor_dict "
    "(equal chunks, remainder dropped) replaced by split_rows (variable row counts); images refused",
    "StepRowsMixin.training_step": "GRPOTrainer.training_step (L1510-1519), step mode: the step's rows in "
    "micro-batches through Trainer.training_step, each with its loss weight in its inputs",
    "StepRowsMixin._compute_loss": "GRPOTrainer._compute_loss (L3020-3292): the loss times the micro-batch weight "
    "training_step put in the inputs (micro_batch_weight); unchanged without one",
    "HubMixin.create_model_card": "_BaseTrainer.create_model_card (trl/trainer/base_trainer.py L146-), whose "
    "generate_model_card reads templates from the trl package only: the trl_aem card, curves and aem_env.json",
    "HubMixin._save_checkpoint": "GRPOTrainer._save_checkpoint (L3384-3388, which calls "
    "Trainer._save_checkpoint, transformers trainer.py L3363-3430): save_total_limit rotation keeps checkpoints "
    "whose upload failed",
    "HubMixin._push_from_checkpoint": "Trainer._push_from_checkpoint (transformers trainer.py L4431-): uploads "
    "through the retrying Hub client",
    "HubMixin.push_to_hub": "Trainer.push_to_hub (transformers trainer.py L4345-): upload retried and reported "
    "instead of raised; the newest checkpoint and, with push_merged_model, the merged model pushed too",
    "HubMixin.init_hf_repo": "Trainer.init_hf_repo (transformers trainer.py L4245-): a Hub that is down does not "
    "stop training; the first upload that gets through creates the repository",
}

# patch id -> what is swapped, for how long, and why. Every swap goes through `temporarily(patch_id, ...)`.
PATCHES: dict[str, str] = {
    "record_generate": "the model instance's `generate`, for one call inside trl_aem.sampling.record_sampling_stats: "
    "it closes the recorder with the final sampled tokens",
    "record_logits_processor": "`_get_logits_processor` of the sampling model instance (the base model of a PEFT "
    "model), for one generate call: the recorder goes first in the processor list (trl_aem.sampling)",
    "turn_tokens_transformers": "GRPOTrainer.generation_config.max_new_tokens and generation_kwargs"
    "['max_new_tokens'] (created at L1107-1175), for one multi-turn generate call: the per-turn cap "
    "(rollout/playing.py)",
    "turn_tokens_vllm": "vllm_generation.max_completion_length, for one multi-turn generate call: the per-turn cap",
    "hub_client": "transformers.trainer.hf_api (the module function Trainer's Hub calls fetch their client from), "
    "during init_hf_repo / _push_from_checkpoint / push_to_hub: the retrying client (hub/push.py)",
    "checkpoint_rotation": "args.save_total_limit set to None during one Trainer._save_checkpoint, whose own "
    "rotation would delete checkpoints still waiting for their upload (hub/trainer_mixin.py)",
}


@contextlib.contextmanager
def temporarily(patch_id: str, owner: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``owner.name`` (or ``owner[name]`` for a dict) to ``value`` for the block, then restore exactly what was
    there (an attribute that was not on the instance is removed again). ``patch_id`` names the entry of
    :data:`PATCHES` that documents the swap."""
    if patch_id not in PATCHES:
        raise KeyError(f"runtime patch {patch_id!r} is not in trl_aem.trl_compat.PATCHES")
    if isinstance(owner, dict):
        had, previous = name in owner, owner.get(name)
        owner[name] = value
    else:
        had, previous = name in vars(owner), vars(owner).get(name)
        setattr(owner, name, value)
    try:
        yield
    finally:
        if isinstance(owner, dict):
            if had:
                owner[name] = previous
            else:
                owner.pop(name, None)
        elif had:
            setattr(owner, name, previous)
        else:
            delattr(owner, name)


def has_recompute_pass(trainer: Any) -> bool:
    """Whether TRL runs its no-grad old-log-prob forward for a generation batch (L2642-2645): misaligned gradient
    accumulation, or vLLM with importance-sampling correction (the pass itself: L2646-2657)."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    return trainer.args.gradient_accumulation_steps % generate_every != 0 or (
        trainer.use_vllm and trainer.vllm_importance_sampling_correction
    )


def log_reward_metrics(
    metrics: dict[str, list[float]],
    reward_func_names: list[str],
    rewards_per_func: torch.Tensor,
    rewards: torch.Tensor,
    no_spread: torch.Tensor,
) -> None:
    """The reward metrics TRL logs per generation batch (L2821-2830): per function mean/std, reward, reward_std and
    ``frac_reward_zero_std``, the share of rows whose reward has no spread (``no_spread``, per row, from
    :func:`without_spread`: TRL's ``torch.isclose`` has a 1e-8 tolerance, under the float32 rounding of equal returns
    such as 9.9, which made equal groups count as spread)."""
    for i, name in enumerate(reward_func_names):
        metrics[f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
        metrics[f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
    metrics["reward"].append(torch.nanmean(rewards).item())
    metrics["reward_std"].append(nanstd(rewards).item())
    metrics["frac_reward_zero_std"].append(no_spread.float().mean().item())


def flat_groups(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Per row: whether its group's weighted reward (TRL's ``sum_then_normalize`` sum, L2761-2764, unscorable rows
    left out) has no spread (:func:`without_spread`)."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    return without_spread(rewards.view(-1, num_generations)).repeat_interleave(num_generations)


def zero_std_fraction(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> float:
    """The share of groups whose weighted reward has no spread (:func:`flat_groups`)."""
    return float(flat_groups(rewards_per_func, weights, num_generations).float().mean())


def logged_flat_groups(trainer: Any, mode: str, rows: int) -> torch.Tensor | None:
    """:func:`flat_groups` of the batch just scored by ``GRPOTrainer._generate_and_score_completions``, read from
    the last ``rows`` rewards TRL logged (all processes, L2821-2825); ``None`` where TRL's advantage is not a group
    one (``multi_objective_aggregation`` other than ``sum_then_normalize``) or the log does not hold the batch."""
    if trainer.multi_objective_aggregation != "sum_then_normalize":
        return None
    num_generations = trainer.num_generations if mode == "train" else trainer.num_generations_eval
    logged = [list(trainer._logs["rewards"][name])[-rows:] for name in trainer.reward_func_names]
    if any(len(values) != rows for values in logged) or rows % num_generations:
        return None
    per_func = torch.tensor(logged, dtype=torch.float64).T
    return flat_groups(per_func, trainer.reward_weights.double().cpu(), num_generations)


def recount_zero_std(trainer: Any, mode: str, rows: int) -> None:
    """Recount TRL's ``frac_reward_zero_std`` of the batch just scored (L2788, L2830) without float noise: TRL
    compares the float32 group std with ``torch.isclose`` (tolerance 1e-8), and equal returns such as 9.9 have a
    float32 std of about 1e-7. The batch's rewards are the last ``rows`` TRL logged (all processes)."""
    if trainer.scale_rewards == "batch":
        return
    metric = trainer._metrics[mode]["frac_reward_zero_std"]
    flat = logged_flat_groups(trainer, mode, rows)
    if metric and flat is not None:
        metric[-1] = float(flat.float().mean())


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
