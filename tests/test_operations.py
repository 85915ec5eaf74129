"""Operations through the real `voxtrace serve`: a burst is queued, not refused; /metrics
scrapes with Prometheus' own parser; JSON logs name the job on every job line; and no
worker outlives its supervisor, whatever it was doing when the supervisor died."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.helpers import FileServer, GatedFileServer, Server, WorkerProcess, free_port, terminal
from voxtrace.devbackend import DevBackend, ServerThread

DATA = Path(__file__).parent / "data"
BURST = 16
STALE_S = "3"  # workers report every second: the tests see them go quickly

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("opsfiles")
    for name in ("sample.mp4", "silence.mp4", "jfk.flac"):
        (root / name).write_bytes((DATA / name).read_bytes())
    server = FileServer(root).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def burst_server(
    tmp_path_factory: pytest.TempPathFactory,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("burst"),
        backend[1].url,
        models_path,
        VOXTRACE_WORKERS="3",
        VOXTRACE_MAX_CONCURRENT_JOBS="2",  # of the three workers configured, two start
        VOXTRACE_WORKER_STALE_S=STALE_S,
        VOXTRACE_LOG_FORMAT="json",
    ).start()
    yield srv
    srv.stop()


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (reaped or not, a zombie runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _worker_pids(srv: Server) -> dict[str, int]:
    queue = httpx.get(f"{srv.url}/api/queue", timeout=5).json()
    return {w["worker_id"]: int(w["pid"]) for w in queue["workers"]}


def _assert_gone(pids: list[int], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"workers {left} outlived their supervisor"


# ------------------------------------------------------------------ the burst


def test_a_burst_of_16_is_all_accepted_and_each_ends_in_one_callback(
    burst_server: Server, backend: tuple[DevBackend, ServerThread], files: FileServer
) -> None:
    """The deployed backend submits as uploads come and fails a refused job for good:
    16 at once used to get 6 refusals (503 from the 11th unfinished job on)."""
    receiver, _ = backend
    media = ["jfk.flac", "sample.mp4"] + ["silence.mp4"] * (BURST - 2)
    jobs = [str(uuid.uuid4()) for _ in media]
    for job_id in jobs:
        receiver.register(job_id)
    with ThreadPoolExecutor(BURST) as pool:  # all at once, as a burst of uploads
        answers = list(
            pool.map(
                lambda a: burst_server.submit(a[0], files.url(a[1])), zip(jobs, media, strict=True)
            )
        )
    assert [a.status_code for a in answers] == [200] * BURST, [a.text for a in answers]
    assert all(a.json()["status"] == "accepted" for a in answers)
    assert max(a.json()["estimated_time"] for a in answers) > min(
        a.json()["estimated_time"] for a in answers
    )  # the later ones wait for the earlier ones
    most_at_once = 0
    deadline = time.monotonic() + 600
    while (queue := httpx.get(f"{burst_server.url}/api/queue", timeout=5).json())["unfinished"]:
        most_at_once = max(most_at_once, queue["processing"])
        assert time.monotonic() < deadline, queue
        time.sleep(0.2)
    assert 1 <= most_at_once <= 2  # VOXTRACE_MAX_CONCURRENT_JOBS
    for job_id in jobs:
        receiver.wait_for(job_id, {"completed", "failed"}, 60)
    time.sleep(1)  # a second terminal callback would show up here
    for job_id, name in zip(jobs, media, strict=True):
        ends = terminal(receiver.calls_for(job_id))
        assert [c.body["status"] for c in ends] == ["completed"], (name, ends)
    assert burst_server.job(jobs[0])["result"]["segments"]  # the speech was transcribed


def test_metrics_scrape_with_the_prometheus_parser(
    burst_server: Server, backend: tuple[DevBackend, ServerThread], files: FileServer
) -> None:
    receiver, _ = backend
    job_id = str(uuid.uuid4())
    receiver.register(job_id)
    assert burst_server.submit(job_id, files.url("silence.mp4")).status_code == 200
    receiver.wait_for(job_id, {"completed"}, 120)
    _wait(
        lambda: burst_server.job(job_id)["callbacks"][-1]["state"] == "delivered",
        30,
        "terminal callback delivered",
    )
    response = httpx.get(f"{burst_server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def samples(name: str, sample_name: str | None = None) -> dict[tuple[str, ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value  # type: ignore[misc]
            for s in families[name].samples
            if sample_name is None or s.name == sample_name
        }

    assert samples("voxtrace_store_up") == {(): 1.0}
    jobs = {dict(k)["state"]: v for k, v in samples("voxtrace_jobs").items()}
    assert jobs["completed"] >= 1 and jobs["accepted"] == 0 and jobs["processing"] == 0
    assert samples("voxtrace_queue_depth") == {(): 0.0}
    assert samples("voxtrace_queue_capacity") == {(): 1000.0}
    workers = {dict(k)["state"]: v for k, v in samples("voxtrace_workers_alive").items()}
    assert workers["busy"] + workers["idle"] == 2
    # stage durations come from the worker processes, added up across them
    counts = {
        dict(k)["stage"]: v
        for k, v in samples(
            "voxtrace_stage_duration_seconds", "voxtrace_stage_duration_seconds_count"
        ).items()
    }
    assert set(counts) >= {"audio", "vad", "speakers", "transcript", "analysis", "assemble"}
    assert counts["audio"] >= 1 and counts["audio"] == counts["assemble"]
    attempts = samples("voxtrace_callback_attempts", "voxtrace_callback_attempts_total")
    delivered = sum(v for k, v in attempts.items() if dict(k)["answer"] == "200")
    assert delivered >= jobs["completed"]  # one terminal callback each, progress besides
    # failures appear once there is one (a multiprocess counter has no zero sample)
    failures = families.get("voxtrace_callback_failures")
    assert failures is None or all(s.labels["answer"] != "200" for s in failures.samples)


def test_json_logs_carry_the_job_id_on_every_job_line(burst_server: Server) -> None:
    """After the jobs above: every line is one JSON object, and lines logged while a
    job runs carry its job_id, including those that do not name it (the pipeline's)."""
    lines = [ln for ln in burst_server.log.read_text().splitlines() if ln.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    accepted = [r for r in records if r["message"].endswith(")") and " accepted (" in r["message"]]
    assert accepted and all(r["message"].split()[1] == r["job_id"] for r in accepted)
    pipeline = [r for r in records if r["logger"] == "voxtrace.pipeline.runner"]
    assert pipeline and all(r.get("job_id") for r in pipeline)
    started = [r for r in records if " started on " in r["message"]]
    assert started and all(r["message"].split()[1].rstrip(":") == r["job_id"] for r in started)


def test_a_worker_node_without_the_api_serves_metrics_on_its_own_port(
    tmp_path: Path, models_path: Path
) -> None:
    """`voxtrace worker` has no HTTP API: VOXTRACE_METRICS_PORT gives Prometheus a port."""
    port = free_port()
    node = WorkerProcess(
        tmp_path,
        "http://127.0.0.1:9",
        models_path,
        VOXTRACE_STORE_URL=str(tmp_path / "jobs.db"),
        VOXTRACE_METRICS_PORT=str(port),
        VOXTRACE_HOST="127.0.0.1",
        VOXTRACE_WORKER_STALE_S=STALE_S,
        VOXTRACE_LOG_FORMAT="json",
    )
    try:
        node.start()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert values[("voxtrace_store_up", ())] == 1
        assert values[("voxtrace_workers_alive", (("state", "idle"),))] == 1
    finally:
        node.stop()
    lines = node.log.read_text().splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines)  # JSON, every line


# -------------------------------------------- workers die with their supervisor


def test_an_idle_worker_dies_with_its_supervisor(burst_server: Server) -> None:
    """Runs last on the burst server: its workers are idle now."""
    pids = list(_worker_pids(burst_server).values())
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    burst_server.kill9()
    _assert_gone(pids)


def test_a_starting_worker_dies_with_a_supervisor_killed_before_it_was_ready(
    tmp_path: Path, models_path: Path
) -> None:
    """The orphan the suite left behind: a supervisor killed while its worker was still
    importing, before the worker armed PR_SET_PDEATHSIG, left it running for good."""
    srv = Server(tmp_path, "http://127.0.0.1:9", models_path, VOXTRACE_WORKER_STALE_S=STALE_S)
    srv.start(wait=False)
    pids: list[int] = []

    def started() -> bool:
        pids[:] = [int(p) for p in re.findall(r"started worker \S+ \(pid (\d+)\)", srv.log_tail())]
        return bool(pids)

    try:
        _wait(started, 60, "a worker was started")
        srv.kill9()  # at once: the worker is still starting its interpreter
        _assert_gone(pids, timeout_s=60)
    finally:
        srv.stop()


def test_a_worker_running_a_job_dies_with_its_supervisor(
    tmp_path: Path, backend: tuple[DevBackend, ServerThread], models_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "sample.mp4").write_bytes((DATA / "sample.mp4").read_bytes())
    gated = GatedFileServer(root).start()
    gated.close_gate()  # the download stalls: the job is surely running when we kill
    srv = Server(tmp_path / "serve", backend[1].url, models_path, VOXTRACE_WORKER_STALE_S=STALE_S)
    try:
        srv.start()
        job_id = str(uuid.uuid4())
        assert srv.submit(job_id, gated.url("sample.mp4")).status_code == 200
        _wait(lambda: gated.held > 0, 60, "the worker is downloading")
        queue = httpx.get(f"{srv.url}/api/queue", timeout=5).json()
        (busy,) = [w for w in queue["workers"] if w.get("job_id") == job_id]
        srv.kill9()
        _assert_gone([int(busy["pid"])])
    finally:
        srv.stop()
        gated.stop()


def test_a_worker_waiting_out_a_store_outage_dies_with_its_supervisor(
    tmp_path: Path, models_path: Path
) -> None:
    srv = Server(tmp_path, "http://127.0.0.1:9", models_path, VOXTRACE_WORKER_STALE_S=STALE_S)
    lock: sqlite3.Connection | None = None
    try:
        srv.start()
        pids = list(_worker_pids(srv).values())
        # Another process holds the write lock: the worker's next report waits out the
        # busy timeout, then the worker waits for the store (and says so once).
        lock = sqlite3.connect(srv.store_path, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        _wait(lambda: "job store unavailable" in srv.log_tail(20_000), 60, "the worker waits")
        srv.kill9()
        _assert_gone(pids)
    finally:
        if lock is not None:
            lock.close()
        srv.stop()


def test_a_worker_replaced_after_its_memory_cap_dies_with_its_supervisor(
    tmp_path: Path, backend: tuple[DevBackend, ServerThread], files: FileServer, models_path: Path
) -> None:
    """The replacement is started by the supervisor's monitor thread, not its main one."""
    receiver, thread = backend
    srv = Server(
        tmp_path,
        thread.url,
        models_path,
        VOXTRACE_WORKER_MAX_RSS_MB="300",
        VOXTRACE_WORKER_STALE_S=STALE_S,
    )
    try:
        srv.start()
        (first,) = _worker_pids(srv).values()
        job_id = str(uuid.uuid4())
        receiver.register(job_id)
        assert srv.submit(job_id, files.url("sample.mp4")).status_code == 200
        receiver.wait_for(job_id, {"completed", "failed"}, 120)
        (end,) = terminal(receiver.calls_for(job_id))
        assert end.body["error_code"] == "INSUFFICIENT_RESOURCES"
        _assert_gone([first])  # killed for its memory
        replacement: list[int] = []

        def replaced() -> bool:
            replacement[:] = [p for p in _worker_pids(srv).values() if p != first]
            return bool(replacement)

        _wait(replaced, 120, "a new worker took its place")
        srv.kill9()
        _assert_gone(replacement)
    finally:
        srv.stop()
