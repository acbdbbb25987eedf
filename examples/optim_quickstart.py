"""A tour of diffnum.optim: Muon on a checked polar factor, for a whole model in one line.

Run:  python examples/optim_quickstart.py
"""

import torch
from sklearn.datasets import load_digits

from diffnum.factor import POLAR_PRESETS, polar_band, polar_schedule
from diffnum.optim import Muon

# 1. What a Newton–Schulz schedule does to the singular values σ₀ ∈ [1e-3, 1] — exactly.
designed = polar_schedule(5, lower=1e-3)  # greedy minimax (Polar Express), 5 steps
for name, schedule in [("muon", "muon"), ("designed", designed)]:
    band = polar_band(schedule, lower=1e-3)
    print(f"{name:9s} σ_out ∈ [{band.min:.3f}, {band.max:.3f}]  worst |σ − 1| = {band.error:.3f}")
print("published sets:", ", ".join(POLAR_PRESETS))

# 2. A small CNN on scikit-learn's handwritten digits: the conv weights are orthogonalized
#    as (out, in·3·3) matrices, biases go to the AdamW group of the same optimizer.
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
y = torch.tensor(digits.target)
g = torch.Generator().manual_seed(0)
order = torch.randperm(len(y), generator=g)
train, test = order[:1400], order[1400:]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(16 * 64, 10))
opt = Muon(model.parameters(), lr=1e-2, schedule=designed)  # checked for bf16
print("groups:", [(grp["algorithm"], len(grp["params"])) for grp in opt.param_groups])
for _ in range(150):
    batch = train[torch.randint(len(train), (64,), generator=g)]
    loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
    opt.zero_grad()
    loss.backward()
    opt.step()
with torch.no_grad():
    accuracy = (model(x[test]).argmax(1) == y[test]).float().mean()
print(f"after 150 steps: train loss {loss.item():.3f}, test accuracy {accuracy:.3f}")
