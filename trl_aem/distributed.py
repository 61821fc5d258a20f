"""Collectives for ragged per-process data (each rank holds a different number of responses)."""

from __future__ import annotations

import torch
from accelerate import Accelerator

__all__ = ["gather_ragged", "gather_rows"]


def gather_ragged(local: torch.Tensor, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather ``local`` (``(n_rank, ...)``, ``n_rank`` may differ per rank) in rank order.

    Every rank gets the same concatenation ``[rank0 rows, rank1 rows, ...]`` plus the per-rank counts,
    so rank ``r``'s own rows are ``full[counts[:r].sum() : counts[:r + 1].sum()]``.
    """
    device = accelerator.device
    local = local.to(device)
    if accelerator.num_processes == 1:
        return local, torch.tensor([local.shape[0]], device=device)
    counts = accelerator.gather(torch.tensor([local.shape[0]], device=device, dtype=torch.long))
    max_count = int(counts.max())
    padded = local.new_zeros((max_count, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = accelerator.gather(padded).view(accelerator.num_processes, max_count, *local.shape[1:])
    full = torch.cat([gathered[r, : int(counts[r])] for r in range(accelerator.num_processes)], dim=0)
    return full, counts


def gather_rows(local: torch.Tensor, accelerator: Accelerator) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``local`` in process order, and the index of this process's first row (the ``gather``
    that :func:`trl_aem.aem.modulate_batch` and the advantage estimators take)."""
    full, counts = gather_ragged(local, accelerator)
    return full, int(counts[: accelerator.process_index].sum())
