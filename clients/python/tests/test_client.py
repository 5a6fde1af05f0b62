"""policyd.Client and policyd.grpc.Client against the real server: ONNX Runtime's references, every
datatype, health and metadata."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import policyd
import policyd.grpc
from policyd._types import DTYPES, from_bf16_bits, to_bf16_bits

from conftest import DATATYPES, REFERENCES, load_reference

TRANSPORTS = ["http-binary", "http-json", "grpc"]


def make_client(server: Any, transport: str) -> Any:
    if transport == "grpc":
        return policyd.Client("grpc://" + server.grpc)
    return policyd.Client(server.url)


def infer(client: Any, transport: str, model: str, inputs: dict, **kw: Any) -> policyd.InferResult:
    return client.infer(model, inputs, binary=transport != "http-json", **kw)


def close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """cmd/policyd/e2e_test.go's tolerance: |got - want| <= 1e-4 + 1e-3·|want|, NaN where NaN."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    return (np.isnan(g) == np.isnan(w)) & (np.isnan(w) | (np.abs(g - w) <= 1e-4 + 1e-3 * np.abs(w)))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("ref_name", REFERENCES)
def test_reference(server: Any, transport: str, ref_name: str) -> None:
    ref = load_reference(ref_name)
    inputs = {i["name"]: np.asarray([math.nan if v is None else v for v in i["data"]],
                                    DTYPES[i["datatype"]]).reshape(i["shape"]) for i in ref["inputs"]}
    client = make_client(server, transport)
    res = infer(client, transport, ref["id"], inputs, version="1.0.0")
    assert res.model_version == "1.0.0"
    assert list(res) == [o["name"] for o in ref["outputs"]]
    for o in ref["outputs"]:
        got = res[o["name"]]
        assert got.dtype == DTYPES[o["datatype"]], o["name"]
        want_shape = list(o["shape"])
        if not o["deterministic"] and got.ndim == len(want_shape) and got.ndim > 0:
            want_shape[0] = got.shape[0] if got.shape[0] == ref["batch"] else want_shape[0]
        assert list(got.shape) == want_shape, o["name"]
        if o["deterministic"]:
            want = np.asarray([math.nan if v is None else v for v in o["data"]], np.float64).reshape(o["shape"])
            ok = close(got, want)
            assert ok.all(), f"{o['name']}: {np.count_nonzero(~ok)} of {ok.size} values off, first {got[~ok][:5]} want {want[~ok][:5]}"


def dtype_values(dt: str) -> np.ndarray:
    """Edge values of each datatype, shape [2, 3]."""
    if dt == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    np_dt = DTYPES[dt]
    if np_dt.kind in "iu":
        info = np.iinfo(np_dt)
        return np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], np_dt)
    if dt == "BF16":
        return np.array([[1.0, -2.5, 3.0e38], [np.inf, -np.inf, 1.0 / 3.0]], np.float32)
    vals = [[0.1, -2.5, np.finfo(np_dt).max], [np.inf, -np.inf, np.finfo(np_dt).tiny]]
    return np.array(vals, np_dt)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("dt", DATATYPES)
def test_dtype_round_trip(server: Any, transport: str, dt: str) -> None:
    x = dtype_values(dt)
    client = make_client(server, transport)
    value = policyd.BF16(x) if dt == "BF16" else x
    res = infer(client, transport, f"id-{dt.lower()}", {"x": value})
    y = res["y"]
    assert y.shape == (2, 3)
    if dt == "BF16":
        # float32 holding the bfloat16 value: ONNX's own rounding (onnx.helper) is the reference.
        from onnx.helper import float32_to_bfloat16
        want_bits = np.array([float32_to_bfloat16(float(v)) for v in x.ravel()], np.uint16).reshape(2, 3)
        assert y.dtype == np.float32
        want = from_bf16_bits(want_bits)
        if transport == "http-json":
            want = np.where(np.isinf(want), np.nan, want)
        np.testing.assert_array_equal(y, want)
        assert y[0, 0] == 1.0 and y[0, 1] == -2.5
        assert y[1, 0] == np.inf or (transport == "http-json" and np.isnan(y[1, 0]))
        return
    assert y.dtype == x.dtype
    if transport == "http-json" and x.dtype.kind == "f":
        x = np.where(np.isinf(x), np.nan, x)  # JSON answers ±Inf (and NaN) as null: NaN
    np.testing.assert_array_equal(y, x)


