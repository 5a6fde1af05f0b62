#!/usr/bin/env python3
"""Python client cost over HTTP: mlp-med, batch 1 (--batch), one thread, against a running policyd.

Three ways to send the same request, alternated in rounds (the machine is noisy):
  (1) policyd.Client.infer, binary tensors (the client as users call it);
  (2) a raw http.client loop POSTing the same prepared binary body on one keep-alive connection
      (the floor: no client work at all);
  (3) the same raw loop with a JSON body built by json.dumps each time (what hand-written
      KServe v2 JSON costs).
Prints a markdown table of p50/p99 round trips and the ratios of issue 17's targets:
(1) p50 <= 1.5 x (2) p50, and (3) p50 >= 2 x (1) p50.

    bin/policyctl artifacts add --repository /tmp/r --name mlp-med --version 1.0.0 ../shared/peers/models/mlp-med.onnx
    bin/policyd --repository /tmp/r &
    /usr/bin/python3 bench/clients/python_http.py http://127.0.0.1:8000 [--model mlp-med] [--rounds 20 --per-round 200]

--profile runs cProfile over (1) only and prints the top functions. --client-cost times (1) with
the network stubbed: the client's socket is replaced by an in-memory one that swallows the
request and replays a real answer of the server (captured first), and the idle-connection check
is skipped, so what is left is the client's own Python work per call.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import policyd  # noqa: E402


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="mlp-med")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1, help="rows per request (the targets are for 1)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--client-cost", action="store_true", help="time (1) with the network stubbed")
    args = ap.parse_args()

    u = urllib.parse.urlsplit(args.url)
    client = policyd.Client(args.url, retries=0)
    meta = client.metadata(args.model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    features = inp["shape"][1]
    obs = np.random.default_rng(0).uniform(-1, 1, (args.batch, features)).astype(np.float32)
    path = f"/v2/models/{args.model}/infer"

    # (2): the prepared binary body, sent as is.
    head = json.dumps({"inputs": [{"name": inp["name"], "datatype": "FP32", "shape": [args.batch, features],
                                   "parameters": {"binary_data_size": obs.nbytes}}],
                       "outputs": [{"name": out["name"], "parameters": {"binary_data": True}}]}).encode()
    body = head + obs.tobytes()
    bin_headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    raw = http.client.HTTPConnection(u.hostname, u.port)

    def one_client() -> None:
        client.infer(args.model, {inp["name"]: obs}, [out["name"]])

    def one_raw() -> None:
        raw.request("POST", path, body, bin_headers)
        r = raw.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(data)

    def one_json() -> None:
        b = json.dumps({"inputs": [{"name": inp["name"], "datatype": "FP32", "shape": [args.batch, features],
                                    "data": obs.ravel().tolist()}],
                        "outputs": [{"name": out["name"]}]})
        raw.request("POST", path, b, {"Content-Type": "application/json"})
        r = raw.getresponse()
        data = json.loads(r.read())
        if r.status != 200:
            raise RuntimeError(data)
        np.asarray(data["outputs"][0]["data"], np.float32)

    # The answers agree (the client's against the raw binary body's).
    got = client.infer(args.model, {inp["name"]: obs}, [out["name"]])[out["name"]]
    raw.request("POST", path, body, bin_headers)
    r = raw.getresponse()
    n = int(r.getheader("Inference-Header-Content-Length"))
    data = r.read()
    want = np.frombuffer(data[n:], np.float32).reshape(got.shape)
    assert np.array_equal(got, want), "client and raw answers differ"

    if args.client_cost:
        return client_cost(client, args, inp["name"], obs, out["name"])

    if args.profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(args.per_round * 5):
            one_client()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)
        return 0

    ways = [("(1) policyd.Client.infer, binary", one_client), ("(2) raw http.client, prepared binary bytes", one_raw),
            ("(3) raw http.client, json.dumps body", one_json)]
    for _, fn in ways:  # warm up
        for _ in range(100):
            fn()
    times: dict = {name: [] for name, _ in ways}
    clock = time.perf_counter_ns
    for _ in range(args.rounds):
        for name, fn in ways:
            ts = times[name]
            for _ in range(args.per_round):
                t0 = clock()
                fn()
                ts.append(clock() - t0)

    p50 = {k: statistics.median(v) / 1e3 for k, v in times.items()}
    p99 = {k: pct(v, 99) / 1e3 for k, v in times.items()}
    names = [n for n, _ in ways]
    print(f"{args.model} batch {args.batch}, one thread, {args.rounds} rounds x {args.per_round} requests per way, {args.url}\n")
    print("| way | p50 µs | p99 µs |")
    print("|---|---:|---:|")
    for n in names:
        print(f"| {n} | {p50[n]:.1f} | {p99[n]:.1f} |")
    r1 = p50[names[0]] / p50[names[1]]
    r2 = p50[names[2]] / p50[names[0]]
    print()
    print(f"| target | measured | met |")
    print("|---|---:|---|")
    print(f"| (1) p50 / (2) p50 ≤ 1.5 | {r1:.2f} | {'yes' if r1 <= 1.5 else 'NO'} |")
    print(f"| (3) p50 / (1) p50 ≥ 2 | {r2:.2f} | {'yes' if r2 >= 2 else 'NO'} |")
    return 0


def client_cost(client: "policyd.Client", args: argparse.Namespace, in_name: str, obs: np.ndarray,
                out_name: str) -> int:
    """p50 of policyd.Client.infer with an in-memory socket replaying a captured answer."""
    from policyd import _wire, http as phttp

    captured = []
    orig_request = _wire.Connection.request

    def capture(self: "_wire.Connection", parts: list, head_only: bool = False) -> "_wire.Response":
        r = orig_request(self, parts, head_only)
        captured.append(r)
        return r
    _wire.Connection.request = capture  # type: ignore[method-assign]
    client.infer(args.model, {in_name: obs}, [out_name])
    _wire.Connection.request = orig_request  # type: ignore[method-assign]
    r = captured[0]
    answer = b"HTTP/1.1 200 OK\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in r.headers.items()) + b"\r\n" + bytes(r.body)

    class Replay:
        def sendall(self, b: bytes) -> None:
            pass

        def recv_into(self, view: memoryview) -> int:
            view[:len(answer)] = answer
            return len(answer)

        def gettimeout(self) -> float:
            return client.timeout

    stub = policyd.Client(args.url, retries=0)
    c = _wire.Connection(client.host, client.port)
    c.sock = Replay()  # type: ignore[assignment]
    stub._idle.append(c)
    phttp._is_dropped = lambda sock: False  # type: ignore[assignment]
    ts = []
    clock = time.perf_counter_ns
    for _ in range(args.rounds * args.per_round):
        t0 = clock()
        stub.infer(args.model, {in_name: obs}, [out_name])
        ts.append(clock() - t0)
    print(f"client's own cost, network stubbed: p50 {statistics.median(ts) / 1e3:.1f} µs, "
          f"p99 {pct(ts, 99) / 1e3:.1f} µs ({len(ts)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
