"""Balance a cart-pole with a policy served by policyd, or in-process with LocalPolicy.

The cart-pole is examples/python/cartpole_env.py (numpy, Gymnasium CartPole-v1's dynamics); the
policy is the LQR controller of examples/python/cartpole/make_policy.py, stored as the artifact
examples/python/cartpole/repository/cartpole/1.0.0 (manifest with SHA-256s, policyctl artifacts add).

Served (a policyd serving that repository: bin/policyd --repository examples/python/cartpole/repository):
    /usr/bin/python3 examples/python/cartpole.py --url http://127.0.0.1:8000
In-process through libpolicyd.so (no server; the artifact is verified before loading):
    /usr/bin/python3 examples/python/cartpole.py --local

Prints the steps each episode kept the pole up (500 is CartPole-v1's "solved"); exits 1 when an
episode falls before --steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import policyd  # noqa: F401  (installed: pip install ./clients/python)
except ImportError:  # run from a checkout
    sys.path.insert(0, str(HERE.parent.parent / "clients" / "python"))

from cartpole_env import CartPole  # noqa: E402

ARTIFACT = HERE / "cartpole" / "repository" / "cartpole" / "1.0.0"


def make_policy(args):
    if args.local:
        from policyd.local import LocalPolicy

        return LocalPolicy(args.artifact, library=args.library)
    import policyd

    return policyd.Policy(policyd.Client(args.url), args.model)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", action="store_true", help="run the policy in-process (policyd.local.LocalPolicy)")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="policyd's URL (served mode)")
    ap.add_argument("--model", default="cartpole", help="model name on the server (served mode)")
    ap.add_argument("--artifact", default=str(ARTIFACT), help="artifact folder (--local)")
    ap.add_argument("--library", default=None, help="libpolicyd.so (--local; default: found as documented)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0, help="first episode's initial-state seed")
    args = ap.parse_args(argv)

    policy = make_policy(args)
    env = CartPole()
    worst = args.steps
    for ep in range(args.episodes):
        obs = env.reset(args.seed + ep)
        start, steps, done = time.perf_counter(), 0, False
        for steps in range(1, args.steps + 1):
            action = int(policy.act(obs))  # one observation in, one action out
            obs, done = env.step(action)
            if done:
                break
        ms = (time.perf_counter() - start) * 1e3
        print(f"episode {ep}: balanced {steps} steps ({ms / max(steps, 1) * 1e3:.0f} us per step)")
        worst = min(worst, steps if done else args.steps)
    mode = "local" if args.local else args.url
    print(f"{'balanced' if worst >= args.steps else 'fell'}: the worst episode lasted {worst} of {args.steps} steps ({mode})")
    return 0 if worst >= args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
