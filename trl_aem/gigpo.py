"""GiGPO's two-level advantage (Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training",
arXiv:2505.10978), as pure tensor math.

For the ``G`` episodes ``tau_i`` of one task (one GRPO group) and the turns ``t`` of each:

* episode level (GiGPO's Eq. 3): ``A_E(tau_i) = (R(tau_i) - mean_j R(tau_j)) / F_norm``: TRL's group advantage;
* anchor-state groups (Eq. 6): the turns of those episodes whose environment state ``s`` (the observation the
  policy acted on, compared exactly after normalisation) is the same form one step-level group;
* discounted step return (Eq. 5): ``R_t = sum_{k >= t} gamma^(k - t) r_k`` along the episode;
* step level (Eq. 7): ``A_S(a_t) = (R_t - mean_{anchor group} R) / F_norm``; a turn alone in its anchor group gets
  ``A_S = 0`` (there is nothing to compare it with);
* combined (Eq. 8): ``A = A_E + omega * A_S`` (:func:`turn_advantages`, the ``"gigpo"`` estimator of
  :mod:`trl_aem.advantages`).

``F_norm`` is the group's standard deviation (plus ``epsilon``) or 1; this module takes TRL's ``scale_rewards``
for both levels ("none" means 1). Faulted episodes carry no reward and no rows: they are left out of every group.
Nothing here knows about trainers or processes (:func:`turn_advantages` is handed a ``gather``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .advantages import EstimatorSettings, Gather, TurnEstimate, TurnRow

__all__ = [
    "GiGPOSteps",
    "anchor_key",
    "default_state_key",
    "discounted_returns",
    "step_advantages",
    "turn_advantages",
]

EPSILON = 1e-4  # as TRL's group advantage


def default_state_key(observation: str) -> str:
    """The anchor state of an observation when the environment gives no ``state_key``: its text with whitespace
    runs collapsed (so line wrapping or trailing spaces do not split one state in two)."""
    return re.sub(r"\s+", " ", observation).strip()


def anchor_key(state: Hashable) -> int:
    """A 48-bit integer for a state key (exact in float64, so keys survive an all-gather across processes)."""
    return int.from_bytes(hashlib.blake2b(repr(state).encode(), digest_size=6).digest(), "little")


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """``R_t = r_t + gamma * R_{t+1}`` from the last turn back (GiGPO's Eq. 5)."""
    returns, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


class GiGPOSteps(NamedTuple):
    """Output of :func:`step_advantages`, per turn.

    Attributes:
        advantage: ``(T,)`` the step-level advantage ``A_S`` (0 for singleton anchor groups).
        anchor_group: ``(T,)`` index of each turn's anchor group.
        group_size: ``(T,)`` size of each turn's anchor group.
    """

    advantage: torch.Tensor
    anchor_group: torch.Tensor
    group_size: torch.Tensor


def step_advantages(
    task_group: torch.Tensor, state: torch.Tensor, returns: torch.Tensor, *, scale: bool, epsilon: float = EPSILON
) -> GiGPOSteps:
    """GiGPO's step-level advantages (Eq. 6-7) for a flat batch of turns.

    Args:
        task_group: ``(T,)`` long, the GRPO group (task) of each turn's episode: anchor groups never mix tasks.
        state: ``(T,)`` long, the anchor key of the state each turn acted on (:func:`anchor_key`).
        returns: ``(T,)`` float, the discounted return from each turn (:func:`discounted_returns`).
        scale: divide by the anchor group's standard deviation (``+ epsilon``), as TRL's ``scale_rewards``
            does for episodes; otherwise only the mean is removed.
    """
    if not (task_group.shape == state.shape == returns.shape) or returns.dim() != 1:
        raise ValueError("task_group, state and returns must be 1-D tensors of the same length")
    if returns.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return GiGPOSteps(returns.new_zeros(0), empty, empty)
    keys = torch.stack([task_group.long(), state.long()], dim=1)
    _, anchor, size = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    x = returns.double()
    count = size.double()
    mean = torch.zeros_like(count).index_add_(0, anchor, x) / count
    centred = x - mean[anchor]
    if scale:
        variance = torch.zeros_like(count).index_add_(0, anchor, centred**2) / (count - 1).clamp(min=1)
        std = torch.where(count > 1, variance.sqrt(), torch.ones_like(count))
        centred = centred / (std[anchor] + epsilon)
    advantage = torch.where(size[anchor] > 1, centred, torch.zeros_like(centred))  # singletons: no comparison
    return GiGPOSteps(advantage.to(returns.dtype), anchor, size[anchor])


def turn_advantages(rows: list[TurnRow], settings: EstimatorSettings, gather: Gather) -> TurnEstimate:
    """GiGPO's combined advantage (Eq. 8) of step-mode rows: ``A_E + omega * A_S`` per turn.

    ``rows`` are this process's turns, episode by episode in order, with their episode's ``A_E``. The per-turn
    rewards include the invalid-action penalty (so they sum to the episode return), ``R_t`` is discounted by
    ``settings.gigpo_gamma``, and the anchor state of turn ``t`` is the observation it acted on, keyed by
    ``settings.state_key`` (the environment's ``state_key``, else :func:`default_state_key`). Anchor groups may hold
    turns of several processes, so every process's ``(task, state, R_t)`` is gathered and the step advantages are
    computed on all of them identically everywhere; this process's are taken back. ``scale`` follows TRL's
    ``scale_rewards`` ("none": mean removed only)."""
    from .advantages import TurnEstimate

    penalty, returns, fields = settings.invalid_action_penalty, {}, []
    for row in rows:
        episode, t = row.episode, row.position
        if id(episode) not in returns:
            rewards = [turn.reward - penalty * turn.invalid for turn in episode.turns]  # sums to the env return
            returns[id(episode)] = discounted_returns(rewards, settings.gigpo_gamma)
        observation = episode.first_observation if t == 0 else episode.turns[t - 1].observation
        fields.append(
            [float(episode.group), float(anchor_key(settings.state_key(observation))), returns[id(episode)][t]]
        )
    full, start = gather(torch.tensor(fields, dtype=torch.float64).view(-1, 3))
    full = full.cpu()
    steps = step_advantages(full[:, 0].long(), full[:, 1].long(), full[:, 2], scale=settings.scale_rewards != "none")
    mine = steps.advantage[start : start + len(rows)]
    metrics = {}
    if full.size(0):
        groups = float(steps.group_size.double().reciprocal().sum())  # each group's turns add up to 1
        metrics["gigpo/anchor_group_size"] = full.size(0) / groups
        metrics["gigpo/step_adv_std"] = float(steps.advantage.std(unbiased=False))
        metrics["gigpo/shared_frac"] = float((steps.group_size > 1).double().mean())
    advantages = [
        row.episode_advantage + settings.gigpo_omega * float(step) for row, step in zip(rows, mine, strict=True)
    ]
    return TurnEstimate(advantages, metrics)
