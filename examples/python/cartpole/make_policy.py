"""Makes examples/python/cartpole/cartpole.onnx: an LQR controller of the cart-pole as a policy.

The gain K comes from the discrete-time Riccati equation of the cart-pole's dynamics linearized
about the upright pole (examples/python/cartpole_env.py: Gymnasium CartPole-v1's constants and
Euler step), Q = diag(1, 1, 10, 1), R = 1. CartPole's actions are bang-bang (push left or right),
so the policy pushes the way the LQR force u = -K x points:

    logits = Gemm(obs[N, 4], W[4, 2]) with W = [-K^T, K^T]   (logit 0: left, 1: right)
    action = ArgMax(logits, axis=1, keepdims=0)               INT64[N]

Run with Debian's python3-onnx:  /usr/bin/python3 examples/python/cartpole/make_policy.py /tmp/cartpole.onnx
then add it to a repository:
    bin/policyctl artifacts add --repository examples/python/cartpole/repository --name cartpole \
        --version 1.0.0 /tmp/cartpole.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import cartpole_env as cp  # noqa: E402


def continuous_step(s: np.ndarray, force: float) -> np.ndarray:
    x, x_dot, theta, theta_dot = s
    cos, sin = np.cos(theta), np.sin(theta)
    temp = (force + cp.POLE_MASS_LENGTH * theta_dot**2 * sin) / cp.TOTAL_MASS
    theta_acc = (cp.GRAVITY * sin - cos * temp) / (cp.LENGTH * (4.0 / 3.0 - cp.MASS_POLE * cos**2 / cp.TOTAL_MASS))
    x_acc = temp - cp.POLE_MASS_LENGTH * theta_acc * cos / cp.TOTAL_MASS
    return np.array([x + cp.TAU * x_dot, x_dot + cp.TAU * x_acc, theta + cp.TAU * theta_dot,
                     theta_dot + cp.TAU * theta_acc])


def lqr_gain() -> np.ndarray:
    eps = 1e-6
    z = np.zeros(4)
    A = np.stack([(continuous_step(z + eps * e, 0.0) - continuous_step(z - eps * e, 0.0)) / (2 * eps)
                  for e in np.eye(4)], axis=1)
    B = ((continuous_step(z, eps) - continuous_step(z, -eps)) / (2 * eps)).reshape(4, 1)
    Q, R = np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[1.0]])
    P = Q.copy()
    for _ in range(5000):  # value iteration of the discrete Riccati equation
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
    return K.ravel()  # u = -K x


def build(K: np.ndarray) -> onnx.ModelProto:
    W = np.stack([K, -K], axis=1).astype(np.float32)  # logit0 = K x (left), logit1 = -K x (right)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["obs", "W"], ["logits"]),
         helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0)],
        "cartpole_lqr",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"])],
        [numpy_helper.from_array(W, "W")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="policyd-examples")
    m.ir_version = 8
    m.doc_string = "LQR controller of the cart-pole (examples/python/cartpole/make_policy.py); K = " + \
        ", ".join(f"{k:.6g}" for k in K)
    onnx.checker.check_model(m)
    return m


def main() -> None:
    K = lqr_gain()
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("cartpole.onnx")
    onnx.save(build(K), out)
    print(f"K = {K}; wrote {out}")


if __name__ == "__main__":
    main()
