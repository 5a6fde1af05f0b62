"""The HTTP transport: KServe v2 over a lean HTTP/1.1 connection (:mod:`policyd._wire`) with
keep-alive connections and binary tensors."""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import errors
from ._types import BF16, DTYPES, SIZES, datatype_of, decode_json, decode_raw, tensor_bytes
from ._wire import Connection, ProtocolError, Response

__all__ = ["Client", "InferResult"]

_HEADER_LEN = "Inference-Header-Content-Length"
_HEADER_LEN_KEY = b"inference-header-content-length"
_dumps = json.JSONEncoder(separators=(",", ":")).encode
#: The cached request-head and answer-head entries per client (each cache is cleared when full).
_CACHE_SIZE = 256
_PARAMS_BINARY_OUTPUT = b'"parameters":{"binary_data_output":true},'


def request_parameters(seed: Optional[int], priority: Optional[int], timeout: Optional[float],
                       sequence_id: Union[int, str, None], sequence_start: bool,
                       sequence_end: bool, parameters: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The parameters of an inference request, for HTTP and gRPC alike: the scheduling ones
    (``timeout`` in seconds, sent in microseconds), the sequence's when ``sequence_id`` is
    given, then ``parameters`` as given."""
    params: Dict[str, Any] = {}
    if seed is not None:
        params["seed"] = int(seed)
    if priority is not None:
        params["priority"] = int(priority)
    if timeout is not None:
        params["timeout"] = max(1, int(timeout * 1e6))
    if sequence_id is not None:
        params["sequence_id"] = sequence_id
        if sequence_start:
            params["sequence_start"] = True
        if sequence_end:
            params["sequence_end"] = True
    if parameters:
        params.update(parameters)
    return params


class InferResult(dict):
    """The outputs of one inference: a dict name -> numpy array, in the answer's order.

    ``.model_name``, ``.model_version`` and ``.id`` (the request's ``id`` echoed, or None) come from
    the answer.
    """

    model_name: str = ""
    model_version: str = ""
    id: Optional[str] = None


def _is_dropped(sock: Optional[socket.socket]) -> bool:
    """True when an idle keep-alive socket cannot be reused: the peer closed it (readable and a
    peek reads b''), it reset, or it holds unexpected bytes (as urllib3's is_connection_dropped)."""
    if sock is None:
        return True
    try:
        p = select.poll()
        p.register(sock, select.POLLIN)
        if not p.poll(0):
            return False
        return True  # readable while idle: EOF, an error or stray bytes; none can be reused
    except (OSError, ValueError):
        return True


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Client:
    """A policyd client over HTTP (``http://host:port``), or over gRPC for ``grpc://host:port``
    (then an instance of :class:`policyd.grpc.Client`, which needs the ``grpc`` extra).

    ``timeout`` (seconds) bounds connecting and each wait for the answer; ``retries`` bounds the
    retries of a request that certainly did not run (503 with Retry-After, or a connection that
    could not be made), after a wait of ``max(Retry-After, backoff·2^attempt)`` times a random
    factor in [1, 1.25), capped at ``max_backoff`` but never below Retry-After.
    Safe for concurrent use from many threads: each request takes a keep-alive connection from a
    pool (at most ``pool_size`` kept idle) and gives it back.
    """

    def __new__(cls, url: str = "http://127.0.0.1:8000", *args: Any, **kwargs: Any) -> Any:
        if cls is Client and isinstance(url, str) and url.startswith("grpc://"):
            from .grpc import Client as GrpcClient
            return GrpcClient(url, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.05, max_backoff: float = 5.0, pool_size: int = 8,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme != "http":
            raise ValueError(f"policyd.Client: URL {url!r}: the scheme must be http:// or grpc://")
        self.url = url
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self._prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.pool_size = pool_size
        self._headers = dict(headers or {})
        for k, v in list(self._headers.items()) + [("URL path", self._prefix)]:
            if any(c in str(k) + str(v) for c in "\r\n\0") or (k == "URL path" and " " in v):
                raise ValueError(f"policyd.Client: header or URL path {k!r}: {v!r} holds a control character")
        host = "[" + self.host + "]" if ":" in self.host else self.host
        self._host_line = f"Host: {host}\r\n" if self.port == 80 else f"Host: {host}:{self.port}\r\n"
        for k in self._headers:
            if k.lower() in ("content-length", "inference-header-content-length", "transfer-encoding"):
                raise ValueError(f"policyd.Client: header {k!r} is the client's own to set")
        if any(k.lower() == "host" for k in self._headers):
            self._host_line = ""  # the caller's own Host header, sent once
        self._idle: List[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # infer's caches: the constant request-head lines per (model, version, content type), the
        # JSON head's inputs/outputs part per input signature, the decoding plan per answer head.
        self._heads: Dict[Tuple[str, Optional[str], bool], Tuple[str, bytes]] = {}
        self._templates: Dict[Any, bytes] = {}
        self._answers: Dict[bytes, Any] = {}

    # --- connections -------------------------------------------------------------------------

    def _get_conn(self) -> Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return Connection(self.host, self.port)
            if _is_dropped(conn.sock):
                conn.close()
                continue
            return conn

    def _put_conn(self, conn: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; requests in flight finish on theirs."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _once(self, method: str, path: str, parts: Sequence[bytes], timeout: Optional[float]) -> Response:
        conn = self._get_conn()
        t = timeout if timeout is not None else self.timeout
        if conn.sock is None:
            try:
                conn.connect(t)  # nothing is sent yet: a failure here may be retried
            except socket.timeout:
                conn.close()
                raise errors.ConnectError(f"connect to {self.host}:{self.port}: timed out", sent=False) from None
            except OSError as e:
                conn.close()
                raise errors.ConnectError(f"connect to {self.host}:{self.port}: {e}", sent=False) from None
        elif conn.sock.gettimeout() != t:
            conn.sock.settimeout(t)
        try:
            resp = conn.request(parts, method == "HEAD")
        except socket.timeout:
            conn.close()
            raise errors.Timeout(f"{method} {path}: no answer within the timeout; the request may have run") from None
        except ProtocolError as e:
            conn.close()
            raise errors.ConnectError(f"{method} {path}: unreadable answer from {self.host}:{self.port}: {e}; "
                                      "the request may have run, so it is not retried", sent=True) from None
        except OSError as e:
            conn.close()
            raise errors.ConnectError(f"{method} {path}: connection lost after sending ({e!r}); "
                                      "the request may have run, so it is not retried", sent=True) from None
        if resp.will_close:
            conn.close()
        else:
            self._put_conn(conn)
        return resp

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                 retry_connect: bool = True) -> Response:
        """One request with the retry rules; returns the answer; raises for failures of the
        transport only (callers map statuses)."""
        h = dict(self._headers)
        if headers:
            h.update(headers)
        h["Content-Length"] = str(len(body)) if body is not None else "0"
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._host_line}" + \
            "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        parts = [head.encode("latin-1")]
        if body:
            parts.append(body)
        return self._send(method, path, parts, timeout, retry_connect)

    def _send(self, method: str, path: str, parts: Sequence[bytes], timeout: Optional[float] = None,
              retry_connect: bool = True) -> Response:
        """Send the request ``parts`` (head and body) with the retry rules."""
        attempt = 0
        while True:
            retry_after: Optional[float] = None
            try:
                resp = self._once(method, path, parts, timeout)
            except errors.ConnectError as e:
                if e.sent or not retry_connect or attempt >= self.retries:
                    raise
            else:
                if resp.status != 503:
                    return resp
                retry_after = _retry_after(resp.getheader("Retry-After"))
                if retry_after is None or attempt >= self.retries:
                    return resp
            delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (1 + 0.25 * random.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            time.sleep(delay)
            attempt += 1

    def _raise(self, resp: Response) -> None:
        status, buf = resp.status, resp.body
        msg, rid = "", resp.getheader("X-Request-ID")
        try:
            doc = json.loads(bytes(buf))
            msg = doc.get("error", "")
            rid = doc.get("request_id", rid)
        except (ValueError, AttributeError):
            msg = bytes(buf[:500]).decode("utf-8", "replace")
        if not msg:
            msg = resp.getheader("X-Not-Ready-Reason") or resp.reason or f"HTTP {status}"
        raise errors.from_status(status, msg, rid, _retry_after(resp.getheader("Retry-After")))

    def _get_json(self, path: str) -> Any:
        resp = self._request("GET", path)
        if resp.status != 200:
            self._raise(resp)
        return json.loads(bytes(resp.body))

    @staticmethod
    def _model_path(model: str, version: Optional[str]) -> str:
        p = "/v2/models/" + urllib.parse.quote(model, safe="")
        if version is not None:
            p += "/versions/" + urllib.parse.quote(str(version), safe="")
        return p

    # --- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        """Whether the server process serves (GET /v2/health/live)."""
        return self._request("GET", "/v2/health/live").status == 200

    def ready(self) -> bool:
        """Whether every configured model version is loaded and warmed up (GET /v2/health/ready)."""
        return self._request("GET", "/v2/health/ready").status == 200

    def model_ready(self, model: str, version: Optional[str] = None) -> bool:
        """Whether a model version (default: the model's default version) is ready; NotFound for an
        unknown model or version."""
        resp = self._request("GET", self._model_path(model, version) + "/ready")
        if resp.status == 200:
            return True
        if resp.status in (400, 503):
            return False
        self._raise(resp)
        return False

    def server_metadata(self) -> Dict[str, Any]:
        """GET /v2: name, version, extensions."""
        return self._get_json("/v2")

    def metadata(self, model: str, version: Optional[str] = None) -> Dict[str, Any]:
        """The model's metadata (name, versions, inputs and outputs with datatype and shape; -1 is free)."""
        return self._get_json(self._model_path(model, version))

    def config(self, model: str, version: Optional[str] = None) -> Dict[str, Any]:
        """Triton's model configuration document of the version (max_batch_size, sequence_batching, ...)."""
        return self._get_json(self._model_path(model, version) + "/config")

    def stats(self, model: Optional[str] = None, version: Optional[str] = None) -> Dict[str, Any]:
        """Triton's statistics (GET /v2/models[/m[/versions/v]]/stats)."""
        path = "/v2/models/stats" if model is None else self._model_path(model, version) + "/stats"
        return self._get_json(path)

    # --- inference ---------------------------------------------------------------------------

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Optional[Sequence[str]] = None,
              version: Optional[str] = None, *, binary: bool = True, seed: Optional[int] = None,
              priority: Optional[int] = None, timeout: Optional[float] = None,
              sequence_id: Union[int, str, None] = None, sequence_start: bool = False,
              sequence_end: bool = False, parameters: Optional[Mapping[str, Any]] = None,
              request_id: Optional[str] = None) -> InferResult:
        """Run the model on ``inputs`` (name -> numpy array, or :class:`policyd.BF16`).

        ``outputs`` selects and orders the outputs (default: all, in the model's order).
        ``binary`` (default) sends and receives tensors with the binary tensor extension;
        ``binary=False`` sends JSON (FP16 and BF16 inputs, and float inputs holding NaN or ±Inf,
        still travel in binary: JSON cannot carry them; JSON outputs answer NaN and ±Inf as NaN). ``seed``, ``priority`` and ``timeout`` (seconds, the longest
        the request may wait in the server's queue; sent in microseconds) are the server's
        scheduling parameters; ``sequence_id``/``sequence_start``/``sequence_end`` make the request
        a step of a server-side sequence. Extra top-level ``parameters`` are sent as given.
        """
        params = request_parameters(seed, priority, timeout, sequence_id, sequence_start,
                                    sequence_end, parameters)
        is_step = sequence_id is not None
        if binary and outputs is None:
            params["binary_data_output"] = True

        sig: List[Any] = []
        chunks: List[Any] = []
        for name, value in inputs.items():
            if not isinstance(value, (np.ndarray, BF16)):
                value = np.asarray(value)
            dt = datatype_of(value)
            if dt == "BYTES" or not (binary or dt in ("FP16", "BF16")
                                     or (value.dtype.kind == "f" and not np.isfinite(value).all())):
                sig = []  # a JSON input: the general path below
                break
            raw = tensor_bytes(value, dt) if dt == "BF16" or value.nbytes < 65536 else _raw_view(value, dt)
            chunks.append(raw)
            sig.append((name, dt, value.shape, len(raw)))
        if sig:
            # Every input travels in binary: the JSON head is the cached inputs/outputs part behind
            # the per-call id and parameters.
            key = (tuple(sig), binary, tuple(outputs) if outputs is not None else None)
            tmpl = self._templates.get(key)
            if tmpl is None:
                tmpl = _dumps({"inputs": [{"name": n, "datatype": d, "shape": list(sh),
                                           "parameters": {"binary_data_size": size}} for n, d, sh, size in sig],
                               **_outputs_part(outputs, binary)}).encode()[1:]
                if len(self._templates) >= _CACHE_SIZE:
                    self._templates.clear()
                self._templates[key] = tmpl
            if params == {"binary_data_output": True}:
                pre = _PARAMS_BINARY_OUTPUT
            elif params:
                pre = b'"parameters":' + _dumps(params).encode() + b","
            else:
                pre = b""
            if request_id is not None:
                pre = b'"id":' + _dumps(request_id).encode() + b"," + pre
            head = b"{" + pre + tmpl
        else:
            head, chunks = _json_head(inputs, binary, params, outputs, request_id)
        hkey = (model, version, bool(chunks))
        cached = self._heads.get(hkey)
        if cached is None:
            path = self._model_path(model, version) + "/infer"
            h = dict(self._headers)
            h["Content-Type"] = "application/octet-stream" if chunks else "application/json"
            cached = (path, (f"POST {self._prefix}{path} HTTP/1.1\r\n{self._host_line}" +
                             "".join(f"{k}: {v}\r\n" for k, v in h.items())).encode("latin-1"))
            if len(self._heads) >= _CACHE_SIZE:
                self._heads.clear()
            self._heads[hkey] = cached
        if chunks:
            n = len(head)
            for c in chunks:
                n += len(c)
            req_head = cached[1] + b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(head), n)
        else:
            req_head = cached[1] + b"Content-Length: %d\r\n\r\n" % len(head)
        resp = self._send("POST", cached[0], [req_head, head, *chunks], retry_connect=not is_step)
        if resp.status != 200:
            self._raise(resp)
        return self._parse_answer(resp, cache=request_id is None)

    def _parse_answer(self, resp: Response, cache: bool) -> InferResult:
        """The outputs of a 200 answer. A head whose outputs are all binary is decoded once into a
        plan (name, dtype, shape, offset) kept per distinct head: the next identical answer skips
        json.loads. A malformed answer raises ServerError naming what is wrong."""
        buf = resp.body
        hl = resp.headers.get(_HEADER_LEN_KEY)
        try:
            n = int(hl) if hl is not None else len(buf)
        except ValueError:
            raise errors.ServerError(f"malformed answer: {_HEADER_LEN} {hl!r} is not a number", 200) from None
        if not 0 <= n <= len(buf):
            raise errors.ServerError(f"malformed answer: {_HEADER_LEN} {n} is outside the body of {len(buf)} bytes", 200)
        jhead = bytes(buf[:n]) if hl is not None else bytes(buf)
        plan = self._answers.get(jhead) if cache else None
        if plan is None:
            plan = _answer_plan(jhead, n)
            if cache and plan[3] is not None:
                if len(self._answers) >= _CACHE_SIZE:
                    self._answers.clear()
                self._answers[jhead] = plan
        model_name, model_version, rid, outs, doc = plan
        res = InferResult()
        res.model_name = model_name
        res.model_version = model_version
        res.id = rid
        if outs is not None and hl is not None:
            end = outs[-1][4] if outs else n
            if end > len(buf):
                raise errors.ServerError(f"malformed answer: the outputs need {end - n} bytes after the JSON head, "
                                         f"the body has {len(buf) - n}", 200)
            for name, dtype, shape, count, end, dt in outs:
                if dtype is None:
                    res[name] = decode_raw(buf, dt, shape, end - count * 2, count * 2)
                else:
                    res[name] = np.frombuffer(buf, dtype, count, end - count * dtype.itemsize).reshape(shape)
            return res
        pos = n
        for out in doc.get("outputs", ()):
            dt, shape = out["datatype"], out["shape"]
            p = out.get("parameters") or {}
            size = p.get("binary_data_size")
            if size is not None:
                if hl is None or pos + size > len(buf):
                    raise errors.ServerError(f"malformed answer: output {out['name']!r} says {size} binary bytes "
                                             f"at offset {pos}, the body has {len(buf)}", 200)
                res[out["name"]] = decode_raw(buf, dt, shape, pos, size)
                pos += size
            else:
                res[out["name"]] = decode_json(out.get("data", []), dt, shape)
        return res


def _raw_view(value: Any, dt: str) -> Any:
    """A large input's bytes without the tobytes copy when it is already C-contiguous
    little-endian of the right dtype (sent with sendmsg), else a copy."""
    if isinstance(value, np.ndarray) and value.dtype == DTYPES[dt] and value.flags.c_contiguous:
        return memoryview(value.reshape(-1).view(np.uint8))
    return tensor_bytes(value, dt)


def _outputs_part(outputs: Optional[Sequence[str]], binary: bool) -> Dict[str, Any]:
    if outputs is None:
        return {}
    return {"outputs": [{"name": o, "parameters": {"binary_data": True}} if binary else {"name": o}
                        for o in outputs]}


def _json_head(inputs: Mapping[str, Any], binary: bool, params: Dict[str, Any],
               outputs: Optional[Sequence[str]], request_id: Optional[str]) -> Tuple[bytes, List[bytes]]:
    """The general request: JSON inputs (and binary ones where JSON cannot carry the values)."""
    ins: List[Dict[str, Any]] = []
    chunks: List[bytes] = []
    for name, value in inputs.items():
        if not isinstance(value, (np.ndarray, BF16)):
            value = np.asarray(value)
        dt = datatype_of(value)
        shape = list(value.shape)
        if dt == "BYTES":
            flat = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]
            ins.append({"name": name, "datatype": dt, "shape": shape, "data": flat})
        elif binary or dt in ("FP16", "BF16") or (value.dtype.kind == "f" and not np.isfinite(value).all()):
            raw = tensor_bytes(value, dt)
            chunks.append(raw)
            ins.append({"name": name, "datatype": dt, "shape": shape, "parameters": {"binary_data_size": len(raw)}})
        else:
            ins.append({"name": name, "datatype": dt, "shape": shape, "data": value.ravel().tolist()})
    req: Dict[str, Any] = {}
    if request_id is not None:
        req["id"] = request_id
    if params:
        req["parameters"] = params
    req["inputs"] = ins
    req.update(_outputs_part(outputs, binary))
    return _dumps(req).encode(), chunks


def _answer_plan(jhead: bytes, n: int) -> Tuple[str, str, Optional[str], Optional[List[Any]], Any]:
    """(model_name, model_version, id, outs, doc) of an answer's JSON head; ``outs`` lists
    (name, numpy dtype or None for BF16, shape, element count, end offset, datatype) when every
    output is binary and fixed-size (else None: decode from ``doc``)."""
    try:
        doc = json.loads(jhead)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise errors.ServerError(f"malformed answer: the JSON head does not parse ({e}): {jhead[:200]!r}", 200) from None
    outs: Optional[List[Any]] = []
    pos = n
    try:
        for out in doc.get("outputs", ()):
            dt, shape, name = out["datatype"], out["shape"], out["name"]
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is None or dt == "BYTES":
                outs = None
                break
            count = 1
            for d in shape:
                count *= d
            if dt not in SIZES or count < 0 or size != count * SIZES[dt]:
                raise errors.ServerError(f"malformed answer: output {name!r} ({dt}, shape {shape}) has "
                                         f"binary_data_size {size}", 200)
            pos += size
            outs.append((name, None if dt == "BF16" else DTYPES[dt], tuple(shape), count, pos, dt))
    except (KeyError, TypeError) as e:
        raise errors.ServerError(f"malformed answer: an output lacks or mistypes {e}: {jhead[:200]!r}", 200) from None
    return doc.get("model_name", ""), doc.get("model_version", ""), doc.get("id"), outs, doc
