"""A tour of diffnum.solve: batched solvers whose solutions are differentiable.

Run:  python examples/solve_quickstart.py
"""

import torch

import diffnum.solve as ds

torch.manual_seed(0)
dt = torch.float64

# 1. Nonlinear least squares, batched: fit a·exp(−b t) to three noisy curves at once.
t = torch.linspace(0, 3, 50, dtype=dt)
truth = torch.tensor([[2.0, 0.5], [1.0, 1.5], [3.0, 0.2]], dtype=dt)
data = truth[:, :1] * torch.exp(-truth[:, 1:] * t) + 0.02 * torch.randn(3, 50, dtype=dt)
data.requires_grad_(True)  # gradients will flow back to the data through the solve


def residual(y, data):
    return y[..., :1] * torch.exp(-y[..., 1:] * t) - data


sol = ds.least_squares(residual, torch.ones(3, 2, dtype=dt), (data,))
print("least squares:", sol.value.detach(), "status", sol.status.tolist(),
      "steps", sol.steps.tolist())

# dy*/d(data) by the implicit function theorem: one 2×2 solve per curve, no unrolling.
(grad,) = torch.autograd.grad(sol.value[:, 1].sum(), data)
print("d(decay rates)/d(data), first curve, first 5 samples:", grad[0, :5])

# 2. A failing element is reported, not raised (unless throw=True), and leaves the others.
bad = data.detach().clone()
bad[1, 7] = float("nan")
sol = ds.least_squares(residual, torch.ones(3, 2, dtype=dt), (bad,))
print("with a NaN in curve 1:", [ds.Status(int(s)).name for s in sol.status])
print(sol.describe())

# 3. Roots and fixed points, same shape of API and of result.
c = torch.tensor([[1.0, 2.0]], dtype=dt, requires_grad=True)
A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=dt)
root = ds.root(lambda y, c: y @ A.T + 0.3 * y**3 - c, torch.zeros(1, 2, dtype=dt), (c,))
fixed = ds.fixed_point(lambda y, c: 0.5 * torch.cos(y) + c, torch.zeros(1, 2, dtype=dt), (c,))
print("root:", root.value.detach(), "fixed point:", fixed.value.detach())

# 4. Linear solves with solver objects: LU, Cholesky, CG or GMRES (A a tensor or, for the
#    iterative ones, a matvec), differentiable as well.
M = torch.randn(4, 4, dtype=dt)
S = M @ M.T + 4 * torch.eye(4, dtype=dt)
b = torch.randn(4, dtype=dt)
for solver in (ds.LU(), ds.Cholesky(), ds.CG(rtol=1e-12), ds.GMRES(rtol=1e-12)):
    x = ds.linear_solve(S, b, solver=solver).value
    print(f"linear_solve[{type(solver).__name__}] residual:", float(torch.linalg.norm(S @ x - b)))
