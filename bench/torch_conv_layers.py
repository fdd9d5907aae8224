"""PyTorch (oneDNN) GFLOP/s of single 3x3 convolutions, for comparing with
l2gflow's per-layer figures (README, Performance). Outside the product; run
with Debian's python3-torch: /usr/bin/python3 bench/torch_conv_layers.py

Layers: (batch, H=W, Cin, Cout, stride, dilation); FLOPs count 2 per
multiply-add; forward+backward counts 3x the forward's FLOPs.
"""
import time

import torch

torch.set_num_threads(2)
LAYERS = [
    (8, 128, 3, 16, 2, 1),
    (8, 56, 64, 64, 1, 1),
    (8, 28, 128, 128, 1, 1),
    (8, 14, 256, 256, 1, 1),
    (8, 14, 512, 512, 1, 2),
]
for n, hw, cin, cout, s, d in LAYERS:
    x = torch.randn(n, cin, hw, hw)
    conv = torch.nn.Conv2d(cin, cout, 3, s, d, d, bias=False)
    ho = (hw - 1) // s + 1
    flops = 2 * n * ho * ho * 9 * cin * cout
    with torch.no_grad():
        for _ in range(3):
            conv(x)
        start, it = time.time(), 0
        while time.time() - start < 1.5:
            conv(x)
            it += 1
    fwd = flops * it / (time.time() - start) / 1e9
    x.requires_grad_(True)
    for _ in range(2):
        y = conv(x)
        (y * y).sum().backward()
    start, it = time.time(), 0
    while time.time() - start < 1.5:
        y = conv(x)
        (y * y).sum().backward()
        it += 1
    fb = 3 * flops * it / (time.time() - start) / 1e9
    print(f"{hw}x{hw}x{cin}-{cout}/s{s}d{d}: forward {fwd:.0f} GFLOP/s, forward+backward {fb:.0f} GFLOP/s")
