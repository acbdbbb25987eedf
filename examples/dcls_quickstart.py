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
                    (6, 5), kernel="linear")
print("splatted mass", float(grid.sum()))
print("cubic gather", interp.gather(grid, torch.tensor([[2.5, 1.5]]), kernel="cubic",
                                    mode="mirror").tolist())

# Learnable synaptic delays: y_i[t] = Σ_j w_ij s_j[t − d_ij], then exact integer delays.
delayed = snn.DelayedLinear(5, 16, max_delay=25)
spikes, labels, _ = snn.delayed_coincidence(64, n_channels=5, n_classes=4)
current = delayed(spikes)
out = snn.lif(current, beta=0.3)
print("delayed current", tuple(current.shape), "hidden spikes", int(out.sum()))
interp.SigmaSchedule(12.5, 0.5, steps=100).apply(delayed, 100)  # end of the σ annealing
delayed.conv.round_positions()
print("integer delays of neuron 0:", delayed.delays()[0].tolist())
logits = snn.readout_logits(snn.Readout(16, 4)(out))
print("loss", F.cross_entropy(logits, labels).item())
