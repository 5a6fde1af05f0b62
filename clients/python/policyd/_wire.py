"""A lean HTTP/1.1 client connection on a raw socket: the transport of :class:`policyd.Client`.

``http.client`` spends more time than the network on a small inference round trip (its response
goes through ``email.parser``, a buffered file object and several reads). This module does only
what the client needs: one request written with one ``sendall`` (or ``sendmsg`` over a list of
buffers for a large body, so the tensor bytes are not joined), ``TCP_NODELAY``, and the answer
read with ``recv_into`` into a reusable buffer, its status line and headers split with
``bytes.find``/``split``. Framing: ``Content-Length`` (policyd always sends it), ``Transfer-Encoding:
chunked``, or, for neither, the body runs to the end of the connection; ``1xx`` interim answers
are skipped. A malformed answer raises :class:`ProtocolError` naming what is wrong; the caller
closes the connection. Not safe for concurrent use: one request at a time per connection (the
client's pool hands each connection to one request).
"""

from __future__ import annotations

import re
import socket
from typing import Dict, List, Optional, Sequence

__all__ = ["Connection", "ProtocolError", "Response"]

#: Bytes kept per connection for reading answers; a larger body is read into its own buffer.
BUFFER_SIZE = 65536
#: Larger request bodies go out with sendmsg over the parts (no join copy); smaller ones are joined.
SENDMSG_THRESHOLD = 65536

_HEX = re.compile(rb"[0-9A-Fa-f]+")
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 the client can read (the message says what is wrong),
    or the connection ended inside it."""


class Response:
    """One answer: ``status``, ``reason``, ``headers`` (lower-case bytes name -> bytes value,
    repeated headers joined with ``, ``), ``body`` (a bytearray) and ``will_close`` (the connection
    cannot carry another request)."""

    __slots__ = ("status", "reason", "headers", "body", "will_close")

    def __init__(self, status: int, reason: str, headers: Dict[bytes, bytes], body: bytearray,
                 will_close: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close

    def getheader(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of header ``name`` (any case) as a str, or ``default``."""
        v = self.headers.get(name.lower().encode("latin-1"))
        return default if v is None else v.decode("latin-1")


