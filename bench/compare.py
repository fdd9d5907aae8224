"""Side-by-side benchmark of l2gflow and its PyTorch reference on the same
pinned workloads (model.Workloads, bench/torch_ref.py): alternating rounds
of both sides on 2 threads, then the medians as a Markdown table with the
ratio l2gflow / PyTorch speed (above 1.0: l2gflow is faster).

    /usr/bin/python3 bench/compare.py --l2gflow bin/l2gflow [--rounds 3] [--min-time 3] [--out bench/compare.md]

Run by `make bench-compare`. Not part of l2gflow."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_side(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    header, values = None, {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "side" in obj:
            header = obj
        else:
            values[obj["name"]] = (obj["value"], obj["unit"])
    return header, values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l2gflow", default="bin/l2gflow")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    env = dict(os.environ, GOMAXPROCS="2", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    go_cmd = [args.l2gflow, "bench", "--workloads", "--min-time", f"{args.min_time}s", "--only", args.only]
    py_cmd = [sys.executable, os.path.join(HERE, "torch_ref.py"), "--min-time", str(args.min_time), "--only", args.only]
    rounds = {"l2gflow": [], "pytorch": []}
    headers = {}
    for r in range(args.rounds):
        for side, cmd in (("l2gflow", go_cmd), ("pytorch", py_cmd)):
            start = time.time()
            header, values = run_side(cmd, env)
            headers[side] = header
            rounds[side].append(values)
            print(f"round {r + 1} {side}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    names = list(rounds["l2gflow"][0].keys())
    lines = [
        f"l2gflow: {json.dumps(headers['l2gflow'])}",
        f"PyTorch: {json.dumps(headers['pytorch'])}",
        f"{args.rounds} alternating rounds, medians; each figure after a warm-up, over at least {args.min_time:g} s.",
        "",
        "| workload | l2gflow | PyTorch CPU | l2gflow / PyTorch speed |",
        "| --- | --- | --- | --- |",
    ]
    for name in names:
        unit = rounds["l2gflow"][0][name][1]
        g = statistics.median(v[name][0] for v in rounds["l2gflow"])
        p = statistics.median(v[name][0] for v in rounds["pytorch"] if name in v)
        ratio = g / p if unit == "img/s" else p / g
        fmt = "{:.1f} img/s" if unit == "img/s" else "{:.1f} ms"
        if unit == "ms" and "inference" in name:
            fmt = "{:.1f} ms/img"
        lines.append(f"| {name} | {fmt.format(g)} | {fmt.format(p)} | {ratio:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
