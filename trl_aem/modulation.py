"""Pure tensor math of AEM (Adaptive Entropy Modulation, arXiv:2605.00425).

Nothing here knows about trainers, processes or environments, so it can be read beside the paper and
tested exhaustively. Notation follows the paper:

* a response span ``(i, t)`` is the model-generated text of turn ``t`` of trajectory ``i``;
* ``h_j = -sum_v p(v) log p(v)`` is the full-vocabulary entropy of the temperature-scaled policy at
  token ``j`` of the span, ``Hbar[i,t] = mean_j h_j`` the span's mean token entropy;
* ``S(a|s) = -log pi(a|s)`` is the surprisal of the sampled response (the sum of its token surprisals;
  ``aem_statistic="surprisal"`` uses its per-token mean ``Sbar``, like ``Hbar``);
* inside a group (all spans of the ``G`` rollouts of one task by default) the coefficient is
  ``Htil = (Hbar - min Hbar) / range``, ``w = exp(-lambda * Htil)``, ``alpha = w / mean_group(w)``,
  with ``alpha = 1`` for the whole group when ``range < min_range`` (noise guard);
* the modulated advantage is ``A_aem[i,t] = alpha[i,t] * A_base[i,t]`` on every token of the span.

Under a natural-gradient step the entropy change caused by response ``a`` is proportional to
``A(a,s) * (S(a|s) - H(s))`` with ``H(s) = E_a[S(a|s)]`` the response-level entropy (the paper's theorem;
:func:`entropy_drift` is its batch estimate).
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import torch

__all__ = [
    "AEMResult",
    "ResponseSpans",
    "aem_coefficients",
    "broadcast_to_tokens",
    "compute_aem",
    "conditioning_keys",
    "entropy_drift",
    "entropy_of_logprobs",
    "response_spans",
    "shuffle_within_groups",
    "span_means",
    "span_sums",
    "token_entropy",
    "token_logprob",
]


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Full-vocabulary entropy ``h = -sum_v p(v) log p(v)`` of ``softmax(logits / temperature)``.

    Computed in float32 whatever the logits' dtype. Tokens masked to ``-inf`` (suppressed tokens)
    contribute ``0`` (``0 * log 0 := 0``) instead of NaN.

    Args:
        logits: ``(..., V)`` unnormalised scores.
        temperature: sampling temperature the policy distribution is scaled by.

    Returns:
        ``(...)`` entropies in nats.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return entropy_of_logprobs(torch.log_softmax(logits.float() / temperature, dim=-1))


def entropy_of_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """``h = -sum_v p(v) log p(v)`` from normalised log-probabilities ``(..., V)`` (``-inf`` entries contribute 0)."""
    return torch.special.entr(logp.exp()).sum(dim=-1)


def token_logprob(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log p(token)`` under ``softmax(logits / temperature)``; ``logits`` is ``(..., V)``, ``tokens`` is ``(...)``."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


class ResponseSpans(NamedTuple):
    """Contiguous runs of model tokens (``mask == 1``) in a ``(B, T)`` batch, in row-major order.

    Attributes:
        span_id: ``(B, T)`` long, index of the span a token belongs to, ``-1`` outside every span.
        row: ``(S,)`` long, the row of each span.
        start: ``(S,)`` long, first column of each span.
        length: ``(S,)`` long, number of tokens of each span.
    """

    span_id: torch.Tensor
    row: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor

    @property
    def num_spans(self) -> int:
        return int(self.row.numel())


def response_spans(mask: torch.Tensor) -> ResponseSpans:
    """Split every row of a ``(B, T)`` 0/1 mask into its runs of ones.

    In single-turn GRPO a row has one span (its completion). With multi-turn rollouts the loss mask is
    ``completion_mask * tool_mask`` (TRL's ``tool_mask``/``env_mask``: 1 = model token, 0 = environment
    token), and each run of ones is one response (one turn).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D (B, T), got shape {tuple(mask.shape)}")
    m = mask.detach().to("cpu").bool()
    prev = torch.zeros_like(m)
    prev[:, 1:] = m[:, :-1]
    starts = m & ~prev
    span_counter = torch.cumsum(starts.flatten().long(), dim=0).view_as(m) - 1
    span_id = torch.where(m, span_counter, torch.full_like(span_counter, -1))
    rows, cols = starts.nonzero(as_tuple=True)
    lengths = torch.bincount(span_id[m], minlength=rows.numel()) if rows.numel() else rows.new_zeros(0)
    return ResponseSpans(span_id.to(mask.device), rows, cols, lengths)


