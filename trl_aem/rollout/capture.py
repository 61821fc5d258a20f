"""``RolloutCapture``: what one generation batch leaves behind for AEM, collected in one object.

``AEMTrainer._generate_and_score_completions`` creates a capture for each generation batch, TRL's code runs (and
calls the trainer's overrides, which add to the capture what they see), and the capture then hands back the
``(B, T)`` token statistics of the batch's completions. Nothing of a batch outlives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..sampling import SampledSegment, align_segments
from .episode import Episode

__all__ = ["RolloutCapture", "StatsSource", "capturing"]

# "sampler": recorded while transformers' generate samples; "recompute": from TRL's old-log-prob pass (vLLM,
# continuous batching); None: no statistic (the control arm on a configuration that would need an extra forward)
StatsSource = str | None


@dataclass
class RolloutCapture:
    """Per-batch record of where the completions came from and their token statistics.

    Attributes:
        source: where the statistic comes from (see :data:`StatsSource`).
        tasks: multi-turn trajectory mode: the batch's tasks, for the trainer's ``rollout_func``.
        segments: transformers path: one :class:`~trl_aem.sampling.SampledSegment` per generated continuation.
        rollout_ids: ``(prompt_ids, completion_ids, tool_mask)`` lists of the batch, as ``GRPOTrainer._generate``
            returns them (to align ``segments`` with completion tokens).
        recomputed: ``(logps, entropies)`` of TRL's old-log-prob pass (recompute source).
        episodes: multi-turn: the batch's finished episodes.
        row_statistics: multi-turn trajectory rows: per row, ``(entropies, logps)`` over its completion tokens, taken
            from the episodes' turns (NaN on observation tokens).
    """

    source: StatsSource
    tasks: list[dict] | None = None
    segments: list[SampledSegment] = field(default_factory=list)
    rollout_ids: tuple[list, list, list | None] | None = None
    recomputed: tuple[torch.Tensor, torch.Tensor] | None = None
    episodes: list[Episode] | None = None
    row_statistics: list[tuple[list[float], list[float]]] | None = None

    @property
    def wants_recompute(self) -> bool:
        """Whether the old-log-prob pass should also return entropies (only its first call of the batch)."""
        return self.source == "recompute" and self.recomputed is None

    def token_statistics(self, completion_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` token entropies and sampled-token log-probs aligned with ``completion_ids`` (NaN where none
        was recorded), on its device."""
        shape, device = tuple(completion_ids.shape), completion_ids.device
        if self.source == "recompute":
            if self.recomputed is None:
                raise RuntimeError("AEM: TRL's old-log-prob pass did not run, so no token entropies are available.")
            logps, entropies = self.recomputed
            return entropies.float(), logps.float()
        if self.row_statistics is not None:
            entropy, logp = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
            for row, (entropies, logps) in enumerate(self.row_statistics):
                entropy[row, : len(entropies)] = torch.as_tensor(entropies, dtype=torch.float32)
                logp[row, : len(logps)] = torch.as_tensor(logps, dtype=torch.float32)
            return entropy.to(device), logp.to(device)
        if self.rollout_ids is None or not self.segments:
            raise RuntimeError(
                "AEM: no sampling statistics were recorded for this batch. A custom `rollout_func` that does not "
                "generate through the trainer gives AEM nothing to measure; generate with vLLM (the recompute "
                "pass provides entropies) or through `trainer._generate_single_turn`."
            )
        entropy, logp = align_segments(self.segments, *self.rollout_ids, shape)
        return entropy.to(device), logp.to(device)


@contextmanager
def capturing(trainer: Any) -> Iterator[RolloutCapture]:
    """Make a new :class:`RolloutCapture` the trainer's current one (``trainer._capture``) for the block, where the
    trainer's overrides find it; inside an open capture (episodes played during a batch) the open one is reused."""
    if trainer._capture is not None:
        yield trainer._capture
        return
    capture = trainer._capture = RolloutCapture(trainer._stats_source)
    try:
        yield capture
    finally:
        trainer._capture = None
