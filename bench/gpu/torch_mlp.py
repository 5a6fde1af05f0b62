#!/usr/bin/env python3
"""PyTorch eager beside policyd's CUDA backend, for bench/gpu-check.sh (runs on the GPU machine).

    torch_mlp.py --bench BENCH.txt --mlp NAME=DIR ... [--batches 1,32,256] [--seconds 1]

DIR holds layers.txt + *.bin written by `pd_refcheck --export-gemms MODEL DIR`: the MLP's
linear layers (W as [out, in] float32, bias) and activations, exactly the ONNX model's weights.
For each MLP and batch it times PyTorch eager on the same GPU the way a Python server runs
it: end to end (pinned host input -> GPU, forward, -> host, synchronize) and the GPU time of the
forward alone (CUDA events), then prints one table: these beside the BENCH lines of
`pd_refcheck --bench` (policyd: end to end through pd_context_run incl. copies, and kernels'
device time from CUDA events). Last, so that it is what a log tail shows.
"""
import argparse
import os
import statistics
import sys
import time


def load_mlp(torch, d):
    import numpy as np  # numpy comes with PyTorch installs
    layers = []
    with open(os.path.join(d, "layers.txt")) as f:
        for line in f:
            p = line.split()
            if p[0] == "linear":
                i, o = int(p[1]), int(p[2])
                lin = torch.nn.Linear(i, o)
                w = np.fromfile(os.path.join(d, p[3]), dtype=np.float32).reshape(o, i)
                b = np.fromfile(os.path.join(d, p[4]), dtype=np.float32).reshape(o)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(w))
                    lin.bias.copy_(torch.from_numpy(b))
                layers.append(lin)
            elif p[0] == "act":
                acts = {"Relu": torch.nn.ReLU, "Tanh": torch.nn.Tanh, "Elu": torch.nn.ELU}
                if p[1] not in acts:
                    raise SystemExit(f"{d}: activation {p[1]} has no PyTorch equivalent here")
                layers.append(acts[p[1]]())
    return torch.nn.Sequential(*layers).cuda().eval(), layers[0].in_features


def time_torch(torch, model, n_in, batch, seconds):
    x_host = torch.rand(batch, n_in).pin_memory()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e2e, gpu = [], []
    with torch.inference_mode():
        for _ in range(20):
            model(x_host.cuda(non_blocking=True)).cpu()
        torch.cuda.synchronize()
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(e2e) < 20:
            t0 = time.perf_counter()
            x = x_host.cuda(non_blocking=True)
            start.record()
            y = model(x)
            stop.record()
            y = y.cpu()  # synchronizes
            e2e.append((time.perf_counter() - t0) * 1e6)
            gpu.append(start.elapsed_time(stop) * 1e3)
    return statistics.median(e2e), statistics.mean(gpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--mlp", action="append", default=[])
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--seconds", type=float, default=1.0)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]

    ours = {}
    with open(a.bench) as f:
        for line in f:
            p = line.split()
            if len(p) == 6 and p[0] == "BENCH":
                ours[(p[1], int(p[2]))] = (float(p[3]), p[5])

    theirs = {}
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
        for spec in a.mlp:
            name, d = spec.split("=", 1)
            model, n_in = load_mlp(torch, d)
            for b in batches:
                theirs[(name, b)] = time_torch(torch, model, n_in, b, a.seconds)
                print(f"torch {name} b{b}: e2e p50 {theirs[(name, b)][0]:.1f} us, gpu {theirs[(name, b)][1]:.1f} us",
                      flush=True)
    except Exception as e:  # the table still shows policyd's numbers
        print(f"PyTorch baseline unavailable: {e}", file=sys.stderr)

    print()
    print("| model | batch | policyd e2e p50 (µs) | policyd GPU (µs) | PyTorch eager e2e p50 (µs) | PyTorch GPU (µs) | e2e speed-up |")
    print("|---|---|---|---|---|---|---|")
    for (name, b) in sorted(ours, key=lambda k: (k[0], k[1])):
        e2e, dev = ours[(name, b)]
        dev = f"{float(dev):.1f}" if dev != "-" else "-"
        t = theirs.get((name, b))
        te, tg, sp = (f"{t[0]:.1f}", f"{t[1]:.1f}", f"{t[0] / e2e:.1f}×") if t else ("-", "-", "-")
        print(f"| {name} | {b} | {e2e:.1f} | {dev} | {te} | {tg} | {sp} |")


if __name__ == "__main__":
    main()
