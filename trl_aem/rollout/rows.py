"""Padded trainer rows from finished episodes: token ids, token statistics, and each row's group and episode."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["RowGroups", "pad_rows", "pad_statistics"]


@dataclass
class RowGroups:
    """Per training row: the GRPO group (task) and the episode it belongs to, as global ids (-1: a filler row)."""

    group: torch.Tensor
    episode: torch.Tensor


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


def pad_statistics(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """``(len(rows), width)`` float32 token statistics, each row's values from its first column, NaN elsewhere
    (NaN = no statistic: padding, observation tokens, or a back end that records none)."""
    out = torch.full((len(rows), width), math.nan, dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row
    return out
