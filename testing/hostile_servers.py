"""A real HTTP server that misbehaves on purpose, one behaviour per path prefix.

    /file/NAME          serves NAME honestly (Content-Length, 200)
    /slow/NAME          serves NAME at `slow_bytes_per_s` (a long "audio" stage)
    /trickle/NAME       says Content-Length of 1 MB, then sends one byte every
                        `trickle_interval_s` forever: never idle long enough for a read
                        timeout, so only a total deadline ends it
    /reset/NAME         sends half of NAME, then a TCP reset
    /short/NAME         claims more bytes than it sends, then closes cleanly
    /endless            no Content-Length, zeros until the client hangs up
    /headtrickle/NAME   sends the status line, then one header byte every
                        `trickle_interval_s` forever: the body never starts
    /gzip/NAME          NAME gzip-compressed with Content-Encoding: gzip, whatever the
                        client's Accept-Encoding says
    /gzipbomb           Content-Encoding: gzip, `bomb_decoded_bytes` of zeros that
                        compress about 1000:1
    /status/CODE        answers CODE with an empty body

Handlers stop when `stop()` is called, so a client stuck reading is released.
Also `Flapping`: a `DevBackend.faults` stand-in that fails every other callback.
"""

from __future__ import annotations

import gzip
import http.server
import io
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Flapping", "HostileBackend", "HostileServer"]

