"""The ``server`` fixture: bin/policyd serving a temporary repository of the models these tests use.

It builds nothing: POLICYD_BIN / POLICYCTL_BIN name the binaries (default bin/policyd and
bin/policyctl of the repository root: ``make go``). The repository is made with
``policyctl artifacts add``; the config gives the recurrent models their sequence states.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python"))

#: Reference files (testdata/reference/<name>.json) the tests compare against.
REFERENCES = [
    "mlagents-3DBall_b1", "mlagents-3DBall_b8", "mlagents-Hallway_b1", "peers-mlp-small_b1", "peers-mlp-small_b8",
    "peers-mlp-med_b1", "peers-mlp-med_b8", "peers-lstm_b1", "peers-lstm_b8", "testdata-einsum-float64_b1",
    "testdata-einsum-float64_b8",
]

#: Every datatype the dtype tests round-trip through an Identity model "id-<dt>".
DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
             "FP16", "FP32", "FP64", "BF16"]

#: ONNX node-test cases (testdata/onnx-cases) served as "case-<n>": casts into and out of FP16,
#: BF16 and the integer types, checked against the node tests' own expected outputs.
NODE_CASES = ["test_cast_FLOAT_to_BFLOAT16_opset21", "test_cast_FLOAT16_to_FLOAT_opset21",
              "test_cast_FLOAT_to_FLOAT16_opset21", "test_cast_INT32_to_INT8_opset21",
              "test_cast_UINT8_to_INT64_opset21", "test_cast_BOOL_to_FLOAT_opset21"]

SEQUENCES = {
    "peers-lstm": ["h_in:h_out", "c_in:c_out"],
    "mlagents-Hallway": ["recurrent_in:recurrent_out"],
    "hallway": ["recurrent_in:recurrent_out"],
}

#: The models test_local.py compares LocalPolicy with, under the names it uses (paths from the
#: repository root; "external" keeps its weights in model.onnx.data beside it).
LOCAL_MODELS = {
    "mlp-med": "../shared/peers/models/mlp-med.onnx",
    "lstm": "../shared/peers/models/lstm.onnx",
    "Basic": "../shared/models/mlagents/Basic.onnx",
    "JumperHard": "../shared/models/godot_rl/JumperHard.onnx",
    "hallway": "../shared/models/mlagents/Hallway.onnx",
    "external": "examples/pytorch-export/model.onnx",
}


def binary(env: str, name: str) -> str:
    p = os.environ.get(env) or str(ROOT / "bin" / name)
    if not os.access(p, os.X_OK):
        pytest.skip(f"{p} not found: build it (make go) or set {env}")
    return p


def load_reference(name: str) -> dict:
    with open(ROOT / "testdata" / "reference" / f"{name}.json") as f:
        return json.load(f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def identity_model(path: Path, datatype: str) -> None:
    """An ONNX model y = Identity(x) of one datatype, x and y [N, 3]."""
    from onnx import TensorProto, helper, save

    t = {"BOOL": TensorProto.BOOL, "INT8": TensorProto.INT8, "INT16": TensorProto.INT16,
         "INT32": TensorProto.INT32, "INT64": TensorProto.INT64, "UINT8": TensorProto.UINT8,
         "UINT16": TensorProto.UINT16, "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64,
         "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
         "BF16": TensorProto.BFLOAT16}[datatype]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                          [helper.make_tensor_value_info("x", t, ["N", 3])],
                          [helper.make_tensor_value_info("y", t, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="policyd tests")
    m.ir_version = 8
    save(m, str(path))


class Server:
    """A running policyd: ``.url`` (http://127.0.0.1:PORT), ``.grpc`` (127.0.0.1:PORT), ``.repo``
    (artifacts at <repo>/<model>/<version>/), ``.pid``."""

    def __init__(self, repo: Path, config: Path, log: Path, extra: Optional[List[str]] = None) -> None:
        self.repo = str(repo)
        self.config = str(config)
        self.log_path = str(log)
        http_port, grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        self.grpc = f"127.0.0.1:{grpc_port}"
        args = [binary("POLICYD_BIN", "policyd"), "--repository", self.repo, "--config", self.config,
                "--addr", f"127.0.0.1:{http_port}", "--grpc-addr", self.grpc, "--engine.cpu-threads", "2"]
        args += extra or []
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"policyd exited during start-up ({self.proc.returncode}):\n{self.log()}")
            try:
                urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2).close()
                return
            except urllib.error.HTTPError as e:
                if not (e.headers.get("X-Not-Ready-Reason") or "").startswith("starting"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("policyd did not become ready within 3 minutes")
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-20000:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def add_artifact(repo: Path, name: str, model: Path) -> None:
    r = subprocess.run([binary("POLICYCTL_BIN", "policyctl"), "artifacts", "add", "--repository", str(repo),
                        "--name", name, "--version", "1.0.0", str(model)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"policyctl artifacts add {name}: {r.stdout}{r.stderr}")


def write_config(path: Path, names: List[str], extra: str = "") -> None:
    lines = [extra, "models:"] if extra else ["models:"]
    for n in names:
        lines.append(f"  - name: {n}")
        if n in SEQUENCES:
            lines.append("    sequence:")
            lines.append("      states: [" + ", ".join(f'"{s}"' for s in SEQUENCES[n]) + "]")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """policyd serving the reference models, one Identity model per datatype and the sequences."""
    base = tmp_path_factory.mktemp("policyd")
    repo = base / "repo"
    repo.mkdir()
    models: Dict[str, Path] = {}
    for ref in REFERENCES:
        r = load_reference(ref)
        models[r["id"]] = (ROOT / r["model"]).resolve()
    for dt in DATATYPES:
        p = base / f"id-{dt}.onnx"
        identity_model(p, dt)
        models[f"id-{dt.lower()}"] = p
    for i, case in enumerate(NODE_CASES):
        models[f"case-{i}"] = ROOT / "testdata" / "onnx-cases" / case / "model.onnx"
    for name, rel in LOCAL_MODELS.items():
        models[name] = (ROOT / rel).resolve()
    for name, path in models.items():
        add_artifact(repo, name, path)
    # The bundled example artifact under its own name, as make run serves it (the README snippet).
    shutil.copytree(ROOT / "examples" / "repository" / "3DBall", repo / "3DBall")
    cfg = base / "policyd.yaml"
    write_config(cfg, sorted(models) + ["3DBall"])
    s = Server(repo, cfg, base / "policyd.log")
    yield s
    s.stop()
