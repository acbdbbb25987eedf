"""Experts sharded over the ranks of a ``torch.distributed`` process group.

Every collective here is preceded by a check that the ranks agree on what they send (one
all-gather of a few integers: shape and dtype): a rank with other shapes gets a
``ValueError`` naming the difference on every rank, instead of a gloo abort on one rank and
a wrong result or a hang on the others. :func:`agree_on_resume` and :func:`broadcast_state`
let rank 0 decide what a resumed run starts from; :func:`init_distributed` starts a process
group with an explicit timeout, so that a rank that never arrives ends the run with an error.
"""

from __future__ import annotations

import datetime
import io
import logging
from typing import Any

import torch
import torch.distributed as dist

from diffnum._core.validation import check_count, check_int_in_range, check_positive

logger = logging.getLogger(__name__)

# Integer codes of the dtypes, the same on every rank running the same torch.
_DTYPES = tuple(sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)},
                       key=str))
_DTYPE_CODE = {dtype: code for code, dtype in enumerate(_DTYPES)}
_NOT_A_TENSOR = -1
_UNKNOWN_DTYPE = -2
_MAX_DIMS = 16  # dimensions compared; a tensor with more is refused on every rank


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


def _ready(group) -> bool:
    """True when ``group`` (None: the world) spans more than one initialized rank."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size(group) > 1)


def _small_device(group) -> torch.device:
    """Where the small bookkeeping tensors go: NCCL moves CUDA tensors only."""
    if str(dist.get_backend(group)) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather_ints(values: list[int], group) -> list[list[int]]:
    """Every rank's ``values`` (the same length on every rank), indexed by group rank."""
    mine = torch.tensor(values, dtype=torch.int64, device=_small_device(group))
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    return [part.tolist() for part in parts]


