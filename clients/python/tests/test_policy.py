"""Policy and Episode against the real server: batch dimension, episodes (state kept on the server
equals state carried by the client), seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import policyd

from conftest import load_reference
from test_client import TRANSPORTS, close, make_client

POLICY_TRANSPORTS = ["http-binary", "grpc"]


@pytest.mark.parametrize("transport", POLICY_TRANSPORTS)
def test_act_single_and_batch(server: Any, transport: str) -> None:
    ref = load_reference("peers-mlp-small_b8")
    obs = np.asarray(ref["inputs"][0]["data"], np.float32).reshape(8, 8)
    want = np.asarray(ref["outputs"][0]["data"], np.float64).reshape(8, 2)
    policy = policyd.Policy(make_client(server, transport), "peers-mlp-small")
    batch = policy.act(obs)
    assert batch.shape == (8, 2) and close(batch, want).all()
    one = policy.act(obs[3])  # one observation: the batch dimension is added and removed
    assert one.shape == (2,) and close(one, want[3]).all()
    one_list = policy.act(obs[3].tolist())  # cast to the input's datatype
    assert one_list.dtype == np.float32 and close(one_list, want[3]).all()
    assert policy.act({"obs": obs[:2]}).shape == (2, 2)


def test_act_several_outputs(server: Any) -> None:
    ref = load_reference("mlagents-3DBall_b1")
    obs = np.asarray(ref["inputs"][0]["data"], np.float32)  # [8], no batch dimension
    want = {o["name"]: np.asarray(o["data"], np.float64).reshape(o["shape"]) for o in ref["outputs"]}
    client = policyd.Client(server.url)
    det = policyd.Policy(client, "mlagents-3DBall", output="deterministic_continuous_actions").act(obs)
    assert det.shape == (2,) and close(det, want["deterministic_continuous_actions"][0]).all()
    every = policyd.Policy(client, "mlagents-3DBall").act(obs)
    assert isinstance(every, dict) and every["version_number"].shape == (1,)  # not batched: kept
    assert every["continuous_actions"].shape == (2,)
    with pytest.raises(ValueError, match="no output"):
        policyd.Policy(client, "mlagents-3DBall", output="nope").act(obs)


def lstm_inputs(steps: int) -> list:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, 32).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("transport", POLICY_TRANSPORTS)
def test_episode_equals_client_carried_state(server: Any, transport: str) -> None:
    client = make_client(server, transport)
    observations = lstm_inputs(3)
    # The client carries the state itself: h and c [1, 1, 128], zero at the start.
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    carried = []
    for o in observations:
        r = client.infer("peers-lstm", {"obs": o[None], "h_in": h, "c_in": c})
        carried.append(r["action"][0])
        h, c = r["h_out"], r["c_out"]
    policy = policyd.Policy(client, "peers-lstm", output="action")
    assert policy.inputs == ["obs"]
    with policy.episode() as ep:
        served = [ep.act(o) for o in observations]
    assert ep.ended
    for i, (a, b) in enumerate(zip(served, carried)):
        assert a.shape == (8,)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {i}")
    # The steps really carried state: the third step differs from a fresh start on the same obs.
    with policy.episode() as ep2:
        fresh = ep2.act(observations[2])
    assert not np.allclose(fresh, served[2])


def test_episode_hallway_several_inputs(server: Any) -> None:
    """ML-Agents Hallway: three observation inputs, state recurrent_in kept on the server."""
    client = policyd.Client(server.url)
    rng = np.random.default_rng(5)
    steps = [{"obs_0": rng.uniform(-1, 1, 105).astype(np.float32), "obs_1": np.array([0, 1, 0], np.float32),
              "action_masks": np.ones(5, np.float32)} for _ in range(3)]
    mem = np.zeros((1, 1, 128), np.float32)
    carried = []
    for s in steps:
        r = client.infer("mlagents-Hallway", {**{k: v[None] for k, v in s.items()}, "recurrent_in": mem})
        mem = r["recurrent_out"]
        carried.append(mem)
    policy = policyd.Policy(client, "mlagents-Hallway", output="recurrent_out")
    with policy.episode("hallway-test-1") as ep:
        served = [ep.act(s) for s in steps]
    for a, b in zip(served, carried):
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6)


def test_episode_ends_on_exception(server: Any) -> None:
    client = policyd.Client(server.url)
    policy = policyd.Policy(client, "peers-lstm", output="action")
    obs = lstm_inputs(1)[0]
    with pytest.raises(KeyError):
        with policy.episode("ends-on-exception") as ep:
            ep.act(obs)
            raise KeyError("the caller's own failure")
    assert ep.ended
    # The sequence is gone on the server: a further step without sequence_start is refused.
    with pytest.raises(policyd.InvalidArgument, match="unknown sequence"):
        client.infer("peers-lstm", {"obs": obs[None]}, sequence_id="ends-on-exception")


def test_episode_end_on_last_step(server: Any) -> None:
    client = policyd.Client(server.url)
    policy = policyd.Policy(client, "peers-lstm", output="action")
    obs = lstm_inputs(2)
    with policy.episode(424242) as ep:
        ep.act(obs[0])
        ep.act(obs[1], end=True)
        assert ep.ended
        with pytest.raises(RuntimeError):
            ep.act(obs[0])
    with pytest.raises(policyd.InvalidArgument, match="unknown sequence"):
        client.infer("peers-lstm", {"obs": obs[0][None]}, sequence_id=424242)


@pytest.mark.parametrize("transport", POLICY_TRANSPORTS)
def test_seed_reproducible(server: Any, transport: str) -> None:
    """3DBall's continuous_actions samples a Gaussian: the same seed gives the same action."""
    policy = policyd.Policy(make_client(server, transport), "mlagents-3DBall", output="continuous_actions")
    obs = np.linspace(-1, 1, 8, dtype=np.float32)
    a = policy.act(obs, seed=42)
    b = policy.act(obs, seed=42)
    c = policy.act(obs, seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    batch = policy.act(np.stack([obs, obs]), seed=42)
    np.testing.assert_array_equal(batch[0], a)  # row 0 draws from the seed itself
    assert not np.array_equal(batch[1], a)      # row 1 from seed + 0x9e3779b97f4a7c15


def test_priority_and_timeout_parameters(server: Any) -> None:
    policy = policyd.Policy(policyd.Client(server.url), "peers-mlp-small")
    assert policy.act(np.zeros(8, np.float32), priority=0, timeout=5.0).shape == (2,)
