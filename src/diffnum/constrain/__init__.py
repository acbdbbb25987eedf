"""Hard physical constraints for neural PDE solvers, split over a mixture of experts.

Map of the pillar (Négiar et al. 2023; Chalapathi, Du, Krishnapriyan, ICLR 2024):

- :class:`HardConstraint` (PI-HC) — u = B w*, w* = argmin ½‖[F(Bw) at M sampled points;
  C w − c (initial/boundary rows); λw]‖², Levenberg–Marquardt per batch element, implicit
  gradients; returns a :class:`ConstrainedSolution` (u, the solver's
  :class:`~diffnum.solve.Solution` — weights, per-solve status, steps, residual norms —,
  violations per constraint family).
- :class:`MixtureOfExperts` (PI-HC-MoE) — one such solve per space–time block of a fixed
  router, vectorized on one device or sharded over ``torch.distributed`` ranks; K = 1 is
  PI-HC exactly.
- :func:`init_distributed` — ``init_process_group`` with its arguments checked and a timeout,
  so a rank that never arrives ends the run with an error instead of a hang.
- The router: :func:`expert_index`, :func:`partition_domain`, :func:`unpartition_domain`.
- :func:`expert_residual` — F(u) over the whole grid with each expert's own weights (the
  physics loss of a constrained model); :func:`interior_mask` — where the PDE holds (no
  initial or boundary condition there), the only points collocated or penalised;
  :func:`interface_jumps` — where neighbouring experts' fields disagree at a block interface.
- Training: :class:`PhysicsProblem`, :class:`TrainConfig`, :func:`train` (→
  :class:`TrainResult`), :func:`evaluate` (→ :class:`Evaluation`), :func:`physics_loss`,
  :class:`ConstrainedModel`
  (its ``forward`` returns a :class:`ModelOutput`: u and the layer's solution) —
  one trainer for PI-SC, PI-HC and PI-HC-MoE over the same FNO backbone, physics-only loss,
  atomic checkpoints, bit-for-bit resume, JSONL metrics, DDP when distributed.
"""

from diffnum.constrain._distributed import init_distributed
from diffnum.constrain._layer import (
    ConstrainedSolution,
    HardConstraint,
    MixtureOfExperts,
    expert_residual,
    interface_jumps,
    interior_mask,
    particular_solution,
)
from diffnum.constrain._partition import expert_index, partition_domain, unpartition_domain
from diffnum.constrain._train import (
    ConstrainedModel,
    Evaluation,
    ModelOutput,
    PhysicsProblem,
    TrainConfig,
    TrainResult,
    evaluate,
    learning_rate,
    physics_loss,
    problem_digest,
    train,
)

__all__ = [
    "ConstrainedModel",
    "ConstrainedSolution",
    "Evaluation",
    "HardConstraint",
    "MixtureOfExperts",
    "ModelOutput",
    "PhysicsProblem",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "expert_index",
    "expert_residual",
    "init_distributed",
    "interface_jumps",
    "interior_mask",
    "learning_rate",
    "particular_solution",
    "partition_domain",
    "physics_loss",
    "problem_digest",
    "train",
    "unpartition_domain",
]
