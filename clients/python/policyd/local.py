"""LocalPolicy: a policyd artifact run in-process through the C ABI (ctypes over libpolicyd.so).

The same ``act`` / ``episode`` API as ``policyd.Policy``, without a server or a network: for
simulators that evaluate a policy millions of times. The artifact's manifest and every file's
size and SHA-256 are verified before anything is loaded (and its signature when a public key is
given), and the engine and its context are made as the server makes them for the same backend,
so the outputs equal the server's bit for bit (docs/clients.md, LocalPolicy).

    from policyd.local import LocalPolicy
    pi = LocalPolicy("models/3DBall/1.0.0")
    action = pi.act(np.zeros(8, np.float32))          # one observation -> one action
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from . import _capi
from .errors import InvalidArgument, NotFound, PolicydError

__all__ = ["LocalPolicy", "LocalEpisode", "ArtifactError", "verify_artifact"]

Obs = Union[np.ndarray, Mapping[str, Any]]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.onnx"
SCHEMA = 2
_PHI = 0x9E3779B97F4A7C15  # engines.RowSeed: row j of a seeded request draws from seed + j*PHI
_U64 = (1 << 64) - 1


class ArtifactError(InvalidArgument):
    """The artifact folder fails verification (manifest, a file's size or SHA-256, signature).

    ``.file`` names the file (relative to the version folder), "" for the folder itself."""

    def __init__(self, message: str, file: str = ""):
        super().__init__(message)
        self.file = file


# ------------------------------------------------------------------------------------------
# Verification (artifacts/verify.go, artifacts/manifest.go, artifacts/sign.go)


def _check_path(p: Any) -> Optional[str]:
    if not isinstance(p, str) or p == "":
        return "empty file path"
    if "\\" in p:
        return f"file path {p!r} contains a backslash"
    if p.startswith("/"):
        return f"file path {p!r} is absolute"
    parts = p.split("/")
    if ".." in parts:
        return f"file path {p!r} leaves the version folder (..)"
    if any(x in ("", ".") for x in parts):
        return f"file path {p!r} is not clean"
    if p in (MANIFEST, SIGNATURE):
        return f"file path {p!r} is reserved"
    if "\0" in p:
        return f"file path {p!r} contains NUL"
    return None


def _parse_manifest(raw: bytes) -> dict:
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise ArtifactError(f"manifest is not valid JSON: {e}", MANIFEST) from None
    if not isinstance(m, dict):
        raise ArtifactError("manifest is not a JSON object", MANIFEST)
    schema = m.get("schema", 1)
    if schema == 1:
        raise ArtifactError('manifest is of schema 1; rewrite it with "policyctl artifacts migrate"', MANIFEST)
    if schema != SCHEMA:
        raise ArtifactError(f"manifest schema {schema} is not supported (this client reads schema {SCHEMA})", MANIFEST)
    known = {"schema", "name", "version", "created", "tool", "files", "io", "metadata"}
    extra = sorted(set(m) - known)
    if extra:
        raise ArtifactError(f"manifest: unknown field {extra[0]!r}", MANIFEST)
    files = m.get("files")
    if not isinstance(files, list) or not files:
        raise ArtifactError("manifest lists no files", MANIFEST)
    seen = set()
    for f in files:
        if not isinstance(f, dict) or set(f) != {"path", "sha256", "size"}:
            raise ArtifactError(f"manifest: malformed file entry {f!r}", MANIFEST)
        p = f["path"]
        why = _check_path(p)
        if why:
            raise ArtifactError("manifest: " + why, MANIFEST)
        if p in seen:
            raise ArtifactError(f"manifest lists {p} twice", MANIFEST)
        seen.add(p)
        h = f["sha256"]
        if not (isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)):
            raise ArtifactError(f"manifest: {p}: sha256 {h!r} is not 64 lower-case hex digits", MANIFEST)
        if not isinstance(f["size"], int) or isinstance(f["size"], bool) or f["size"] < 0:
            raise ArtifactError(f"manifest: {p}: bad size {f['size']!r}", MANIFEST)
    if MODEL not in seen:
        raise ArtifactError(f"manifest lists no {MODEL}", MANIFEST)
    return m


def _key_id(pub: bytes) -> str:
    return hashlib.sha256(pub).hexdigest()[:16]


def _public_key_bytes(key: Union[str, os.PathLike, bytes]) -> bytes:
    """The 32 bytes of an ed25519 public key: raw bytes, PEM bytes ("POLICYD ED25519 PUBLIC
    KEY", as `policyctl artifacts keygen` writes), or the path of such a PEM file."""
    import base64

    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    pem = bytes(key) if isinstance(key, (bytes, bytearray)) else Path(key).read_bytes()
    lines = pem.decode("ascii", "replace").strip().splitlines()
    want = "POLICYD ED25519 PUBLIC KEY"
    if len(lines) < 3 or lines[0] != f"-----BEGIN {want}-----" or lines[-1] != f"-----END {want}-----":
        raise InvalidArgument(f"public key: not a PEM block of type {want!r}")
    raw = base64.b64decode("".join(lines[1:-1]))
    if len(raw) != 32:
        raise InvalidArgument(f"public key: {want} has {len(raw)} bytes, want 32")
    return raw


def _check_signature(manifest: bytes, sig_file: bytes, keys: Sequence[bytes]) -> str:
    import base64

    try:
        sig = json.loads(sig_file)
        assert isinstance(sig, dict) and set(sig) == {"key_id", "signature"}
        raw = base64.b64decode(sig["signature"], validate=True)
    except Exception:
        raise ArtifactError("malformed signature file", SIGNATURE) from None
    if len(raw) != 64:
        raise ArtifactError("malformed signature (want 64 bytes of base64)", SIGNATURE)
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise PolicydError(
            "verifying a signature needs the cryptography package (Debian: python3-cryptography)") from None
    known = False
    for k in keys:
        if _key_id(k) != sig["key_id"]:
            continue
        known = True
        try:
            Ed25519PublicKey.from_public_bytes(k).verify(raw, manifest)
            return sig["key_id"]
        except InvalidSignature:
            pass
    if not known:
        raise ArtifactError(f"signed by key {sig['key_id']}, which is not trusted", SIGNATURE)
    raise ArtifactError(
        f"bad signature: manifest.json does not match the signature of key {sig['key_id']}", SIGNATURE)


class _Artifact:
    """A verified version folder: its manifest, digest and the bytes of its files as read
    during verification (so what is loaded is exactly what was hashed)."""

    def __init__(self, dir: Path, manifest: dict, digest: str, files: dict[str, bytes], signed_by: str):
        self.dir, self.manifest, self.digest, self.files, self.signed_by = dir, manifest, digest, files, signed_by

    @property
    def ref(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"


def verify_artifact(artifact_dir: Union[str, os.PathLike],
                    public_keys: Optional[Sequence[Union[str, os.PathLike, bytes]]] = None) -> _Artifact:
    """Verifies a version folder as the server does before loading it (artifacts.Verify): the
    manifest (schema 2, fields, file paths), every listed file a regular file of its size and
    SHA-256, no unlisted file and no symlink, and, when public keys are given, manifest.sig
    made by one of them. Raises ArtifactError naming the file; returns the verified bytes."""
    d = Path(artifact_dir)
    try:
        st = os.lstat(d)
    except OSError as e:
        raise NotFound(f"artifact {d}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ArtifactError(f"version folder {d} is a symlink; version folders must be real folders")
    if not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(f"{d} is not a folder")
    try:
        raw = _read_regular(d / MANIFEST)
    except FileNotFoundError:
        raise ArtifactError(f"no {MANIFEST} in {d}: add the model with policyctl artifacts add", MANIFEST) from None
    m = _parse_manifest(raw)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()

    signed_by = ""
    sig_path = d / SIGNATURE
    keys = [_public_key_bytes(k) for k in (public_keys or [])]
    if keys:
        try:
            sig = _read_regular(sig_path)
        except FileNotFoundError:
            raise ArtifactError("unsigned artifact; a public key was given", SIGNATURE) from None
        signed_by = _check_signature(raw, sig, keys)

    listed = {f["path"]: f for f in m["files"]}
    for root, dirs, names in os.walk(d):
        for n in dirs + names:
            full = Path(root) / n
            rel = full.relative_to(d).as_posix()
            if full.is_symlink():
                raise ArtifactError(f"{rel} is a symlink; artifact files must be regular files", rel)
            if n in names and rel not in listed and rel not in (MANIFEST, SIGNATURE):
                raise ArtifactError(f"{rel} is not listed in the manifest", rel)
    files: dict[str, bytes] = {}
    for p, f in listed.items():
        try:
            b = _read_regular(d / p)
        except FileNotFoundError:
            raise ArtifactError(f"{p}: listed in the manifest but missing", p) from None
        if len(b) != f["size"]:
            raise ArtifactError(f"{p}: size {len(b)}, manifest says {f['size']}", p)
        h = hashlib.sha256(b).hexdigest()
        if h != f["sha256"]:
            raise ArtifactError(f"{p}: sha256 {h}, manifest says {f['sha256']}", p)
        files[p] = b
    return _Artifact(d, m, digest, files, signed_by)


def _read_regular(p: Path) -> bytes:
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArtifactError(f"{p.name} is not a regular file", p.name)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# The policy


class _IO:
    __slots__ = ("name", "dtype", "pd_dtype", "rank", "dims", "batch_dim", "index")

    def __init__(self, info: _capi.IOInfo, index: int):
        self.name = info.name.decode()
        self.pd_dtype = info.dtype
        if info.dtype not in _capi.DTYPES:
            raise InvalidArgument(f"{self.name}: data type {info.dtype} is not supported by policyd.local")
        self.dtype = _capi.DTYPES[info.dtype][0]
        self.rank = info.rank
        self.dims = tuple(info.dims[: info.rank])
        self.batch_dim = info.batch_dim
        self.index = index


class LocalPolicy:
    """A policy run in-process on libpolicyd's engine, with the API of ``policyd.Policy``.

    artifact_dir: a version folder (``<repository>/<model>/<version>/`` with manifest.json),
        verified completely before loading. public_keys: ed25519 public keys (PEM paths or
        bytes, as ``policyctl artifacts keygen`` writes them); when given, manifest.sig must be
        made by one of them.
    backend: "cpu" (default), "cuda" or "tensorrt" when the plugins and a GPU are there.
    threads: the engine's threads (the server's engine.threads, default 1).
    states: recurrent state pairs ``["in:out", ...]`` (the server's models[].sequence.states):
        in an ``episode()`` each state input is fed from its output of the step before (zeros
        at the start), so the caller sends only observations.
    library: libpolicyd.so (or its folder); default: $POLICYD_LIB, the repository's lib/, lib/
        beside a policyd on PATH, /opt/policyd/lib.
    output: the output ``act`` returns as an array; by default the only output (state outputs
        aside) or, when there are several, a dict of all of them.
    seed: the context's random stream for unseeded calls (the server's instance 0 uses
        engine.seed, default 0). params: backend parameters {"tensorrt.precision": "fp16"}.
    max_batch_size: the server's batching.max_batch_size (default 32; 0: batching disabled),
        which decides the row seeds of a seeded call as the server's batcher does: one seed per
        row up to it, a single seed (row 0's) for a larger call or with batching disabled.

    Thread safety: one engine context per LocalPolicy, guarded by a lock: ``act`` is safe from
    any thread, and calls from several threads run one at a time. For parallel evaluation make
    one LocalPolicy per thread (each verifies and builds its own engine).
    """

    def __init__(self, artifact_dir: Union[str, os.PathLike], *, backend: str = "cpu", threads: int = 1,
                 states: Optional[Sequence[str]] = None, library: Optional[str] = None,
                 output: Optional[str] = None, public_keys: Optional[Sequence[Union[str, bytes]]] = None,
                 seed: int = 0, params: Optional[Mapping[str, str]] = None, max_batch_size: int = 32):
        self._lib = _capi.load(library)
        L = self._lib.lib
        check = self._lib.check
        self.artifact = verify_artifact(artifact_dir, public_keys)
        a = self.artifact
        self.model, self.version = a.manifest["name"], a.manifest["version"]
        self._engine = self._ctx = None
        self._mu = threading.Lock()

        opts = ctypes.c_void_p()
        check(L.pd_engine_options_create(ctypes.byref(opts)))
        try:
            check(L.pd_engine_options_set_backend(opts, backend.encode()))
            if threads > 0:
                check(L.pd_engine_options_set_threads(opts, int(threads)))
            # As repository.engineOptions and bridge.NewEngine: name, model digest, params.
            check(L.pd_engine_options_set_name(opts, a.ref.encode()))
            model_sha = next(f["sha256"] for f in a.manifest["files"] if f["path"] == MODEL)
            check(L.pd_engine_options_set_model_digest(opts, ("sha256:" + model_sha).encode()))
            for k in sorted(params or {}):
                check(L.pd_engine_options_set_param(opts, k.encode(), str(params[k]).encode()))
            # External data: the library reads only the files the model names; the server
            # passes those (artifacts.ExternalData), here every listed data file is offered
            # (engine caches aside), as bytes: the library never opens files.
            for p, b in a.files.items():
                if p != MODEL and not p.startswith("engines/"):
                    check(L.pd_engine_options_add_external(opts, p.encode(), b, len(b)))
            onnx = a.files[MODEL]
            eng = ctypes.c_void_p()
            try:
                check(L.pd_engine_create(self._lib.runtime, onnx, len(onnx), opts, ctypes.byref(eng)))
            except PolicydError as e:
                e.args = (f"{a.ref}: {e.message}",)
                e.message = e.args[0]
                raise
            self._engine = eng
        finally:
            L.pd_engine_options_destroy(opts)
        ctx = ctypes.c_void_p()
        check(L.pd_context_create(self._engine, ctypes.byref(ctx)))
        self._ctx = ctx
        check(L.pd_context_set_seed(ctx, int(seed) & _U64))
        self.backend = L.pd_engine_backend(self._engine).decode()

        self.inputs = self._infos(L.pd_engine_input_count, L.pd_engine_input_info)
        self.outputs = self._infos(L.pd_engine_output_count, L.pd_engine_output_info)
        self.batchable = bool(L.pd_engine_batchable(self._engine))
        self._in_by_name = {x.name: x for x in self.inputs}
        self._out_by_name = {x.name: x for x in self.outputs}
        self.states = self._parse_states(states or [])
        state_ins = {i for i, _ in self.states}
        state_outs = {o for _, o in self.states}
        self._obs_inputs = [x for x in self.inputs if x.name not in state_ins]
        if output is not None and output not in self._out_by_name:
            raise NotFound(f"{a.ref}: no output {output!r} (outputs: {', '.join(self._out_by_name)})")
        self.output = output
        self._returned = [output] if output else [x.name for x in self.outputs if x.name not in state_outs]

        # Preallocated ABI arrays: filled in place on every call.
        self._in_t = (_capi.Tensor * len(self.inputs))()
        self._out_t = (_capi.Tensor * len(self.outputs))()
        for t, x in zip(self._in_t, self.inputs):
            t.dtype = x.pd_dtype
        self._seeds = (ctypes.c_uint64 * 64)()
        self._max_batch = int(max_batch_size)
        self._row_seeded = False
        self._in_ptr = ctypes.cast(self._in_t, ctypes.POINTER(_capi.Tensor))
        self._out_ptr = ctypes.cast(self._out_t, ctypes.POINTER(_capi.Tensor))
        self._run = L.pd_context_run
        self._n_in, self._n_out = len(self.inputs), len(self.outputs)
        self._outputs_by_index = self.outputs
        self._plans: dict = {}
        self._fast_ok = len(self.inputs) == 1 and not self.states and len(self._returned) == 1

    # -- set-up helpers

    def _infos(self, count, info) -> list[_IO]:
        out = []
        for i in range(count(self._engine)):
            x = _capi.IOInfo()
            self._lib.check(info(self._engine, i, ctypes.byref(x)))
            out.append(_IO(x, i))
        return out

    def _parse_states(self, pairs: Sequence[str]) -> list[tuple[str, str]]:
        ref = self.artifact.ref
        out = []
        for p in pairs:
            i, sep, o = p.partition(":")
            if not sep or not i or not o:
                raise InvalidArgument(f"{ref}: state {p!r}: want \"input:output\"")
            if i not in self._in_by_name:
                raise InvalidArgument(f"{ref}: state {p!r}: no input {i!r} (inputs: {', '.join(self._in_by_name)})")
            if o not in self._out_by_name:
                raise InvalidArgument(f"{ref}: state {p!r}: no output {o!r} (outputs: {', '.join(self._out_by_name)})")
            si, so = self._in_by_name[i], self._out_by_name[o]
            if si.pd_dtype != so.pd_dtype:
                raise InvalidArgument(f"{ref}: state {p!r}: input and output data types differ")
            inner = [d for k, d in enumerate(si.dims) if not (k == 0 and si.batch_dim == 0)]
            if any(d < 0 for d in inner):
                raise InvalidArgument(f"{ref}: state {p!r}: input {i!r} has a dynamic dimension besides the batch")
            out.append((i, o))
        return out

    # -- running

    def act(self, obs: Obs, *, seed: Optional[int] = None, priority: Optional[int] = None,
            timeout: Optional[float] = None) -> Union[np.ndarray, dict[str, np.ndarray]]:
        """Runs the policy on one observation (no batch dimension) or a batch.

        obs: an array for a model with one input (besides state inputs), else a dict input
        name -> array. Arrays are converted to the input's dtype. seed: makes the samples of
        stochastic heads reproducible exactly as the server's ``seed`` parameter (row j draws
        from seed + j*0x9e3779b97f4a7c15). priority and timeout are accepted for the API's
        sake and have no effect (nothing queues in-process).
        Returns the output (see ``output``) or a dict, without the batch dimension when the
        observation had none."""
        if type(obs) is np.ndarray and self._fast_ok:
            plan = self._plans.get((obs.shape, obs.dtype))
            if plan is not None:
                with self._mu:
                    return self._fast(plan, obs, seed)
            elif len(self._plans) < 64:
                self._add_plan(obs)
        with self._mu:
            return self._step(obs, seed, None)

    # The fast path of a one-input model called with an array: per input shape and dtype a
    # plan (a preallocated input buffer the ABI tensor points at, and a view of the output's
    # memory in the context while the context keeps it there), so that a call costs one copy
    # in, the run, and one copy out.

    def _add_plan(self, obs: np.ndarray) -> None:
        x = self.inputs[0]
        if not np.can_cast(obs.dtype, x.dtype, "same_kind"):
            return
        if x.batch_dim == 0 and obs.ndim == x.rank - 1:
            single, shape = True, (1,) + obs.shape
        elif obs.ndim == x.rank:
            single, shape = False, obs.shape
        else:
            return  # the general path says what is wrong
        if any(d >= 0 and d != n for k, (d, n) in enumerate(zip(x.dims, shape)) if not (k == 0 and x.batch_dim == 0)):
            return
        out = self._out_by_name[self._returned[0]]
        # an output whose shape may vary beyond the batch is checked dim by dim on each call
        dynamic = any(d < 0 for k, d in enumerate(out.dims) if not (k == 0 and out.batch_dim == 0))
        self._plans[(obs.shape, obs.dtype)] = _Plan(np.zeros(shape, x.dtype), single, out.index, dynamic)

    def _fast(self, plan: "_Plan", obs: np.ndarray, seed: Optional[int]):
        if not self._ctx:
            raise PolicydError(f"{self.artifact.ref}: LocalPolicy is closed")
        plan.buf[...] = obs
        t = self._in_t[0]
        t.rank = plan.rank
        t.dims[:plan.rank] = plan.dims
        t.data = plan.ptr
        t.byte_size = plan.nbytes
        if seed is not None or self._row_seeded:
            self._set_seeds(seed, plan.rows)
        err = self._run(self._ctx, self._in_ptr, self._n_in, self._out_ptr, self._n_out)
        if err:
            self._raise_run(err)
        o = self._out_t[plan.out]
        if o.data != plan.out_ptr or o.byte_size != plan.out_nbytes or (
                plan.dynamic and list(o.dims[:o.rank]) != plan.out_dims):
            y = self._copy_out(self._outputs_by_index[plan.out])
            if plan.single and self._outputs_by_index[plan.out].batch_dim == 0 and y.ndim > 0 and y.shape[0] == 1:
                y = y[0]
            plan.out_ptr, plan.out_nbytes, plan.out_dims = o.data, o.byte_size, list(o.dims[:o.rank])
            plan.view = np.frombuffer((ctypes.c_char * o.byte_size).from_address(o.data), y.dtype).reshape(y.shape)
            return y
        return plan.view.copy()

    @contextmanager
    def episode(self, sequence_id: Any = None) -> Iterator["LocalEpisode"]:
        """A context manager running one episode: state inputs start at zero and are fed from
        the state outputs of the step before (the server's sequence, batch 1). The state is
        dropped when the block ends, also on an exception. sequence_id is accepted for the
        API's sake; several episodes may be open at once (each keeps its own state)."""
        ep = LocalEpisode(self, sequence_id)
        try:
            yield ep
        finally:
            ep.close()

    def close(self) -> None:
        """Releases the context and the engine (idempotent)."""
        with self._mu:
            if self._ctx:
                self._lib.lib.pd_context_destroy(self._ctx)
                self._ctx = None
            if self._engine:
                self._lib.lib.pd_engine_destroy(self._engine)
                self._engine = None

    def __enter__(self) -> "LocalPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _step(self, obs: Obs, seed: Optional[int], state: Optional[dict[str, np.ndarray]]):
        if not self._ctx:
            raise PolicydError(f"{self.artifact.ref}: LocalPolicy is closed")
        ref = self.artifact.ref
        if isinstance(obs, Mapping):
            given = obs
        else:
            free = self._obs_inputs if self.states else self.inputs
            if len(free) != 1:
                raise InvalidArgument(
                    f"{ref} has inputs {', '.join(x.name for x in free)}: pass a dict name -> array")
            given = {free[0].name: obs}
        if state is not None:
            for k in given:
                if k in state:
                    raise InvalidArgument(f"{ref}: input {k!r} is a state input; the episode feeds it")
        single: Optional[bool] = None
        rows = -1
        keep = []  # the arrays whose memory the run reads
        for x, t in zip(self.inputs, self._in_t):
            if state is not None and x.name in state:
                a = state[x.name]
                if a.ndim == 0:  # first step: zeros, batch 1
                    a = np.zeros([1 if (k == 0 and x.batch_dim == 0) else d for k, d in enumerate(x.dims)], x.dtype)
                    state[x.name] = a
            else:
                v = given.get(x.name)
                if v is None:
                    if state is None and any(x.name == i for i, _ in self.states):
                        v = np.zeros([1 if (k == 0 and x.batch_dim == 0) else d for k, d in enumerate(x.dims)], x.dtype)
                    else:
                        raise InvalidArgument(f"{ref}: missing input {x.name!r}")
                try:
                    a = np.ascontiguousarray(v, dtype=x.dtype)
                except (TypeError, ValueError) as e:
                    raise InvalidArgument(f"{ref}: input {x.name!r}: not convertible to {x.dtype}: {e}") from None
                if x.batch_dim == 0 and a.ndim == x.rank - 1:
                    is_single = True
                    a = a.reshape((1,) + a.shape)
                elif a.ndim == x.rank:
                    is_single = False
                else:
                    raise InvalidArgument(
                        f"{ref}: input {x.name!r}: rank {a.ndim}, the model takes {x.rank}"
                        + (f" (or {x.rank - 1} for one observation)" if x.batch_dim == 0 else ""))
                if x.batch_dim == 0:
                    if single is None:
                        single, rows = is_single, a.shape[0]
                    elif single != is_single or rows != a.shape[0]:
                        raise InvalidArgument(f"{ref}: input {x.name!r}: batch differs from the other inputs'")
            keep.append(a)
            t.rank = a.ndim
            for k, d in enumerate(a.shape):
                t.dims[k] = d
            t.data = a.__array_interface__["data"][0]
            t.byte_size = a.nbytes
        if len(given) > len(self._obs_inputs) + (0 if state is not None else len(self.states)):
            unknown = [k for k in given if k not in self._in_by_name]
            if unknown:
                raise NotFound(f"{ref}: no input {unknown[0]!r} (inputs: {', '.join(self._in_by_name)})")
        if state is not None and rows > 1:
            raise InvalidArgument(f"{ref}: an episode step has batch size 1, got {rows}")

        if seed is not None or self._row_seeded:
            self._set_seeds(seed, rows)
        err = self._run(self._ctx, self._in_ptr, self._n_in, self._out_ptr, self._n_out)
        if err:
            self._raise_run(err)
        if state is not None:
            for i, o in self.states:
                state[i] = self._copy_out(self._out_by_name[o])
        res = {}
        for name in self._returned:
            y = self._copy_out(self._out_by_name[name])
            if single and self._out_by_name[name].batch_dim == 0 and y.ndim > 0 and y.shape[0] == 1:
                y = y[0]
            res[name] = y
        if len(res) == 1:
            return next(iter(res.values()))
        return res

    def _set_seeds(self, seed: Optional[int], rows: int) -> None:
        # Row seeds as engines.Batcher: one per row for a batchable model whose call fits in
        # max_batch_size (rowsOf), else one (a request that runs alone, or Pool.Do when batching
        # is off); without a seed, back to the context's stream.
        L = self._lib.lib
        if seed is None:
            self._lib.check(L.pd_context_set_row_seeds(self._ctx, None, 0))
            self._row_seeded = False
            return
        n = rows if self.batchable and 1 <= rows <= self._max_batch else 1
        if n > len(self._seeds):
            self._seeds = (ctypes.c_uint64 * n)()
        s = int(seed) & _U64
        for j in range(n):
            self._seeds[j] = (s + j * _PHI) & _U64
        self._lib.check(L.pd_context_set_row_seeds(self._ctx, self._seeds, n))
        self._row_seeded = True

    def _raise_run(self, err) -> None:
        try:
            self._lib.check(err)
        except PolicydError as e:
            e.args = (f"{self.artifact.ref}: {e.message}",)
            e.message = e.args[0]
            raise

    def _copy_out(self, x: _IO) -> np.ndarray:
        t = self._out_t[x.index]
        shape = tuple(t.dims[: t.rank])
        dt = _capi.DTYPES[t.dtype][0]
        y = np.empty(shape, dt)
        if t.byte_size:
            ctypes.memmove(y.__array_interface__["data"][0], t.data, t.byte_size)
        return y


class _Plan:
    __slots__ = ("buf", "ptr", "nbytes", "rank", "dims", "rows", "single", "out", "dynamic", "out_ptr",
                 "out_nbytes", "out_dims", "view")

    def __init__(self, buf: np.ndarray, single: bool, out: int, dynamic: bool):
        self.buf, self.single, self.out, self.dynamic = buf, single, out, dynamic
        self.out_dims: list = []
        self.ptr = buf.__array_interface__["data"][0]
        self.nbytes, self.rank, self.dims = buf.nbytes, buf.ndim, list(buf.shape)
        self.rows = buf.shape[0] if buf.ndim else 1
        self.out_ptr, self.out_nbytes, self.view = None, -1, None


class LocalEpisode:
    """One episode of a LocalPolicy: ``act`` as LocalPolicy's, with the state pairs carried
    between steps in-process. Made by ``LocalPolicy.episode()``."""

    def __init__(self, policy: LocalPolicy, sequence_id: Any = None):
        if not policy.states:
            raise InvalidArgument(
                f"{policy.artifact.ref}: an episode needs the model's state pairs: LocalPolicy(..., states=[\"in:out\"])")
        self.policy = policy
        self.sequence_id = sequence_id
        self._state: Optional[dict[str, np.ndarray]] = {i: np.empty(()) for i, _ in policy.states}
        self.steps = 0

    def act(self, obs: Obs, *, seed: Optional[int] = None, priority: Optional[int] = None,
            timeout: Optional[float] = None):
        if self._state is None:
            raise PolicydError(f"{self.policy.artifact.ref}: the episode has ended")
        with self.policy._mu:
            out = self.policy._step(obs, seed, self._state)
        self.steps += 1
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The current state inputs (copies)."""
        return {k: v.copy() for k, v in (self._state or {}).items()}

    def close(self) -> None:
        self._state = None