def test_nan_round_trip(server: Any) -> None:
    for transport in TRANSPORTS:
        client = make_client(server, transport)
        x = np.array([[np.nan, 1, 2]], np.float32)
        y = infer(client, transport, "id-fp32", {"x": x})["y"]
        assert np.isnan(y[0, 0]) and y[0, 1] == 1


def test_bf16_rounding_matches_onnx() -> None:
    from onnx.helper import float32_to_bfloat16
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(2000).astype(np.float32) * 1e3,
                        np.array([0.0, -0.0, 1.00390625, 1.01171875, 3.4e38, -3.4e38, 1e-40], np.float32)])
    want = np.array([float32_to_bfloat16(float(v)) for v in x], np.uint16)
    np.testing.assert_array_equal(to_bf16_bits(x), want)


@pytest.mark.parametrize("transport", ["http-binary", "grpc"])
def test_health_and_metadata(server: Any, transport: str) -> None:
    c = make_client(server, transport)
    assert c.live() and c.ready()
    assert c.model_ready("peers-mlp-small")
    assert c.model_ready("peers-mlp-small", "1.0.0")
    meta = c.metadata("peers-mlp-small")
    assert meta["inputs"] == [{"name": "obs", "datatype": "FP32", "shape": [-1, 8]}]
    assert meta["outputs"] == [{"name": "action", "datatype": "FP32", "shape": [-1, 2]}]
    cfg = c.config("peers-lstm")
    assert [s["input_name"] for s in cfg["sequence_batching"]["state"]] == ["h_in", "c_in"]
    with pytest.raises(policyd.NotFound):
        c.model_ready("no-such-model")


def test_selected_outputs_and_id(server: Any) -> None:
    c = policyd.Client(server.url)
    obs = np.zeros((1, 8), np.float32)
    for binary in (True, False):
        res = c.infer("mlagents-3DBall", {"obs_0": obs}, ["deterministic_continuous_actions", "memory_size"],
                      binary=binary, request_id="req-7")
        assert list(res) == ["deterministic_continuous_actions", "memory_size"]
        assert res.id == "req-7" and res.model_name == "mlagents-3DBall"
        assert res["deterministic_continuous_actions"].shape == (1, 2)


def test_concurrent_use(server: Any) -> None:
    """One client from 8 threads: every answer is the one for its own observation."""
    from concurrent.futures import ThreadPoolExecutor
    c = policyd.Client(server.url, pool_size=4)
    x = np.arange(8 * 3, dtype=np.int64).reshape(8, 3)

    def one(i: int) -> bool:
        return all((c.infer("id-int64", {"x": x[i:i + 1] + k})["y"] == x[i:i + 1] + k).all() for k in range(20))

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(one, range(8)))


def node_case(case: str) -> tuple:
    from onnx import TensorProto, load, numpy_helper
    from conftest import ROOT
    d = ROOT / "testdata" / "onnx-cases" / case
    m = load(str(d / "model.onnx"))
    arrays = []
    for f in ("input_0.pb", "output_0.pb"):
        t = TensorProto()
        t.ParseFromString((d / "test_data_set_0" / f).read_bytes())
        arrays.append(numpy_helper.to_array(t))
    return m.graph.input[0].name, m.graph.output[0].name, arrays[0], arrays[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("i", range(6))
def test_onnx_node_cases(server: Any, transport: str, i: int) -> None:
    """Casts into and out of FP16, BF16, INT8, INT64, BOOL: the answer equals the ONNX node test's
    expected output exactly (a BF16 output as float32 holding the bfloat16 value)."""
    from conftest import NODE_CASES
    x_name, y_name, x, want = node_case(NODE_CASES[i])
    client = make_client(server, transport)
    y = infer(client, transport, f"case-{i}", {x_name: x})[y_name]
    assert y.shape == want.shape
    assert y.dtype == want.dtype or "BFLOAT16" in NODE_CASES[i]
    np.testing.assert_array_equal(y, want)
