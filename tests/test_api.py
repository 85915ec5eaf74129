"""The HTTP API on a real uvicorn server and a real SQLite store (no workers)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from voxtrace.api import create_app
from voxtrace.config import Settings, get_settings
from voxtrace.devbackend import ServerThread
from voxtrace.store import SqliteJobStore

SUBMIT = "/api/upload-video/process-video"
VIDEO = "https://bucket.s3.ap-northeast-2.amazonaws.com/videos/u/talk.mp4"


def make_server(tmp_path: Path, **overrides: Any) -> tuple[ServerThread, SqliteJobStore, Settings]:
    settings = get_settings(**{"data_dir": tmp_path, "workers": 0, **overrides})
    store = SqliteJobStore(tmp_path / "jobs.db")
    server = ServerThread(create_app(settings, store)).start()
    return server, store, settings


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    server, store, _ = make_server(tmp_path, max_body_bytes=8192)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()
    store.close()


def assert_envelope(
    response: httpx.Response, status: int, code: str, job_id: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["job_id"] == job_id
    text = response.text
    assert "Traceback" not in text and "/work/" not in text and ".py" not in text
    return error


def test_accepts_the_spec_request_and_the_deployed_backends_extras(api: httpx.Client) -> None:
    r = api.post(
        SUBMIT, json={"job_id": "550e8400-e29b-41d4-a716-446655440000", "video_url": VIDEO}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["job_id"] == "550e8400-e29b-41d4-a716-446655440000"
    assert body["status"] == "accepted"
    assert body["message"] == "Processing started"
    assert isinstance(body["estimated_time"], int) and body["estimated_time"] > 0

    extras = {
        "job_id": "test-123",
        "video_url": VIDEO,
        "fastapi_base_url": None,
        "language": "ko",
        "something_new": {"nested": True},
    }
    r = api.post(SUBMIT, json=extras, headers={"User-Agent": "ECS-FastAPI-Backend/1.0"})
    assert r.status_code == 200 and r.json()["status"] == "accepted"


def test_caption_rules_per_request_are_kept_with_the_job(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path)
    body = {"job_id": "cap-1", "video_url": VIDEO, "language": "ko"}
    body |= {"max_chars_per_line": 16, "max_lines": 1, "max_caption_s": 5.5}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post(SUBMIT, json=body).status_code == 200
    server.stop()
    job = store.get("cap-1")
    store.close()
    assert job is not None
    options = job.options
    assert (options.max_chars_per_line, options.max_lines, options.max_caption_s) == (16, 1, 5.5)
    assert options.max_chars_per_s is None  # unset: the language's default applies


def test_resubmission_is_idempotent_and_a_different_url_conflicts(api: httpx.Client) -> None:
    body = {"job_id": "job-1", "video_url": VIDEO}
    assert api.post(SUBMIT, json=body).json()["status"] == "accepted"
    again = api.post(SUBMIT, json=body)
    assert again.status_code == 200
    assert again.json()["job_id"] == "job-1"
    assert again.json()["status"] == "accepted"
    assert api.get("/api/queue").json()["accepted"] == 1  # no second job

    other = api.post(SUBMIT, json={"job_id": "job-1", "video_url": VIDEO + "?v=2"})
    assert_envelope(other, 409, "JOB_CONFLICT", "job-1")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"job_id": "j1"}, "video_url is required"),
        ({"video_url": VIDEO}, "job_id is required"),
        ({"job_id": "j1", "video_url": "ftp://host/file.mp4"}, "video_url"),
        ({"job_id": "j1", "video_url": "file:///etc/passwd"}, "video_url"),
        ({"job_id": "j1", "video_url": "https://user:pw@host/v.mp4"}, "credentials"),
        ({"job_id": "j1", "video_url": "http://169.254.169.254/latest/meta-data"}, "https"),
        ({"job_id": "j1", "video_url": "http://example.com/v.mp4"}, "https"),
        ({"job_id": "j1", "video_url": "https://h/" + "a" * 5000}, "video_url"),
        ({"job_id": "j1", "video_url": VIDEO, "language": "klingon!"}, "language"),
        ({"job_id": "j1", "video_url": VIDEO, "language": "xx"}, "language"),
        ({"job_id": "j1", "video_url": VIDEO, "language": "KOR"}, "language"),
        ({"job_id": "j1", "video_url": VIDEO + "?a=\x00b"}, "control characters"),
        ({"job_id": "j1", "video_url": VIDEO + "\x1b[31m"}, "control characters"),
        ({"job_id": "j1", "video_url": VIDEO + "?q=\x7f"}, "control characters"),
        ({"job_id": "j1", "video_url": VIDEO + "?q=\x85"}, "control characters"),
        ({"job_id": "j1", "video_url": VIDEO, "num_speakers": 0}, "num_speakers"),
        (
            {"job_id": "j1", "video_url": VIDEO, "min_speakers": 4, "max_speakers": 2},
            "min_speakers",
        ),
        ({"job_id": "j1", "video_url": VIDEO, "max_chars_per_line": 2}, "max_chars_per_line"),
        ({"job_id": "j1", "video_url": VIDEO, "max_lines": True}, "max_lines"),
        ({"job_id": "j1", "video_url": VIDEO, "max_caption_s": 0}, "max_caption_s"),
    ],
)
def test_invalid_requests_get_the_envelope(
    api: httpx.Client, body: dict[str, Any], needle: str
) -> None:
    r = api.post(SUBMIT, json=body)
    error = assert_envelope(r, 400, "INVALID_REQUEST", body.get("job_id"))
    assert needle in error["message"]
    assert "ftp://" not in error["message"] and "pw@" not in error["message"]


def test_bad_job_ids_and_bodies(api: httpx.Client) -> None:
    assert_envelope(
        api.post(SUBMIT, json={"job_id": "../../etc", "video_url": VIDEO}),
        400,
        "INVALID_REQUEST",
        "../../etc",
    )
    assert_envelope(
        api.post(SUBMIT, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "INVALID_REQUEST",
    )
    assert_envelope(api.post(SUBMIT, json=["a", "list"]), 400, "INVALID_REQUEST")


def test_http_errors_use_the_envelope(api: httpx.Client) -> None:
    assert_envelope(api.get("/no/such/route"), 404, "NOT_FOUND")
    assert_envelope(api.get(SUBMIT), 405, "METHOD_NOT_ALLOWED")
    assert_envelope(api.get("/api/jobs/unknown-job"), 404, "JOB_NOT_FOUND", "unknown-job")


def test_body_over_the_cap_is_refused_with_413(api: httpx.Client) -> None:
    big = {"job_id": "big", "video_url": VIDEO, "pad": "x" * 20_000}
    assert_envelope(api.post(SUBMIT, json=big), 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed
        yield json.dumps(big).encode()

    assert_envelope(
        api.post(SUBMIT, content=chunks(), headers={"content-type": "application/json"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )


def test_a_burst_past_the_processing_limit_is_queued_not_refused(tmp_path: Path) -> None:
    """The 11th unfinished job used to get 503, and the deployed backend fails a refused
    job for good: now the queue takes them, with estimates that grow with the queue."""
    server, store, settings = make_server(tmp_path)
    assert (settings.max_queued_jobs, settings.max_concurrent_jobs) == (1000, 10)
    try:
        with httpx.Client(base_url=server.url) as client:
            answers = [
                client.post(SUBMIT, json={"job_id": f"b{i}", "video_url": VIDEO}) for i in range(25)
            ]
            assert [a.status_code for a in answers] == [200] * 25
            estimates = [a.json()["estimated_time"] for a in answers]
            # workers=0 here: one slot of the default job time each, so every job waits
            # for all the ones before it
            assert estimates == sorted(estimates) and estimates[-1] > estimates[0]
            queue = client.get("/api/queue").json()
            assert (queue["unfinished"], queue["capacity"], queue["max_concurrent"]) == (
                25,
                1000,
                10,
            )
    finally:
        server.stop()
        store.close()


def test_the_old_max_active_jobs_setting_still_bounds_the_queue(tmp_path: Path) -> None:
    settings = get_settings(data_dir=tmp_path, max_active_jobs=4)
    assert settings.max_queued_jobs == 4
    assert get_settings(max_active_jobs=4, max_queued_jobs=9).max_queued_jobs == 9


def test_below_the_disk_floor_new_jobs_get_503_and_known_ones_an_answer(
    tmp_path: Path,
) -> None:
    server, store, _ = make_server(tmp_path)
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.post(SUBMIT, json={"job_id": "d1", "video_url": VIDEO}).status_code == 200
    finally:
        server.stop()
    # the same data dir, now "full": a floor above any real disk's free space
    server = ServerThread(
        create_app(get_settings(data_dir=tmp_path, workers=0, min_free_disk_mb=2**40), store)
    ).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            r = client.post(SUBMIT, json={"job_id": "d2", "video_url": VIDEO})
            assert_envelope(r, 503, "INSUFFICIENT_RESOURCES", "d2")
            assert "disk" in r.json()["error"]["message"]
            assert int(r.headers["Retry-After"]) >= 1
            assert client.post(SUBMIT, json={"job_id": "d1", "video_url": VIDEO}).status_code == 200
            assert store.get("d2") is None
    finally:
        server.stop()
        store.close()


def test_past_the_queue_bound_jobs_are_refused_with_retry_after(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path, max_queued_jobs=10)
    try:
        with httpx.Client(base_url=server.url) as client:
            for i in range(10):
                assert (
                    client.post(SUBMIT, json={"job_id": f"j{i}", "video_url": VIDEO}).status_code
                    == 200
                )
            r = client.post(SUBMIT, json={"job_id": "j10", "video_url": VIDEO})
            assert_envelope(r, 503, "INSUFFICIENT_RESOURCES", "j10")
            assert int(r.headers["Retry-After"]) >= 1
            # a resubmission of an existing job is still answered
            assert client.post(SUBMIT, json={"job_id": "j3", "video_url": VIDEO}).status_code == 200
            assert client.get("/api/queue").json()["unfinished"] == 10
    finally:
        server.stop()
        store.close()


def test_rate_limit_per_client(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path, rate_limit_per_minute=60, rate_limit_burst=5)
    try:
        with httpx.Client(base_url=server.url) as client:
            codes = [client.get("/api/jobs/x").status_code for _ in range(8)]
            assert codes[:5] == [404] * 5
            assert codes[5:] == [429] * 3
            r = client.get("/api/jobs/x")
            assert_envelope(r, 429, "RATE_LIMITED")
            assert int(r.headers["Retry-After"]) >= 1
            assert client.get("/health").status_code == 200  # health is never limited
    finally:
        server.stop()
        store.close()


def test_job_status_query_redacts_the_url(api: httpx.Client) -> None:
    signed = VIDEO + "?X-Amz-Signature=secret123&X-Amz-Credential=AKIA"
    api.post(SUBMIT, json={"job_id": "s3job", "video_url": signed})
    r = api.get("/api/jobs/s3job")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "accepted" and body["progress"] == 0 and body["attempts"] == 0
    assert body["video_url"] == VIDEO
    assert "secret123" not in r.text and "AKIA" not in r.text


def test_a_job_waiting_to_retry_reads_as_queued_with_its_retry_time(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            client.post(SUBMIT, json={"job_id": "retry", "video_url": VIDEO})
            assert client.get("/api/jobs/retry").json()["retry_at"] is None
            job = store.claim("w1", lease_s=60, now=10.0)
            assert job is not None
            store.requeue("retry", "w1", job.attempts, now=11.0, not_before=4_000_000_000.0)
            body = client.get("/api/jobs/retry").json()
            assert (body["status"], body["attempts"], body["retry_at"]) == (
                "accepted",
                1,
                4_000_000_000.0,
            )
    finally:
        server.stop()
        store.close()


def test_metrics_report_the_store_at_scrape_time(api: httpx.Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for i in range(3):
        assert api.post(SUBMIT, json={"job_id": f"m{i}", "video_url": VIDEO}).status_code == 200
    response = api.get("/metrics")
    assert response.status_code == 200
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert values[("voxtrace_store_up", ())] == 1
    assert values[("voxtrace_jobs", (("state", "accepted"),))] == 3
    assert values[("voxtrace_jobs", (("state", "completed"),))] == 0
    assert values[("voxtrace_queue_depth", ())] == 3
    assert values[("voxtrace_queue_capacity", ())] == 1000
    assert values[("voxtrace_workers_alive", (("state", "idle"),))] == 0


def test_health_queue_and_docs(api: httpx.Client) -> None:
    health = api.get("/health").json()
    assert health["checks"]["store_writable"] is True
    assert health["queue"]["capacity"] == 1000
    spec = api.get("/openapi.json").json()
    assert {SUBMIT, "/api/jobs/{job_id}", "/api/queue", "/health"} <= set(spec["paths"])
    assert api.get("/docs").status_code == 200


def test_health_is_ready_only_once_this_nodes_own_workers_have_their_models(
    tmp_path: Path,
) -> None:
    """Several machines share a store: another node's loaded workers do not make this one
    ready, only its own do."""
    server, store, _ = make_server(tmp_path, workers=1, node_id="m1")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            now = time.time()
            store.worker_seen("m2/101/0", {"worker_id": "m2/101/0", "models_loaded": True}, now)
            store.worker_seen("m1/202/0", {"worker_id": "m1/202/0", "models_loaded": False}, now)
            assert client.get("/health").json()["ready"] is False
            store.worker_seen("m1/202/0", {"worker_id": "m1/202/0", "models_loaded": True}, now)
            health = client.get("/health").json()
            assert health["ready"] is True and health["checks"]["models_loaded"] is True
    finally:
        server.stop()
        store.close()


def test_unexpected_errors_are_generic_500s(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path)
    store.close()
    for leftover in tmp_path.glob("jobs.db*"):
        leftover.unlink()
    (tmp_path / "jobs.db").write_bytes(b"not a database " * 100)  # corrupt: a bug, not I/O
    try:
        r = httpx.get(f"{server.url}/api/jobs/anything")
        assert_envelope(r, 500, "INTERNAL_ERROR")
    finally:
        server.stop()


def test_a_store_that_cannot_open_its_file_answers_503_with_the_job_id(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path)
    store.close()
    (tmp_path / "jobs.db").unlink()
    (tmp_path / "jobs.db").mkdir()  # the store can no longer open its file
    try:
        r = httpx.post(f"{server.url}{SUBMIT}", json={"job_id": "j-503", "video_url": VIDEO})
        assert_envelope(r, 503, "INSUFFICIENT_RESOURCES", job_id="j-503")
        assert int(r.headers["Retry-After"]) >= 1
        r = httpx.get(f"{server.url}/api/jobs/anything")
        assert_envelope(r, 503, "INSUFFICIENT_RESOURCES", job_id="anything")
    finally:
        server.stop()


def test_the_api_never_imports_the_pipeline_or_models() -> None:
    """Accepting a job must never wait for a model: the API only touches the store."""
    import voxtrace.api

    api_dir = Path(voxtrace.api.__file__).parent
    for source in api_dir.glob("*.py"):
        imported = _imports(source)
        forbidden = {
            m
            for m in imported
            if m.startswith(("voxtrace.pipeline", "voxtrace.models", "voxtrace.worker"))
        }
        assert not forbidden, f"{source.name} imports {forbidden}"
        assert "faster_whisper" not in imported


def _imports(source: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_optional_api_key_guards_submit_and_status(tmp_path: Path) -> None:
    server, store, _ = make_server(tmp_path, api_key="s3cret-key")
    try:
        with httpx.Client(base_url=server.url) as client:
            body = {"job_id": "k1", "video_url": VIDEO}
            assert_envelope(client.post(SUBMIT, json=body), 401, "UNAUTHORIZED", "k1")
            wrong = client.post(SUBMIT, json=body, headers={"X-API-Key": "nope"})
            assert_envelope(wrong, 401, "UNAUTHORIZED", "k1")
            ok = client.post(SUBMIT, json=body, headers={"X-API-Key": "s3cret-key"})
            assert ok.status_code == 200
            assert_envelope(client.get("/api/jobs/k1"), 401, "UNAUTHORIZED")
            bearer = client.get("/api/jobs/k1", headers={"Authorization": "Bearer s3cret-key"})
            assert bearer.status_code == 200
            assert client.get("/health").status_code == 200  # probes need no key
    finally:
        server.stop()
        store.close()


def test_job_ids_stay_out_of_unauthenticated_endpoints_when_a_key_is_set(
    tmp_path: Path,
) -> None:
    """/api/queue and /health need no key (probes), so with a key set they must not list
    which job a worker runs: a job id opens that job's status, result and media name."""
    server, store, _ = make_server(tmp_path, api_key="s3cret-key")
    store.worker_seen(
        "node/1/0.1",
        {"state": "busy", "job_id": "victim-job-7", "models_loaded": True},
        time.time(),
    )
    try:
        with httpx.Client(base_url=server.url) as client:
            for path in ("/api/queue", "/health"):
                anonymous = client.get(path)
                assert anonymous.status_code == 200
                assert "victim-job-7" not in anonymous.text, path
                assert "job_id" not in anonymous.text, path
                keyed = client.get(path, headers={"X-API-Key": "s3cret-key"})
                assert "victim-job-7" in keyed.text, path
    finally:
        server.stop()
        store.close()
    server, store, _ = make_server(tmp_path / "open")  # no key: nothing to protect
    store.worker_seen("node/1/0.1", {"state": "busy", "job_id": "j-open"}, time.time())
    try:
        assert "j-open" in httpx.get(f"{server.url}/api/queue").text
    finally:
        server.stop()
        store.close()


@pytest.mark.parametrize("language", ["auto", "AUTO", None, "", "ko", "KO", "haw", "yue"])
def test_auto_null_and_whisper_languages_are_accepted(
    api: httpx.Client, language: str | None
) -> None:
    job_id = f"lang-{language!s}"
    body = {"job_id": job_id, "video_url": VIDEO, "language": language}
    r = api.post(SUBMIT, json=body)
    assert r.status_code == 200, r.text


def test_the_language_list_is_whispers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    from voxtrace.api.schemas import WHISPER_LANGUAGES

    assert set(_LANGUAGE_CODES) == WHISPER_LANGUAGES