def span_means(values: torch.Tensor, spans: ResponseSpans) -> torch.Tensor:
    """Mean of ``values`` (``(B, T)``) over each span's tokens, ignoring non-finite entries.

    A span with no finite value (empty, or whose statistic was never recorded) gets NaN, which
    :func:`compute_aem` treats as "no information": ``alpha = 1`` for it.
    """
    if values.shape != spans.span_id.shape:
        raise ValueError(f"values {tuple(values.shape)} and spans {tuple(spans.span_id.shape)} differ in shape")
    num = spans.num_spans
    device = values.device
    sid = spans.span_id.to(device)
    valid = (sid >= 0) & torch.isfinite(values)
    idx = sid[valid]
    sums = torch.zeros(num, dtype=torch.float64, device=device).index_add_(0, idx, values[valid].double())
    counts = torch.zeros(num, dtype=torch.float64, device=device).index_add_(
        0, idx, torch.ones_like(idx, dtype=torch.float64)
    )
    means = sums / counts  # 0/0 -> NaN for spans without a finite value
    return means.float()


class AEMResult(NamedTuple):
    """Output of :func:`compute_aem`.

    Attributes:
        alpha: ``(N,)`` coefficients; group mean exactly 1 (up to float rounding).
        guarded: ``(N,)`` bool, True where alpha was left at 1 (noise guard, singleton group or
            non-finite statistic).
        group_guarded: ``(num_groups,)`` bool, True for groups left entirely at alpha = 1.
    """

    alpha: torch.Tensor
    guarded: torch.Tensor
    group_guarded: torch.Tensor


def _check_hyperparameters(lam: float, min_range: float) -> None:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
        raise ValueError(f"lam (AEM lambda) must be a finite number, got {lam!r}")
    if isinstance(min_range, bool) or not isinstance(min_range, (int, float)) or not math.isfinite(min_range):
        raise ValueError(f"min_range must be a finite number, got {min_range!r}")
    if min_range < 0:
        raise ValueError(f"min_range must be >= 0, got {min_range}")


def compute_aem(stat: torch.Tensor, group_ids: torch.Tensor, *, lam: float = 1.0, min_range: float = 0.1) -> AEMResult:
    """AEM coefficients with the bookkeeping the trainer logs (see :func:`aem_coefficients`)."""
    _check_hyperparameters(lam, min_range)
    if stat.dim() != 1 or group_ids.dim() != 1:
        raise ValueError(
            f"stat and group_ids must be 1-D, got shapes {tuple(stat.shape)} and {tuple(group_ids.shape)}"
        )
    if stat.numel() != group_ids.numel():
        raise ValueError(f"stat has {stat.numel()} entries but group_ids has {group_ids.numel()}")
    if not stat.is_floating_point():
        raise TypeError(f"stat must be a floating tensor, got {stat.dtype}")
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")

    out_dtype = stat.dtype
    if stat.numel() == 0:
        empty = stat.new_zeros(0)
        return AEMResult(empty, torch.zeros(0, dtype=torch.bool, device=stat.device), empty.bool())

    x = stat.double()
    _, inv = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inv.max()) + 1
    finite = torch.isfinite(x)
    xf = torch.where(finite, x, torch.zeros_like(x))

    inf = torch.full((num_groups,), math.inf, dtype=torch.float64, device=x.device)
    gmin = inf.scatter_reduce(0, inv[finite], x[finite], reduce="amin", include_self=True)
    gmax = (-inf).scatter_reduce(0, inv[finite], x[finite], reduce="amax", include_self=True)
    grange = gmax - gmin  # NaN (inf - inf) for groups without any finite statistic
    # Guard: too little spread to tell confident from uncertain responses (this also covers singleton
    # groups and groups whose statistics are all equal, where Htil would be 0/0).
    group_guarded = ~(grange >= min_range) | ~(grange > 0)

    active = finite & ~group_guarded[inv]
    safe_range = torch.where(group_guarded, torch.ones_like(grange), grange)
    safe_min = torch.where(group_guarded, torch.zeros_like(gmin), gmin)
    h_tilde = torch.where(active, (xf - safe_min[inv]) / safe_range[inv], torch.zeros_like(x))
    w = torch.where(active, torch.exp(-lam * h_tilde), torch.zeros_like(x))
    w_sum = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, inv, w)
    n_active = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, inv, active.double())
    w_mean = w_sum / n_active.clamp(min=1.0)
    alpha = torch.where(active, w / torch.where(active, w_mean[inv], torch.ones_like(x)), torch.ones_like(x))
    return AEMResult(alpha.to(out_dtype), ~active, group_guarded)


