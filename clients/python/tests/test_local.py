"""policyd.local.LocalPolicy against the real server (bit for bit), ONNX Runtime's references
(testdata/reference, the tolerance of cmd/policyd/e2e_test.go), and tampered artifacts.

Run: cd clients/python && /usr/bin/python3 -m pytest -q tests/test_local.py
(needs lib/libpolicyd.so and bin/policyd, bin/policyctl of a build)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from policyd import errors
from policyd.local import ArtifactError, LocalPolicy, verify_artifact

ROOT = Path(__file__).resolve().parents[3]
REF = ROOT / "testdata" / "reference"
PHI = 0x9E3779B97F4A7C15

NP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
      "UINT8": np.uint8, "INT8": np.int8, "FP16": np.float16}


def art(server, model: str) -> Path:
    return Path(server.repo) / model / "1.0.0"


def infer(server, model: str, inputs: dict, params: dict | None = None) -> dict:
    """POST /v2/models/<model>/infer with binary inputs and binary outputs: exact bits both ways."""
    head = {"inputs": [], "parameters": {"binary_data_output": True, **(params or {})}}
    blobs = []
    for name, a in inputs.items():
        a = np.ascontiguousarray(a)
        dt = next(k for k, v in NP.items() if np.dtype(v) == a.dtype)
        head["inputs"].append({"name": name, "datatype": dt, "shape": list(a.shape),
                               "parameters": {"binary_data_size": a.nbytes}})
        blobs.append(a.tobytes())
    h = json.dumps(head).encode()
    req = urllib.request.Request(f"{server.url}/v2/models/{model}/infer", data=h + b"".join(blobs), method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(h)),
                                          "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            n = int(r.headers.get("Inference-Header-Content-Length", len(body)))
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{model}: {e.code} {e.read()[:500]!r}") from None
    resp, off, out = json.loads(body[:n]), n, {}
    for o in resp["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(body[off:off + size], NP[o["datatype"]]).reshape(o["shape"])
        off += size
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def load_ref(name: str):
    r = json.loads((REF / name).read_text())
    ins = {t["name"]: np.array(t["data"], NP[t["datatype"]]).reshape(t["shape"]) for t in r["inputs"]}
    return r, ins


# reference file -> model name in the server fixture's repository
REFS = {
    "peers-mlp-med_b1.json": "mlp-med", "peers-mlp-med_b8.json": "mlp-med",
    "peers-lstm_b1.json": "lstm", "peers-lstm_b8.json": "lstm",
    "mlagents-3DBall_b1.json": "3DBall", "mlagents-3DBall_b8.json": "3DBall",
    "mlagents-Basic_b1.json": "Basic", "mlagents-Basic_b8.json": "Basic",
    "godot_rl-JumperHard_b1.json": "JumperHard", "godot_rl-JumperHard_b8.json": "JumperHard",
}

# ONNX Runtime's references only (the server fixture serves hallway as a sequence model)
REFS_ORT = {**REFS, "mlagents-Hallway_b1.json": "hallway", "mlagents-Hallway_b8.json": "hallway"}

_policies: dict = {}


def policy(server, model: str) -> LocalPolicy:
    if model not in _policies:
        _policies[model] = LocalPolicy(art(server, model))
    return _policies[model]


@pytest.mark.parametrize("ref", sorted(REFS_ORT))
def test_equals_onnx_runtime(server, ref):
    r, ins = load_ref(ref)
    p = policy(server, REFS_ORT[ref])
    got = p.act(ins, seed=11)
    got = got if isinstance(got, dict) else {p._returned[0]: got}
    for o in r["outputs"]:
        g = got[o["name"]]
        assert list(g.shape) == o["shape"], o["name"]
        assert g.dtype == NP[o["datatype"]]
        if not o["deterministic"]:
            continue
        w = np.array(o["data"], np.float64).reshape(o["shape"])
        bad = np.abs(g.astype(np.float64) - w) > 1e-4 + 1e-3 * np.abs(w)
        assert not bad.any(), f"{ref} {o['name']}: {int(bad.sum())} values off, first at {np.argwhere(bad)[0]}"


@pytest.mark.parametrize("ref", sorted(REFS))
@pytest.mark.parametrize("seed", [None, 123456789])
def test_equals_server_bit_for_bit(server, ref, seed):
    r, ins = load_ref(ref)
    model = REFS[ref]
    stochastic = any(not o["deterministic"] for o in r["outputs"])
    if stochastic and seed is None:
        pytest.skip("unseeded samples come from each instance's own stream")
    p = policy(server, model)
    got = p.act(ins, seed=seed)
    got = got if isinstance(got, dict) else {p._returned[0]: got}
    want = infer(server, model, ins, {"seed": seed} if seed is not None else None)
    assert set(got) == set(want)
    for k in want:
        assert same_bits(got[k], want[k]), f"{ref} {k}: local {got[k].ravel()[:4]} server {want[k].ravel()[:4]}"
    if len(ins) == 1 and len(got) == 1:
        # the array fast path (a preallocated plan per shape), twice: the second reuses it
        (x,) = ins.values()
        for _ in range(2):
            assert same_bits(p.act(x, seed=seed), next(iter(want.values())))


def test_external_data_model_equals_server(server):
    a = art(server, "external")
    assert (a / "model.onnx.data").is_file()
    p = LocalPolicy(a, output="deterministic_continuous_actions")
    obs = np.random.default_rng(5).uniform(-1, 1, (4, 8)).astype(np.float32)
    want = infer(server, "external", {"obs_0": obs})["deterministic_continuous_actions"]
    assert same_bits(p.act(obs), want)
    assert np.abs(want).sum() > 0


def test_tampered_external_data_is_refused(copy):
    d = copy("external")
    b = bytearray((d / "model.onnx.data").read_bytes())
    b[0] ^= 0x40
    (d / "model.onnx.data").write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match=r"model\.onnx\.data: sha256"):
        LocalPolicy(d)


def test_single_observation_adds_and_removes_the_batch_dimension(server):
    p = policy(server, "mlp-med")
    obs = np.random.default_rng(1).uniform(-1, 1, (5, 64)).astype(np.float32)
    one = p.act(obs[2])
    assert one.shape == (8,)
    assert same_bits(one, p.act(obs[2:3])[0])
    assert p.act(obs).shape == (5, 8)
    # a float64 observation is converted to the input's dtype, as the model takes it
    assert same_bits(p.act(obs[2].astype(np.float64)), one)


def test_seeded_rows_equal_rows_run_alone(server):
    # docs/api.md: row j of a request seeded with s draws from s + j*PHI, so row j equals a
    # one-row request seeded with that; and the server agrees with both.
    _, ins = load_ref("mlagents-3DBall_b8.json")
    p = LocalPolicy(art(server, "3DBall"), output="continuous_actions")
    s = 2024
    batch = p.act(ins, seed=s)
    for j in range(8):
        row = {k: v[j] for k, v in ins.items()}
        assert same_bits(p.act(row, seed=(s + j * PHI) % 2**64), batch[j])
    assert same_bits(batch, infer(server, "3DBall", ins, {"seed": s})["continuous_actions"])
    # and seeds matter: other seeds sample other actions
    assert not same_bits(p.act(ins, seed=s + 1), batch)


def test_seeded_calls_above_max_batch_size_equal_the_server(server):
    # The server's batcher gives a seeded request of more rows than batching.max_batch_size (32)
    # a single row seed (engines.Batcher.rowsOf: it runs alone); LocalPolicy does the same.
    p = LocalPolicy(art(server, "3DBall"), output="continuous_actions")
    for rows in (32, 33, 40):
        obs = np.random.default_rng(rows).uniform(-1, 1, (rows, 8)).astype(np.float32)
        want = infer(server, "3DBall", {"obs_0": obs}, {"seed": 9})["continuous_actions"]
        assert same_bits(p.act(obs, seed=9), want), rows
    # with max_batch_size=64 LocalPolicy seeds each of the 40 rows (docs/api.md's rule): rows
    # beyond the first then differ from that server's answer
    wide = LocalPolicy(art(server, "3DBall"), output="continuous_actions", max_batch_size=64)
    got = wide.act(obs, seed=9)
    assert same_bits(got[0], want[0]) and not same_bits(got, want)


def hallway_obs(rng):
    return {"obs_0": rng.uniform(-1, 1, 105).astype(np.float32),
            "obs_1": rng.uniform(-1, 1, 3).astype(np.float32),
            "action_masks": np.ones(5, np.float32)}


def test_episode_equals_server_sequence_and_client_carried_state(server):
    rng = np.random.default_rng(7)
    steps = [hallway_obs(rng) for _ in range(4)]
    p = LocalPolicy(art(server, "hallway"), states=["recurrent_in:recurrent_out"])
    carried = LocalPolicy(art(server, "hallway"))
    h = np.zeros((1, 1, 128), np.float32)
    with p.episode() as ep:
        for i, obs in enumerate(steps):
            local = ep.act(obs, seed=100 + i)
            want = infer(server, "hallway", {k: v[None] for k, v in obs.items()},
                         {"seed": 100 + i, "sequence_id": "pylocal-test", "sequence_start": i == 0,
                          "sequence_end": i == len(steps) - 1})
            assert "recurrent_out" not in local  # the state stays inside the episode
            for k, v in local.items():
                assert same_bits(v[None] if want[k].ndim == v.ndim + 1 else v, want[k]), (i, k)
            assert same_bits(ep.state()["recurrent_in"], want["recurrent_out"]), i
            # client-carried: the same step with recurrent_in fed by hand
            c = carried.act({**{k: v[None] for k, v in obs.items()}, "recurrent_in": h}, seed=100 + i)
            assert same_bits(c["discrete_actions"], want["discrete_actions"]), i
            h = c["recurrent_out"]
            assert same_bits(h, want["recurrent_out"]), i
        assert np.abs(h).sum() > 0  # the state really changed
    # a new episode starts from zero again: its first step equals the first above
    with p.episode() as ep2:
        again = ep2.act(steps[0], seed=100)
        with pytest.raises(errors.InvalidArgument, match="state input"):
            ep2.act({**steps[1], "recurrent_in": np.zeros((1, 128), np.float32)})
    first = infer(server, "hallway", {k: v[None] for k, v in steps[0].items()},
                  {"seed": 100, "sequence_id": "pylocal-test-2", "sequence_start": True, "sequence_end": True})
    assert same_bits(again["discrete_actions"][None], first["discrete_actions"])
    with pytest.raises(errors.PolicydError, match="ended"):
        ep2.act(steps[1])


def test_episode_ends_on_exception(server):
    p = LocalPolicy(art(server, "hallway"), states=["recurrent_in:recurrent_out"], output="discrete_actions")
    with pytest.raises(RuntimeError):
        with p.episode() as ep:
            ep.act(hallway_obs(np.random.default_rng(0)))
            raise RuntimeError("boom")
    with pytest.raises(errors.PolicydError, match="ended"):
        ep.act(hallway_obs(np.random.default_rng(0)))


def test_bad_states_and_inputs_are_clear_errors(server):
    a = art(server, "hallway")
    with pytest.raises(errors.InvalidArgument, match="no output 'nope'"):
        LocalPolicy(a, states=["recurrent_in:nope"])
    with pytest.raises(errors.InvalidArgument, match="input:output"):
        LocalPolicy(a, states=["recurrent_in"])
    with pytest.raises(errors.NotFound, match="no output 'x'"):
        LocalPolicy(a, output="x")
    p = policy(server, "mlp-med")
    with pytest.raises(errors.InvalidArgument, match="'obs'.*rank 3"):
        p.act(np.zeros((1, 1, 64), np.float32))
    # a wrong inner dimension reaches the library, whose message names the input
    with pytest.raises(errors.InvalidArgument, match="obs"):
        p.act(np.zeros((2, 63), np.float32))
    with pytest.raises(errors.InvalidArgument, match="'obs': not convertible"):
        p.act(np.array(["x"] * 64))
    with pytest.raises(errors.NotFound, match="no input 'bogus'"):
        p.act({"obs": np.zeros(64, np.float32), "bogus": np.zeros(1)})
    with pytest.raises(errors.InvalidArgument, match="missing input 'obs_1'"):
        LocalPolicy(a, output="discrete_actions").act({"obs_0": np.zeros(105, np.float32)})
    with pytest.raises(errors.Unavailable, match="not found"):
        LocalPolicy(a, library="/nonexistent/libpolicyd.so")


# -- verification -------------------------------------------------------------------------


@pytest.fixture
def copy(server, tmp_path):
    def make(model="mlp-med"):
        dst = tmp_path / "repo" / model / "1.0.0"
        shutil.copytree(art(server, model), dst)
        return dst
    return make


def test_tampered_model_is_refused_naming_the_file(copy):
    d = copy()
    b = bytearray((d / "model.onnx").read_bytes())
    b[len(b) // 2] ^= 1  # same size, one bit flipped in the weights
    (d / "model.onnx").write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256 [0-9a-f]{64}, manifest says") as e:
        LocalPolicy(d)
    assert e.value.file == "model.onnx"


def test_truncated_model_and_edited_manifest_are_refused(copy):
    d = copy()
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="model.onnx: size"):
        LocalPolicy(d)
    d2 = copy("3DBall")
    m = json.loads((d2 / "manifest.json").read_text())
    m["files"][0]["sha256"] = "0" * 64
    (d2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="manifest says 0000"):
        LocalPolicy(d2)
    m["files"][0]["sha256"] = "not hex"
    (d2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="not 64 lower-case hex"):
        LocalPolicy(d2)
    (d2 / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        LocalPolicy(d2)


def test_unlisted_file_symlink_and_missing_manifest_are_refused(copy, tmp_path):
    d = copy()
    (d / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="extra.bin is not listed"):
        LocalPolicy(d)
    (d / "extra.bin").unlink()
    (d / "model.onnx").rename(tmp_path / "elsewhere.onnx")
    (d / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ArtifactError, match="symlink"):
        LocalPolicy(d)
    (d / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        verify_artifact(d)


def test_signature(server, tmp_path):
    pytest.importorskip("cryptography")
    policyctl = ROOT / "bin" / "policyctl"
    for n in ("k1", "k2"):
        subprocess.run([str(policyctl), "artifacts", "keygen", "--out", str(tmp_path / n)], check=True,
                       capture_output=True)
    repo = tmp_path / "signed"
    subprocess.run([str(policyctl), "artifacts", "add", "--repository", str(repo), "--name", "m", "--version",
                    "1.0.0", "--sign-key", str(tmp_path / "k1.key"), str(art(server, "mlp-med") / "model.onnx")],
                   check=True, capture_output=True)
    d = repo / "m" / "1.0.0"
    p = LocalPolicy(d, public_keys=[tmp_path / "k1.pub"])
    assert p.artifact.signed_by
    assert same_bits(p.act(np.ones(64, np.float32)), policy(server, "mlp-med").act(np.ones(64, np.float32)))
    with pytest.raises(ArtifactError, match="not trusted"):
        LocalPolicy(d, public_keys=[tmp_path / "k2.pub"])
    # a manifest edited after signing (the tool field: no file changes) fails the signature
    m = (d / "manifest.json").read_text().replace('"tool": "', '"tool": "x')
    (d / "manifest.json").write_text(m)
    with pytest.raises(ArtifactError, match="bad signature"):
        LocalPolicy(d, public_keys=[tmp_path / "k1.pub"])
    unsigned = art(server, "mlp-med")
    with pytest.raises(ArtifactError, match="unsigned"):
        LocalPolicy(unsigned, public_keys=[tmp_path / "k1.pub"])


def test_concurrent_act_is_safe(server):
    import threading

    p = LocalPolicy(art(server, "mlp-med"))
    rng = np.random.default_rng(3)
    obs = rng.uniform(-1, 1, (8, 64)).astype(np.float32)
    want = [p.act(o) for o in obs]
    bad = []

    def work(k):
        for i in range(300):
            j = (i + k) % 8
            if not same_bits(p.act(obs[j]), want[j]):
                bad.append(j)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_interleaved_episodes_keep_their_own_state(server):
    rng = np.random.default_rng(11)
    a_steps = [hallway_obs(rng) for _ in range(3)]
    b_steps = [hallway_obs(rng) for _ in range(3)]
    p = LocalPolicy(art(server, "hallway"), states=["recurrent_in:recurrent_out"], output="discrete_actions")

    def alone(steps):
        with p.episode() as ep:
            [ep.act(o, seed=5) for o in steps]
            return ep.state()["recurrent_in"]

    want_a, want_b = alone(a_steps), alone(b_steps)
    with p.episode() as ea, p.episode() as eb:
        for oa, ob in zip(a_steps, b_steps):
            ea.act(oa, seed=5)
            eb.act(ob, seed=5)
        assert same_bits(ea.state()["recurrent_in"], want_a)
        assert same_bits(eb.state()["recurrent_in"], want_b)
        assert not same_bits(want_a, want_b)
