"""Packaging: the generated gRPC code is fresh, and pip installs the package offline."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PKG = HERE.parent
ROOT = PKG.parents[1]


def test_generated_code_fresh(tmp_path: Path) -> None:
    """policyd/_proto is what scripts/gen_proto.sh makes from api/inference/*.proto (make proto)."""
    for tool in ("protoc", "grpc_python_plugin"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make proto installs protobuf-compiler and protobuf-compiler-grpc)")
    subprocess.run(["sh", str(PKG / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True)
    committed = PKG / "policyd" / "_proto"
    names = sorted(p.name for p in tmp_path.glob("*.py"))
    assert names == sorted(p.name for p in committed.glob("*_pb2*.py"))
    stale = [n for n in names if not filecmp.cmp(tmp_path / n, committed / n, shallow=False)]
    assert not stale, f"policyd/_proto is stale ({stale}): run make proto and commit the result"


def test_pip_install_offline(tmp_path: Path) -> None:
    """The documented offline install: a venv over the system packages, pip without build isolation
    and without an index (Debian's pip refuses the system interpreter, PEP 668)."""
    try:
        import ensurepip  # noqa: F401  (python3-venv)
    except ImportError:
        pytest.skip("python3-venv is not installed")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    src = tmp_path / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_NO_INPUT"] = "1"
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-build-isolation", "--no-index", str(src)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import policyd, policyd.grpc, pathlib; "
            "p = pathlib.Path(policyd.__file__).parent; "
            "assert (p / 'py.typed').exists(); assert 'site-packages' in str(p), p; "
            "print(policyd.__version__, policyd.Client('grpc://127.0.0.1:1').__class__.__module__)")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.1.0", "policyd.grpc"]
