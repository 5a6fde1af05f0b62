"""The cart-pole examples (examples/python/cartpole.py): the LQR policy artifact keeps the pole up
for 500 steps in-process and served, and broken policies fall (so the check can fail)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from policyd.local import LocalPolicy

ROOT = Path(__file__).resolve().parents[3]
EX = ROOT / "examples" / "python"
ARTIFACT = EX / "cartpole" / "repository" / "cartpole" / "1.0.0"
sys.path.insert(0, str(EX))
sys.path.insert(0, str(EX / "cartpole"))

import cartpole_env as cp  # noqa: E402


def test_local_policy_balances_500_steps():
    p = LocalPolicy(ARTIFACT)
    steps = [cp.run_episode(p.act, seed=s) for s in range(10)]
    assert steps == [500] * 10


def test_broken_policies_fall(tmp_path):
    # a policy that always pushes left, and the committed controller with its gain's sign
    # flipped (same graph, an artifact of its own): both drop the pole long before 500 steps
    assert max(cp.run_episode(lambda o: 0, seed=s) for s in range(5)) < 50
    onnx = pytest.importorskip("onnx")
    import make_policy

    from onnx import numpy_helper

    W = numpy_helper.to_array(onnx.load(ARTIFACT / "model.onnx").graph.initializer[0])
    K = W[:, 0].astype(np.float64)
    bad = tmp_path / "bad.onnx"
    onnx.save(make_policy.build(-K), bad)
    repo = tmp_path / "repo"
    subprocess.run([str(ROOT / "bin" / "policyctl"), "artifacts", "add", "--repository", str(repo), "--name",
                    "cartpole", "--version", "1.0.0", str(bad)], check=True, capture_output=True)
    p = LocalPolicy(repo / "cartpole" / "1.0.0")
    assert max(cp.run_episode(p.act, seed=s) for s in range(5)) < 100


def test_committed_artifact_is_the_generated_controller():
    onnx = pytest.importorskip("onnx")
    import make_policy

    from onnx import numpy_helper

    W = numpy_helper.to_array(onnx.load(ARTIFACT / "model.onnx").graph.initializer[0])
    K = make_policy.lqr_gain()
    np.testing.assert_allclose(W, np.stack([K, -K], axis=1).astype(np.float32), rtol=1e-6)


def test_example_local_prints_balanced():
    r = subprocess.run([sys.executable, str(EX / "cartpole.py"), "--local", "--episodes", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "episode 0: balanced 500 steps" in r.stdout
    assert "balanced: the worst episode lasted 500 of 500 steps (local)" in r.stdout


def test_example_served_prints_balanced(tmp_path):
    import policyd

    if not hasattr(policyd, "Policy"):
        pytest.skip("policyd.Client/Policy (the HTTP client) is not in this tree")
    policyd_bin = ROOT / "bin" / "policyd"
    if not policyd_bin.is_file():
        pytest.skip("bin/policyd not built")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gport = s.getsockname()[1]
    proc = subprocess.Popen([str(policyd_bin), "--repository", str(ARTIFACT.parent.parent), "--addr",
                             f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{gport}", "--engine.backends", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(url + "/v2/models/cartpole/ready", timeout=1):
                    break
            except Exception:
                time.sleep(0.1)
        r = subprocess.run([sys.executable, str(EX / "cartpole.py"), "--url", url, "--episodes", "2"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python")})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "balanced: the worst episode lasted 500 of 500 steps" in r.stdout
    finally:
        proc.terminate()
        proc.wait(10)
