"""Faults through the real `voxtrace serve`: kill -9 of the server or of a worker in each
pipeline stage and during callback delivery, a misbehaving backend, a nearly full disk.

After any kill, the job ends with exactly one terminal outcome, equal to an undisturbed
run's, and leaves no temp file. The full stage matrix, repeated, is in `reliability`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reliability.scenarios import (
    POLLING_ENV,
    Rig,
    Tmpfs,
    backend_fault,
    hostile_callback,
    kill_during,
    kill_during_callback,
    models_dir,
    signature,
    terminal_calls,
)
from testing.helpers import SECRET, GatedFileServer, Server, free_port
from testing.hostile_servers import HostileBackend, HostileServer
from voxtrace.devbackend import DevBackend, ServerThread

DATA = Path(__file__).parent / "data"
ATTEMPTS = 3  # a job that keeps meeting a full disk fails after this many
STALE_S = 6  # workers unseen this long are not alive (VOXTRACE_WORKER_STALE_S)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    root = tmp_path_factory.mktemp("faultfiles")
    for name in ("sample.mp4", "silence.mp4"):
        (root / name).write_bytes((DATA / name).read_bytes())
    # ~2.5 s to download sample.mp4: the audio stage lasts long enough to be hit
    server = HostileServer(root, slow_bytes_per_s=50_000).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
    files: HostileServer,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> Iterator[Rig]:
    models, _ = models_dir(models_path, tmp_path_factory.mktemp("models-diarize"))
    data_dir = tmp_path_factory.mktemp("faults")
    env = {**POLLING_ENV, "VOXTRACE_WORKER_STALE_S": str(STALE_S)}
    srv = Server(data_dir, backend[1].url, models, **env).start()
    yield Rig(srv, files, backend[0], data_dir)
    srv.stop()


@pytest.fixture(scope="module")
def baseline(rig: Rig) -> list[Any]:
    """The undisturbed run every disturbed one must equal."""
    job_id = rig.submit(rig.files.url("slow", "sample.mp4"))
    (end,) = terminal_calls(rig.wait_terminal(job_id))
    assert end.body["status"] == "completed"
    sig = signature(end.body["result"])
    assert sig, "the baseline has no segments"
    return sig


# A few stages, both targets; `python -m reliability` runs every stage x target.
@pytest.mark.parametrize(
    ("target", "stage"),
    [("serve", "audio"), ("worker", "speakers"), ("worker", "transcript")],
)
def test_kill9_in_a_stage_then_exactly_one_identical_result(
    rig: Rig, baseline: list[Any], target: str, stage: str
) -> None:
    outcome = kill_during(rig, rig.files.url("slow", "sample.mp4"), stage, target, baseline)
    assert outcome.stage_hit != "-", outcome  # the kill really happened mid-job
    assert outcome.status == "completed", outcome
    assert outcome.terminal_calls == 1, outcome
    assert outcome.identical, outcome
    assert outcome.attempts == 2, outcome
    assert outcome.work_empty, outcome
    if target == "serve":
        rig.srv.wait_ready(60)


def test_kill9_while_the_terminal_callback_is_in_flight(rig: Rig, baseline: list[Any]) -> None:
    for _ in range(2):  # the kill can lose the race with a fast delivery: then again
        outcome = kill_during_callback(rig, rig.files.url("slow", "sample.mp4"), baseline)
        if not any(note.startswith("missed") for note in outcome.notes):
            break
        rig.srv.wait_ready(60)
    assert not any(note.startswith("missed") for note in outcome.notes), outcome
    assert outcome.status == "completed", outcome
    # at-least-once: the backend receives the same callback twice, never two outcomes
    assert outcome.terminal_calls >= 1 and outcome.distinct_terminal == 1, outcome
    assert outcome.identical, outcome
    assert outcome.attempts == 1, outcome  # the job itself was done: not run again
    assert outcome.work_empty, outcome
    rig.srv.wait_ready(60)


# ------------------------------------------------------------------ backend faults


@pytest.fixture(scope="module")
def policy_rig(
    tmp_path_factory: pytest.TempPathFactory,
    files: HostileServer,
    models_path: Path,
) -> Iterator[tuple[Rig, str]]:
    backend = DevBackend(secret=SECRET)
    thread = ServerThread(backend.app).start()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    data_dir = tmp_path_factory.mktemp("policy")
    srv = Server(
        data_dir,
        thread.url,
        models_path,
        VOXTRACE_SEND_PROGRESS="false",  # only terminal callbacks: faults hit them
        VOXTRACE_CALLBACK_TIMEOUT_S="1",
        VOXTRACE_CALLBACK_RETRY_WINDOW_S="6",
        VOXTRACE_CALLBACK_ALLOWLIST=dead,
        **POLLING_ENV,
    ).start()
    yield Rig(srv, files, backend, data_dir), dead
    srv.stop()
    thread.stop()


@pytest.mark.parametrize(
    ("mode", "state", "min_attempts", "max_attempts", "error"),
    [
        ("500", "delivered", 3, 3, None),  # two 500s, then delivered
        ("429", "delivered", 2, 2, None),
        ("flapping", "delivered", 2, 2, None),  # 503, then passes
        ("slow", "delivered", 3, 30, None),  # timeouts, then the backend recovers
        ("404", "dead", 1, 1, "HTTP 404"),  # final: given up after one attempt
        ("down", "dead", 3, 60, "ConnectError"),  # retried until the window closes
    ],
)
def test_callback_delivery_policy(
    policy_rig: tuple[Rig, str],
    mode: str,
    state: str,
    min_attempts: int,
    max_attempts: int,
    error: str | None,
) -> None:
    rig, dead = policy_rig
    outcome = backend_fault(rig, rig.files.url("file", "silence.mp4"), mode, dead)
    assert outcome.job_status == "completed", outcome  # delivery never changes the job
    assert outcome.state == state, outcome
    assert min_attempts <= outcome.attempts <= max_attempts, outcome
    if error:
        assert outcome.last_error and error in outcome.last_error, outcome
    if state == "delivered":
        assert outcome.backend_status == "completed", outcome
        assert outcome.received >= 1, outcome
    if mode == "404":
        assert outcome.received == 0  # the injected 404 is not recorded as a callback
    if mode == "down":
        assert outcome.received == 0


@pytest.fixture(scope="module")
def trickle_rig(
    tmp_path_factory: pytest.TempPathFactory,
    files: HostileServer,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> Iterator[tuple[Rig, str]]:
    """serve with one worker, a healthy backend, and a hostile callback endpoint that is
    allowlisted under each of its behaviours."""
    hostile = HostileBackend(interval_s=0.5).start()
    kinds = ("trickle-body", "trickle-head", "huge")
    srv = Server(
        tmp_path_factory.mktemp("trickle"),
        backend[1].url,
        models_path,
        VOXTRACE_SEND_PROGRESS="false",  # only terminal callbacks: one per job
        VOXTRACE_CALLBACK_TIMEOUT_S="2",  # the attempt deadline; the trickle never idles 2 s
        VOXTRACE_CALLBACK_RETRY_WINDOW_S="8",
        VOXTRACE_CALLBACK_ALLOWLIST=",".join(f"{hostile.url}/{kind}" for kind in kinds),
        **POLLING_ENV,
    ).start()
    yield Rig(srv, files, backend[0], srv.data_dir), hostile.url
    srv.stop()
    hostile.stop()


@pytest.mark.parametrize("kind", ["trickle-body", "trickle-head", "huge"])
def test_a_hostile_callback_endpoint_does_not_hold_up_other_jobs(
    trickle_rig: tuple[Rig, str], kind: str
) -> None:
    rig, hostile = trickle_rig
    outcome = hostile_callback(rig, rig.files.url("file", "silence.mp4"), hostile, kind)
    assert outcome.healthy_status == "completed", outcome
    if kind == "huge":  # a 200 answer whose 200-MB body is not read
        assert outcome.hostile_state == "delivered", outcome
        assert outcome.serve_rss_growth_mb < 50, outcome
    else:  # each attempt ends at its deadline; retried, then given up with the window
        assert outcome.hostile_error and "deadline exceeded" in outcome.hostile_error, outcome


# ------------------------------------------------------------------ disk nearly full


def test_disk_nearly_full_fails_cleanly_then_recovers(
    tmp_path: Path,
    files: HostileServer,
    backend: tuple[DevBackend, ServerThread],
    models_path: Path,
) -> None:
    disk = Tmpfs(tmp_path / "data", size_mb=40)
    why_not = disk.mount()
    if why_not:
        pytest.skip(f"cannot make a small filesystem: {why_not}")
    receiver_app, thread = backend
    # INSUFFICIENT_RESOURCES is retried, each attempt after a wait (5 s, 10 s by default):
    # a short wait keeps the test fast; each failure still comes after all its attempts.
    srv = Server(
        disk.path,
        thread.url,
        models_path,
        VOXTRACE_MIN_FREE_DISK_MB="10",
        VOXTRACE_MAX_ATTEMPTS=str(ATTEMPTS),
        VOXTRACE_JOB_RETRY_BACKOFF_BASE_S="0.2",
        **POLLING_ENV,
    )
    gated = GatedFileServer(files.root).start()
    try:
        srv.start()
        rig = Rig(srv, files, receiver_app, disk.path)

        # jobs accepted before the disk filled up: the worker refuses to start them below
        # the floor (before any download), retries, then gives up
        gated.close_gate()
        running = rig.submit(gated.url("silence.mp4"))  # holds the only worker
        deadline = time.monotonic() + 60
        while not gated.held:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        queued = rig.submit(files.url("file", "sample.mp4"))
        filler = disk.fill(leave_mb=5)
        gated.open_gate()
        assert len(terminal_calls(rig.wait_terminal(running, 120))) == 1
        (end,) = terminal_calls(rig.wait_terminal(queued, 120))
        assert end.body["status"] == "failed"
        assert end.body["error_code"] == "INSUFFICIENT_RESOURCES"
        assert rig.job(queued)["attempts"] == ATTEMPTS  # retried, then given up
        health = httpx.get(f"{srv.url}/health", timeout=5)
        assert health.status_code == 200 and health.json()["checks"]["store_writable"]

        # new jobs below the floor are refused at submit (503, retryable): the backend
        # would not retry a job accepted only to fail
        refused = srv.submit(str(uuid.uuid4()), files.url("file", "silence.mp4"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "INSUFFICIENT_RESOURCES"
        assert int(refused.headers["Retry-After"]) >= 1
        assert srv.submit(queued, files.url("file", "sample.mp4")).status_code == 200  # known

        # above the floor, but the decoded audio does not fit: ENOSPC inside ffmpeg
        filler.unlink()
        disk.fill(leave_mb=14)
        long_silence = files.root / "long-silence.flac"
        _silence_flac(long_silence, seconds=1800)  # 1800 s decode to ~58 MB of PCM
        job_id = rig.submit(files.url("file", long_silence.name))
        (end,) = terminal_calls(rig.wait_terminal(job_id, 120))
        assert end.body["status"] == "failed"
        assert end.body["error_code"] == "INSUFFICIENT_RESOURCES"
        assert rig.job(job_id)["attempts"] == ATTEMPTS
        assert rig.work_empty()

        # space freed: jobs complete again
        (disk.path / "filler.bin").unlink()
        job_id = rig.submit(files.url("file", "silence.mp4"))
        (end,) = terminal_calls(rig.wait_terminal(job_id, 120))
        assert end.body["status"] == "completed"
        assert rig.work_empty()
    finally:
        srv.stop()
        gated.stop()
        time.sleep(0.2)
        disk.unmount()


def _silence_flac(path: Path, seconds: int) -> None:
    import subprocess

    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "anullsrc=r=8000:cl=mono", "-t", str(seconds), "-c:a", "flac", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip


# ------------------------------------------------------------------ long jobs


def test_a_worker_busy_longer_than_the_staleness_window_stays_visible(rig: Rig) -> None:
    """A busy worker reported itself only when it took the job, so after the staleness
    window (VOXTRACE_WORKER_STALE_S, 30 s by default) it vanished from /api/queue and
    /health went unready (`workers_alive: false`) for as long as any long job ran. Now
    it keeps reporting."""
    with HostileServer(rig.files.root, slow_bytes_per_s=2_500) as slow:
        job_id = rig.submit(slow.url("slow", "silence.mp4"))  # ~15 s to download
        deadline = time.monotonic() + 30
        while rig.worker_pid(job_id) is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(STALE_S + 1.5)
        assert rig.job(job_id)["status"] == "processing"
        assert rig.worker_pid(job_id) is not None
        health = httpx.get(f"{rig.srv.url}/health", timeout=5).json()
        assert health["ready"] and health["checks"]["workers_alive"], health
        (end,) = terminal_calls(rig.wait_terminal(job_id, 120))
        assert end.body["status"] == "completed"
