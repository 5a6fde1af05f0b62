"""The HTTP transport: KServe v2 over ``http.client`` with keep-alive connections and binary tensors."""

from __future__ import annotations

import http.client
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
from ._types import BF16, datatype_of, decode_json, decode_raw, tensor_bytes

__all__ = ["Client", "InferResult"]

_HEADER_LEN = "Inference-Header-Content-Length"


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


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection that sends the request head and body in one write and sets TCP_NODELAY:
    http.client writes them separately, and two small writes on a Nagle socket can wait for the
    peer's delayed ACK."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
        msg = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
        del self._buffer[:]  # type: ignore[attr-defined]
        if message_body is not None:
            msg += message_body
        self.send(msg)


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
        self._idle: List[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- connections -------------------------------------------------------------------------

    def _get_conn(self) -> "_Connection":
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return _Connection(self.host, self.port, timeout=self.timeout)
            if _is_dropped(conn.sock):
                conn.close()
                continue
            return conn

    def _put_conn(self, conn: "_Connection") -> None:
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

    def _once(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
              timeout: Optional[float]) -> Tuple[int, http.client.HTTPResponse, bytearray]:
        conn = self._get_conn()
        if conn.sock is None:
            conn.timeout = timeout if timeout is not None else self.timeout
            try:
                conn.connect()  # nothing is sent yet: a failure here may be retried
            except socket.timeout:
                conn.close()
                raise errors.ConnectError(f"connect to {self.host}:{self.port}: timed out", sent=False) from None
            except OSError as e:
                conn.close()
                raise errors.ConnectError(f"connect to {self.host}:{self.port}: {e}", sent=False) from None
        else:
            conn.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            conn.putrequest(method, self._prefix + path, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            n = resp.length
            if n is None:
                buf = bytearray(resp.read())
            else:
                buf = bytearray(n)
                view, got = memoryview(buf), 0
                while got < n:
                    k = resp.readinto(view[got:])
                    if not k:
                        raise http.client.IncompleteRead(bytes(buf[:got]), n - got)
                    got += k
            resp.close()  # the body is read: marks the connection free for its next request
        except socket.timeout:
            conn.close()
            raise errors.Timeout(f"{method} {path}: no answer within the timeout; the request may have run") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise errors.ConnectError(f"{method} {path}: connection lost after sending ({e!r}); "
                                      "the request may have run, so it is not retried", sent=True) from None
        if resp.will_close:
            conn.close()
        else:
            self._put_conn(conn)
        return resp.status, resp, buf

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                 retry_connect: bool = True) -> Tuple[int, http.client.HTTPResponse, bytearray]:
        """One request with the retry rules; returns status, response and body; raises for failures
        of the transport only (callers map statuses)."""
        h = dict(self._headers)
        if headers:
            h.update(headers)
        h["Content-Length"] = str(len(body)) if body is not None else "0"
        attempt = 0
        while True:
            retry_after: Optional[float] = None
            try:
                status, resp, buf = self._once(method, path, body, h, timeout)
            except errors.ConnectError as e:
                if e.sent or not retry_connect or attempt >= self.retries:
                    raise
            else:
                if status != 503:
                    return status, resp, buf
                retry_after = _retry_after(resp.getheader("Retry-After"))
                if retry_after is None or attempt >= self.retries:
                    return status, resp, buf
            delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (1 + 0.25 * random.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            time.sleep(delay)
            attempt += 1

    def _raise(self, status: int, resp: http.client.HTTPResponse, buf: bytearray) -> None:
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
        status, resp, buf = self._request("GET", path)
        if status != 200:
            self._raise(status, resp, buf)
        return json.loads(bytes(buf))

    @staticmethod
    def _model_path(model: str, version: Optional[str]) -> str:
        p = "/v2/models/" + urllib.parse.quote(model, safe="")
        if version is not None:
            p += "/versions/" + urllib.parse.quote(str(version), safe="")
        return p

    # --- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        """Whether the server process serves (GET /v2/health/live)."""
        return self._request("GET", "/v2/health/live")[0] == 200

    def ready(self) -> bool:
        """Whether every configured model version is loaded and warmed up (GET /v2/health/ready)."""
        return self._request("GET", "/v2/health/ready")[0] == 200

    def model_ready(self, model: str, version: Optional[str] = None) -> bool:
        """Whether a model version (default: the model's default version) is ready; NotFound for an
        unknown model or version."""
        status, resp, buf = self._request("GET", self._model_path(model, version) + "/ready")
        if status == 200:
            return True
        if status in (400, 503):
            return False
        self._raise(status, resp, buf)
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
        params: Dict[str, Any] = {}
        if seed is not None:
            params["seed"] = int(seed)
        if priority is not None:
            params["priority"] = int(priority)
        if timeout is not None:
            params["timeout"] = max(1, int(timeout * 1e6))
        is_step = sequence_id is not None
        if is_step:
            params["sequence_id"] = sequence_id
            if sequence_start:
                params["sequence_start"] = True
            if sequence_end:
                params["sequence_end"] = True
        if parameters:
            params.update(parameters)
        if binary and outputs is None:
            params["binary_data_output"] = True

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
        if outputs is not None:
            req["outputs"] = [{"name": o, "parameters": {"binary_data": True}} if binary else {"name": o}
                              for o in outputs]
        head = json.dumps(req, separators=(",", ":")).encode()
        headers = {}
        if chunks:
            body = head + b"".join(chunks)
            headers[_HEADER_LEN] = str(len(head))
            headers["Content-Type"] = "application/octet-stream"
        else:
            body = head
            headers["Content-Type"] = "application/json"
        status, resp, buf = self._request("POST", self._model_path(model, version) + "/infer", body, headers,
                                          retry_connect=not is_step)
        if status != 200:
            self._raise(status, resp, buf)
        return _parse_answer(resp.getheader(_HEADER_LEN), buf)


def _parse_answer(header_len: Optional[str], buf: bytearray) -> InferResult:
    n = int(header_len) if header_len is not None else len(buf)
    doc = json.loads(bytes(buf[:n]) if header_len is not None else bytes(buf))
    res = InferResult()
    res.model_name = doc.get("model_name", "")
    res.model_version = doc.get("model_version", "")
    res.id = doc.get("id")
    pos = n
    for out in doc.get("outputs", ()):
        dt, shape = out["datatype"], out["shape"]
        p = out.get("parameters") or {}
        size = p.get("binary_data_size")
        if size is not None:
            res[out["name"]] = decode_raw(buf, dt, shape, pos, size)
            pos += size
        else:
            res[out["name"]] = decode_json(out.get("data", []), dt, shape)
    return res
