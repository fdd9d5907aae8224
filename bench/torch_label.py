"""The labeling job as a PyTorch user writes it, for `make bench-compare`'s
end-to-end row: the same images, the same model weights (exported from an
l2gflow artifact by bench/torchexport), the same multi-scale CAM (with the
pixel correlation module when the model has one), fusion and background
threshold, VOC-palette PNG labels written.

    /usr/bin/python3 bench/torch_label.py --weights model.npz --data ROOT \
        [--split train] --out DIR [--compare DIR_OF_L2GFLOW_LABELS]

Written as the fastest plain PyTorch a user would write (the rule of
bench/torch_ref.py): a DataLoader with 2 worker processes decoding the
JPEGs (torchvision.io, libjpeg), eval() and inference_mode(), each scale's
image and its mirror in one batch, only the image's tagged classes
upsampled, the faster memory layout (--layout, measured by
bench/compare.py), 2 threads. With --compare, it checks that its labels
agree with l2gflow's on at least 99% of the pixels and exits 1 otherwise.
Prints one JSON line: images, seconds, images/s, agreement.

Not part of l2gflow: a reference for comparison only."""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.io
from PIL import Image


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, dil):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, dil * (k - 1) // 2, dilation=dil, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    """l2gflow's basic and bottleneck blocks (model/net.go)."""

    def __init__(self, cin, width, stride, dil, bottleneck):
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:
            mid = width // 4
            self.conv1, self.conv2, self.conv3 = ConvBN(cin, mid, 1, 1, 1), ConvBN(mid, mid, 3, stride, dil), ConvBN(mid, width, 1, 1, 1)
        else:
            self.conv1, self.conv2 = ConvBN(cin, width, 3, stride, dil), ConvBN(width, width, 3, 1, dil)
        self.down = None if (cin == width and stride == 1) else ConvBN(cin, width, 1, stride, 1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        if self.bottleneck:
            y = self.conv3(F.relu(self.conv2(y)))
        else:
            y = self.conv2(y)
        return F.relu(y + (x if self.down is None else self.down(x)))


class PCM(nn.Module):
    """SEAM's pixel correlation module as l2gflow's networks have it
    (model/pcm.go): features of the image (averaged to the CAM's size) and of
    the mid-level stages (1x1 projections to an eighth, at least 16), mixed
    by a 1x1 convolution and L2-normalised; each position's CAM plus the
    average of every position's CAM weighted by the rectified cosine
    similarity of their features."""

    def __init__(self, mid_widths):
        super().__init__()
        outs = [max(16, c // 8) for c in mid_widths]
        self.proj = nn.ModuleList(nn.Conv2d(c, o, 1, bias=False) for c, o in zip(mid_widths, outs))
        cin = 3 + sum(outs)
        self.mix = nn.Conv2d(cin, max(cin - 3, 16), 1, bias=False)

    def forward(self, img, mids, cam):
        n, c, h, w = cam.shape
        t = 1  # the smallest power of two that takes the image to at most h x w
        while -(-img.shape[2] // t) > h or -(-img.shape[3] // t) > w:
            t *= 2
        img = F.avg_pool2d(F.pad(img, (0, w * t - img.shape[3], 0, h * t - img.shape[2])), t)
        f = self.mix(torch.cat([img] + [p(m) for p, m in zip(self.proj, mids)], 1))
        f = (f / (f.norm(dim=1, keepdim=True) + 1e-5)).flatten(2)  # [N, F, P]
        aff = F.relu(torch.bmm(f.transpose(1, 2), f))  # [N, P, P], symmetric
        aff = aff / (aff.sum(2, keepdim=True) + 1e-5)  # normalised over the sources
        return cam + torch.bmm(cam.flatten(2), aff.transpose(1, 2)).view(n, c, h, w)


class Net(nn.Module):
    """The global network of an l2gflow artifact (model.Net): backbone, a
    1x1 classifier to C+1 maps, and PCM when the artifact has it."""

    def __init__(self, arch, classes):
        super().__init__()
        self.stem = ConvBN(3, arch["stem_width"], arch["stem_kernel"], 2, 1)
        self.pool = nn.MaxPool2d(3, 2, 1) if arch["stem_pool"] else None
        total = 4 if arch["stem_pool"] else 2
        dil, cin, blocks = 1, arch["stem_width"], nn.ModuleDict()
        strides, widths, ends = [], [], []  # each stage's output stride, channels, last block
        for s, (depth, width) in enumerate(zip(arch["depths"], arch["widths"])):
            stride = 1 if (s == 0 and arch["stem_pool"]) else 2
            prev = dil
            if total * stride > arch["output_stride"]:
                dil, stride = dil * stride, 1
            total *= stride
            for k in range(depth):
                st, d = (stride, prev if arch.get("torchvision_dilation") else dil) if k == 0 else (1, dil)
                blocks[f"stage{s + 1}_block{k + 1}"] = Block(cin, width, st, d, arch["bottleneck"])
                cin = width
            strides.append(total)
            widths.append(width)
            ends.append(f"stage{s + 1}_block{depth}")
        self.blocks = blocks
        self.classifier = nn.Conv2d(cin, classes + 1, 1, bias=False)
        # PCM's mid-level features: the outputs of up to two stages before
        # the last that already have the final stride (model.Arch.pcmStages).
        mids = []
        for i in range(len(strides) - 2, -1, -1):
            if strides[i] != strides[-1] or len(mids) == 2:
                break
            mids.insert(0, i)
        self.mid_blocks = {ends[i] for i in mids}  # the blocks whose outputs PCM reads
        self.pcm = PCM([widths[i] for i in mids]) if arch.get("pcm") else None

    def forward(self, x):
        img = x
        y = F.relu(self.stem(x))
        if self.pool is not None:
            y = self.pool(y)
        mids = []
        for key, b in self.blocks.items():
            y = b(y)
            if key in self.mid_blocks:
                mids.append(y)
        cam = self.classifier(y)
        if self.pcm is not None:
            cam = self.pcm(img, mids, cam)
        return cam

    def load(self, z):
        """Sets the weights from bench/torchexport's arrays."""
        def conv(mod, name):
            w = torch.from_numpy(z[name + ".w"])  # [K, K, Cin, Cout]
            mod.weight.data.copy_(w.permute(3, 2, 0, 1))

        def convbn(mod, name):
            conv(mod.conv, name)
            for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"), ("running_var", "var")):
                getattr(mod.bn, ours).data.copy_(torch.from_numpy(z[f"{name}.bn.{theirs}"]))

        convbn(self.stem, "stem")
        for key, b in self.blocks.items():
            name = key.replace("_", ".")
            for part in ("conv1", "conv2", "conv3", "down"):
                if getattr(b, part, None) is not None:
                    convbn(getattr(b, part), f"{name}.{part}")
        conv(self.classifier, "classifier")
        if self.pcm is not None:
            for i, p in enumerate(self.pcm.proj):
                conv(p, f"pcm.proj{i + 1}")
            conv(self.pcm.mix, "pcm.mix")


class Images(torch.utils.data.Dataset):
    """A VOC-layout split: JPEGImages/<id>.jpg and <split>_cls.txt tags."""

    def __init__(self, root, split):
        self.root, self.items = root, []
        with open(os.path.join(root, f"{split}_cls.txt")) as f:
            for line in f:
                parts = line.split()
                if parts:
                    self.items.append((parts[0], [int(t) for t in parts[1:]]))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        name, tags = self.items[i]
        img = torchvision.io.decode_jpeg(torchvision.io.read_file(os.path.join(self.root, "JPEGImages", name + ".jpg")))
        return name, tags, img  # uint8 [3, H, W]


def voc_palette():
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def label_image(net, img, tags, mean, std, scales, thr, fmt):
    """The reference's multi-scale CAM and threshold rule: each scale's view
    and its mirror through the network, the tagged classes' maps upsampled
    to the image and summed, ReLU, divided by each class's maximum; a pixel
    takes its best class where that exceeds thr, else background (0)."""
    _, h, w = img.shape
    x = ((img.float() / 255 - mean) / std).unsqueeze(0)
    tagged = torch.tensor(tags)
    total = torch.zeros(len(tags), h, w)
    for s in scales:
        size = (max(8, int(math.floor(h * s + 0.5))), max(8, int(math.floor(w * s + 0.5))))
        v = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        cam = net(torch.cat([v, v.flip(3)]).contiguous(memory_format=fmt))[:, tagged]
        cam = torch.cat([cam[:1], cam[1:].flip(3)])
        total += F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False).sum(0)
    total = F.relu(total)
    total /= total.amax(dim=(1, 2), keepdim=True) + 1e-5
    best, idx = total.max(0)
    return torch.where(best > thr, tagged[idx] + 1, torch.zeros_like(idx)).to(torch.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", default="")
    ap.add_argument("--layout", default="channels_last", choices=["default", "channels_last"])
    ap.add_argument("--scales", default="0.5,1,1.5,2")
    ap.add_argument("--threshold", type=float, default=-1, help="background threshold (default: the model's calibrated one, else 0.25)")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    z = np.load(args.weights)
    meta = json.loads(bytes(z["meta"]))
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    net = Net(meta["arch"], len(meta["classes"]))
    net.load(z)
    net.eval()
    net = net.to(memory_format=fmt)
    thr = args.threshold if args.threshold >= 0 else (meta["threshold"] if meta["threshold"] is not None else 0.25)
    mean = torch.tensor(meta["mean"]).view(3, 1, 1)
    std = torch.tensor(meta["std"]).view(3, 1, 1)
    scales = [float(s) for s in args.scales.split(",")]
    os.makedirs(args.out, exist_ok=True)
    pal = voc_palette()
    loader = torch.utils.data.DataLoader(Images(args.data, args.split), batch_size=None, num_workers=2)
    n = 0
    with torch.inference_mode():
        for name, tags, img in loader:
            if not tags:
                continue  # l2gflow labels only images with tags
            lab = label_image(net, img, tags, mean, std, scales, thr, fmt)
            png = Image.fromarray(lab.numpy(), mode="P")
            png.putpalette(pal)
            png.save(os.path.join(args.out, name + ".png"))
            n += 1
    secs = time.perf_counter() - start
    result = {"side": "pytorch", "images": n, "seconds": secs, "images_per_s": n / secs, "layout": args.layout}
    if args.compare:
        same = total = 0
        for name in sorted(os.listdir(args.out)):
            theirs = os.path.join(args.compare, name)
            if not name.endswith(".png") or not os.path.exists(theirs):
                continue
            a, b = np.asarray(Image.open(os.path.join(args.out, name))), np.asarray(Image.open(theirs))
            if a.shape != b.shape:
                sys.exit(f"{name}: {a.shape} here, {b.shape} in {args.compare}")
            same += int((a == b).sum())
            total += a.size
        result["agreement"] = same / max(total, 1)
        result["pixels"] = total
    print(json.dumps(result), flush=True)
    if args.compare and (result["pixels"] == 0 or result["agreement"] < args.min_agreement):
        sys.exit(f"labels agree with {args.compare} on {100 * result['agreement']:.2f}% of {result['pixels']} pixels, want {100 * args.min_agreement:.0f}%")


if __name__ == "__main__":
    main()
