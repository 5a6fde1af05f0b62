"""The README's Python snippet runs as printed, and the recurrent example runs, against the server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section must hold exactly one python block"
    return blocks[0]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "clients" / "python") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_readme_snippet_runs(server: Any, tmp_path: Path) -> None:
    code = readme_snippet()
    assert "http://127.0.0.1:8000" in code
    r = run_python(code.replace("http://127.0.0.1:8000", server.url), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "(2,) float32"
    assert lines[1].startswith("refused:") and "obs_0" in lines[1]


def test_lstm_episode_example(tmp_path: Path) -> None:
    """The example as its docstring says: lstm added as "lstm", policyd on the example's config."""
    from conftest import Server, add_artifact, load_reference
    repo = tmp_path / "repo"
    repo.mkdir()
    add_artifact(repo, "lstm", (ROOT / load_reference("peers-lstm_b1")["model"]).resolve())
    s = Server(repo, ROOT / "examples" / "python" / "lstm_episode.yaml", tmp_path / "policyd.log")
    try:
        r = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "lstm_episode.py"), "--url", s.url,
                            "--episodes", "2", "--steps", "3"], capture_output=True, text=True, timeout=120)
    finally:
        s.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ended") == 2 and "episode 1 step 2" in r.stdout
    assert "observation inputs ['obs']" in r.stdout
