"""A stand-in for the deployed ECG backend's callback side, for the demo and the tests.

It behaves as SPEC.md part 2 reads the real backend's source:
- `POST /api/v1/ml/ml-results`: any JSON dict; no job_id -> 400; unknown job -> 404;
  every status but "failed" marks the job completed (progress 100, result or {}).
- `POST /api/upload-video/result`: validated body (fractional progress -> 422),
  optional HMAC (`X-Signature-256` present and wrong -> 401), idempotent
  (`already_completed` / `already_failed`), renames start_time/end_time -> start/end.
- `GET /api/v1/ml/job-status/{job_id}`: the stored job.
It also records every request it saw and checks each result against the schema the
real backend's status endpoint validates (floats, never null; speaker is an object).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

__all__ = ["DevBackend", "ReceivedCall", "ServerThread", "contract_violations"]


class _Word(BaseModel):
    word: str
    start: float
    end: float
    volume_db: float
    pitch_hz: float


class _Speaker(BaseModel):
    speaker_id: str


class _Segment(BaseModel):
    start_time: float
    end_time: float
    speaker: _Speaker
    text: str
    words: list[_Word]


class _Metadata(BaseModel):
    filename: str
    duration: float
    total_segments: int
    unique_speakers: int


class _Result(BaseModel):
    metadata: _Metadata
    segments: list[_Segment]


class _Callback(BaseModel):
    job_id: str
    status: str
    progress: int | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    error_message: str | None = None
    error_code: str | None = None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def contract_violations(result: dict[str, Any]) -> list[str]:
    """Every way `result` breaks SPEC.md part 3's rules (empty when it is fine)."""
    problems: list[str] = []
    try:
        _Result.model_validate(result)
    except ValidationError as exc:
        problems += [f"schema: {e['loc']} {e['msg']}" for e in exc.errors()]
        return problems
    if not _finite(result):
        problems.append("non-finite number")
    segments = result["segments"]
    if result["metadata"]["total_segments"] != len(segments):
        problems.append("total_segments does not match")
    speakers = {s["speaker"]["speaker_id"] for s in segments}
    if result["metadata"]["unique_speakers"] != len(speakers):
        problems.append("unique_speakers does not match")
    for seg in segments:
        if seg["end_time"] < seg["start_time"]:
            problems.append("segment ends before it starts")
        for w in seg["words"]:
            if not -60 <= w["volume_db"] <= 0:
                problems.append(f"volume_db out of range: {w['volume_db']}")
            if not 100 <= w["pitch_hz"] <= 1000:
                problems.append(f"pitch_hz out of range: {w['pitch_hz']}")
            if w["end"] < w["start"]:
                problems.append("word ends before it starts")
    return problems


@dataclass
class ReceivedCall:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    answer_status: int
    at: float


@dataclass
class _Job:
    status: str = "processing"
    progress: int = 0
    result: dict[str, Any] | None = None
    error_message: str | None = None
    error_code: str | None = None
    updated_at: float = field(default_factory=time.time)