def _ranks(ranks: list[int], verb: bool = True) -> str:
    """"rank 1 has", "ranks 0, 2 have" (or without the verb)."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}" + (" has" if verb else "")
    return f"ranks {', '.join(map(str, ranks))}" + (" have" if verb else "")


def _disagreement(name: str, what: str, by_rank: list[str]) -> str | None:
    """"rank 0 has x of shape (3, 2), rank 1 has (2, 2)", or None if every rank agrees."""
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(by_rank):
        groups.setdefault(value, []).append(rank)
    if len(groups) == 1:
        return None
    clauses = [f"{_ranks(ranks)} {value}" for value, ranks in groups.items()]
    clauses[0] = f"{_ranks(groups[by_rank[0]])} {name} {what} {by_rank[0]}"
    return ", ".join(clauses)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def _layout(tensor: object) -> list[int]:
    """[dtype code, ndim, *shape (padded with -1 to _MAX_DIMS)]."""
    if not isinstance(tensor, torch.Tensor):
        return [_NOT_A_TENSOR, -1] + [-1] * _MAX_DIMS
    shape = list(tensor.shape[:_MAX_DIMS])
    return ([_DTYPE_CODE.get(tensor.dtype, _UNKNOWN_DTYPE), tensor.ndim]
            + shape + [-1] * (_MAX_DIMS - len(shape)))


def _dtype_name(code: int) -> str:
    if code == _UNKNOWN_DTYPE:
        return "an unknown dtype"
    return str(_DTYPES[code]) if 0 <= code < len(_DTYPES) else f"dtype code {code}"


def check_same_layout(tensor: torch.Tensor, group=None, *, name: str = "tensor",
                      op: str = "a collective") -> None:
    """Raise on every rank of ``group`` unless all ranks pass tensors of one shape and dtype.

    Call it on every rank before a collective whose buffers must match (all-gather,
    all-reduce): one all-gather of ``2 + 16`` integers per call. A mismatch is a
    ``ValueError`` whose message, the same on every rank, names the ranks and what they
    hold, e.g. ``rank 0 has weights of shape (3, 2, 16), rank 1 has (2, 2, 16)``, so that no
    rank goes on to a collective that would abort gloo, corrupt a buffer or wait for ever.
    Nothing is checked (or communicated) when ``group`` spans a single rank.
    """
    if not _ready(group):
        return
    layouts = _all_gather_ints(_layout(tensor), group)
    me = dist.get_rank(group)
    where = f"{op} on {len(layouts)} ranks (raised on rank {me})"
    missing = [rank for rank, layout in enumerate(layouts) if layout[0] == _NOT_A_TENSOR]
    if missing:
        raise TypeError(f"{where}: every rank must pass {name} as a tensor; "
                        f"{_ranks(missing, verb=False)} passed something else")
    if any(layout[1] > _MAX_DIMS for layout in layouts):
        raise ValueError(f"{where}: {name} has more than {_MAX_DIMS} dimensions on some rank "
                         f"(ndim by rank: {[layout[1] for layout in layouts]}); not supported")
    shapes = [str(tuple(layout[2:2 + layout[1]])) for layout in layouts]
    dtypes = [_dtype_name(layout[0]) for layout in layouts]
    problems = [p for p in (_disagreement(name, "of shape", shapes),
                            _disagreement(name, "of dtype", dtypes)) if p is not None]
    if problems:
        raise ValueError(f"{where}: the ranks disagree on {name}: {'; '.join(problems)}")


def _gather_cat(local: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=1)


class _GatherExperts(torch.autograd.Function):
    """All-gather along the expert dimension (dim 1); backward sums the cotangents of every
    rank and keeps this rank's slice.

    Every rank evaluates the same loss of the gathered result, so the summed cotangent is
    world × ∂L/∂w_local; after DDP averages parameter gradients over ranks, the implicit
    term of each expert then counts exactly once, as in a single-process run.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, group, name: str) -> torch.Tensor:
        ctx.group = group
        ctx.share = local.shape[1]
        ctx.name = name
        return _gather_cat(local, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        check_same_layout(grad, ctx.group, name=f"the gradient of {ctx.name}",
                          op="gather_experts (backward all_reduce)")
        dist.all_reduce(grad, group=ctx.group)
        start = dist.get_rank(ctx.group) * ctx.share
        return grad[:, start:start + ctx.share], None, None


def gather_experts(local: torch.Tensor, group, *, name: str = "local experts") -> torch.Tensor:
    """Concatenate every rank's experts (dim 1) on every rank; differentiable.

    The ranks first check that their ``local`` tensors have one shape and dtype
    (:func:`check_same_layout`; ``name`` is what its message calls them): a mismatch raises
    ``ValueError`` on every rank before any data moves.
    """
    check_same_layout(local, group, name=name, op="gather_experts")
    if local.ndim < 2:  # the same on every rank once the layouts agree
        raise ValueError(f"gather_experts concatenates along dim 1: {name} must have 2 "
                         f"dimensions at least, got shape {tuple(local.shape)}")
    if local.requires_grad:
        return _GatherExperts.apply(local, group, name)
    return _gather_cat(local, group)


def agree_on_resume(step: int, group=None, *, strict: bool = False) -> int:
    """The step a resumed run starts from: rank 0's ``step``, on every rank.

    Each rank passes the step it would resume from (0 for none, e.g. no checkpoint visible
    to it); rank 0 decides. The steps are all-gathered (as cheap as a broadcast of one
    integer, and every rank sees who differs): ranks that saw another step are logged as
    a warning and follow rank 0 — the caller must then give them rank 0's state (see
    :func:`broadcast_state`) or start afresh on every rank. ``strict=True`` instead raises
    ``RuntimeError`` on every rank if any rank's step differs from rank 0's (to check that
    every rank did restore rank 0's state). A step that is not an int >= 0 on any rank raises
    ``ValueError`` on every rank. Without a multi-rank group the step is checked
    (``TypeError``/``ValueError``) and returned as it is.
    """
    valid = isinstance(step, int) and not isinstance(step, bool) and 0 <= step < 2**62
    if not _ready(group):
        return check_int_in_range("step", step, 0, 2**62 - 1)
    steps = [s for (s,) in _all_gather_ints([step if valid else -1], group)]
    bad = [rank for rank, s in enumerate(steps) if s < 0]
    if bad:  # the same error on every rank, so that none goes on alone
        raise ValueError(f"agree_on_resume: every rank must pass a step that is an int >= 0; "
                         f"{_ranks(bad, verb=False)} passed another value "
                         f"(rank {dist.get_rank(group)} passed {step!r})")
    others = {rank: s for rank, s in enumerate(steps) if s != steps[0]}
    if others and strict:
        raise RuntimeError(
            f"agree_on_resume: the ranks disagree on the step to resume from: rank 0 has step "
            f"{steps[0]}, " + ", ".join(f"rank {r} has {s}" for r, s in others.items())
            + f" (raised on rank {dist.get_rank(group)})")
    if others:
        logger.warning("resume: rank 0 resumes from step %d; %s: they follow rank 0",
                       steps[0], ", ".join(f"rank {r} saw step {s}" for r, s in others.items()))
    return steps[0]


def broadcast_state(state: Any, group=None) -> Any:
    """Rank 0's ``state`` (e.g. a loaded checkpoint, or None) on every rank of ``group``.

    Rank 0 serializes it with ``torch.save``; the other ranks read it back with
    ``torch.load(weights_only=True)`` (tensors and plain containers only, no code runs), so
    they need not see rank 0's file at all. What the others pass is ignored. If any rank
    cannot read the state back, ``RuntimeError`` is raised on every rank. Without a
    multi-rank group ``state`` is returned as it is.
    """
    if not _ready(group):
        return state
    src = 0 if group is None else dist.get_global_rank(group, 0)
    device = _small_device(group)
    main = dist.get_rank(group) == 0
    payload, failure = b"", ""
    if main and state is not None:
        buffer = io.BytesIO()
        try:
            torch.save(state, buffer)
            payload = buffer.getvalue()
        except Exception as error:  # reported on every rank below, not on rank 0 alone
            failure = f"{type(error).__name__}: {_first_line(error)}"
    code = -1 if not main or state is None else (-2 if failure else len(payload))
    size = torch.tensor([code], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src, group=group)
    n = int(size[0])
    if n == -2:
        raise RuntimeError("broadcast_state: rank 0 could not serialize its state with "
                           "torch.save" + (f" ({failure})" if failure else ""))
    if n < 0:
        return None
    data = (torch.frombuffer(bytearray(payload), dtype=torch.uint8) if main
            else torch.empty(n, dtype=torch.uint8))
    data = data.to(device)
    dist.broadcast(data, src=src, group=group)
    if not main:
        try:
            state = torch.load(io.BytesIO(data.cpu().numpy().tobytes()), map_location="cpu",
                               weights_only=True)
        except Exception as error:  # any failure to read back is reported on every rank
            failure = f"{type(error).__name__}: {_first_line(error)}"
    flags = _all_gather_ints([int(bool(failure))], group)
    failed = [rank for rank, (flag,) in enumerate(flags) if flag]
    if failed:
        raise RuntimeError(f"broadcast_state: {_ranks(failed, verb=False)} could not read "
                           "rank 0's state back with weights_only=True"
                           + (f" ({failure})" if failure else ""))
    return state


def init_distributed(backend: str = "gloo", *, timeout_seconds: float = 1800.0,
                     init_method: str | None = None, rank: int | None = None,
                     world_size: int | None = None):
    """``torch.distributed.init_process_group`` with its arguments checked and a timeout.

    ``timeout_seconds`` (a finite number > 0) bounds every collective of the default group:
    a rank that never arrives (crashed, or left on another code path) makes the others raise
    after that long instead of waiting for ever. ``init_method``: None (``env://``, as
    torchrun sets up) or a URL such as ``file:///path`` or ``tcp://host:port``; ``rank`` and
    ``world_size``: None (read from the environment) or ints with 0 <= rank < world_size.
    Returns the default group.

    Example::

        >>> from diffnum.constrain import init_distributed
        >>> init_distributed("gloo", timeout_seconds=600)  # doctest: +SKIP
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of torch")
    if not isinstance(backend, str) or not backend:
        raise TypeError(f"backend must be a non-empty str, got {backend!r}")
    name = backend.lower()
    if name in dist.Backend.backend_list and not dist.is_backend_available(name):
        raise ValueError(f"backend {backend!r} is not available in this build of torch")
    seconds = check_positive("timeout_seconds", timeout_seconds)
    try:
        timeout = datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"timeout_seconds is too large, got {timeout_seconds}") from None
    if init_method is not None and not isinstance(init_method, str):
        raise TypeError(f"init_method must be None or a str, got {type(init_method).__name__}")
    if init_method is not None and "://" not in init_method:
        raise ValueError("init_method must be None or a URL such as 'env://', "
                         f"'file:///path' or 'tcp://host:port', got {init_method!r}")
    if world_size is not None:
        world_size = check_count("world_size", world_size, high=2**31 - 1)
    if rank is not None:
        rank = check_int_in_range("rank", rank, 0,
                                  2**31 - 2 if world_size is None else world_size - 1)
    if dist.is_initialized():
        raise RuntimeError(f"torch.distributed is already initialized (backend "
                           f"{dist.get_backend()}, {dist.get_world_size()} ranks); "
                           "init_distributed must be called once per process")
    dist.init_process_group(backend, init_method=init_method, timeout=timeout,
                            rank=-1 if rank is None else rank,
                            world_size=-1 if world_size is None else world_size)
    return dist.group.WORLD