class Connection:
    """One keep-alive connection to ``host:port``. ``connect`` may raise ``OSError`` (nothing was
    sent); ``request`` may raise ``OSError``/``socket.timeout`` or :class:`ProtocolError` after
    sending. The socket timeout bounds each send and each wait for bytes."""

    __slots__ = ("host", "port", "sock", "buf", "view")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: Optional[socket.socket] = None
        self.buf = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buf)

    def connect(self, timeout: Optional[float]) -> None:
        sock = socket.create_connection((self.host, self.port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (never for host:port, but harmless)
            pass
        self.sock = sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def request(self, parts: Sequence[bytes], head_only: bool = False) -> Response:
        """Send the request (``parts`` joined are the whole request: head and body) and read the
        answer; ``head_only`` for a HEAD request (an answer without a body)."""
        sock = self.sock
        assert sock is not None
        if len(parts) == 1:
            sock.sendall(parts[0])
        else:
            total = 0
            for p in parts:
                total += len(p)
            if total < SENDMSG_THRESHOLD or not _HAS_SENDMSG:
                sock.sendall(b"".join(parts))
            else:
                _sendmsg_all(sock, parts)
        return self._read(head_only)

    # --- reading -------------------------------------------------------------------------------

    def _recv(self, n: int) -> int:
        """Receive into the buffer at offset n; returns the new fill; raises on EOF."""
        k = self.sock.recv_into(self.view[n:])  # type: ignore[union-attr]
        if not k:
            if n == 0:
                raise ProtocolError("the server closed the connection without answering")
            raise ProtocolError(f"the connection closed inside the answer's head (after {n} bytes)")
        return n + k

    def _read(self, head_only: bool) -> Response:
        buf, view = self.buf, self.view
        n = 0  # bytes in buf
        while True:
            hend = buf.find(b"\r\n\r\n", 0, n)
            while hend < 0:
                if n == len(buf):
                    raise ProtocolError(f"the answer's head is longer than {len(buf)} bytes")
                old = n
                n = self._recv(n)
                hend = buf.find(b"\r\n\r\n", max(0, old - 3), n)
            head = bytes(view[:hend])
            start = hend + 4
            eol = head.find(b"\r\n")
            status_line = head if eol < 0 else head[:eol]
            sl = status_line.split(b" ", 2)
            code = sl[1] if len(sl) > 1 else b""
            if not sl[0].startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"malformed status line {status_line[:100]!r}")
            status = int(code)
            headers: Dict[bytes, bytes] = {}
            if eol >= 0:
                for line in head[eol + 2:].split(b"\r\n"):
                    k, sep, v = line.partition(b":")
                    if not sep or not k or k[-1:].isspace() or k[:1].isspace():
                        raise ProtocolError(f"malformed header line {line[:100]!r}")
                    k = k.lower()
                    v = v.strip()
                    old_v = headers.get(k)
                    headers[k] = v if old_v is None else old_v + b", " + v
            if 100 <= status < 200:
                if status == 101:
                    raise ProtocolError("the server switched protocols (101) on an HTTP/1.1 request")
                rest = n - start  # an interim answer (100 Continue): the real one follows
                buf[:rest] = view[start:n]
                n = rest
                continue
            break

        conn_h = headers.get(b"connection")
        if sl[0] == b"HTTP/1.0":
            will_close = conn_h is None or b"keep-alive" not in conn_h.lower()
        else:
            will_close = conn_h is not None and b"close" in conn_h.lower()
        ce = headers.get(b"content-encoding")
        if ce is not None and ce.lower() != b"identity":
            raise ProtocolError(f"unsupported Content-Encoding {ce.decode('latin-1')!r} (the client asks for none)")
        reason = sl[2].decode("latin-1") if len(sl) > 2 else ""

        te = headers.get(b"transfer-encoding")
        cl = headers.get(b"content-length")
        have = n - start
        if head_only or status in (204, 304):
            body = bytearray()
            if have:
                will_close = True  # stray bytes: the connection's framing is lost
        elif te is not None:
            if te.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {te.decode('latin-1')!r}")
            body, extra = self._read_chunked(bytearray(view[start:n]))
            if extra:
                will_close = True
        elif cl is not None:
            length = _content_length(cl)
            if have >= length:
                body = buf[start:start + length]
                if have > length:
                    will_close = True
            else:
                body = bytearray(length)
                bview = memoryview(body)
                bview[:have] = view[start:n]
                got = have
                sock = self.sock
                while got < length:
                    k = sock.recv_into(bview[got:])  # type: ignore[union-attr]
                    if not k:
                        raise ProtocolError(f"the connection closed after {got} of the body's {length} bytes")
                    got += k
        else:  # neither: the body runs to the end of the connection
            body = bytearray(view[start:n])
            sock = self.sock
            while True:
                k = sock.recv_into(view)  # type: ignore[union-attr]
                if not k:
                    break
                body += view[:k]
            will_close = True
        return Response(status, reason, headers, body, will_close)

    def _read_chunked(self, data: bytearray) -> "tuple[bytearray, int]":
        """Decode a chunked body from ``data`` (the bytes already read) and the socket; returns
        the body and the count of bytes read past its end."""
        out = bytearray()
        pos = 0
        sock = self.sock

        def more() -> None:
            chunk = sock.recv(BUFFER_SIZE)  # type: ignore[union-attr]
            if not chunk:
                raise ProtocolError(f"the connection closed inside a chunked body (after {len(out)} bytes)")
            data.extend(chunk)

        def line() -> bytes:
            nonlocal pos
            eol = data.find(b"\r\n", pos)
            while eol < 0:
                if len(data) - pos > 4096:
                    raise ProtocolError("a chunk-size or trailer line longer than 4096 bytes")
                more()
                eol = data.find(b"\r\n", pos)
            s = bytes(data[pos:eol])
            pos = eol + 2
            return s

        while True:
            size_line = line()
            size_s = size_line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_s):
                raise ProtocolError(f"malformed chunk-size line {size_line[:100]!r}")
            size = int(size_s, 16)
            if size == 0:
                while line():  # trailers, up to the empty line
                    pass
                return out, len(data) - pos
            while len(data) < pos + size + 2:
                more()
            out += data[pos:pos + size]
            if data[pos + size:pos + size + 2] != b"\r\n":
                raise ProtocolError("a chunk is not followed by CRLF")
            pos += size + 2
            if pos > BUFFER_SIZE:  # drop what is decoded so data does not grow with the body
                del data[:pos]
                pos = 0


def _content_length(v: bytes) -> int:
    if v.isdigit():
        return int(v)
    vals = {x.strip() for x in v.split(b",")}  # a repeated header was joined with ", "
    if len(vals) != 1:
        raise ProtocolError(f"conflicting Content-Length headers {v.decode('latin-1')!r}")
    s = vals.pop()
    if not s.isdigit():
        raise ProtocolError(f"malformed Content-Length {v[:40].decode('latin-1')!r}")
    return int(s)


def _sendmsg_all(sock: socket.socket, parts: Sequence[bytes]) -> None:
    """sendmsg until every byte of ``parts`` is written (it may write part of them)."""
    bufs: List[memoryview] = [memoryview(p).cast("B") for p in parts if len(p)]
    while bufs:
        sent = sock.sendmsg(bufs)
        while bufs and sent >= bufs[0].nbytes:
            sent -= bufs[0].nbytes
            bufs.pop(0)
        if sent:
            bufs[0] = bufs[0][sent:]
