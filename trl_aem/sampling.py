"""Per-token entropies and sampled-token log-probs taken while ``generate`` samples.

AEM needs the mean token entropy of every response. The logits that produce each sampled token already
exist inside ``model.generate``; :class:`SamplingStatsRecorder` is a ``LogitsProcessor`` that reads them,
reduces them to two numbers per row and step (entropy and, one step later, the sampled token's
log-prob) and returns the scores unchanged. No extra forward pass, no stored ``(B, T, V)`` logits.

The recorder is the first logits processor ``generate`` runs, so it sees the model's own logits, before
``repetition_penalty``, ``no_repeat_ngram_size``, suppressed tokens and the sampling warpers (top-k, top-p),
and applies the sampling temperature itself: the policy ``softmax(logits / T)`` that TRL's loss and the vLLM
recompute pass use. With a repetition penalty the tokens are *sampled* from the penalised distribution, but
the statistic AEM normalises is the policy's, the same on every back end.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .modulation import entropy_of_logprobs
from .trl_compat import temporarily

logger = logging.getLogger(__name__)

__all__ = [
    "SamplingStatsRecorder",
    "SampledSegment",
    "align_segments",
    "record_sampling_stats",
    "sample_with_statistics",
]


class SamplingStatsRecorder(LogitsProcessor):
    """Records, for each generation step, ``h`` (full-vocabulary entropy) and ``log p(sampled token)``.

    Use through :func:`record_sampling_stats`, which also feeds the final sampled token (never seen by a
    logits processor) to :meth:`finish`.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self._entropies: list[torch.Tensor] = []
        self._logps: list[torch.Tensor] = []
        self._prev_logp: torch.Tensor | None = None  # (B, V) log-probs of the previous step, one step only

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self._prev_logp is not None:  # input_ids[:, -1] is the token sampled from the previous step
            self._logps.append(self._prev_logp.gather(1, input_ids[:, -1:].long()).squeeze(1))
        self._entropies.append(entropy_of_logprobs(logp))
        self._prev_logp = logp
        return scores

    def finish(self, sequences: torch.Tensor) -> None:
        """Close the last step with the final sampled tokens (``sequences[:, -1]``)."""
        if self._prev_logp is not None and self._prev_logp.size(0) == sequences.size(0):  # not under beam search
            self._logps.append(self._prev_logp.gather(1, sequences[:, -1:].long()).squeeze(1))
        self._prev_logp = None

    def statistics(self, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, length)`` entropies and sampled-token log-probs, NaN where nothing was recorded: a generate call
        that did not run the processors once per sampled token of each row (beam search keeps ``num_beams`` rows per
        sequence, a patched generate none) gives no usable statistic."""
        entropy, logp = torch.full((rows, length), float("nan")), torch.full((rows, length), float("nan"))
        recorded_entropy, recorded_logp = self.entropies(), self.logps()
        if recorded_entropy.size(0) == rows:
            steps = min(length, recorded_entropy.size(1))
            entropy[:, :steps] = recorded_entropy[:, :steps]
            logged = min(steps, recorded_logp.size(1))
            logp[:, :logged] = recorded_logp[:, :logged]
        return entropy, logp

    def entropies(self) -> torch.Tensor:
        """``(B, steps)`` entropies, float32 on CPU."""
        if not self._entropies:
            return torch.zeros(0, 0)
        return torch.stack(self._entropies, dim=1).cpu()

    def logps(self) -> torch.Tensor:
        """``(B, steps)`` sampled-token log-probs, float32 on CPU."""
        if not self._logps:
            return torch.zeros(0, 0)
        return torch.stack(self._logps, dim=1).cpu()


def sample_with_statistics(
    trainer: Any, prompt_ids, images, multimodal_fields, num_generations: int, has_tool_images: bool = False
) -> tuple[list[list[int]], list | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """``GRPOTrainer._generate_single_turn`` (trl 1.16 L1763-1891) on ``trainer``, plus the ``(rows, T)`` token
    entropies and sampled-token log-probs its ``generate`` call recorded when the trainer's statistic comes from the
    sampler (NaN where none; ``None`` for other back ends, whose statistic comes from TRL's recompute pass). Returns
    ``(completion_ids, logprobs, statistics)``. Both the trainer's ``_generate_single_turn`` (TRL-generated batches)
    and each turn of the multi-turn engine (``PlayingMixin.generate_turn``) sample through here."""
    from trl import GRPOTrainer

    arguments = (prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
    if trainer._stats_source != "sampler":
        return (*GRPOTrainer._generate_single_turn(trainer, *arguments), None)
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    with record_sampling_stats(model, trainer.temperature) as recorder:
        completion_ids, logprobs = GRPOTrainer._generate_single_turn(trainer, *arguments)
    statistics = recorder.statistics(len(completion_ids), max(map(len, completion_ids), default=0))
    if not bool(torch.isfinite(statistics[0]).any()) and completion_ids:
        _warn_unrecorded()
    return completion_ids, logprobs, statistics


@functools.cache
def _warn_unrecorded() -> None:
    logger.warning(
        "AEM: generate produced completions without calling the logits processors row by row (beam search, "
        "or a patched generate), so no token entropies were recorded: those responses keep alpha = 1 "
        "(counted in aem/missing_frac). Sample (num_beams=1) or use vLLM for AEM to act."
    )


@dataclass
class SampledSegment:
    """Token statistics of one generated continuation: ``prompt_ids`` -> ``completion_ids``."""

    prompt_ids: list[int]
    completion_ids: list[int]
    entropies: torch.Tensor  # (len(completion_ids),)
    logps: torch.Tensor  # (len(completion_ids),)
    key: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = tuple(self.prompt_ids)


@contextmanager
def record_sampling_stats(model: torch.nn.Module, temperature: float) -> Iterator[SamplingStatsRecorder]:
    """Make every ``model.generate`` call inside the block also feed a :class:`SamplingStatsRecorder`.

    ``generate`` is wrapped on this instance only (removed on exit), and so is ``_get_logits_processor`` of the
    transformers model that runs the sampling loop (the base model of a PEFT model), which puts the recorder first
    in the processor list; the model class, other models and TRL's own call to
    ``unwrapped_model.generate(**inputs, generation_config=...)`` stay untouched. Several ``generate`` calls in one
    block are not supported (the recorder would mix them): open one block per call.
    """
    recorder = SamplingStatsRecorder(temperature)
    sampler = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    if not callable(getattr(sampler, "_get_logits_processor", None)):
        raise RuntimeError(
            f"record_sampling_stats: {type(sampler).__name__} has no `_get_logits_processor` (transformers' "
            "GenerationMixin); this transformers version is outside the range trl_aem supports"
        )
    calls = 0

    def generate(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("record_sampling_stats: one generate call per block")
        output = original_generate(*args, **kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        recorder.finish(sequences)
        return output

    def get_logits_processor(*args, **kwargs) -> LogitsProcessorList:
        # replaces GenerationMixin._get_logits_processor for this call: its list with the recorder first
        processors = original_processors(*args, **kwargs)
        processors.insert(0, recorder)
        return processors

    original_generate, original_processors = model.generate, sampler._get_logits_processor
    with (
        temporarily("record_generate", model, "generate", generate),
        temporarily("record_logits_processor", sampler, "_get_logits_processor", get_logits_processor),
    ):
        yield recorder


def align_segments(
    segments: list[SampledSegment],
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    model_masks: list[list[int]] | None,
    shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` token entropies and sampled-token log-probs aligned with a batch's completion tokens (NaN where
    nothing was recorded), from the segments recorded while generating it.

    One row of TRL's own tools loop holds several model responses separated by tool output (``model_masks``: 1 =
    model token, TRL's ``tool_mask``); each run of model tokens was generated from the row's prompt plus the
    completion before it, so it is matched to the segment with exactly that prompt and those first tokens. A
    single-turn row is the special case of one run. Segments can arrive in any order.
    """
    entropy = torch.full(shape, float("nan"))
    logp = torch.full(shape, float("nan"))
    by_prompt: dict[tuple[int, ...], list[SampledSegment]] = defaultdict(list)
    for segment in segments:
        by_prompt[segment.key].append(segment)
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        prompt, completion = list(prompt), list(completion)
        mask = model_masks[row] if model_masks is not None else [1] * len(completion)
        full = prompt + completion
        for start, length in runs_of_ones(mask):
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
    return entropy, logp


def runs_of_ones(mask: list[int]) -> list[tuple[int, int]]:
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
