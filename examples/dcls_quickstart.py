"""A tour of diffnum.interp and diffnum.snn: learnable spacings, fast paths, delays.

Run:  python examples/dcls_quickstart.py
"""

import torch
import torch.nn.functional as F

import diffnum.interp as interp
import diffnum.snn as snn

torch.manual_seed(0)

# A drop-in nn.Conv2d replacement: 26 taps with learnable positions in a 17×17 support.
layer = interp.Dcls2d(32, 32, kernel_count=26, dilated_kernel_size=17, padding=8, groups=32,
                      version="gauss")
x = torch.randn(2, 32, 40, 40)
print("output", tuple(layer(x).shape), "kernel", tuple(layer.kernel().shape))

# The convolution path is chosen by a cost model; every path gives the same numbers.
for method in ("dense", "fft"):
    layer.conv_method = method
    print(f"{method:5s} path: y[0, 0, 0, :3] = {layer(x)[0, 0, 0, :3].tolist()}")
layer.conv_method = "auto"

# Training practice: positions/widths in their own optimizer group, re-clamped after steps.
opt = torch.optim.AdamW(interp.parameter_groups(layer, 1e-3, weight_decay=0.05,
                                                position_lr_scale=5.0))
loss = layer(x).square().mean()
loss.backward()
opt.step()
layer.clamp_parameters()

# The same kernel construction is a splat; gather is its adjoint and a grid interpolator.
grid = interp.splat(torch.ones(3), torch.tensor([[1.5, 2.0], [4.2, 0.7], [3.0, 3.0]]),
                    (6, 5), kind="linear")
print("splatted mass", float(grid.sum()))
print("cubic gather", interp.gather(grid, torch.tensor([[2.5, 1.5]]), kind="cubic",
                                    padding_mode="mirror").tolist())

# Learnable synaptic delays: y_i[t] = Σ_j w_ij s_j[t − d_ij]. The delayed-coincidence task
# hides each class in the relative timing of 5 spikes, so only learned delays can solve it.
torch.manual_seed(0)
task = dict(n_channels=5, n_classes=4, length=60, max_delay=25)
g = torch.Generator().manual_seed(1)
x_train, y_train, _ = snn.delayed_coincidence(512, generator=g, **task)
x_test, y_test, _ = snn.delayed_coincidence(512, generator=g, **task)
model = torch.nn.Sequential(snn.DelayedLinear(5, 32, max_delay=25),
                            snn.LIF(0.3, surrogate="atan", alpha=5.0),
                            snn.Readout(32, 4, beta=0.8))


def accuracy() -> float:
    with torch.no_grad():
        return float((snn.readout_logits(model(x_test)).argmax(1) == y_test).float().mean())


print(f"delays: test accuracy before training {accuracy():.2f} (chance 0.25)")
opt = torch.optim.Adam(interp.parameter_groups(model, 0.01, position_lr_scale=50.0))
# Gaussian width annealed from T_d/2 to just above its floor over the first quarter, then
# frozen, so rounding the delays below keeps the accuracy (benchmarks/results/dcls_defaults.md).
sigma = interp.SigmaSchedule.for_rounding(12.5, total_steps=80)
for step in range(80):
    sigma.apply(model, step)
    idx = torch.randint(0, 512, (64,), generator=g)
    loss = F.cross_entropy(snn.readout_logits(model(x_train[idx])), y_train[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    model[0].conv.clamp_parameters()
with torch.no_grad():
    hidden = model[1](model[0](x_test))
print(f"after 80 steps: loss {loss.item():.3f}, test accuracy {accuracy():.2f}, "
      f"hidden spikes per sample {float(hidden.sum()) / len(x_test):.1f}")
model[0].conv.round_positions()  # exact integer delays for a sparse inference path
print(f"with integer delays: test accuracy {accuracy():.2f}; delays of neuron 0:",
      model[0].delays()[0].tolist())
