"""The AEM step of one generation batch, callable without a trainer: rows -> responses -> alpha -> advantages.

:mod:`trl_aem.modulation` holds the formulas; this module applies them to a batch. :func:`modulate_batch` (what
``AEMTrainer._aem_advantages`` calls) runs the three steps in order, each also usable alone:

1. :func:`collect_responses`: the ``(B, T)`` rows TRL's loss will see (loss mask, base advantages, token
   statistics) become one entry per response span ``(i, t)``: ``Hbar``, ``Sbar``, ``S(a|s)``, ``A_base``, the task
   group, the episode and the state the response answered (:class:`Responses`).
2. :func:`aem_step`: on the responses of the whole batch (every process's, gathered by the caller: a group may
   straddle processes), the coefficient ``alpha`` per response in the configured scope, with the ``aem/*`` metrics
   (:class:`AEMStep`). With ``use_aem=False`` only the metrics (the control arm measures what it does not apply).
3. :func:`modulated_advantages`: ``A_base * alpha`` broadcast to every token of its span, the ``(B, T)`` advantages
   TRL's ``_compute_loss`` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

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

__all__ = [
    "AEMStep",
    "ModulatedBatch",
    "Responses",
    "aem_step",
    "collect_responses",
    "modulate_batch",
    "modulated_advantages",
    "scope_ids",
]


@dataclass
class Responses:
    """One entry per response span of a batch (``S`` spans), in row-major order.

    Attributes:
        entropy: ``Hbar``, the mean full-vocabulary token entropy (NaN where none was recorded).
        surprisal: ``Sbar``, the mean sampled-token surprisal ``-log pi(a_j)``.
        response_surprisal: ``S(a|s) = -log pi(a|s)``, the sum over the response's tokens.
        advantage: ``A_base`` of the span's row.
        group: global task-group id (the ``G`` rollouts of one task).
        episode: global episode id (the row for single-turn and trajectory rows).
        state: key of the tokens the response was conditioned on (same key = same state ``s``).
    """

    entropy: torch.Tensor
    surprisal: torch.Tensor
    response_surprisal: torch.Tensor
    advantage: torch.Tensor
    group: torch.Tensor
    episode: torch.Tensor
    state: torch.Tensor

    def as_matrix(self) -> torch.Tensor:
        """``(S, 7)`` float64, the form the processes exchange (ids and 48-bit state keys are exact in float64)."""
        return torch.stack([getattr(self, f.name).double() for f in fields(self)], dim=1)

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> Responses:
        matrix = matrix.cpu()
        columns = {f.name: matrix[:, i] for i, f in enumerate(fields(cls))}
        for name in ("group", "episode", "state"):
            columns[name] = columns[name].long()
        return cls(**columns)

    def __len__(self) -> int:
        return int(self.entropy.numel())


def collect_responses(
    loss_mask: torch.Tensor,
    advantages: torch.Tensor,
    token_entropy: torch.Tensor,
    token_logp: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    row_group: torch.Tensor,
    row_episode: torch.Tensor,
) -> tuple[Responses, ResponseSpans]:
    """The responses of ``B`` rows: every run of ones of ``loss_mask`` (``completion_mask * tool_mask``) is one
    response span (docs/method.md, step 1), averaged over its tokens. ``advantages`` is the per-row base advantage ``(B,)``;
    ``row_group`` / ``row_episode`` give each row's task group and episode."""
    spans = response_spans(loss_mask)
    responses = Responses(
        entropy=span_means(token_entropy, spans).cpu(),
        surprisal=span_means(-token_logp, spans).cpu(),
        response_surprisal=span_sums(-token_logp, spans).cpu(),
        advantage=advantages.detach().float().cpu().view(-1)[spans.row],
        group=row_group.cpu()[spans.row],
        episode=row_episode.cpu()[spans.row],
        state=conditioning_keys(prompt_ids, prompt_mask, completion_ids, spans),
    )
    return responses, spans


def scope_ids(responses: Responses, scope: str) -> torch.Tensor:
    """The normalisation groups of ``alpha``: the task group (the paper's default), the episode, or the batch."""
    if scope == "group":
        return responses.group
    if scope == "trajectory":
        return responses.episode
    if scope == "batch":
        return torch.zeros_like(responses.group)
    raise ValueError(f"aem_scope must be 'group', 'trajectory' or 'batch', got {scope!r}")


@dataclass
class AEMStep:
    """Result of :func:`aem_step`: ``alpha`` per response (``None`` for the control arm) and the metrics to log."""

    alpha: torch.Tensor | None
    metrics: dict[str, float] = field(default_factory=dict)


