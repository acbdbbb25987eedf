"""Fit a small 1-D FNO to the heat semigroup and evaluate it on a finer grid.

The operator: u(·, 0) ↦ u(·, T) for u_t = ν u_xx on the periodic unit interval, i.e. the
Fourier multiplier û_k ↦ exp(−4π²νk²T) û_k, applied to random band-limited initial data.
The same trained weights are then evaluated zero-shot on a 2× and 4× finer grid.

Run:  python examples/models_fno.py
"""

import math
import time

import torch

from diffnum.models import FNO

torch.manual_seed(0)
NU_T = 2e-3  # ν·T: mode k decays by exp(−4π²·ν·T·k²), k = 4 keeps 28 %
BAND = 6  # initial data hold the frequencies |k| ≤ BAND
STEPS = 500


def heat_pairs(n_samples: int, n: int, generator: torch.Generator):
    """Random band-limited u0 on n points and the exact heat solution u(·, T)."""
    k = torch.fft.rfftfreq(n, 1 / n)
    coeffs = torch.randn(n_samples, 1, n // 2 + 1, dtype=torch.complex64, generator=generator)
    coeffs = coeffs * (k <= BAND) / (1 + k) * n  # smooth data, amplitude independent of n
    coeffs[..., 0] = coeffs[..., 0].real
    u0 = torch.fft.irfft(coeffs, n=n)
    u_t = torch.fft.irfft(coeffs * torch.exp(-4 * math.pi**2 * NU_T * k**2), n=n)
    return u0, u_t


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(((prediction - target).norm(dim=-1) / target.norm(dim=-1)).mean())


model = FNO(in_channels=1, out_channels=1, modes=8, width=24, depth=2, n_dims=1)
train_u0, train_ut = heat_pairs(256, 64, torch.Generator().manual_seed(1))
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)

start = time.perf_counter()
for step in range(1, STEPS + 1):
    batch = torch.randint(0, 256, (32,))
    optimizer.zero_grad()
    loss = (model(train_u0[batch]) - train_ut[batch]).square().mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    if step % 100 == 0:
        print(f"step {step:4d}  mse {loss.item():.3e}")
print(f"trained in {time.perf_counter() - start:.1f} s")

with torch.no_grad():
    for n in (64, 128, 256):
        test_u0, test_ut = heat_pairs(64, n, torch.Generator().manual_seed(2))
        error = relative_l2(model(test_u0), test_ut)
        print(f"test on {n:3d} points: relative L2 error {error:.3e}")