def aem_coefficients(
    stat: torch.Tensor, group_ids: torch.Tensor, *, lam: float = 1.0, min_range: float = 0.1
) -> torch.Tensor:
    """The AEM coefficient ``alpha`` of every response in a flat batch (docs/method.md, step 2).

    Within each group (responses sharing a ``group_ids`` value)::

        range = max(stat) - min(stat)
        alpha = 1                                   if range < min_range  (noise guard)
        Htil  = (stat - min(stat)) / range          in [0, 1]
        w     = exp(-lam * Htil)
        alpha = w / mean_group(w)                   group mean exactly 1

    so ``alpha`` lies in ``[e^-|lam|, e^|lam|]``, decreases with the statistic for ``lam > 0`` (confident
    responses get larger weight) and increases for ``lam < 0`` (the paper's reversed ablation).
    Scope ablations (per trajectory, per batch) are just other ``group_ids``.

    Degenerate inputs never produce NaN: a singleton group, a group whose statistics are all equal and
    a response whose statistic is NaN/inf (e.g. an empty span) get ``alpha = 1``; non-finite entries are
    also left out of their group's min, max and mean.

    Args:
        stat: ``(N,)`` float, the per-response statistic (mean token entropy ``Hbar`` by default).
        group_ids: ``(N,)`` integer group label of every response.
        lam: modulation strength ``lambda`` (paper default 1.0); negative reverses the direction.
        min_range: noise guard in nats (paper default 0.1); must be >= 0.

    Returns:
        ``(N,)`` tensor of coefficients, same dtype and device as ``stat``.
    """
    return compute_aem(stat, group_ids, lam=lam, min_range=min_range).alpha


