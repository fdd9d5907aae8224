"""PyTorch reference of l2gflow's pinned workloads (model.Workloads), for
`make bench-compare`: the same networks layer for layer, the same shapes,
random weights and inputs, 2 threads. Prints one JSON object a line for
each workload and memory layout:
{"name": ..., "layout": "default" | "channels_last", "value": ..., "unit": ...}.

The rule of this file: it must be the fastest plain PyTorch a user would
write for each workload. Inference runs in eval() mode under
torch.inference_mode(); the flipped image goes through the network in one
batch with the image; ResNet-50 is torchvision's, dilated with
replace_stride_with_dilation (torchvision's ResNet-18 refuses dilation, so
it is written out here block for block, as torchvision builds it); every
workload is measured in both the default and the channels_last memory
layout, and the comparison is made against the faster. A change that makes
l2gflow look better by making this side slower is a defect.

Run with Debian's python3-torch and python3-torchvision:
    /usr/bin/python3 bench/torch_ref.py [--min-time 3] [--layouts default,channels_last]
Not part of l2gflow: a reference for comparison only."""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def conv_bn(cin, cout, k, stride, dil, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, dil * (k - 1) // 2, dilation=dil, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Basic(nn.Module):
    def __init__(self, cin, width, stride, dil):
        super().__init__()
        self.conv1 = conv_bn(cin, width, 3, stride, dil)
        self.conv2 = conv_bn(width, width, 3, 1, dil, act=False)
        self.down = None if (cin == width and stride == 1) else conv_bn(cin, width, 1, stride, 1, act=False)

    def forward(self, x):
        s = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + s)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride, dil):
        super().__init__()
        mid = width // 4
        self.conv1 = conv_bn(cin, mid, 1, 1, 1)
        self.conv2 = conv_bn(mid, mid, 3, stride, dil)
        self.conv3 = conv_bn(mid, width, 1, 1, 1, act=False)
        self.down = None if (cin == width and stride == 1) else conv_bn(cin, width, 1, stride, 1, act=False)

    def forward(self, x):
        s = x if self.down is None else self.down(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + s)


PRESETS = {
    "tiny": dict(bottleneck=False, stem=16, kernel=3, pool=False, depths=[1, 1, 1], widths=[32, 64, 96], tv=False),
    "resnet18": dict(bottleneck=False, stem=64, kernel=7, pool=True, depths=[2, 2, 2, 2], widths=[64, 128, 256, 512], tv=True),
    "resnet50": dict(bottleneck=True, stem=64, kernel=7, pool=True, depths=[3, 4, 6, 3], widths=[256, 512, 1024, 2048], tv=True),
}


class CAMNet(nn.Module):
    """l2gflow's model.Net: backbone (model.Arch) and a 1x1 classifier to
    C+1 maps; logits are the mean of the C foreground maps."""

    def __init__(self, arch, output_stride, classes):
        super().__init__()
        a = PRESETS[arch]
        self.classes = classes
        if arch == "resnet50":
            # torchvision's network, its last stages dilated to the stride.
            dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
            r = torchvision.models.resnet50(replace_stride_with_dilation=dilate)
            self.backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
            self.classifier = nn.Conv2d(2048, classes + 1, 1, bias=False)
            return
        layers = [conv_bn(3, a["stem"], a["kernel"], 2, 1)]
        total = 2
        if a["pool"]:
            layers.append(nn.MaxPool2d(3, 2, 1))
            total = 4
        cin, dil = a["stem"], 1
        for i, (depth, width) in enumerate(zip(a["depths"], a["widths"])):
            s = 1 if (i == 0 and a["pool"]) else 2
            prev = dil
            if total * s > output_stride:
                dil, s = dil * s, 1
            total *= s
            for k in range(depth):
                stride, d = (s, (prev if a["tv"] else dil)) if k == 0 else (1, dil)
                block = Bottleneck if a["bottleneck"] else Basic
                layers.append(block(cin, width, stride, d))
                cin = width
        self.backbone = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(cin, classes + 1, 1, bias=False)

    def forward(self, x):
        cam = self.classifier(self.backbone(x))
        return cam, cam[:, : self.classes].mean(dim=(2, 3))


