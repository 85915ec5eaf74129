"""`voxtrace demo`: the whole product on one machine, end to end.

Starts the demo backend (callback receiver), a file server for the sample video and
`voxtrace serve`, submits the video exactly as the ECG backend does, prints the
callbacks as they arrive and writes the final result to data/demo/result.json.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from voxtrace.devbackend import DevBackend, ServerThread

__all__ = ["run_demo"]

CALLBACK_PATH = "/api/upload-video/result"  # the deployed backend's validated endpoint
DEMO_SECRET = "demo-secret"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_directory(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("voxtrace serve exited early; see its log above")
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("ready"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError("voxtrace serve did not become ready in time")


def run_demo(video: Path, port: int = 8080, backend_port: int = 8000) -> int:
    if not video.is_file():
        print(f"demo: no such video: {video}", file=sys.stderr)
        return 2
    backend = DevBackend(secret=DEMO_SECRET)
    receiver = ServerThread(backend.app, port=backend_port).start()
    files, files_port = _serve_directory(video.parent.resolve())
    env = {
        **os.environ,
        "BACKEND_URL": receiver.url,
        "VOXTRACE_CALLBACK_PATH": CALLBACK_PATH,
        "VOXTRACE_CALLBACK_SECRET": DEMO_SECRET,
        "VOXTRACE_ALLOW_HTTP_HOSTS": "127.0.0.1",
    }
    server_url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "voxtrace.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    print(f"demo: starting {' '.join(cmd[2:])} (callbacks to {receiver.url}{CALLBACK_PATH})")
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_ready(server_url, proc, timeout_s=180)
        job_id = str(uuid.uuid4())
        backend.register(job_id)
        body = {
            "job_id": job_id,
            "video_url": f"http://127.0.0.1:{files_port}/{video.name}",
            "fastapi_base_url": None,
            "language": "auto",
        }
        answer = httpx.post(
            f"{server_url}/api/upload-video/process-video",
            json=body,
            headers={"User-Agent": "ECS-FastAPI-Backend/1.0"},
            timeout=30,
        )
        print(f"demo: submitted {video.name}: HTTP {answer.status_code} {answer.json()}")
        seen = 0
        deadline = time.monotonic() + 30 * 60
        while time.monotonic() < deadline:
            calls = backend.calls_for(job_id)
            for call in calls[seen:]:
                b = call.body
                line = (
                    f"  callback: {b.get('status')} {b.get('progress')}% {b.get('message') or ''}"
                )
                print(
                    line
                    + (
                        f" {b.get('error_code')}: {b.get('error_message')}"
                        if b.get("error_code")
                        else ""
                    )
                )
            seen = len(calls)
            job = backend.jobs[job_id]
            if job.status in ("completed", "failed"):
                break
            time.sleep(0.3)
        job = backend.jobs[job_id]
        out = Path("data/demo/result.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        final: dict[str, Any] = next(
            (
                c.body
                for c in reversed(backend.calls_for(job_id))
                if c.body.get("status") == job.status
            ),
            {},
        )
        out.write_text(json.dumps(final, ensure_ascii=False, indent=2))
        if job.status != "completed":
            print(f"demo: job {job.status}: {job.error_code} {job.error_message}")
            return 1
        result = final["result"]
        meta = result["metadata"]
        print(
            f"demo: completed: {meta['duration']} s, {meta['total_segments']} segments, "
            f"{meta['unique_speakers']} speaker(s); "
            f"contract problems: {backend.violations or 'none'}"
        )
        for seg in result["segments"][:5]:
            print(f"  [{seg['start_time']:7.2f}] {seg['speaker']['speaker_id']}: {seg['text']}")
        print(f"demo: full result in {out}")
        return 0 if not backend.violations else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        files.shutdown()
        receiver.stop()
