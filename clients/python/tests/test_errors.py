"""Errors and retries: each exception class with the server's message, the retry rules (only what
certainly did not run is retried), stale keep-alive connections, and a real overloaded server."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

import policyd
import policyd.grpc

from conftest import Server, add_artifact, free_port, load_reference

OBS = {"obs": np.zeros((1, 8), np.float32)}


# --- against the real server ---------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_invalid_argument_has_server_message(server: Any, transport: str) -> None:
    c = policyd.Client(server.url) if transport == "http" else policyd.Client("grpc://" + server.grpc)
    with pytest.raises(policyd.InvalidArgument) as e:
        c.infer("peers-mlp-small", {"wrong_name": np.zeros((1, 8), np.float32)})
    assert "wrong_name" in e.value.message and e.value.status == 400
    with pytest.raises(policyd.InvalidArgument) as e:
        c.infer("peers-mlp-small", {"obs": np.zeros((1, 7), np.float32)})
    assert "obs" in e.value.message


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_not_found_has_server_message(server: Any, transport: str) -> None:
    c = policyd.Client(server.url) if transport == "http" else policyd.Client("grpc://" + server.grpc)
    with pytest.raises(policyd.NotFound) as e:
        c.infer("no-such-model", OBS)
    assert "no-such-model" in e.value.message and e.value.status == 404
    with pytest.raises(policyd.NotFound):
        c.metadata("peers-mlp-small", "9.9.9")


def test_connect_refused_is_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    c = policyd.Client(f"http://127.0.0.1:{port}", retries=3, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(policyd.ConnectError) as e:
        c.infer("m", OBS)
    assert not e.value.sent
    assert time.monotonic() - t0 >= 0.01 + 0.02 + 0.04  # three backoffs: it retried
    g = policyd.Client(f"grpc://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=5)
    with pytest.raises(policyd.ConnectError):
        g.infer("m", OBS)


# --- against a scripted HTTP server: exact control of what the client sees ----------------------

class Fake:
    """A one-thread HTTP server answering each request with the next of ``answers``: a bytes
    response, or a callable(conn) that does what it likes (close, hang). Counts requests and
    connections."""

    def __init__(self, answers: List[Any]) -> None:
        self.answers = list(answers)
        self.requests = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
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
                rest += conn.recv(65536)
            buf = rest[n:]
            self.requests += 1
            answer = self.answers.pop(0)
            if callable(answer):
                if answer(conn) == "closed":
                    return
            else:
                conn.sendall(answer)
        conn.close()

    def close(self) -> None:
        self.sock.close()


def response(status: int, body: bytes = b"", headers: str = "", close: bool = False) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    h = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n{headers}"
    if close:
        h += "Connection: close\r\n"
    return h.encode() + b"\r\n" + body


OK = response(200, b'{"model_name":"m","model_version":"1.0.0","outputs":[{"name":"y","datatype":"INT32","shape":[2],"data":[1,2]}]}')


def test_overloaded_503_is_retried_and_honours_retry_after() -> None:
    busy = response(503, b'{"error":"model \\"m\\" version \\"1.0.0\\": engines: queue full"}', "Retry-After: 0.2\r\n")
    f = Fake([busy, busy, OK])
    c = policyd.Client(f.url, retries=3, backoff=0.001)
    t0 = time.monotonic()
    res = c.infer("m", OBS)
    assert (res["y"] == [1, 2]).all() and res["y"].dtype == np.int32
    assert f.requests == 3
    assert time.monotonic() - t0 >= 0.4  # two waits of at least Retry-After
    f.close()


def test_overloaded_raised_after_the_retries() -> None:
    busy = response(503, b'{"error":"request timed out: still queued after the queue timeout of 1ms"}', "Retry-After: 0\r\n")
    f = Fake([busy] * 3)
    c = policyd.Client(f.url, retries=2, backoff=0.001)
    with pytest.raises(policyd.Overloaded) as e:
        c.infer("m", OBS)
    assert e.value.retry_after == 0 and "still queued" in e.value.message
    assert f.requests == 3
    f.close()


def test_503_without_retry_after_is_not_retried() -> None:
    f = Fake([response(503, b'{"error":"model \\"m\\" version \\"1.0.0\\" is not ready: loading"}'), OK])
    c = policyd.Client(f.url, retries=3)
    with pytest.raises(policyd.Unavailable) as e:
        c.infer("m", OBS)
    assert type(e.value) is policyd.Unavailable and e.value.retry_after is None and "not ready" in e.value.message
    assert f.requests == 1
    f.close()


def test_server_error_is_not_retried() -> None:
    f = Fake([response(500, b'{"error":"engine: internal failure"}'), OK])
    c = policyd.Client(f.url, retries=3)
    with pytest.raises(policyd.ServerError) as e:
        c.infer("m", OBS)
    assert e.value.status == 500 and e.value.message == "engine: internal failure"
    assert f.requests == 1
    f.close()


def test_connection_lost_after_sending_is_not_retried() -> None:
    def drop(conn: socket.socket) -> str:
        conn.close()
        return "closed"
    f = Fake([drop, OK])
    c = policyd.Client(f.url, retries=3)
    with pytest.raises(policyd.ConnectError) as e:
        c.infer("m", OBS)
    assert e.value.sent and "may have run" in e.value.message
    assert f.requests == 1
    f.close()


def test_client_timeout_is_not_retried() -> None:
    hold: List[socket.socket] = []
    f = Fake([lambda conn: hold.append(conn), OK])  # reads the request, never answers
    c = policyd.Client(f.url, retries=3, timeout=0.3)
    with pytest.raises(policyd.Timeout):
        c.infer("m", OBS)
    assert f.requests == 1
    f.close()


def test_sequence_step_not_retried_on_connect_failure() -> None:
    port = free_port()
    c = policyd.Client(f"http://127.0.0.1:{port}", retries=3, backoff=0.2)
    t0 = time.monotonic()
    with pytest.raises(policyd.ConnectError):
        c.infer("m", OBS, sequence_id=5)
    assert time.monotonic() - t0 < 0.2  # raised at once, no backoff


def test_stale_keepalive_connection_is_not_used() -> None:
    """The server answers, then closes the idle keep-alive connection: the next request must go on a
    new connection, not fail and not be resent."""
    def answer_then_close(conn: socket.socket) -> str:
        conn.sendall(OK)
        time.sleep(0.05)
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
        return "closed"
    f = Fake([answer_then_close, OK])
    c = policyd.Client(f.url, retries=0)
    c.infer("m", OBS)
    time.sleep(0.2)  # the close reaches the client's idle socket
    c.infer("m", OBS)
    assert f.requests == 2 and f.connections == 2
    f.close()


def test_keepalive_reuses_one_connection() -> None:
    f = Fake([OK, OK, OK])
    c = policyd.Client(f.url)
    for _ in range(3):
        c.infer("m", OBS)
    assert f.requests == 3 and f.connections == 1
    f.close()


# --- a real overloaded server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def overloaded(tmp_path_factory: pytest.TempPathFactory):
    """policyd with one instance, no batching, a queue of 1 and a queue timeout of 20ms, serving
    mlp-large: concurrent batch-256 requests find the queue full (503 + Retry-After)."""
    base = tmp_path_factory.mktemp("overload")
    repo = base / "repo"
    repo.mkdir()
    ref = load_reference("peers-mlp-large_b1")
    add_artifact(repo, "mlp-large", (Path(__file__).resolve().parents[3] / ref["model"]).resolve())
    cfg = base / "policyd.yaml"
    cfg.write_text("limits:\n  queue_len: 1\n  queue_timeout: 20ms\nbatching:\n  enabled: false\n"
                   "models:\n  - name: mlp-large\n    instances: 1\n")
    s = Server(repo, cfg, base / "policyd.log")
    yield s
    s.stop()


def stats(client: policyd.Client) -> tuple:
    st = client.stats("mlp-large")["model_stats"][0]["inference_stats"]
    return st["success"]["count"], st["fail"]["count"]


def test_retries_against_an_overloaded_server(overloaded: Any) -> None:
    ref = load_reference("peers-mlp-large_b1")
    spec = ref["inputs"][0]
    obs = np.random.default_rng(1).uniform(-1, 1, (256, spec["shape"][1])).astype(np.float32)
    name = spec["name"]
    probe = policyd.Client(overloaded.url)
    s0, f0 = stats(probe)

    # Without retries some requests are refused as Overloaded, with the server's message.
    no_retry = policyd.Client(overloaded.url, retries=0)

    def once(_: int) -> str:
        try:
            no_retry.infer("mlp-large", {name: obs})
            return "ok"
        except policyd.Overloaded as e:
            assert e.retry_after == 1 and ("queue full" in e.message or "still queued" in e.message)
            return "overloaded"

    with ThreadPoolExecutor(12) as ex:
        outcomes = list(ex.map(once, range(48)))
    assert "overloaded" in outcomes, "the server was never overloaded: the test proves nothing"
    s1, f1 = stats(probe)
    assert s1 - s0 == outcomes.count("ok") and f1 - f0 == outcomes.count("overloaded")

    # With retries (Retry-After is 1s) every request succeeds; the server saw the extra attempts.
    retrying = policyd.Client(overloaded.url, retries=12, backoff=0.01)
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda _: retrying.infer("mlp-large", {name: obs}), range(12)))
    assert all(r[ref["outputs"][0]["name"]].shape[0] == 256 for r in results)
    s2, f2 = stats(probe)
    assert s2 - s1 == 12
    assert f2 - f1 > 0, "no request was refused: nothing was retried"

    # A non-retryable failure (400) reaches the server exactly once.
    with pytest.raises(policyd.InvalidArgument):
        retrying.infer("mlp-large", {name: obs[:, :3]})
    s3, f3 = stats(probe)
    assert (s3 - s2, f3 - f2) == (0, 1)


def test_grpc_retries_against_an_overloaded_server(overloaded: Any) -> None:
    ref = load_reference("peers-mlp-large_b1")
    spec = ref["inputs"][0]
    obs = np.random.default_rng(2).uniform(-1, 1, (256, spec["shape"][1])).astype(np.float32)
    no_retry = policyd.Client("grpc://" + overloaded.grpc, retries=0)
    seen: List[policyd.Overloaded] = []

    def once(_: int) -> None:
        try:
            no_retry.infer("mlp-large", {spec["name"]: obs})
        except policyd.Overloaded as e:
            seen.append(e)

    with ThreadPoolExecutor(12) as ex:
        list(ex.map(once, range(48)))
    assert seen, "the server was never overloaded over gRPC"
    assert all(e.retry_after == 1 for e in seen)

    probe = policyd.Client(overloaded.url)
    s0, f0 = stats(probe)
    retrying = policyd.Client("grpc://" + overloaded.grpc, retries=12, backoff=0.01)
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda _: retrying.infer("mlp-large", {spec["name"]: obs}), range(12)))
    assert len(results) == 12
    s1, f1 = stats(probe)
    assert s1 - s0 == 12
