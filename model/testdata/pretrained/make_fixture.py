#!/usr/bin/python3
"""Makes the pretrained-weights parity fixture of model/pretrained_test.go.

Run once with Debian's python3-torch 1.13 and python3-torchvision 0.14
(apt-get install python3-torch python3-torchvision python3-onnx):

    cd model/testdata/pretrained && /usr/bin/python3 make_fixture.py

It writes, from one torchvision resnet18 with random weights:
  resnet18.safetensors.zst  its state_dict as safetensors (zstd-compressed)
  resnet18.onnx.zst         torch.onnx.export of it in eval mode (BatchNorm
                            folded into the convolutions, as by default)
  features.safetensors      fixed inputs and the feature extractor's outputs
                            (everything before avgpool) at output stride 16
                            and 8, float32, NCHW
  torchvision_shapes.json   tensor names and shapes of torchvision's
                            resnet18, resnet34 and resnet50 state dicts

The weights are sparse ternary values times a per-layer scale so that the
committed files compress to about a megabyte; BatchNorm statistics are
calibrated on random inputs and are full floats. Output strides 16 and 8
follow torchvision's replace_stride_with_dilation: a dilated stage's first
block keeps the previous dilation (for BasicBlock in both of its 3x3
convolutions), its other blocks use the new one.
"""
import copy
import json
import struct
import subprocess

import numpy as np
import torch
import torchvision

torch.manual_seed(0)
rng = np.random.default_rng(7)


def ternary(shape, density=0.1):
    v = rng.choice([-1.0, 0.0, 1.0], size=shape, p=[density / 2, 1 - density, density / 2])
    fan_in = int(np.prod(shape[1:]))
    scale = np.float32(np.sqrt(2.0 / (fan_in * density)))
    return torch.from_numpy((v * scale).astype(np.float32))


model = torchvision.models.resnet18()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() >= 2:
            p.copy_(ternary(tuple(p.shape)))
        elif name.startswith("fc"):
            p.zero_()
        elif name.endswith("weight"):  # BatchNorm scale
            p.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        else:  # BatchNorm shift
            p.copy_(torch.from_numpy(rng.normal(0, 0.1, p.shape).astype(np.float32)))
    # Calibrate the running statistics: cumulative averages over random batches.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for _ in range(4):
        model(torch.randn(8, 3, 64, 64))
model.eval()


def dilate(net, output_stride):
    """torchvision's replace_stride_with_dilation, also for BasicBlock."""
    net = copy.deepcopy(net)
    total, dil = 4, 1
    for layer in [net.layer1, net.layer2, net.layer3, net.layer4]:
        first = layer[0]
        stride = first.conv1.stride[0] if isinstance(first, torchvision.models.resnet.BasicBlock) else first.conv2.stride[0]
        if total * stride <= output_stride:
            total *= stride
            continue
        prev, dil = dil, dil * stride
        for k, block in enumerate(layer):
            d = prev if k == 0 else dil
            for conv in [block.conv1, block.conv2] + ([block.conv3] if hasattr(block, "conv3") else []):
                if conv.kernel_size[0] == 3:
                    conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return net


def features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def save_safetensors(path, tensors, metadata=None):
    """The safetensors layout: u64 header size, JSON header, raw data."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


save_safetensors("resnet18.safetensors", {k: v.float() for k, v in model.state_dict().items()},
                 {"format": "pt", "source": "torchvision resnet18, random sparse weights (make_fixture.py)"})
torch.onnx.export(model, torch.randn(1, 3, 64, 64), "resnet18.onnx", opset_version=13)

inputs = torch.from_numpy(rng.normal(0, 1, (2, 3, 48, 48)).astype(np.float32))
odd = torch.from_numpy(rng.normal(0, 1, (1, 3, 37, 41)).astype(np.float32))
out = {"input": inputs, "input_odd": odd}
with torch.no_grad():
    for os_ in (16, 8):
        net = dilate(model, os_).eval()
        out[f"os{os_}"] = features(net, inputs)
        out[f"os{os_}_odd"] = features(net, odd)
save_safetensors("features.safetensors", out)
shapes = {}
for arch in ("resnet18", "resnet34", "resnet50"):
    sd = getattr(torchvision.models, arch)().state_dict()
    shapes[arch] = {k: list(v.shape) for k, v in sd.items()}
with open("torchvision_shapes.json", "w") as f:
    json.dump(shapes, f, indent=0, sort_keys=True)
for f in ("resnet18.safetensors", "resnet18.onnx"):
    subprocess.run(["zstd", "-19", "-f", "--rm", "-q", f], check=True)