def aem_step(
    responses: Responses,
    *,
    use_aem: bool = True,
    lam: float = 1.0,
    min_range: float = 0.1,
    scope: str = "group",
    statistic: str = "entropy",
    shuffle_generator: torch.Generator | None = None,
) -> AEMStep:
    """Step 2 of the recipe (docs/method.md) on the responses of a whole generation batch, with the ``aem/*`` metrics.

    ``alpha = w / mean(w)``, ``w = exp(-lam * Htil)`` within each scope group (noise guard ``min_range``), over the
    ``statistic`` (``Hbar`` or ``Sbar``); with ``shuffle_generator`` alpha is permuted within its groups (the paper's
    shuffled ablation). The drift metrics estimate the theorem's ``E[A (S - H)]`` with (``aem/drift``) and without
    (``aem/drift_base``) alpha, ``H`` from the other responses to the same state; the control arm
    (``use_aem=False``) logs its unmodulated drift as ``aem/drift``."""
    entropy = responses.entropy
    stat = entropy if statistic == "entropy" else responses.surprisal
    finite = torch.isfinite(stat)
    metrics: dict[str, float] = {"aem/missing_frac": float((~finite).float().mean()) if stat.numel() else 0.0}
    if bool(torch.isfinite(entropy).any()):
        metrics["aem/response_entropy"] = float(entropy[torch.isfinite(entropy)].mean())
    state = responses.state
    if state.numel():  # responses that share their state with another one: those the drift estimate uses
        _, inverse, per_state = torch.unique(state, return_inverse=True, return_counts=True)
        metrics["aem/drift_coverage"] = float((per_state[inverse] > 1).float().mean())
    drift_base = float(entropy_drift(responses.advantage, responses.response_surprisal, state))

    if not use_aem:
        _put_finite(metrics, "aem/drift", drift_base)
        return AEMStep(None, metrics)

    groups = scope_ids(responses, scope)
    result = compute_aem(stat.float(), groups, lam=lam, min_range=min_range)
    alpha = result.alpha
    if shuffle_generator is not None:
        alpha = shuffle_within_groups(alpha, groups, shuffle_generator)
    if alpha.numel():
        valid = alpha[finite] if bool(finite.any()) else alpha
        metrics["aem/alpha_mean"] = float(valid.mean())
        metrics["aem/alpha_std"] = float(valid.std(unbiased=False))
        metrics["aem/alpha_min"] = float(valid.min())
        metrics["aem/alpha_max"] = float(valid.max())
        metrics["aem/guarded_frac"] = float(result.group_guarded.float().mean())
    drift = float(entropy_drift(responses.advantage * alpha.double(), responses.response_surprisal, state))
    _put_finite(metrics, "aem/drift", drift)
    _put_finite(metrics, "aem/drift_base", drift_base)
    return AEMStep(alpha, metrics)


def modulated_advantages(base: torch.Tensor, alpha: torch.Tensor, spans: ResponseSpans) -> torch.Tensor:
    """``(B, T)`` advantages ``A_base * alpha`` (docs/method.md, step 3): each span's alpha on every one of its tokens, 1
    outside spans (tokens the loss masks anyway). ``base`` is ``(B,)``, ``alpha`` one value per span of ``spans``."""
    per_token = broadcast_to_tokens(alpha.to(base.device, base.dtype), spans, fill=1.0)
    return base.view(-1, 1) * per_token


@dataclass
class ModulatedBatch:
    """Result of :func:`modulate_batch`: the advantages for TRL's loss, the metrics to log, and (for inspection)
    this process's responses and their alpha (``None`` for the control arm)."""

    advantages: torch.Tensor
    metrics: dict[str, float]
    responses: Responses
    alpha: torch.Tensor | None


def modulate_batch(
    rows: Mapping[str, torch.Tensor],
    row_group: torch.Tensor,
    row_episode: torch.Tensor,
    token_stats: tuple[torch.Tensor, torch.Tensor],
    config: Any,
    *,
    gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] | None = None,
    shuffle_generator: torch.Generator | None = None,
) -> ModulatedBatch:
    """AEM on one generation batch in TRL's layout (``rows``: ``prompt_ids``, ``prompt_mask``, ``completion_ids``,
    ``completion_mask``, optional ``tool_mask``, and the ``(B,)`` base ``advantages``), with ``(B, T)`` token
    statistics ``(entropy, logp)`` and each row's task group and episode.

    The responses of this process are collected (:func:`collect_responses`), ``gather`` (``local -> (all processes'
    rows in process order, index of this process's first row)``; default: this process alone) joins every process's,
    :func:`aem_step` computes alpha on all of them with ``config``'s ``use_aem``, ``aem_lambda``, ``aem_min_range``,
    ``aem_scope`` and ``aem_statistic``, and this process's alpha multiplies its rows (:func:`modulated_advantages`).
    With ``use_aem=False`` the advantages are the base ones, unchanged, and only the metrics are computed."""
    base = rows["advantages"]
    loss_mask = rows["completion_mask"] * rows["tool_mask"] if "tool_mask" in rows else rows["completion_mask"]
    responses, spans = collect_responses(
        loss_mask,
        base,
        *token_stats,
        rows["prompt_ids"],
        rows["prompt_mask"],
        rows["completion_ids"],
        row_group,
        row_episode,
    )
    full, start = gather(responses.as_matrix()) if gather is not None else (responses.as_matrix(), 0)
    step = aem_step(
        Responses.from_matrix(full),
        use_aem=config.use_aem,
        lam=config.aem_lambda,
        min_range=config.aem_min_range,
        scope=config.aem_scope,
        statistic=config.aem_statistic,
        shuffle_generator=shuffle_generator,
    )
    if step.alpha is None:
        return ModulatedBatch(base, step.metrics, responses, None)
    alpha = step.alpha[start : start + len(responses)]
    return ModulatedBatch(modulated_advantages(base, alpha, spans), step.metrics, responses, alpha)


def _put_finite(metrics: dict[str, float], key: str, value: float) -> None:
    """Keep ``value`` unless it is NaN/inf (e.g. a drift with no two responses to the same state this batch)."""
    if math.isfinite(value):
        metrics[key] = value
