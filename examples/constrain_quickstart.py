"""A tour of diffnum.constrain: a hard-constraint layer and its mixture of experts.

Run:  python examples/constrain_quickstart.py
"""

import math

import torch

import diffnum.constrain as dc
from diffnum.pde import Burgers1D, uniform_grid

torch.manual_seed(0)

# 1. The layer on its own: any basis B (batch × grid points × N) becomes u = u_p + B̃ w*, where
#    the initial and boundary conditions hold exactly for every w (they are eliminated) and w*
#    minimises the PDE residual at M sampled points.
grid = uniform_grid({"x": (-1.0, 1.0, 64), "t": (0.0, 0.5, 32)})
pde = Burgers1D(0.05, boundary="dirichlet")
x, t = grid.mesh()
features = [torch.sin(math.pi * k * x) * torch.exp(-c * t) for k in range(1, 5)
            for c in (0.0, 1.0, 3.0)]
basis = torch.stack(features, -1).reshape(1, grid.size, -1).expand(2, -1, -1).contiguous()
basis.requires_grad_(True)
initial = torch.stack([-torch.sin(math.pi * grid.coordinates[0]),
                       -0.5 * torch.sin(math.pi * grid.coordinates[0])])

layer = dc.HardConstraint(pde, n_sampled=1024)
out = layer(basis, grid, initial, generator=torch.Generator().manual_seed(0))
print("PI-HC: status", out.status.tolist(), "LM steps", out.solution.steps.tolist(),
      "‖r‖", [f"{v:.2e}" for v in out.solution.residual_norm.flatten().tolist()])
print("failed solves:", out.failures() or "none")  # [(batch index, Status)], as every result
print("largest initial / boundary violation:", float(out.violation["initial"].max()),
      float(out.violation["boundary"].max()))

# 2. The same settings split over 4 experts along x: one solve per block, vectorized.
moe = dc.MixtureOfExperts(layer, {"x": 4})
out = moe(basis, grid, initial, generator=torch.Generator().manual_seed(0))
print("PI-HC-MoE: weights", tuple(out.weights.shape), "converged", out.converged_fraction)

# Gradients reach the basis through the implicit function theorem, expert by expert.
residual = dc.expert_residual(pde, out.terms, out.weights, grid, {"x": 4}, out.particular)
residual.square().mean().backward()
print("d(mean F²)/dB norm:", float(basis.grad.norm()))

# 3. Training the FNO basis network with the physics loss: one switch between methods.
problem = dc.PhysicsProblem(pde, grid, train_initial=initial, test_initial=initial,
                            test_solution=torch.zeros(2, *grid.shape))  # references go here
for method in ("soft", "hard", "moe"):
    config = dc.TrainConfig(method=method, experts=(4, 1) if method == "moe" else None,
                            n_basis=8, n_sampled=512, width=8, modes=8, depth=2, steps=5,
                            batch_size=2)
    result = dc.train(config, problem)
    print(f"{config.name:16s} loss {result.history[0]['loss']:.3e} → "
          f"{result.history[-1]['loss']:.3e}, solver failures {result.solver_failures}")
