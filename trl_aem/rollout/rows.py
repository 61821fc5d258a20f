"""Helpers that turn finished episodes into padded trainer rows and per-episode metrics."""

from __future__ import annotations

import torch

from .episode import Episode

__all__ = ["episode_metrics", "pad_rows"]


def pad_rows(rows: list[list], value, side: str, dtype=torch.long) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        if not row:
            continue
        t = torch.as_tensor(row, dtype=dtype)
        if side == "left":
            out[i, width - len(row) :] = t
        else:
            out[i, : len(row)] = t
    return out


def episode_metrics(episodes: list[Episode]) -> torch.Tensor:
    """Per-episode ``[success, return, turns, invalid turns, error, timeout, truncated]`` (float, for gathering)."""
    return torch.tensor(
        [
            [
                float(e.success),
                e.env_return,
                len(e.turns),
                e.num_invalid,
                float(e.ending == "error"),
                float(e.ending == "timeout"),
                float(e.ending == "truncated"),
            ]
            for e in episodes
        ],
        dtype=torch.float64,
    ).view(-1, 7)
