"""The client's HTTP/1.1 transport (policyd/_wire.py): answers split across reads, chunked bodies,
bodies to the end of the connection, Connection: close, interim 100 answers, large bodies both
ways, malformed answers (a clear error, never a retry), the request bytes it writes, and its
caches (request heads per input signature, decoding plans per answer head)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable, List, Optional, Union

import numpy as np
import pytest

import policyd
from policyd import _wire

OBS = {"obs": np.arange(8, dtype=np.float32).reshape(1, 8)}


# --- a scripted server that records what it reads ------------------------------------------------

Answer = Union[bytes, List[bytes], Callable[[socket.socket], Optional[str]]]


class Scripted:
    """A one-thread HTTP server answering each request with the next of ``answers``: bytes (sent
    at once), a list of bytes (each piece sent separately, 2 ms apart, TCP_NODELAY: the client's
    reads see them split), or a callable(conn) returning "closed" when it closed the connection.
    ``.requests`` holds each request as (head bytes, body bytes); ``.connections`` counts accepts."""

    def __init__(self, answers: List[Answer]) -> None:
        self.answers = list(answers)
        self.requests: List[tuple] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    conn.close()
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            while len(rest) < n:
                rest += conn.recv(1 << 20)
            self.requests.append((head, rest[:n]))
            buf = rest[n:]
            answer = self.answers.pop(0)
            if callable(answer):
                if answer(conn) == "closed":
                    return
            elif isinstance(answer, list):
                for piece in answer:
                    conn.sendall(piece)
                    time.sleep(0.002)
            else:
                conn.sendall(answer)
        conn.close()

    def close(self) -> None:
        self.sock.close()


def infer_answer(y: np.ndarray, name: str = "y", extra_headers: bytes = b"", chunked: bool = False,
                 length: bool = True) -> bytes:
    """A binary inference answer carrying ``y``, framed by Content-Length, chunks or neither."""
    jhead = json.dumps({"model_name": "m", "model_version": "1.0.0",
                        "outputs": [{"name": name, "datatype": "FP32", "shape": list(y.shape),
                                     "parameters": {"binary_data_size": y.nbytes}}]}).encode()
    body = jhead + y.astype("<f4").tobytes()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: %d\r\n" % len(jhead)) + extra_headers
    if chunked:
        pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
        enc = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + enc
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


Y = np.array([[0.5, -1.25, 3.0]], np.float32)


# --- a fake socket: every way of splitting an answer across reads --------------------------------

class ByteSocket:
    """Stands in for a connected socket: the answer comes back ``step`` bytes per recv."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step, self.sent = data, 0, step, b""

    def sendall(self, b: Any) -> None:
        self.sent += bytes(b)

    def recv_into(self, view: memoryview, nbytes: int = 0) -> int:
        k = min(self.step, len(view), len(self.data) - self.pos)
        view[:k] = self.data[self.pos:self.pos + k]
        self.pos += k
        return k

    def recv(self, n: int) -> bytes:
        k = min(self.step, n, len(self.data) - self.pos)
        self.pos += k
        return self.data[self.pos - k:self.pos]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 1 << 16])
@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
def test_answer_split_at_every_boundary(step: int, framing: str) -> None:
    data = infer_answer(Y, chunked=framing == "chunked", length=framing == "length")
    c = _wire.Connection("127.0.0.1", 1)
    c.sock = ByteSocket(data, step)  # type: ignore[assignment]
    r = c.request([b"GET / HTTP/1.1\r\n\r\n"])
    assert r.status == 200 and r.reason == "OK"
    n = int(r.getheader("inference-header-content-length"))
    assert json.loads(bytes(r.body[:n]))["outputs"][0]["shape"] == [1, 3]
    assert np.array_equal(np.frombuffer(r.body, np.float32, offset=n), Y.ravel())
    assert r.will_close == (framing == "eof")  # only a body read to EOF closes the connection
    assert c.sock.pos == len(data)  # type: ignore[union-attr]
    if framing == "chunked":
        assert r.getheader("Transfer-Encoding") == "chunked"


def test_interim_100_continue_is_skipped() -> None:
    c = _wire.Connection("127.0.0.1", 1)
    c.sock = ByteSocket(b"HTTP/1.1 100 Continue\r\n\r\n" + infer_answer(Y), 3)  # type: ignore[assignment]
    r = c.request([b"x"])
    assert r.status == 200 and r.body.endswith(Y.tobytes())


# --- against the scripted server ------------------------------------------------------------------