def shuffle_within_groups(
    values: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly permute ``values`` inside each group (the paper's "shuffled alpha" ablation).

    The multiset of values of every group is unchanged (so the group mean of alpha stays 1); only the
    link between a response and its own entropy is broken.
    """
    if values.shape != group_ids.shape or values.dim() != 1:
        raise ValueError("values and group_ids must be 1-D tensors of the same length")
    if values.numel() == 0:
        return values.clone()
    keys = torch.rand(values.numel(), generator=generator, dtype=torch.float64).to(values.device)
    # Sort by (group, random key): positions of each group are then filled with a random permutation
    # of that group's own values.
    order_within = torch.argsort(keys)
    group_sorted = torch.argsort(group_ids[order_within], stable=True)
    shuffled_src = order_within[group_sorted]  # random order inside each group, groups contiguous
    positions = torch.argsort(group_ids, stable=True)  # original positions, groups contiguous
    out = values.clone()
    out[positions] = values[shuffled_src]
    return out


def broadcast_to_tokens(span_values: torch.Tensor, spans: ResponseSpans, fill: float = 1.0) -> torch.Tensor:
    """Spread per-span values onto their tokens: a ``(B, T)`` tensor, ``fill`` outside spans."""
    sid = spans.span_id.to(span_values.device)
    out = torch.full(sid.shape, fill, dtype=span_values.dtype, device=span_values.device)
    inside = sid >= 0
    out[inside] = span_values[sid[inside]]
    return out


def span_sums(values: torch.Tensor, spans: ResponseSpans) -> torch.Tensor:
    """Sum of ``values`` (``(B, T)``) over each span's tokens; NaN for a span with a non-finite entry (a
    response-level quantity such as the surprisal ``S(a|s) = sum_j -log pi(a_j)`` is undefined when a token's is)."""
    if values.shape != spans.span_id.shape:
        raise ValueError(f"values {tuple(values.shape)} and spans {tuple(spans.span_id.shape)} differ in shape")
    sid = spans.span_id.to(values.device)
    inside = sid >= 0
    sums = torch.zeros(spans.num_spans, dtype=torch.float64, device=values.device)
    return sums.index_add_(0, sid[inside], values[inside].double()).float()


def conditioning_keys(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, spans: ResponseSpans
) -> torch.Tensor:
    """``(S,)`` int64 key of the tokens each response span was conditioned on (the row's unpadded prompt plus
    its completion tokens before the span): two spans share a key exactly when they answered the same state
    ``s``. Keys are 48-bit BLAKE2b digests, so they survive a float64 all-gather unchanged."""
    prompt_ids, prompt_mask = prompt_ids.detach().cpu().long(), prompt_mask.detach().cpu().bool()
    completions = completion_ids.detach().cpu().long().numpy()
    keys, hasher, row, done = [], None, -1, 0
    for span_row, start in zip(spans.row.tolist(), spans.start.tolist(), strict=True):
        if span_row != row:
            row, done = span_row, 0
            hasher = hashlib.blake2b(prompt_ids[row][prompt_mask[row]].numpy().tobytes(), digest_size=6)
        hasher.update(completions[row, done:start].tobytes())
        done = start
        keys.append(int.from_bytes(hasher.copy().digest(), "little"))
    return torch.tensor(keys, dtype=torch.int64)


def entropy_drift(advantages: torch.Tensor, surprisal: torch.Tensor, state_ids: torch.Tensor) -> torch.Tensor:
    """Batch estimate of the theorem's drift ``E_s E_{a~pi(.|s)}[A(a,s) * (S(a|s) - H(s))]``.

    Under a natural-gradient step the change of response-level entropy is proportional to this term (docs/method.md):
    ``S(a|s) = -log pi(a|s)`` is the *response-level* surprisal (``surprisal``: the sum over the response's
    tokens) and ``H(s) = E_a[S(a|s)]`` the response-level entropy of the state. ``H(s)`` is estimated
    leave-one-out from the other responses to the same state (same ``state_ids``, e.g. the GRPO group of one
    prompt, or :func:`conditioning_keys`)::

        drift = mean_i A_i * (S_i - mean_{k != i, s_k = s_i} S_k)

    which, per state, is the sample covariance of ``S`` and ``A`` (``n - 1`` denominator): unbiased when the
    responses of a state are independent draws and ``A`` is a function of the response. Responses alone in
    their state carry no estimate of ``H(s)`` and are skipped, as are non-finite ones. Negative drift means the
    update lowers entropy (exploitation), positive raises it (exploration). NaN when nothing is left.
    """
    if not (advantages.shape == surprisal.shape == state_ids.shape) or advantages.dim() != 1:
        raise ValueError("advantages, surprisal and state_ids must be 1-D tensors of the same length")
    valid = torch.isfinite(advantages) & torch.isfinite(surprisal)
    if not bool(valid.any()):
        return torch.tensor(float("nan"))
    a, s = advantages[valid].double(), surprisal[valid].double()
    _, inv = torch.unique(state_ids[valid], return_inverse=True)
    count = torch.zeros(int(inv.max()) + 1, dtype=torch.float64).index_add_(0, inv, torch.ones_like(s))
    total = torch.zeros_like(count).index_add_(0, inv, s)
    shared = count[inv] > 1
    if not bool(shared.any()):
        return torch.tensor(float("nan"))
    others = (total[inv] - s) / (count[inv] - 1).clamp(min=1)
    return (a * (s - others))[shared].mean().float()