def workloads():
    """The same list as model.Workloads."""
    return [
        dict(name="tiny: CAM inference, 128 px, 8 passes (4 scales x flip)", arch="tiny", os=8, kind="multiscale", batch=1, size=128, unit="img/s"),
        dict(name="tiny: CAM training step, batch 8 at 128 px", arch="tiny", os=8, kind="train-cam", batch=8, size=128, unit="img/s"),
        dict(name="tiny: L2G training step (6 views of 96 px)", arch="tiny", os=8, kind="train-l2g", batch=8, size=128, views=6, view=96, unit="img/s"),
        dict(name="resnet18 OS16: inference batch 8 at 128 px", arch="resnet18", os=16, kind="infer", batch=8, size=128, unit="ms"),
        dict(name="resnet18 OS16: inference batch 8 at 224 px", arch="resnet18", os=16, kind="infer", batch=8, size=224, unit="ms"),
        dict(name="resnet50 OS16: inference batch 8 at 224 px", arch="resnet50", os=16, kind="infer", batch=8, size=224, unit="ms"),
        dict(name="resnet50 OS8: CAM inference, 448 px, 8 passes (4 scales x flip)", arch="resnet50", os=8, kind="multiscale", batch=1, size=448, unit="ms"),
        dict(name="resnet18 OS16: training step, batch 16 at 128 px", arch="resnet18", os=16, kind="train-cam", batch=16, size=128, unit="ms"),
        dict(name="resnet18 OS16: training step, batch 8 at 224 px", arch="resnet18", os=16, kind="train-cam", batch=8, size=224, unit="ms"),
        dict(name="resnet50 OS16: training step, batch 8 at 224 px", arch="resnet50", os=16, kind="train-cam", batch=8, size=224, unit="ms"),
    ]


def interp(dst, start, size, src):
    """maps.InterpMatrix: dst x src bilinear weights (half-pixel centres)."""
    m = torch.zeros(dst, src)
    scale = size / dst
    for d in range(dst):
        p = min(max(start + (d + 0.5) * scale - 0.5, 0), src - 1)
        i0 = int(p)
        i1 = min(i0 + 1, src - 1)
        f = p - i0
        m[d, i0] += 1 - f
        m[d, i1] += f
    return m


