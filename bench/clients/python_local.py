#!/usr/bin/python3
"""LocalPolicy.act beside PyTorch in-process, mlp-med batch 1, one thread (issue 17's targets).

    /usr/bin/python3 bench/clients/python_local.py --artifact REPO/mlp-med/1.0.0 [--engine-p50-us US]

Measures, alternating in rounds so that both see the same machine state:
  - policyd.local.LocalPolicy(artifact).act(obs): one observation of 64 floats in, 8 out;
  - the peers' own torch model: the MLP class of ../shared/peers/make_models.py with the weights
    of ../shared/peers/models/mlp-med.onnx loaded into it, torch.set_num_threads(1), under
    torch.no_grad(), called on a [1, 64] tensor made from the same numpy observation
    (torch.from_numpy, then .numpy() of the output: what a simulator loop does).
Each call is timed alone (perf_counter_ns); p50/p99 are over every call of every round. The two
agree on the outputs first (within 1e-4 + 1e-3|x|), or the run fails: they are the same network.
With --engine-p50-us (policyd's engine p50 for mlp-med batch 1 st, from `policyctl bench engine`,
as bench/clients/run.sh passes it) the report gives the ratio to it. Writes a markdown table to
stdout (--json for one JSON object). Targets: LocalPolicy p50 <= 3x the engine's, <= 0.5x torch's.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))


def torch_model(peers: Path, onnx_path: Path):
    import onnx
    import torch
    from onnx import numpy_helper

    spec = importlib.util.spec_from_file_location("peers_make_models", peers / "make_models.py")
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    net = mm.MLP([64, 256, 256, 8], "relu")  # make_models.py's "mlp-med"
    state = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(onnx_path).graph.initializer}
    net.load_state_dict(state)
    net.eval()
    return net, torch


def timed(fn, obs, seconds: float, out: list) -> None:
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        fn(obs)
        t1 = clock()
        out.append(t1 - t0)
        if t1 > end:
            break


def pct(xs: list, q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e3  # us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True, help="the mlp-med artifact folder (policyctl artifacts add)")
    ap.add_argument("--peers", default=str(ROOT.parent / "shared" / "peers"), help="the peers folder (make_models.py, models/)")
    ap.add_argument("--library", default=None, help="libpolicyd.so (default: LocalPolicy's search)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per contender")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per round and contender")
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--engine-p50-us", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from policyd.local import LocalPolicy

    peers = Path(args.peers)
    policy = LocalPolicy(args.artifact, library=args.library, threads=1)
    net, torch = torch_model(peers, peers / "models" / "mlp-med.onnx")
    torch.set_num_threads(1)

    def torch_act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(obs).unsqueeze(0)).numpy()[0]

    rng = np.random.default_rng(17)
    check = rng.uniform(-1, 1, (16, 64)).astype(np.float32)
    for o in check:
        a, b = policy.act(o), torch_act(o)
        if a.shape != b.shape or (np.abs(a - b) > 1e-4 + 1e-3 * np.abs(b)).any():
            print(f"python_local: LocalPolicy and torch disagree: {a} vs {b}", file=sys.stderr)
            return 1
    obs = check[0]
    contenders = {"LocalPolicy.act": policy.act, "torch (no_grad, 1 thread)": torch_act}
    samples: dict[str, list] = {k: [] for k in contenders}
    for fn in contenders.values():
        timed(fn, obs, args.warmup, [])
    gc.disable()
    try:
        for r in range(args.rounds):
            order = list(contenders.items())
            if r % 2:
                order.reverse()
            for name, fn in order:
                timed(fn, obs, args.seconds, samples[name])
    finally:
        gc.enable()

    rows = {k: {"calls": len(v), "p50_us": pct(v, 0.5), "p99_us": pct(v, 0.99)} for k, v in samples.items()}
    local, tor = rows["LocalPolicy.act"]["p50_us"], rows["torch (no_grad, 1 thread)"]["p50_us"]
    targets = [{"what": "LocalPolicy.act p50 <= 0.5x torch p50", "ratio": local / tor, "limit": 0.5}]
    if args.engine_p50_us:
        targets.insert(0, {"what": "LocalPolicy.act p50 <= 3x engine p50 (policyctl bench engine, st)",
                           "ratio": local / args.engine_p50_us, "limit": 3.0})
    for t in targets:
        t["status"] = "met" if t["ratio"] <= t["limit"] else "MISSED"
    info = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "library": policy._lib.path, "libpolicyd": policy._lib.version, "nproc": os.cpu_count(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "rounds": args.rounds,
            "seconds": args.seconds}
    if args.json:
        print(json.dumps({"info": info, "rows": rows, "engine_p50_us": args.engine_p50_us, "targets": targets}))
        return 0
    print("### LocalPolicy (in-process) vs PyTorch, mlp-med batch 1, one thread\n")
    print(", ".join(f"{k} {v}" for k, v in info.items()) + "\n")
    print("| contender | calls | p50 µs | p99 µs |\n|---|---:|---:|---:|")
    if args.engine_p50_us:
        print(f"| policyd engine (policyctl bench engine, st) | | {args.engine_p50_us:.1f} | |")
    for k, v in rows.items():
        print(f"| {k} | {v['calls']} | {v['p50_us']:.1f} | {v['p99_us']:.1f} |")
    print("\n| target | ratio | limit | status |\n|---|---:|---:|---|")
    for t in targets:
        print(f"| {t['what']} | {t['ratio']:.2f} | {t['limit']} | {t['status']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
