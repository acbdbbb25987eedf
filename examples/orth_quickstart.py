"""A tour of diffnum.orth: orthogonal maps, one line that keeps a layer orthogonal, and
fine-tuning adapters that merge into the weight.

Run:  python examples/orth_quickstart.py
"""

import copy

import torch

from diffnum.orth import (
    MAPS,
    adapt,
    cayley,
    cayley_neumann,
    givens,
    merge_adapters,
    orthogonal,
    orthogonality_penalty,
    trainable_parameters,
)

torch.manual_seed(0)
f64 = torch.float64

# 1. The maps are pure functions: skew A -> Q. Cayley–Neumann trades the solve for products;
#    its orthogonality error is exactly ‖A‖^{2k} for odd k terms (see its docstring).
X = torch.randn(8, 8, dtype=f64)
A = 0.3 * (X - X.mT) / torch.linalg.matrix_norm(X - X.mT, 2)  # ‖A‖₂ = 0.3
eye = torch.eye(8, dtype=f64)
Q = cayley(A)
print(f"cayley       ‖QᵀQ − I‖ = {torch.linalg.matrix_norm(Q.mT @ Q - eye, 2):.1e}")
for terms in (2, 3, 5):
    Q = cayley_neumann(A, terms)
    print(f"neumann k={terms}  ‖QᵀQ − I‖ = {torch.linalg.matrix_norm(Q.mT @ Q - eye, 2):.1e}")
theta = torch.randn(7, 4, dtype=f64)  # d = 8: 7 round-robin rounds of 4 disjoint pairs
Q = givens(theta, 8)
print(f"givens (d=8) ‖QᵀQ − I‖ = {torch.linalg.matrix_norm(Q.mT @ Q - eye, 2):.1e}")

# 2. Orthogonal Procrustes by gradient descent: recover a hidden rotation from noisy pairs
#    (y = Q* x + noise) with an orthogonal nn.Linear, for every map, each started at W = I
#    (assigned through right_inverse). Rotation-valued maps keep det W fixed, so a start in
#    the other component than Q* could never reach it; the butterfly (12 angles < 28 =
#    dim SO(8)) and Cayley–Neumann (orthogonal to O(‖A‖^k) only) are not meant to fit a
#    general rotation: they are adapters near I.
d = 8
hidden = torch.linalg.matrix_exp(0.15 * (X - X.mT))
x = torch.randn(256, d, dtype=f64)
y = x @ hidden.T + 0.01 * torch.randn(256, d, dtype=f64)
for map_name in MAPS:
    layer = orthogonal(torch.nn.Linear(d, d, bias=False, dtype=f64), map=map_name)
    layer.weight = eye
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(300):
        loss = (layer(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W = layer.weight.detach()
    print(f"{map_name:15s} loss {loss.item():.2e}  ‖W − Q*‖ "
          f"{torch.linalg.matrix_norm(W - hidden):.2e}  ‖WᵀW − I‖ "
          f"{torch.linalg.matrix_norm(W.T @ W - eye):.1e}")

# 3. Fine-tuning adapters. A frozen "pretrained" MLP, and a task whose answer is the same MLP
#    with the inputs of its first layer rotated (W R*). Each adapter starts at the pretrained
#    outputs, trains only its own tensors, and merges into a plain nn.Linear afterwards.
#    Orthogonal adapters (W' = W R) keep the angles between the first layer's neurons;
#    Cayley–Neumann only approximately (its R is orthogonal to ‖A‖^{2·terms}). qGOFT's
#    quasi-Givens blocks (the default; relax=False is the strict GOFT) trade that for free
#    norms and angles, held near orthogonal by λ·orthogonality_penalty in the loss;
#    LoRA/PiSSA/SVFT are additive.
pretrained = torch.nn.Sequential(torch.nn.Linear(d, 32, dtype=f64), torch.nn.Tanh(),
                                 torch.nn.Linear(32, 1, dtype=f64))
teacher = copy.deepcopy(pretrained)
with torch.no_grad():
    teacher[0].weight.copy_(teacher[0].weight @ hidden)
x = torch.randn(512, d, dtype=f64)
y = teacher(x).detach()


def neuron_cosines(W):
    unit = W / W.norm(dim=1, keepdim=True)
    return unit @ unit.T


W0 = pretrained[0].weight.detach()
methods = [("oft", "oft", {"block_size": 4}),
           ("oft-neumann", "oft", {"block_size": 4, "map": "cayley_neumann"}),
           ("hra", "hra", {"r": 4}), ("boft", "boft", {"block_size": 2}),
           ("goft", "qgoft", {"relax": False}), ("qgoft", "qgoft", {}), ("lora", "lora", {"r": 2}),
           ("pissa", "pissa", {"r": 2}), ("svft", "svft", {"pattern": "banded", "width": 1})]
for name, method, options in methods:
    model = adapt(copy.deepcopy(pretrained), ["0"], method, **options)
    start = (model(x) - pretrained(x)).abs().max()  # 0, or rounding for hra and pissa
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    for _ in range(200):
        loss = (model(x) - y).square().mean()
        opt.zero_grad()
        (loss + 0.01 * orthogonality_penalty(model)).backward()  # 0 but for qGOFT
        opt.step()
    y_adapted = model(x).detach()
    merge_adapters(model)
    merged = (model(x) - y_adapted).abs().max()
    W = model[0].base_layer.weight.detach()
    angles = (neuron_cosines(W) - neuron_cosines(W0)).abs().max()
    print(f"{name:11s} {trainable_parameters(model):3d} params  |start − pretrained| "
          f"{start:.0e}  loss {loss.item():.1e}  merged − unmerged {merged:.0e}  "
          f"neuron angles moved {angles:.0e}")
