"""Small real servers and text helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx

from voxtrace.devbackend import ReceivedCall

__all__ = [
    "RESULT_PATH",
    "SECRET",
    "SUBMIT",
    "FileServer",
    "GatedFileServer",
    "ServeProcess",
    "Server",
    "WorkerProcess",
    "closed_by_peer",
    "free_port",
    "group_members",
    "normalise_text",
    "suite_processes",
    "terminal",
]

SUBMIT = "/api/upload-video/process-video"
SECRET = "test-secret"  # the callback HMAC secret the end-to-end servers sign with
RESULT_PATH = "/api/upload-video/result"  # the deployed backend's validated endpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, single spaces: how WER is scored."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class FileServer:
    """A real HTTP file server on 127.0.0.1 serving one directory."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Gated(http.server.BaseHTTPRequestHandler):
    server: _GatedHttpd
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        name = self.path.split("?", 1)[0].lstrip("/")
        file = owner.root / name
        if not name or "/" in name or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        sent = 0
        try:
            with owner.counting():
                # Closed gate: a byte at a time, often enough for no read timeout to fire.
                while not owner.opened.wait(0.25) and sent < len(data) - 1:
                    if owner.stopping.is_set():
                        return
                    self.wfile.write(data[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
            self.wfile.write(data[sent:])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client is gone (killed, in the failover runs)


class _GatedHttpd(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: GatedFileServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed client: expected
            super().handle_error(request, client_address)


class GatedFileServer:
    """A real HTTP file server on 127.0.0.1 whose downloads stall while its gate is
    closed: a download is then surely in progress for as long as a test needs (a slow
    S3), and finishes at full speed once the gate opens, for whoever asks next."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened = threading.Event()
        self.opened.set()
        self.stopping = threading.Event()
        self.requests = 0
        self.held = 0  # downloads waiting at the closed gate now
        self._lock = threading.Lock()
        self.httpd = _GatedHttpd(("127.0.0.1", 0), _Gated)
        self.httpd.owner = self
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with self._lock:
            self.requests += 1
            self.held += 1
        try:
            yield
        finally:
            with self._lock:
                self.held -= 1

    def start(self) -> GatedFileServer:
        self._thread.start()
        return self

    def close_gate(self) -> None:
        self.opened.clear()

    def open_gate(self) -> None:
        self.opened.set()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.stopping.set()
        self.opened.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return sorted(members)


SESSION_ENV = "VOXTRACE_TEST_SESSION"  # set by conftest; every process we start inherits it


def suite_processes(token: str) -> list[tuple[int, str]]:
    """Live voxtrace processes (a `voxtrace` command, or a worker: a multiprocessing
    spawn child) that inherited `SESSION_ENV=token`, other than this one: (pid, cmdline).

    What the suite started and did not end: the session-end check fails the run on them.
    """
    marker = f"{SESSION_ENV}={token}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == os.getpid():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # ended while we looked, or not ours to read
        if state in ("Z", "X"):
            continue
        if "spawn_main" in cmdline or "voxtrace" in cmdline:
            found.append((pid, cmdline.strip()))
    return found


class ServeProcess:
    """`voxtrace serve` in a subprocess on 127.0.0.1, as an operator runs it.

    Without overrides it runs the API alone (no workers, nobody to call back); `env`
    adds or overrides environment variables (settings).
    """

    def __init__(self, data_dir: Path, **env: str | int | float | Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "serve.log"
        self.env = {
            **os.environ,
            "VOXTRACE_DATA_DIR": str(data_dir),
            "VOXTRACE_WORKERS": "0",
            "BACKEND_URL": "http://127.0.0.1:9",
            **{key: str(value) for key, value in env.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def store_path(self) -> Path:
        return self.data_dir / "voxtrace.db"

    def start(
        self, ready_timeout_s: float = 120, wait: bool = True, own_group: bool = False
    ) -> Self:
        """Start (or restart, after kill9) and wait until /health says ready.

        `own_group`: in a process group of its own, which `kill9_group` ends whole.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=log,
                process_group=0 if own_group else None,
            )
        if wait:
            self.wait_ready(ready_timeout_s)
        return self

    def command(self) -> list[str]:
        """The process to run: the API and its workers on this port."""
        serve = [sys.executable, "-m", "voxtrace.cli", "serve"]
        return [*serve, "--host", "127.0.0.1", "--port", str(self.port)]

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("voxtrace serve exited:\n" + self.log_tail())
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("ready"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("voxtrace serve not ready:\n" + self.log_tail())

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def submit(self, job_id: str, video_url: str, **extra: Any) -> httpx.Response:
        """Submit as the deployed backend does (its extra keys included)."""
        body = {"job_id": job_id, "video_url": video_url, "fastapi_base_url": None}
        body |= {"language": "auto", **extra}
        return httpx.post(f"{self.url}{SUBMIT}", json=body, timeout=10)

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/api/jobs/{job_id}", timeout=10).json()
        return result

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill9_group(self, timeout_s: float = 10) -> list[int]:
        """SIGKILL to every process of its group at once (the supervisor, its workers,
        their ffmpeg), as a machine losing power; returns those still alive after
        `timeout_s` (none, unless something escaped). Needs `start(own_group=True)`."""
        assert self.proc is not None
        pgid = self.proc.pid
        assert os.getpgid(pgid) == pgid, "not started with own_group=True"
        os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while (left := group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Server(ServeProcess):
    """`voxtrace serve` set up for end-to-end runs: one worker, signed callbacks to the
    deployed backend's validated endpoint, short heartbeats and backoffs."""

    def __init__(self, data_dir: Path, backend_url: str, models_path: Path, **env: str) -> None:
        defaults = {
            "BACKEND_URL": backend_url,
            "VOXTRACE_MODEL_DIR": str(models_path),
            "VOXTRACE_ALLOW_HTTP_HOSTS": "127.0.0.1",
            "VOXTRACE_CALLBACK_PATH": RESULT_PATH,
            "VOXTRACE_CALLBACK_SECRET": SECRET,
            "VOXTRACE_WORKERS": "1",
            "VOXTRACE_HEARTBEAT_S": "5",
            "VOXTRACE_LEASE_S": "10",
            "VOXTRACE_CALLBACK_BACKOFF_BASE_S": "0.2",
            "VOXTRACE_CALLBACK_BACKOFF_CAP_S": "1",
        }
        super().__init__(data_dir, **{**defaults, **env})


class WorkerProcess(Server):
    """`voxtrace worker` in a subprocess: a node with workers and callback delivery but
    no API, as another machine sharing a PostgreSQL store runs it (pass
    VOXTRACE_STORE_URL and VOXTRACE_NODE_ID). Ready once every worker has its models."""

    def __init__(self, data_dir: Path, backend_url: str, models_path: Path, **env: str) -> None:
        super().__init__(data_dir, backend_url, models_path, **env)
        self.log = data_dir / "worker.log"

    def command(self) -> list[str]:
        """Workers only, no API."""
        return [sys.executable, "-m", "voxtrace.cli", "worker"]

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until each worker has logged `worker <id> ready` (its models are loaded)."""
        wanted = int(self.env["VOXTRACE_WORKERS"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("voxtrace worker exited:\n" + self.log_tail())
            if len(self.ready_lines()) >= wanted:
                return
            time.sleep(0.2)
        raise RuntimeError("voxtrace worker not ready:\n" + self.log_tail())

    def ready_lines(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        text = re.sub(r'"logger": "(voxtrace\.worker[.\w]*)", "message": "', r"\1: ", text)
        return re.findall(r"voxtrace\.worker[.\w]*: worker \S+ ready", text)


def terminal(calls: list[ReceivedCall]) -> list[ReceivedCall]:
    """The `completed`/`failed` callbacks among those a backend received."""
    return [c for c in calls if c.body.get("status") in ("completed", "failed")]


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed its end (what it sent before is read and dropped)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True