class DevBackend:
    """The backend's callback endpoints, in memory. Thread-safe."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.jobs: dict[str, _Job] = {}
        self.calls: list[ReceivedCall] = []
        self.violations: list[str] = []
        self.faults: list[int] = []  # statuses to answer with next, one per request
        self.delay_s = 0.0  # answer slowly (a backend slower than the callback timeout)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.app = self._build_app()

    def register(self, job_id: str) -> None:
        with self._lock:
            self.jobs.setdefault(job_id, _Job())

    def calls_for(self, job_id: str) -> list[ReceivedCall]:
        with self._lock:
            return [
                c for c in self.calls if isinstance(c.body, dict) and c.body.get("job_id") == job_id
            ]

    def wait_for(self, job_id: str, statuses: set[str], timeout_s: float) -> _Job:
        """Block until the job reaches one of `statuses` (by the callbacks received)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                job = self.jobs.get(job_id)
                if job is not None and job.status in statuses:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not reach {statuses}; now {job}")
                self._changed.wait(left)

    def _record(self, request: Request, raw: bytes, body: Any, status: int) -> None:
        with self._changed:
            self.calls.append(
                ReceivedCall(
                    request.url.path, dict(request.headers), raw, body, status, time.time()
                )
            )
            self._changed.notify_all()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="voxtrace dev backend")

        async def read(request: Request) -> tuple[bytes, Any, JSONResponse | None]:
            raw = await request.body()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            with self._lock:
                fault = self.faults.pop(0) if self.faults else None
            if fault is not None:
                return raw, None, JSONResponse({"detail": "injected fault"}, status_code=fault)
            try:
                return raw, json.loads(raw), None
            except ValueError:
                return raw, None, JSONResponse({"detail": "invalid json"}, status_code=400)

        @app.post("/api/v1/ml/ml-results")
        async def ml_results(request: Request) -> JSONResponse:
            raw, body, fault = await read(request)
            answer = fault or self._ml_results(body)
            self._record(request, raw, body, answer.status_code)
            return answer

        @app.post("/api/upload-video/result")
        async def upload_result(request: Request) -> JSONResponse:
            raw, body, fault = await read(request)
            answer = fault or self._upload_result(request, raw, body)
            self._record(request, raw, body, answer.status_code)
            return answer

        @app.get("/api/v1/ml/job-status/{job_id}")
        async def job_status(job_id: str) -> JSONResponse:
            with self._lock:
                job = self.jobs.get(job_id)
            if job is None:
                return JSONResponse({"detail": "Job not found"}, status_code=404)
            return JSONResponse({"job_id": job_id, **job.__dict__})

        return app

    def _check_result(self, result: dict[str, Any] | None) -> None:
        if result:
            self.violations += contract_violations(result)

    def _ml_results(self, body: Any) -> JSONResponse:
        if not isinstance(body, dict) or not body.get("job_id"):
            return JSONResponse({"detail": "job_id is required"}, status_code=400)
        with self._changed:
            job = self.jobs.get(body["job_id"])
            if job is None:
                return JSONResponse({"detail": "Job not found"}, status_code=404)
            if body.get("status") == "failed":
                job.status, job.progress = "failed", 0
                job.error_message = body.get("error_message")
                job.error_code = body.get("error_code")
            else:
                job.status, job.progress = "completed", 100
                job.result = body.get("result", {})
                self._check_result(job.result)
            job.updated_at = time.time()
            self._changed.notify_all()
        return JSONResponse({"status": "received"})

    def _upload_result(self, request: Request, raw: bytes, body: Any) -> JSONResponse:
        signature = request.headers.get("x-signature-256")
        if signature is not None:
            expected = (
                "sha256=" + hmac.new((self.secret or "").encode(), raw, hashlib.sha256).hexdigest()
            )
            if not self.secret or not hmac.compare_digest(signature, expected):
                return JSONResponse({"detail": "Invalid signature"}, status_code=401)
        try:
            cb = _Callback.model_validate(body)
        except ValidationError:
            return JSONResponse({"detail": "validation error"}, status_code=422)
        with self._changed:
            job = self.jobs.get(cb.job_id)
            if job is None:
                return JSONResponse({"detail": "Job not found"}, status_code=404)
            if job.status == "completed":
                return JSONResponse({"status": "already_completed"})
            if job.status == "failed" and cb.status != "failed":
                return JSONResponse({"status": "already_failed"})
            job.updated_at = time.time()
            if cb.status == "processing":
                job.progress = cb.progress if cb.progress is not None else job.progress
            elif cb.status == "completed":
                self._check_result(cb.result)
                job.status, job.progress = "completed", 100
                job.result = _rename_times(cb.result or {})
            elif cb.status == "failed":
                job.status = "failed"
                job.error_message, job.error_code = cb.error_message, cb.error_code
            self._changed.notify_all()
        return JSONResponse({"status": "received"})


def _rename_times(result: dict[str, Any]) -> dict[str, Any]:
    segments = [
        {
            ("start" if k == "start_time" else "end" if k == "end_time" else k): v
            for k, v in s.items()
        }
        for s in result.get("segments", [])
    ]
    return {**result, "segments": segments}


class ServerThread:
    """Run an ASGI app under uvicorn in a background thread (tests, the demo)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host
        self.port = port

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        sockets = self.server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
