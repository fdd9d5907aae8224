"""Side-by-side benchmark of l2gflow and its PyTorch reference on the same
pinned workloads (model.Workloads, bench/torch_ref.py) on 2 threads: in
each round, every workload runs on one side and right after on the other
(the first side alternating between rounds), so that each pair of figures
sees the same moment of a shared, noisy machine. It prints a Markdown table
of each side's median, and the median and range over the rounds of the
paired ratio l2gflow / PyTorch speed (above 1.0: l2gflow is faster).

    /usr/bin/python3 bench/compare.py --l2gflow bin/l2gflow [--rounds 4] [--min-time 3] [--out bench/compare.md]

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
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    env = dict(os.environ, GOMAXPROCS="2", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    sys.path.insert(0, HERE)
    from torch_ref import workloads  # the same list as model.Workloads

    names = [w["name"] for w in workloads() if args.only in w["name"]]

    def go_cmd(name):
        return [args.l2gflow, "bench", "--workloads", "--min-time", f"{args.min_time}s", "--only", name]

    def py_cmd(name):
        return [sys.executable, os.path.join(HERE, "torch_ref.py"), "--min-time", str(args.min_time), "--only", name]

    figures = {"l2gflow": {n: [] for n in names}, "pytorch": {n: [] for n in names}}
    units, headers = {}, {}
    for r in range(args.rounds):
        start = time.time()
        sides = [("l2gflow", go_cmd), ("pytorch", py_cmd)]
        if r % 2:
            sides.reverse()
        for name in names:
            for side, cmd in sides:
                header, values = run_side(cmd(name), env)
                if name not in values:
                    sys.exit(f"{side} gave no figure for workload {name!r} (do model.Workloads and bench/torch_ref.py list the same names?)")
                headers[side] = header
                figures[side][name].append(values[name][0])
                units[name] = values[name][1]
        print(f"round {r + 1}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    lines = [
        f"l2gflow: {json.dumps(headers['l2gflow'])}",
        f"PyTorch: {json.dumps(headers['pytorch'])}",
        f"{args.rounds} rounds, each workload on both sides back to back (the first side alternating); "
        f"each figure after a warm-up, over at least {args.min_time:g} s; medians, and the median and "
        "range of the rounds' paired ratios.",
        "",
        "| workload | l2gflow | PyTorch CPU | l2gflow / PyTorch speed | paired ratios, range |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        unit = units[name]
        gs, ps = figures["l2gflow"][name], figures["pytorch"][name]
        ratios = [g / p if unit == "img/s" else p / g for g, p in zip(gs, ps)]
        fmt = "{:.1f} img/s" if unit == "img/s" else "{:.1f} ms"
        if unit == "ms" and "inference" in name:
            fmt = "{:.1f} ms/img"
        lines.append(f"| {name} | {fmt.format(statistics.median(gs))} | {fmt.format(statistics.median(ps))} | "
                     f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