def prepare(w, layout):
    classes = 6 if w["arch"] == "tiny" else 20
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    g = CAMNet(w["arch"], w["os"], classes).to(memory_format=fmt)
    if w["kind"] in ("multiscale", "infer"):
        g.eval()
        if w["kind"] == "infer":
            x = torch.randn(w["batch"], 3, w["size"], w["size"]).contiguous(memory_format=fmt)

            def run():
                with torch.inference_mode():
                    g(x)
            return run
        img = torch.randn(1, 3, w["size"], w["size"])
        tagged = [0, 2]

        def run():
            # The reference's multi-scale CAM: each scale with its mirror in
            # one batch, upsampled to the image, summed, ReLU, normalised.
            with torch.inference_mode():
                total = 0
                for s in (0.5, 1.0, 1.5, 2.0):
                    h = max(8, round(w["size"] * s))
                    v = F.interpolate(img, size=(h, h), mode="bilinear", align_corners=False)
                    x = torch.cat([v, torch.flip(v, dims=[3])]).contiguous(memory_format=fmt)
                    cam, _ = g(x)
                    cam = cam[:, tagged]  # the image's tagged classes only, as labeling reads them
                    cam = cam[:1] + torch.flip(cam[1:], dims=[3])
                    total = total + F.interpolate(cam, size=(w["size"], w["size"]), mode="bilinear", align_corners=False)
                total = F.relu(total)
                total / (total.amax(dim=(2, 3), keepdim=True) + 1e-5)
        return run
    g.train()
    x = torch.randn(w["batch"], 3, w["size"], w["size"]).contiguous(memory_format=fmt)
    tags = torch.zeros(w["batch"], classes)
    tags[torch.arange(w["batch"]), torch.randint(0, classes, (w["batch"],))] = 1
    if w["kind"] == "train-cam":
        opt = torch.optim.SGD(g.parameters(), lr=0.001, momentum=0.9)

        def run():
            opt.zero_grad()
            _, logits = g(x)
            F.multilabel_soft_margin_loss(logits, tags).backward()
            opt.step()
        return run
    # L2G: the local network on the views, the global one on the images;
    # the global CAM resampled into each view's box (two matrix products),
    # softmaxed, taught by the local network's binarised, saliency-shaped
    # target (MSE x 10) plus the local classification loss.
    loc = CAMNet(w["arch"], w["os"], classes).to(memory_format=fmt)
    loc.train()
    opt = torch.optim.SGD(list(g.parameters()) + list(loc.parameters()), lr=0.001, momentum=0.9)
    V, vs, s, st = w["views"], w["view"], w["size"], w["os"]
    boxes = [(0, 0), (0, s - vs), (s - vs, 0), (s - vs, s - vs)] + [tuple(torch.randint(0, s - vs + 1, (2,)).tolist()) for _ in range(V - 4)]
    views = torch.cat([x[:, :, y:y + vs, xx:xx + vs] for (y, xx) in boxes], 0).contiguous(memory_format=fmt)  # [V*B, 3, vs, vs]
    vtags = tags.repeat(V, 1)
    h, hf = -(-vs // st), -(-s // st)
    ry = torch.stack([interp(h, y / st, vs / st, hf) for (y, _) in boxes])  # [V, h, hf]
    rx = torch.stack([interp(h, xx / st, vs / st, hf) for (_, xx) in boxes])
    sal = torch.rand(V * w["batch"], 1, h, h)
    present = torch.cat([vtags, torch.ones(V * w["batch"], 1)], 1)

    def run():
        opt.zero_grad()
        lcam, llogits = loc(views)
        with torch.no_grad():
            t = F.relu(lcam)
            t = t / (t.amax(dim=(2, 3), keepdim=True) + 1e-5)
            t = t * present[:, :, None, None]
            t = (t == t.amax(dim=1, keepdim=True)).float() * (t > 0.001).float()
            t = torch.cat([t[:, :classes] * sal, t[:, classes:] * (1 - sal)], 1)
        gcam, _ = g(x)  # [B, C+1, hf, hf]
        aligned = torch.einsum("vyh,bchw,vxw->vbcyx", ry, gcam, rx).reshape(V * w["batch"], classes + 1, h, h)
        loss = 10 * F.mse_loss(F.softmax(aligned, dim=1), t) + F.multilabel_soft_margin_loss(llogits, vtags)
        loss.backward()
        opt.step()
    return run


def measure(w, layout, min_time):
    run = prepare(w, layout)
    run()  # warm up
    n, start = 0, time.perf_counter()
    while n < 1 or time.perf_counter() - start < min_time:  # as model.Workload.Measure
        run()
        n += 1
    per = (time.perf_counter() - start) / n
    if w["unit"] == "img/s":
        return w["batch"] / per
    if w["kind"] == "infer":
        return 1000 * per / w["batch"]
    return 1000 * per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    ap.add_argument("--layouts", default="default,channels_last", help="memory layouts to measure, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(1)
    print(json.dumps({"side": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for w in workloads():
        if args.only and args.only not in w["name"]:
            continue
        for layout in args.layouts.split(","):
            value = measure(w, layout, args.min_time)
            print(json.dumps({"name": w["name"], "layout": layout, "value": value, "unit": w["unit"]}), flush=True)


if __name__ == "__main__":
    main()
