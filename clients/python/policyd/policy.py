"""Policy and Episode: act on observations, with the batch dimension and server-side sequences handled."""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from ._types import BF16, DTYPES

__all__ = ["Policy", "Episode"]

Obs = Union[np.ndarray, Mapping[str, Any]]


class Policy:
    """A policy served by policyd: ``Policy(client, "3DBall").act(obs)``.

    ``obs`` is one numpy array (for a model with one observation input) or a dict name -> array;
    one observation without the batch dimension, or a batch. Compared with the model's metadata,
    an observation whose rank is one below the input's gets the batch dimension added, and the
    outputs that are batched (dimension 0 free, ``-1``, in the metadata; or any output of rank 2+
    of a model that serves batch 1 only) lose it again. Values are cast to the input's datatype
    (BF16 inputs are sent as bfloat16 from float arrays). ``act`` returns the single output, or
    the one named by ``output=``, as a numpy array; else a dict of every output.

    The metadata and configuration are read once, on the first call. A Policy is safe for
    concurrent use when its client is (both transports are).
    """

    def __init__(self, client: Any, model: str, version: Optional[str] = None, *,
                 output: Optional[str] = None) -> None:
        self.client = client
        self.model = model
        self.version = version
        self.output = output
        self._meta: Optional[Dict[str, Any]] = None

    def _load(self) -> Dict[str, Any]:
        if self._meta is None:
            meta = self.client.metadata(self.model, self.version)
            states: List[str] = []
            try:
                cfg = self.client.config(self.model, self.version)
                for s in (cfg.get("sequence_batching") or {}).get("state", []) or []:
                    states.append(s.get("input_name"))
            except Exception:  # noqa: BLE001 - an older server without the config route
                pass
            ins = {i["name"]: i for i in meta["inputs"]}
            batch1 = all(i["shape"] and i["shape"][0] == 1 for i in meta["inputs"])
            self._meta = {
                "inputs": ins,
                "outputs": {o["name"]: o for o in meta["outputs"]},
                "states": states,
                "batch1": batch1,
            }
            if self.output is not None and self.output not in self._meta["outputs"]:
                raise ValueError(f"model {self.model!r} has no output {self.output!r}: "
                                 f"it has {list(self._meta['outputs'])}")
        return self._meta

    @property
    def inputs(self) -> List[str]:
        """The observation inputs (the model's inputs but for the sequence state inputs)."""
        m = self._load()
        return [n for n in m["inputs"] if n not in m["states"]]

    def _prepare(self, obs: Obs, in_sequence: bool) -> tuple:
        m = self._load()
        if isinstance(obs, Mapping):
            given = dict(obs)
        else:
            names = [n for n in m["inputs"] if n not in m["states"]] if in_sequence or len(m["inputs"]) > 1 \
                else list(m["inputs"])
            if len(names) != 1:
                raise ValueError(f"model {self.model!r} takes inputs {names}: pass a dict name -> array")
            given = {names[0]: obs}
        added = None
        inputs: Dict[str, Any] = {}
        for name, value in given.items():
            spec = m["inputs"].get(name)
            if spec is None:
                raise ValueError(f"model {self.model!r} has no input {name!r}: it has {list(m['inputs'])}")
            dt = spec["datatype"]
            if dt == "BF16":
                arr = np.asarray(value.array if isinstance(value, BF16) else value, dtype=np.float32)
            elif dt == "BYTES":
                arr = np.asarray(value, dtype=object)
            else:
                arr = np.asarray(value, dtype=DTYPES[dt])
            add = arr.ndim == len(spec["shape"]) - 1
            if added is None:
                added = add
            elif added != add:
                raise ValueError(f"model {self.model!r}: mix of single observations and batches across inputs")
            if add:
                arr = arr[np.newaxis]
            inputs[name] = BF16(arr) if dt == "BF16" else arr
        return inputs, bool(added)

    def _finish(self, res: Mapping[str, np.ndarray], added: bool) -> Any:
        m = self._load()
        out: Dict[str, np.ndarray] = {}
        for name, arr in res.items():
            spec = m["outputs"].get(name)
            if added and spec is not None and arr.ndim == len(spec["shape"]) and arr.ndim > 0 and arr.shape[0] == 1 \
                    and (spec["shape"][0] == -1 or (m["batch1"] and arr.ndim > 1)):
                arr = arr[0]
            out[name] = arr
        if self.output is not None:
            return out[self.output]
        if len(out) == 1:
            return next(iter(out.values()))
        return out

    def _act(self, obs: Obs, in_sequence: bool, **kw: Any) -> Any:
        inputs, added = self._prepare(obs, in_sequence)
        outputs = [self.output] if self.output is not None else None
        res = self.client.infer(self.model, inputs, outputs, self.version, **kw)
        return self._finish(res, added)

    def act(self, obs: Obs, *, seed: Optional[int] = None, priority: Optional[int] = None,
            timeout: Optional[float] = None) -> Any:
        """The policy's action for one observation or a batch (see the class)."""
        return self._act(obs, False, seed=seed, priority=priority, timeout=timeout)

    def episode(self, sequence_id: Union[int, str, None] = None) -> "Episode":
        """A context manager for one episode of a recurrent policy kept on the server (the model
        needs ``sequence.states`` in the server's config): ``with policy.episode() as ep: ep.act(obs)``."""
        return Episode(self, sequence_id)


class Episode:
    """One server-side sequence: the first ``act`` starts it (``sequence_start``), the server
    carries the state between steps, and ``close`` (the end of the ``with`` block, also on an
    exception) ends it. ``act(obs, end=True)`` ends it on that step; otherwise ``close`` ends it with
    one more step on the last observation, whose answer is dropped. Steps are never retried
    except after a 503 with Retry-After (the step did not run). Not for concurrent use: the
    steps of an episode are sequential.
    """

    def __init__(self, policy: Policy, sequence_id: Union[int, str, None] = None) -> None:
        self.policy = policy
        self.sequence_id: Union[int, str] = sequence_id if sequence_id is not None else "py-" + uuid.uuid4().hex
        self.steps = 0
        self.ended = False
        self._last: Optional[Obs] = None

    def act(self, obs: Obs, *, seed: Optional[int] = None, priority: Optional[int] = None,
            timeout: Optional[float] = None, end: bool = False) -> Any:
        """One step of the episode: the action for one observation (batch size 1)."""
        if self.ended:
            raise RuntimeError(f"episode {self.sequence_id!r} has ended")
        out = self.policy._act(obs, True, seed=seed, priority=priority, timeout=timeout,
                               sequence_id=self.sequence_id, sequence_start=self.steps == 0, sequence_end=end)
        self.steps += 1
        self._last = obs
        if end:
            self.ended = True
        return out

    def close(self) -> None:
        """End the sequence on the server (idempotent)."""
        if self.ended:
            return
        self.ended = True
        if self.steps == 0 or self._last is None:
            return
        self.policy._act(self._last, True, sequence_id=self.sequence_id, sequence_end=True)

    def __enter__(self) -> "Episode":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the episode's own exception matters more
            pass
