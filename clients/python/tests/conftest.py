"""A minimal `server` fixture for the pylocal tests (the pyclient branch's conftest.py replaces
this one on merge): bin/policyd on a free loopback port, cpu backend, over a repository in a
temporary folder holding the models of MODELS, added with bin/policyctl artifacts add."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared"

# name -> (model file, sequence state pairs)
MODELS = {
    "mlp-med": (SHARED / "peers/models/mlp-med.onnx", []),
    "lstm": (SHARED / "peers/models/lstm.onnx", []),
    "3DBall": (SHARED / "models/mlagents/3DBall.onnx", []),
    "Basic": (SHARED / "models/mlagents/Basic.onnx", []),
    "JumperHard": (SHARED / "models/godot_rl/JumperHard.onnx", []),
    "hallway": (SHARED / "models/mlagents/Hallway.onnx", ["recurrent_in:recurrent_out"]),
    # weights in ONNX external data (model.onnx.data beside it)
    "external": (ROOT / "examples/pytorch-export/model.onnx", []),
}


def _binary(name: str) -> Path:
    env = os.environ.get("POLICYD_" + name.upper())
    p = Path(env) if env else ROOT / "bin" / name
    if not p.is_file():
        pytest.skip(f"{p} not built (go build -o bin/{name} ./cmd/{name})")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, repo: Path):
        self.url, self.repo = url, repo


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    policyd, policyctl = _binary("policyd"), _binary("policyctl")
    tmp = tmp_path_factory.mktemp("policyd")
    repo = tmp / "repo"
    lines = ["models:"]
    for name, (src, states) in MODELS.items():
        if not src.is_file():
            pytest.skip(f"{src} missing (../shared)")
        subprocess.run([str(policyctl), "artifacts", "add", "--repository", str(repo), "--name", name,
                        "--version", "1.0.0", str(src)], check=True, capture_output=True)
        lines.append(f"  - name: {name}")
        if states:
            lines.append(f"    sequence: {{states: [{', '.join(states)}]}}")
    cfg = tmp / "policyd.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    port, gport = _free_port(), _free_port()
    log = open(tmp / "policyd.log", "wb")
    proc = subprocess.Popen([str(policyd), "--config", str(cfg), "--repository", str(repo),
                             "--addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{gport}",
                             "--engine.backends", "cpu", "--engine.cpu-threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"policyd exited: {(tmp / 'policyd.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("policyd not ready within 180 s")
        time.sleep(0.1)
    yield Server(url, repo)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