def test_answer_in_many_pieces_over_a_socket() -> None:
    data = infer_answer(Y)
    pieces = [data[i:i + 9] for i in range(0, len(data), 9)]
    f = Scripted([pieces, pieces])
    c = policyd.Client(f.url)
    for _ in range(2):
        res = c.infer("m", OBS)
        assert np.array_equal(res["y"], Y) and res["y"].dtype == np.float32
    assert f.connections == 1  # kept alive across split answers
    f.close()


def test_chunked_answer() -> None:
    f = Scripted([infer_answer(Y, chunked=True), infer_answer(2 * Y)])
    c = policyd.Client(f.url)
    assert np.array_equal(c.infer("m", OBS)["y"], Y)
    assert np.array_equal(c.infer("m", OBS)["y"], 2 * Y)  # the connection stayed usable after the chunks
    assert f.connections == 1
    f.close()


def test_connection_close_header_is_honoured() -> None:
    f = Scripted([infer_answer(Y, extra_headers=b"Connection: close\r\n"), infer_answer(3 * Y)])
    c = policyd.Client(f.url, retries=0)
    assert np.array_equal(c.infer("m", OBS)["y"], Y)
    assert np.array_equal(c.infer("m", OBS)["y"], 3 * Y)
    assert f.connections == 2 and len(f.requests) == 2
    f.close()


def test_body_to_end_of_connection() -> None:
    """No Content-Length and not chunked: the body is what comes until the server closes."""
    def answer(conn: socket.socket) -> str:
        conn.sendall(infer_answer(Y, length=False))
        time.sleep(0.05)
        conn.close()
        return "closed"
    f = Scripted([answer, infer_answer(Y)])
    c = policyd.Client(f.url, retries=0)
    assert np.array_equal(c.infer("m", OBS)["y"], Y)
    assert np.array_equal(c.infer("m", OBS)["y"], Y)
    assert f.connections == 2
    f.close()


def test_server_closing_after_the_answer_is_not_a_failure() -> None:
    """The server answers with Content-Length (no Connection: close), then closes: the client
    notices the idle socket is dead and takes a new one; nothing is resent."""
    def answer(conn: socket.socket) -> str:
        conn.sendall(infer_answer(Y))
        conn.close()
        return "closed"
    f = Scripted([answer, answer, infer_answer(Y)])
    c = policyd.Client(f.url, retries=0)
    for _ in range(3):
        assert np.array_equal(c.infer("m", OBS)["y"], Y)
        time.sleep(0.05)
    assert len(f.requests) == 3 and f.connections == 3
    f.close()


def test_stray_bytes_after_an_answer_drop_the_connection() -> None:
    f = Scripted([infer_answer(Y) + b"garbage", infer_answer(Y)])
    c = policyd.Client(f.url, retries=0)
    c.infer("m", OBS)
    c.infer("m", OBS)
    assert f.connections == 2
    f.close()


def test_large_answer_and_request() -> None:
    big = np.random.default_rng(0).standard_normal((200_000, 3)).astype(np.float32)  # 2.4 MB each way
    f = Scripted([infer_answer(big)])
    c = policyd.Client(f.url)
    res = c.infer("m", {"x": big})
    assert np.array_equal(res["y"], big) and res["y"].flags.writeable
    head, body = f.requests[0]
    n = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"inference-header-content-length")][0]
            .split(b":")[1])
    assert body[n:] == big.tobytes()  # the sendmsg path wrote every byte, in order
    f.close()


