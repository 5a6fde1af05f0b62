#!/usr/bin/env python3
"""A recurrent policy served by policyd, one episode at a time, its state kept on the server.

The peers' LSTM policy (../shared/peers/models/lstm.onnx: obs [N, 32] -> action [N, 8], state
h and c [1, N, 128]) is served with its state pairs declared in the config
(examples/python/lstm_episode.yaml), so the client sends only observations:

    bin/policyctl artifacts add --repository /tmp/repo --name lstm --version 1.0.0 ../shared/peers/models/lstm.onnx
    bin/policyd --repository /tmp/repo --config examples/python/lstm_episode.yaml &
    /usr/bin/python3 examples/python/lstm_episode.py --url http://127.0.0.1:8000

Each episode is a `with policy.episode()` block: its first step starts the server-side
sequence, the server feeds h_out/c_out of each step into h_in/c_in of the next, and the end of
the block (or an exception) ends the sequence. The "environment" is a toy: a point that drifts
and is pushed by the action's first two components.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import policyd  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="policyd's address (http:// or grpc://)")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()

    client = policyd.Client(args.url)
    policy = policyd.Policy(client, args.model, output="action")
    print(f"{args.model}: observation inputs {policy.inputs} (the state stays on the server)")
    rng = np.random.default_rng(0)
    for episode in range(args.episodes):
        pos = rng.uniform(-1, 1, 2)
        with policy.episode() as ep:
            for step in range(args.steps):
                obs = np.zeros(32, np.float32)
                obs[:2] = pos
                obs[2:] = rng.normal(0, 0.1, 30)
                action = ep.act(obs)          # shape (8,): one observation in, one action out
                pos = 0.9 * pos + 0.1 * np.tanh(action[:2])
                print(f"episode {episode} step {step}: position {pos.round(3).tolist()} action[:2] {action[:2].round(3).tolist()}")
        print(f"episode {episode}: {ep.steps} steps, sequence {ep.sequence_id} ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
