"""Experts sharded over the ranks of a ``torch.distributed`` process group."""

from __future__ import annotations

import torch
import torch.distributed as dist


def active_group(distributed: bool | None, group=None):
    """The process group to shard over, or None for a single-process solve.

    ``distributed=None`` shards whenever ``torch.distributed`` is initialized with more than
    one rank; ``True`` requires it; ``False`` never shards.
    """
    if distributed is False:
        return None
    ready = dist.is_available() and dist.is_initialized()
    if not ready:
        if distributed:
            raise RuntimeError("distributed=True needs torch.distributed to be initialized "
                               "(e.g. launched by torchrun and init_process_group)")
        return None
    if dist.get_world_size(group) == 1:
        return None
    return group if group is not None else dist.group.WORLD


def shard(experts: int, group) -> tuple[int, int]:
    """(start, stop) of this rank's contiguous share of ``experts`` (equal shares)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if experts % world:
        raise ValueError(
            f"{experts} experts cannot be shared equally by {world} ranks; use a number of "
            "experts divisible by the world size"
        )
    share = experts // world
    return rank * share, (rank + 1) * share


class _GatherExperts(torch.autograd.Function):
    """All-gather along the expert dimension (dim 1); backward sums the cotangents of every
    rank and keeps this rank's slice.

    Every rank evaluates the same loss of the gathered result, so the summed cotangent is
    world × ∂L/∂w_local; after DDP averages parameter gradients over ranks, the implicit
    term of each expert then counts exactly once, as in a single-process run.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.share = local.shape[1]
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, local.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        start = dist.get_rank(ctx.group) * ctx.share
        return grad[:, start:start + ctx.share], None


def gather_experts(local: torch.Tensor, group) -> torch.Tensor:
    """Concatenate every rank's experts (dim 1) on every rank; differentiable."""
    if local.requires_grad:
        return _GatherExperts.apply(local, group)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=1)
