#!/usr/bin/python3
"""Writes identity_<DT>.onnx for every datatype DT policyd serves: Identity x [N,3] -> y [N,3].

Run with Debian's /usr/bin/python3 (python3-onnx): cd clients/go/testdata && /usr/bin/python3 make_dtypes.py
"""
import onnx
from onnx import TensorProto, helper

DTYPES = {
    "BOOL": TensorProto.BOOL, "INT8": TensorProto.INT8, "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32, "INT64": TensorProto.INT64, "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16, "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16, "BF16": TensorProto.BFLOAT16, "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}
for name, t in DTYPES.items():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="identity")], "identity_" + name,
                              [helper.make_tensor_value_info("x", t, ["N", 3])], [helper.make_tensor_value_info("y", t, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="clients/go/testdata/make_dtypes.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, "identity_%s.onnx" % name)
