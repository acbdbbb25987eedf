"""A tour of diffnum.factor: one engine, many decompositions.

Run:  python examples/factor_quickstart.py
"""

import torch

import diffnum.factor as df

torch.manual_seed(0)
A, sigma = df.synthetic_matrix(200, 120, "low_rank", rank=10)

# Any pair of factors F (column side) and H (row side) that span A's column and row
# spaces gives an exact factorization A = F G Hᵀ; the engine finds the core G.
for name, fac in {
    "svd": df.svd(A),                              # k defaults to the numerical rank (10)
    "cpqr": df.cpqr(A),
    "utv (cpqr core)": df.utv(A, core="cpqr"),
    "nystrom": df.nystrom(A, 10),
    "cur (deim, cross core)": df.cur(A, 10, select="deim", core="cross"),
    "cr": df.cr(A),
}.items():
    res = fac.residuals()
    print(f"{name:24s} core {tuple(fac.G.shape)}  ‖A − FGHᵀ‖/‖A‖ = {res.reconstruction:.1e}  "
          f"‖FYᵀF − F‖/‖F‖ = {res.projector_F:.1e}")

# The engine directly: your own F and H, with sketch matrices B and D.
B, D = torch.randn(200, 15, dtype=A.dtype), torch.randn(120, 10, dtype=A.dtype)
fac = df.meta_factorize(A, A @ D, A.mT @ B, B=B, D=D)
print("generalized Nyström by hand:", float(fac.residuals().reconstruction))

# Pseudoinverses by three routes agree with torch.linalg.pinv.
for method in ("svd", "cr", "randomized"):
    err = torch.linalg.matrix_norm(df.pinv(A, method) - torch.linalg.pinv(A))
    print(f"pinv({method}) − torch.linalg.pinv: {err:.1e}")

# Randomized SVD, polar factor and matrix square root.
U, S, Vh = df.rsvd(A, 5, power_iters=2)
print("rsvd top singular values:", S[:3].tolist(), "exact:", sigma[:3].tolist())
M = torch.randn(64, 128)
O = df.msign(M)  # Muon's 5 quintic Newton–Schulz steps
s = torch.linalg.svdvals(O)  # Muon's coefficients aim at a band around 1, not at 1 exactly
print(f"msign singular values in [{float(s.min()):.3f}, {float(s.max()):.3f}]")
C = torch.randn(50, 50, dtype=torch.float64)
spd = C @ C.mT + 50 * torch.eye(50, dtype=torch.float64)
root = df.sqrtm(spd)
print("‖sqrtm(A)² − A‖/‖A‖ =", float(torch.linalg.matrix_norm(root @ root - spd)
                                     / torch.linalg.matrix_norm(spd)))