_CHUNK = 1 << 14


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Httpd
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append(self.path)
        owner.headers.append({k.lower(): v for k, v in self.headers.items()})
        path = self.path.split("?", 1)[0]
        kind, _, name = path.lstrip("/").partition("/")
        try:
            if kind == "status":
                self._head(int(name), 0)
                return
            if kind == "endless":
                self._endless()
                return
            if kind == "gzipbomb":
                self._gzipped(owner.bomb())
                return
            file = owner.root / name
            if not name or "/" in name or not file.is_file():
                self._head(404, 0)
                return
            data = file.read_bytes()
            if kind == "file":
                self._head(200, len(data))
                self.wfile.write(data)
            elif kind == "slow":
                self._head(200, len(data))
                self._paced(data, owner.slow_bytes_per_s)
            elif kind == "trickle":
                self._trickle(data)
            elif kind == "headtrickle":
                self._header_trickle()
            elif kind == "gzip":
                self._gzipped(gzip.compress(data))
            elif kind == "reset":
                self._head(200, len(data))
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._reset()
            elif kind == "short":
                self._head(200, len(data) + 100_000)
                self.wfile.write(data)
                self.wfile.flush()
                self.close_connection = True
            else:
                self._head(404, 0)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: that is the point of most of these

    def _head(self, status: int, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _paced(self, data: bytes, bytes_per_s: float) -> None:
        step = max(1, int(bytes_per_s / 20))
        for i in range(0, len(data), step):
            if self.server.owner.stopping.is_set():
                return
            self.wfile.write(data[i : i + step])
            self.wfile.flush()
            time.sleep(step / bytes_per_s)

    def _trickle(self, data: bytes) -> None:
        owner = self.server.owner
        self._head(200, 1_000_000)
        i = 0
        while not owner.stopping.wait(owner.trickle_interval_s):
            self.wfile.write(data[i % len(data) : i % len(data) + 1])
            self.wfile.flush()
            i += 1
        self.close_connection = True

    def _header_trickle(self) -> None:
        owner = self.server.owner
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nX-Padding: ")
        self.wfile.flush()
        while not owner.stopping.wait(owner.trickle_interval_s):
            self.wfile.write(b"a")
            self.wfile.flush()
        self.close_connection = True

    def _gzipped(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # the client is expected to hang up
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)

    def _endless(self) -> None:
        self._head(200, None)
        zeros = b"\0" * _CHUNK
        while not self.server.owner.stopping.is_set():
            self.wfile.write(zeros)

    def _reset(self) -> None:
        """Close with RST instead of FIN: SO_LINGER on, timeout 0."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class _Httpd(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileServer


class HostileServer:
    """Serves the files of `root` in the ways listed in the module docstring."""

    def __init__(
        self,
        root: Path,
        slow_bytes_per_s: float = 64_000,
        trickle_interval_s: float = 0.2,
        bomb_decoded_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.root = root
        self.bomb_decoded_bytes = bomb_decoded_bytes
        self._bomb: bytes | None = None
        self.headers: list[dict[str, str]] = []
        self.slow_bytes_per_s = slow_bytes_per_s
        self.trickle_interval_s = trickle_interval_s
        self.stopping = threading.Event()
        self.requests: list[str] = []
        self.httpd = _Httpd(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def bomb(self) -> bytes:
        """`bomb_decoded_bytes` of zeros, gzip-compressed (made once)."""
        if self._bomb is None:
            zeros = b"\0" * (1 << 20)
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
                for _ in range(max(1, self.bomb_decoded_bytes >> 20)):
                    out.write(zeros)
            self._bomb = buffer.getvalue()
        return self._bomb

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def url(self, kind: str, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{name}" if name else self._bare(kind)

    def _bare(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Flapping(list[int]):
    """Put in `DevBackend.faults`: every other request answers `status`, the rest pass.

    DevBackend pops one fault per request while the list is truthy; this one is always
    truthy and alternates between a fault and None (= answer normally).
    """

    def __init__(self, status: int = 503) -> None:
        super().__init__()
        self.status = status
        self.served = 0
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return True

    def pop(self, index: Any = -1) -> Any:
        with self._lock:
            self.served += 1
            return self.status if self.served % 2 == 1 else None


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    server: _BackendHttpd
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        kind = self.path.lstrip("/").split("/", 1)[0]
        with owner.lock:
            owner.received.append((kind, self.headers.get("Idempotency-Key", ""), body))
        try:
            if kind == "trickle-body":  # 200 at once, then the body a byte at a time
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                while not owner.stopping.wait(owner.interval_s):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            elif kind == "trickle-head":  # the status line, then headers a byte at a time
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self.wfile.flush()
                while not owner.stopping.wait(owner.interval_s):
                    self.wfile.write(b"X")
                    self.wfile.flush()
            elif kind == "huge":  # a 200 whose body is `huge_bytes` long, sent fast
                self.send_response(200)
                self.send_header("Content-Length", str(owner.huge_bytes))
                self.end_headers()
                block = b"x" * (1 << 20)
                left = owner.huge_bytes
                while left > 0 and not owner.stopping.is_set():
                    self.wfile.write(block[: min(left, len(block))])
                    left -= len(block)
            elif kind == "redirect":  # 307 to the rest of the path, on this server
                target = self.path[len("/redirect/") :]
                self.send_response(int(owner.redirect_status))
                self.send_header("Location", target if target.startswith("http") else "/" + target)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:  # healthy: a short JSON answer
                reply = b'{"status":"received"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the dispatcher cut the attempt: the point
        self.close_connection = True


class _BackendHttpd(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileBackend


class HostileBackend:
    """A real callback receiver that misbehaves by path (its first path segment):

        /trickle-body/...   answers 200, then its body one byte every `interval_s`
        /trickle-head/...   sends the status line, then one header byte every `interval_s`
        /huge/...           answers 200 with a `huge_bytes` body at full speed
        /redirect/REST      answers `redirect_status` (307) with Location: /REST (or REST
                            itself when it is an absolute http URL)
        anything else       200 {"status": "received"}

    Each request is recorded in `received` as (first segment, Idempotency-Key, body).
    """

    def __init__(self, interval_s: float = 0.5, huge_bytes: int = 200 * 1024 * 1024) -> None:
        self.interval_s = interval_s
        self.huge_bytes = huge_bytes
        self.redirect_status = 307
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, bytes]] = []
        self.httpd = _BackendHttpd(("127.0.0.1", 0), _BackendHandler)
        self.httpd.owner = self
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> HostileBackend:
        self._thread.start()
        return self

    def kinds(self) -> list[str]:
        with self.lock:
            return [kind for kind, _, _ in self.received]

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HostileBackend:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