def test_request_bytes() -> None:
    """The head and body the fast path writes: the headers, and the JSON head as the protocol
    wants it, with the per-call parameters and id (never the previous call's, from the cache)."""
    f = Scripted([infer_answer(Y)] * 4)
    c = policyd.Client(f.url, headers={"X-Tenant": "a"})
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    c.infer("m", {"x": x})
    c.infer("m", {"x": x}, seed=7, request_id="r1", outputs=["y"])
    c.infer("m", {"x": x}, seed=8, request_id="r1", outputs=["y"])
    c.infer("m", {"x": x[:1]}, version="2")
    heads = []
    for head, body in f.requests:
        lines = head.split(b"\r\n")
        h = {k.lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
        assert h[b"host"] == f.url[len("http://"):].encode() and h[b"x-tenant"] == b"a"
        assert h[b"content-type"] == b"application/octet-stream" and int(h[b"content-length"]) == len(body)
        n = int(h[b"inference-header-content-length"])
        heads.append((lines[0], json.loads(body[:n]), body[n:]))
    assert heads[0][0] == b"POST /v2/models/m/infer HTTP/1.1"
    assert heads[0][1] == {"parameters": {"binary_data_output": True},
                           "inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 3],
                                       "parameters": {"binary_data_size": 48}}]}
    assert heads[0][2] == x.tobytes()
    assert heads[1][1] == {"id": "r1", "parameters": {"seed": 7},
                           "inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 3],
                                       "parameters": {"binary_data_size": 48}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    assert heads[2][1]["parameters"] == {"seed": 8}
    assert heads[3][0] == b"POST /v2/models/m/versions/2/infer HTTP/1.1"
    assert heads[3][1]["inputs"][0]["shape"] == [1, 3] and heads[3][2] == x[:1].tobytes()
    f.close()


def test_headers_host_and_control_characters() -> None:
    f = Scripted([infer_answer(Y), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    c = policyd.Client(f.url, headers={"host": "policy.example"})
    c.infer("m", OBS)
    assert c.live()
    for head, _ in f.requests:
        hosts = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"host:")]
        assert hosts == [b"host: policy.example"]
    assert f.requests[1][0].startswith(b"GET /v2/health/live HTTP/1.1\r\n")
    f.close()
    with pytest.raises(ValueError):
        policyd.Client(f.url, headers={"X-A": "b\r\nX-Injected: 1"})
    with pytest.raises(ValueError):
        policyd.Client(f.url + "/a b")
    with pytest.raises(ValueError, match="Content-Length"):
        policyd.Client(f.url, headers={"Content-Length": "5"})


def test_same_answer_head_new_arrays() -> None:
    """The decoding plan is cached per answer head; each answer's arrays are its own."""
    f = Scripted([infer_answer(Y), infer_answer(4 * Y), infer_answer(Y.reshape(3, 1))])
    c = policyd.Client(f.url)
    a = c.infer("m", OBS)["y"]
    b = c.infer("m", OBS)["y"]
    a[0, 0] = 99
    assert np.array_equal(b, 4 * Y) and a[0, 1] == Y[0, 1]
    assert c.infer("m", OBS)["y"].shape == (3, 1)
    f.close()


MALFORMED = [
    (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"SMTP 200 OK\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", "unsupported Content-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk-size line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed after 5 of the body's 100 bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "closed inside the answer's head"),
    (b"", "closed the connection without answering"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "head is longer than"),
]


@pytest.mark.parametrize("answer,what", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_answer_is_a_clear_error_not_retried(answer: bytes, what: str) -> None:
    def send_then_close(conn: socket.socket) -> str:
        try:
            conn.sendall(answer)
        except OSError:
            pass  # the client gave up reading (a head too long) and closed
        conn.close()
        return "closed"
    f = Scripted([send_then_close, infer_answer(Y)])
    c = policyd.Client(f.url, retries=3)
    with pytest.raises(policyd.ConnectError) as e:
        c.infer("m", OBS)
    assert e.value.sent and what in e.value.message and "may have run" in e.value.message, e.value.message
    assert len(f.requests) == 1  # never resent
    f.close()


BAD_BODIES = [
    (b"not json", "does not parse"),
    (b'{"outputs":[{"name":"y","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":4}}]}',
     "binary_data_size 4"),
    (b'{"outputs":[{"name":"y","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}',
     "need 8 bytes"),
    (b'{"outputs":[{"datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}', "lacks or mistypes"),
]


@pytest.mark.parametrize("jhead,what", BAD_BODIES, ids=[b[1] for b in BAD_BODIES])
def test_malformed_inference_answer(jhead: bytes, what: str) -> None:
    ans = (b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
           % (len(jhead), len(jhead)) + jhead)
    f = Scripted([ans])
    c = policyd.Client(f.url)
    with pytest.raises(policyd.ServerError) as e:
        c.infer("m", OBS)
    assert "malformed answer" in e.value.message and what in e.value.message, e.value.message
    f.close()


def test_timeout_inside_a_body() -> None:
    def half(conn: socket.socket) -> str:
        conn.sendall(infer_answer(Y)[:-4])  # the last bytes come too late
        time.sleep(1.0)
        conn.close()
        return "closed"
    f = Scripted([half])
    c = policyd.Client(f.url, retries=3, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(policyd.Timeout):
        c.infer("m", OBS)
    assert time.monotonic() - t0 < 2 and len(f.requests) == 1
    f.close()


# --- against the real server ----------------------------------------------------------------------

@pytest.mark.parametrize("dt,npdt", [("FP32", np.float32), ("INT64", np.int64), ("BOOL", np.bool_)])
def test_large_tensors_through_policyd(server: Any, dt: str, npdt: Any) -> None:
    """Identity models: megabytes each way (sendmsg out, many recv_into back) come back equal."""
    x = (np.random.default_rng(3).standard_normal((300_000, 3)) * 100).astype(npdt)
    c = policyd.Client(server.url)
    for _ in range(2):  # a second time on the kept-alive connection
        y = c.infer(f"id-{dt.lower()}", {"x": x})["y"]
        assert y.dtype == x.dtype and np.array_equal(y, x)
