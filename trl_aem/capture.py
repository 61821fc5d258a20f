"""``RolloutCapture`` and the trainer hooks that fill it: the token statistics of a batch TRL's own code generates.

When TRL's ``_generate_and_score_completions`` drives the generation (single-turn completions, TRL's ``tools`` loop,
and trajectory rows through ``rollout_func``), AEM's statistic has to be picked up where TRL calls the trainer's
hooks (:class:`CaptureHooksMixin`): ``_generate_single_turn`` adds the segments it sampled, ``_generate`` the
batch's unpadded ids, and ``_get_per_token_logps_and_entropies`` the entropies of TRL's old-log-prob pass (vLLM).
``AEMTrainer._generate_and_score_completions`` opens one capture per such batch (:func:`capturing`, never nested),
and reads the ``(B, T)`` statistics back with :meth:`RolloutCapture.token_statistics`. Step-mode rows and the
episodes of trajectory rows carry their statistic on their turns instead and need no capture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .sampling import SampledSegment, align_segments, sample_with_statistics
from .trl_compat import has_recompute_pass

__all__ = ["CaptureHooksMixin", "RolloutCapture", "StatsSource", "capturing", "stats_source"]

# "sampler": recorded while transformers' generate samples; "recompute": from TRL's old-log-prob pass (vLLM,
# continuous batching); None: no statistic (the control arm on a configuration that would need an extra forward)
StatsSource = str | None


def stats_source(trainer: Any) -> StatsSource:
    """Where a trainer's AEM statistic comes from. ``"sampler"``: recorded while ``transformers.generate`` samples.
    ``"recompute"``: taken from the old-log-prob pass TRL already runs (vLLM, continuous batching). ``None``: the
    control arm (``use_aem=False``) on a configuration where the statistic could only come from an extra forward
    pass; it then trains exactly like ``GRPOTrainer`` and logs no ``aem/*`` statistic. With AEM on, such a
    configuration would need that extra pass, which AEM must not add, so it is refused with the settings that fix
    it."""
    if not (trainer.use_vllm or trainer.use_transformers_continuous_batching):
        return "sampler"
    if has_recompute_pass(trainer):
        return "recompute"
    args = trainer.args
    if not args.use_aem:
        return None
    accumulation = (
        f"or make `gradient_accumulation_steps` ({args.gradient_accumulation_steps}) not a multiple of "
        f"`steps_per_generation * num_iterations` ({args.steps_per_generation} * {trainer.num_iterations}), so that "
        "TRL runs that pass"
    )
    if trainer.use_vllm:
        fix = f"Set `vllm_importance_sampling_correction=True` (the TRL default), {accumulation}"
        backend = "vLLM generation"
    else:
        fix = f"Set `use_transformers_continuous_batching=False` (AEM then records while sampling), {accumulation}"
        backend = "transformers continuous batching"
    raise ValueError(
        f"AEM with {backend} reads token entropies from TRL's old-log-prob pass, which this configuration "
        f"skips. {fix}; or train the control arm with `use_aem=False`."
    )


@dataclass
class RolloutCapture:
    """Per-batch record of the token statistics TRL's generation left at the trainer's hooks.

    Attributes:
        source: where the statistic comes from (see :data:`StatsSource`).
        segments: sampler source: one :class:`~trl_aem.sampling.SampledSegment` per generated continuation.
        rollout_ids: ``(prompt_ids, completion_ids, tool_mask)`` lists of the batch, as ``GRPOTrainer._generate``
            returns them (to align ``segments`` with completion tokens).
        recomputed: ``(logps, entropies)`` of TRL's old-log-prob pass (recompute source).
    """

    source: StatsSource
    segments: list[SampledSegment] = field(default_factory=list)
    rollout_ids: tuple[list, list, list | None] | None = None
    recomputed: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def wants_recompute(self) -> bool:
        """Whether the old-log-prob pass should also return entropies (only its first call of the batch)."""
        return self.source == "recompute" and self.recomputed is None

    def add_samples(
        self,
        prompt_ids: list[list[int]],
        completion_ids: list[list[int]],
        entropies: torch.Tensor,
        logps: torch.Tensor,
    ) -> None:
        """Keep one generate call's ``(rows, T)`` statistics, one segment per prompt and its completion."""
        for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
            n = len(completion)
            self.segments.append(SampledSegment(list(prompt), list(completion), entropies[row, :n], logps[row, :n]))

    def token_statistics(self, completion_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` token entropies and sampled-token log-probs aligned with ``completion_ids`` (NaN where none
        was recorded), on its device."""
        if self.source == "recompute":
            if self.recomputed is None:
                raise RuntimeError("AEM: TRL's old-log-prob pass did not run, so no token entropies are available.")
            logps, entropies = self.recomputed
            return entropies.float(), logps.float()
        if self.rollout_ids is None or not self.segments:
            raise RuntimeError(
                "AEM: no sampling statistics were recorded for this batch. A custom `rollout_func` that does not "
                "generate through the trainer gives AEM nothing to measure; generate with vLLM (the recompute "
                "pass provides entropies) or through `trainer._generate_single_turn`."
            )
        entropy, logp = align_segments(self.segments, *self.rollout_ids, tuple(completion_ids.shape))
        return entropy.to(completion_ids.device), logp.to(completion_ids.device)


@contextmanager
def capturing(trainer: Any) -> Iterator[RolloutCapture]:
    """Make a new :class:`RolloutCapture` the trainer's current one (``trainer._capture``, where its hooks find it)
    for the block. Captures do not nest: one generation batch, one capture."""
    if trainer._capture is not None:
        raise RuntimeError("a RolloutCapture is already open: one generation batch at a time")
    capture = trainer._capture = RolloutCapture(trainer._stats_source)
    try:
        yield capture
    finally:
        trainer._capture = None


class CaptureHooksMixin:
    """The hooks of :class:`~trl_aem.AEMTrainer` on TRL's generation and old-log-prob pass that fill the open
    capture (``self._capture``; no-ops without one). Listed in :data:`trl_aem.trl_compat.OVERRIDES`."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """``GRPOTrainer._generate_single_turn`` (through :func:`~trl_aem.sampling.sample_with_statistics`) whose
        samples' token statistics go to the open capture, for TRL-generated batches."""
        completion_ids, logprobs, statistics = sample_with_statistics(
            self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images
        )
        if statistics is not None and self._capture is not None:
            self._capture.add_samples(prompt_ids, completion_ids, *statistics)
        return completion_ids, logprobs

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
