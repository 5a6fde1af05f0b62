#!/usr/bin/python3
"""Makes the two candidate versions of the bundled 3DBall policy that docs/rollout.md's
walk-through rolls out (needs python3-onnx and python3-numpy, Debian packages):

  candidate.onnx  3DBall 1.0.0 with its hidden-layer weights changed by about 1 % (a
                  retrained policy that acts almost, not exactly, like 1.0.0)
  slow.onnx       3DBall 1.0.0 with the same outputs but an extra branch of 32 matrix
                  products of 512 × 512 per row, multiplied by 0 and added to the
                  deterministic action: a candidate that answers right, but slowly

Usage: /usr/bin/python3 examples/rollout/make_candidates.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "repository", "3DBall", "1.0.0", "model.onnx")


def candidate(model):
    rng = np.random.default_rng(18)
    for t in model.graph.initializer:
        if "seq_layers" in t.name and t.name.endswith(".weight"):
            w = numpy_helper.to_array(t)
            w = (w * (1 + 0.01 * rng.standard_normal(w.shape))).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    return model


def slow(model, width=512, depth=32):
    g = model.graph
    rng = np.random.default_rng(7)
    out = "deterministic_continuous_actions"
    # rename the node output that produced the deterministic action
    producer = next(n for n in g.node if out in n.output)
    producer.output[list(producer.output).index(out)] = "slow/deterministic"
    x = "obs_0"
    w0 = numpy_helper.from_array((rng.standard_normal((8, width)) * 0.1).astype(np.float32), "slow/w0")
    g.initializer.append(w0)
    g.node.append(helper.make_node("MatMul", [x, "slow/w0"], ["slow/h0"]))
    h = "slow/h0"
    for i in range(depth):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"slow/w{i+1}")
        g.initializer.append(w)
        g.node.append(helper.make_node("MatMul", [h, w.name], [f"slow/m{i+1}"]))
        g.node.append(helper.make_node("Tanh", [f"slow/m{i+1}"], [f"slow/h{i+1}"]))
        h = f"slow/h{i+1}"
    g.node.append(helper.make_node("ReduceSum", [h], ["slow/sum"], axes=[1], keepdims=1))
    g.initializer.append(numpy_helper.from_array(np.zeros((1,), np.float32), "slow/zero"))
    g.node.append(helper.make_node("Mul", ["slow/sum", "slow/zero"], ["slow/nothing"]))
    g.node.append(helper.make_node("Add", ["slow/deterministic", "slow/nothing"], [out]))
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    for name, make in (("candidate.onnx", candidate), ("slow.onnx", slow)):
        m = make(onnx.load(SOURCE))
        onnx.checker.check_model(m)
        path = os.path.join(sys.argv[1], name)
        onnx.save(m, path)
        print(path)


if __name__ == "__main__":
    main()
