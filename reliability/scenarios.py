"""Fault scenarios against the real `voxtrace serve`: each returns what it observed.

Shared by `tests/test_faults.py` (which asserts on one run) and `reliability.run`
(which repeats them and counts); `failover` (two machines on one PostgreSQL store) is
shared the same way with `tests/test_multinode.py`. Nothing here asserts; it measures.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from testing.helpers import GatedFileServer, ServeProcess, Server, WorkerProcess, closed_by_peer
from testing.hostile_servers import HostileServer
from voxtrace.devbackend import DevBackend, ReceivedCall, contract_violations
from voxtrace.domain import Job, JobOptions, JobStatus, NewJob
from voxtrace.store import JobStore, open_store

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

STAGES: dict[str, tuple[int, int]] = {
    "init": (0, 10),
    "audio": (10, 25),
    "vad": (25, 40),
    "speakers": (40, 60),
    "transcript": (60, 75),
    "analysis": (75, 90),
    "assemble": (90, 101),
}
TERMINAL = frozenset({"completed", "failed"})
# The scenarios poll the status API every 20 ms: lift the per-client rate limit.
POLLING_ENV = {"VOXTRACE_RATE_LIMIT_PER_MINUTE": "100000", "VOXTRACE_RATE_LIMIT_BURST": "10000"}
_T = TypeVar("_T")


def stage_of(progress: int) -> str:
    return next(name for name, (lo, hi) in STAGES.items() if lo <= progress < hi)


def models_dir(whisper_models: Path, dest: Path) -> tuple[Path, bool]:
    """A model directory for the server: the given Whisper models, plus the exported
    speaker models from `data/models/speaker` when `make setup` made them (so the
    speakers stage really runs). Returns (path, has_diarizer)."""
    speakers = ROOT / "data" / "models" / "speaker"
    if not (speakers / "speaker-models.json").is_file():
        return whisper_models, False
    dest.mkdir(parents=True, exist_ok=True)
    for child in whisper_models.iterdir():
        link = dest / child.name
        if not link.exists():
            link.symlink_to(child.resolve())
    if not (dest / "speaker").exists():
        (dest / "speaker").symlink_to(speakers)
    return dest, True


# ------------------------------------------------------------------------- results


def signature(result: dict[str, Any] | None) -> list[Any]:
    """What must not change when a run is disturbed: text, speakers, word times."""
    if not result:
        return []
    return [
        (
            seg["text"],
            seg["speaker"]["speaker_id"],
            [(w["word"], w["start"], w["end"]) for w in seg["words"]],
        )
        for seg in result["segments"]
    ]


def terminal_calls(calls: list[ReceivedCall]) -> list[ReceivedCall]:
    return [c for c in calls if c.body.get("status") in TERMINAL]


@dataclass
class Rig:
    """One `voxtrace serve`, a file server and a backend receiver."""

    srv: Server
    files: HostileServer
    receiver: DevBackend
    data_dir: Path

    def submit(self, url: str, **extra: Any) -> str:
        job_id = str(uuid.uuid4())
        self.receiver.register(job_id)
        answer = self.srv.submit(job_id, url, **extra)
        if answer.status_code != 200:
            raise RuntimeError(f"submission refused: {answer.status_code} {answer.text}")
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /api/jobs/{id}, riding out a transient non-200 answer."""
        for _ in range(50):
            answer = httpx.get(f"{self.srv.url}/api/jobs/{job_id}", timeout=10)
            if answer.status_code == 200:
                result: dict[str, Any] = answer.json()
                return result
            time.sleep(0.2)
        raise RuntimeError(f"status query kept failing: {answer.status_code} {answer.text}")

    def wait_terminal(self, job_id: str, timeout_s: float = 180) -> list[ReceivedCall]:
        self.receiver.wait_for(job_id, set(TERMINAL), timeout_s)
        time.sleep(0.5)  # anything sent after the terminal callback shows up here
        return self.receiver.calls_for(job_id)

    def work_empty(self, wait_s: float = 5.0) -> bool:
        """The worker removes the job's directory just after it reports: allow a moment."""
        work = self.data_dir / "work"
        deadline = time.monotonic() + wait_s
        while True:
            if not work.exists() or not any(work.iterdir()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def worker_pid(self, job_id: str) -> int | None:
        queue = httpx.get(f"{self.srv.url}/api/queue", timeout=5).json()
        for worker in queue["workers"]:
            if worker.get("job_id") == job_id and worker.get("state") == "busy":
                return int(worker["pid"])
        return None


@contextlib.contextmanager
def running(srv: Server) -> Iterator[Server]:
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# ------------------------------------------------------------------------- kills


@dataclass
class KillOutcome:
    target: str  # "serve" | "worker" | "serve-during-callback"
    stage_wanted: str
    stage_hit: str  # where the job really was when killed ("-" if it finished first)
    progress_at_kill: int
    status: str
    terminal_calls: int  # terminal callbacks the backend received
    distinct_terminal: int  # different terminal bodies among them (must be 1)
    identical: bool  # result equals the undisturbed run's
    attempts: int
    work_empty: bool
    recovery_s: float  # kill -> terminal callback received
    notes: list[str] = field(default_factory=list)


def _finish(
    rig: Rig, job_id: str, baseline: list[Any], outcome: dict[str, Any], killed_at: float
) -> KillOutcome:
    """`killed_at` is wall-clock time (the receiver stamps calls with time.time())."""
    calls = rig.wait_terminal(job_id)
    ends = terminal_calls(calls)
    recovery_s = ends[-1].at - killed_at if ends else -1.0
    job = rig.job(job_id)
    results = [c.body.get("result") for c in ends]
    identical = bool(ends) and all(signature(r) == baseline for r in results)
    identical = identical and signature(job.get("result")) == baseline
    return KillOutcome(
        status=job["status"],
        terminal_calls=len(ends),
        distinct_terminal=len({c.raw for c in ends}),
        identical=identical,
        attempts=int(job["attempts"]),
        work_empty=rig.work_empty(),
        recovery_s=round(max(0.0, recovery_s), 2),
        **outcome,
    )


def kill_during(rig: Rig, url: str, stage: str, target: str, baseline: list[Any]) -> KillOutcome:
    """Submit `url`, kill -9 `target` ("serve" or "worker") once the job's progress is in
    `stage`'s range, restart what needs restarting, and report how the job ended."""
    lo, _ = STAGES[stage]
    return _kill_when(rig, url, target, baseline, stage, lambda progress, _s: progress >= lo)


def kill_after(rig: Rig, url: str, delay_s: float, target: str, baseline: list[Any]) -> KillOutcome:
    """Like `kill_during`, at a moment: `delay_s` after a worker took the job."""
    return _kill_when(
        rig, url, target, baseline, f"+{delay_s:.1f}s", lambda _p, running_s: running_s >= delay_s
    )


def _kill_when(
    rig: Rig,
    url: str,
    target: str,
    baseline: list[Any],
    wanted: str,
    due: Callable[[int, float], bool],
    poll_s: float = 0.02,
) -> KillOutcome:
    job_id = rig.submit(url)
    pid: int | None = None
    deadline = time.monotonic() + 120
    progress, status = 0, "accepted"
    processing_since: float | None = None
    while time.monotonic() < deadline:
        job = rig.job(job_id)
        progress, status = int(job["progress"]), str(job["status"])
        if status in TERMINAL:
            break
        if status == "processing" and processing_since is None:
            processing_since = time.monotonic()
        if target == "worker" and pid is None and status == "processing":
            pid = rig.worker_pid(job_id)
        ready = processing_since is not None and (target == "serve" or pid is not None)
        if ready and due(progress, time.monotonic() - (processing_since or 0.0)):
            break
        time.sleep(poll_s)
    notes: list[str] = []
    hit = "-" if status in TERMINAL else stage_of(progress)
    if hit == "-":
        notes.append("job finished before the kill")
    killed_at = time.time()
    if hit != "-":
        if target == "serve":
            rig.srv.kill9()
            time.sleep(0.5)
            rig.srv.start()
        elif pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    out = {
        "target": target,
        "stage_wanted": wanted,
        "stage_hit": hit,
        "progress_at_kill": progress,
        "notes": notes,
    }
    return _finish(rig, job_id, baseline, out, killed_at)


def kill_during_callback(
    rig: Rig, url: str, baseline: list[Any], delay_s: float = 3.0
) -> KillOutcome:
    """kill -9 the server while the terminal callback is in flight; restart.

    The backend turns slow (`delay_s` per answer) the moment the job is seen completed,
    so the terminal callback, sent within the dispatcher's 0.5 s poll, is still
    unanswered a second later. The backend still processes that request, and the
    restarted server sends it again (at-least-once: same bytes, same Idempotency-Key),
    which the validated endpoint answers `already_completed`.
    """
    job_id = rig.submit(url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if rig.job(job_id)["status"] in TERMINAL:
            break
        time.sleep(0.02)
    rig.receiver.delay_s = delay_s
    notes: list[str] = []
    try:
        time.sleep(min(1.0, delay_s / 3))  # sent, not yet answered
        if terminal_calls(rig.receiver.calls_for(job_id)):
            notes.append("missed: the terminal callback was answered before the kill")
        killed_at = time.time()
        progress = int(rig.job(job_id)["progress"])
        rig.srv.kill9()
    finally:
        rig.receiver.delay_s = 0.0
    time.sleep(0.5)
    rig.srv.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # redelivered after the restart?
        ends = [c for c in rig.job(job_id)["callbacks"] if c["terminal"]]
        if ends and ends[-1]["state"] != "pending":
            break
        time.sleep(0.1)
    time.sleep(delay_s)  # the backend finishes the request the killed server left behind
    out = {
        "target": "serve-during-callback",
        "stage_wanted": "callback",
        "stage_hit": "callback",
        "progress_at_kill": progress,
        "notes": notes,
    }
    outcome = _finish(rig, job_id, baseline, out, killed_at)
    ends_seen = terminal_calls(rig.receiver.calls_for(job_id))
    answers = [c.answer_status for c in ends_seen]
    keys = {c.headers.get("idempotency-key") for c in ends_seen}
    outcome.notes.append(f"terminal answers {answers}, idempotency keys {len(keys)}")
    return outcome


# ------------------------------------------------------------------ backend faults


@dataclass
class PolicyOutcome:
    mode: str
    job_status: str
    state: str  # the terminal callback's state in GET /api/jobs/{id}
    attempts: int
    last_error: str | None
    received: int  # terminal callbacks the backend received (and processed)
    backend_status: str  # the job's state as the backend stored it
    elapsed_s: float


def backend_fault(rig: Rig, url: str, mode: str, dead_base_url: str) -> PolicyOutcome:
    """One job under one callback fault mode; the server must be started with progress
    callbacks off, a short callback timeout and a short retry window (see test_faults).

    modes: down, slow, flapping, 500, 429, 404.
    """
    from testing.hostile_servers import Flapping

    receiver = rig.receiver
    extra: dict[str, Any] = {}
    if mode == "down":
        extra["fastapi_base_url"] = dead_base_url
    elif mode == "flapping":
        receiver.faults = Flapping(503)
    elif mode in ("500", "429", "404"):
        receiver.faults = [int(mode)] * (1 if mode != "500" else 2)
    elif mode == "slow":
        receiver.delay_s = 2.0  # longer than VOXTRACE_CALLBACK_TIMEOUT_S
    started = time.monotonic()
    try:
        job_id = rig.submit(url, **extra)
        deadline = time.monotonic() + 120
        cb: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = rig.job(job_id)
            ends = [c for c in job["callbacks"] if c["terminal"]]
            if ends:
                cb = ends[-1]
                if mode == "slow" and cb["attempts"] >= 2:
                    receiver.delay_s = 0.0  # the backend recovers
                if cb["state"] != "pending":
                    break
            time.sleep(0.1)
    finally:
        receiver.faults = []
        receiver.delay_s = 0.0
    time.sleep(2.5)  # a slow backend finishes the requests it was still working on
    received = terminal_calls(receiver.calls_for(job_id))
    backend_job = receiver.jobs.get(job_id)
    return PolicyOutcome(
        mode=mode,
        job_status=str(job["status"]),
        state=str(cb.get("state")),
        attempts=int(cb.get("attempts", 0)),
        last_error=cb.get("last_error"),
        received=len(received),
        backend_status=backend_job.status if backend_job else "-",
        elapsed_s=round(time.monotonic() - started, 2),
    )


# ------------------------------------------------------------------ disk full


class Tmpfs:
    """A real small filesystem (root only): `mount -t tmpfs -o size=...`."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; returns why not (not root, mount refused) or None."""
        if shutil.which("mount") is None:
            return "no mount command"
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            return "mount refused: " + proc.stderr.decode(errors="replace").strip()[:200]
        self.mounted = True
        return None

    def fill(self, leave_mb: float) -> Path:
        """Write a filler file so that about `leave_mb` stays free."""
        filler = self.path / "filler.bin"
        free = shutil.disk_usage(self.path).free
        size = max(0, int(free - leave_mb * 2**20))
        with filler.open("ab") as out:
            out.truncate(0)
            block = b"\xa5" * 2**20
            while size > 0:
                out.write(block[: min(size, len(block))])
                size -= len(block)
        return filler

    def free_mb(self) -> float:
        return shutil.disk_usage(self.path).free / 2**20

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False


# ------------------------------------------------------------------ several machines

FAILOVER_MOMENTS = ("download", "speakers", "transcript", "analysis", "callback")
DELIVERS = "this process now delivers the callbacks"
_TROUBLE = re.compile(r" (?:ERROR|CRITICAL) |Traceback")


@dataclass
class FailoverRig:
    """Two machines on one PostgreSQL schema, both started afresh for each run: m2 runs
    `voxtrace worker`, m1 `voxtrace serve`; short leases so a lapse shows in seconds."""

    work: Path
    store_url: str
    receiver: DevBackend
    backend_url: str
    files: GatedFileServer
    models: Path
    video: str = "sample.mp4"
    lease_s: float = 6.0
    heartbeat_s: float = 2.0

    def node(self, kind: type[Server], run: Path, node_id: str) -> Server:
        env = {
            "VOXTRACE_STORE_URL": self.store_url,
            "VOXTRACE_NODE_ID": node_id,
            "VOXTRACE_LEASE_S": f"{self.lease_s:g}",
            "VOXTRACE_HEARTBEAT_S": f"{self.heartbeat_s:g}",
        }
        return kind(run / node_id, self.backend_url, self.models, **env)


@dataclass
class FailoverOutcome:
    moment_wanted: str
    moment_hit: str  # the stage m2's job was in when killed, "callback", or "-" (missed)
    progress_at_kill: int
    status: str
    attempts: int
    first_worker: str  # who claimed the job first (m2/...)
    final_worker: str  # who ran it to the end
    terminal_calls: int  # terminal callbacks the backend received
    distinct_terminal: int  # different terminal bodies among them (must be 1)
    violations: list[str]  # contract_violations of every terminal result
    progress_received: list[int]  # `progress` of every callback, in arrival order
    progress_queued: list[int]  # `progress` of every callback queued, in order (outbox)
    m2_left: list[int]  # m2's processes still alive after the kill (must be none)
    dispatcher_before: str  # the node delivering callbacks when m2 was killed
    m1_took_delivery: bool  # m1 logged that it now delivers the callbacks
    terminal_by_m1: bool  # m1's dispatcher delivered the terminal callback
    takeover_s: float | None  # kill -> m1 claimed the job (None: it was not rerun)
    recovery_s: float  # kill -> terminal callback received (the last one)
    m1_trouble: list[str]  # ERROR/CRITICAL lines and tracebacks in m1's log
    notes: list[str] = field(default_factory=list)

    @property
    def monotonic(self) -> bool:
        """Progress never went backwards, as sent and as received."""
        return all(
            values == sorted(values) for values in (self.progress_received, self.progress_queued)
        )


def _until(what: str, check: Callable[[], _T | None], timeout_s: float, poll_s: float = 0.02) -> _T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None and found is not False:
            return found
        time.sleep(poll_s)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


def _log(node: Server) -> str:
    return node.log.read_text(errors="replace") if node.log.exists() else ""


def failover(rig: FailoverRig, moment: str, callback_delay_s: float = 3.0) -> FailoverOutcome:
    """m2 alone takes a job; m1 starts; m2's whole process group (supervisor, workers,
    their ffmpeg) is killed -9 at `moment`, as a machine losing power; m1 must finish.

    `moment` (FAILOVER_MOMENTS): "download" while m2 is still downloading (the file
    server holds the download), a stage name once m2's progress reaches that stage's
    range, or "callback": m2 finished the job and its dispatcher (elected first, so it
    delivers) has the terminal callback in flight to a backend answering slowly.
    """
    run = rig.work / f"failover-{moment}-{time.time_ns()}"
    m2 = rig.node(WorkerProcess, run, "m2")
    m1 = rig.node(Server, run, "m1")
    store = open_store(rig.store_url)
    job_id = str(uuid.uuid4())
    rig.receiver.register(job_id)
    notes: list[str] = []
    try:
        rig.files.close_gate()  # m2's download waits there until we are ready
        m2.start(own_group=True)
        video_url = rig.files.url(rig.video)
        store.submit(NewJob(job_id, video_url, rig.backend_url, JobOptions()), 100, time.time())

        def claimed_and_downloading() -> Job | None:
            job = store.get(job_id)
            held = job is not None and job.status is JobStatus.PROCESSING and rig.files.held
            return job if held else None

        first = _until("m2 to claim the job", claimed_and_downloading, 60)
        m1.start()  # /health counts m2's workers too: wait for m1's own worker
        _until("m1's worker", lambda: re.search(r"worker m1/\S+ ready", _log(m1)), 90, 0.1)
        before = "m2" if DELIVERS in _log(m2) else "m1" if DELIVERS in _log(m1) else "-"

        if moment != "download":
            rig.files.open_gate()
        if moment == "callback":
            _until("m2 to finish", lambda: _done(store, job_id), 120)
            rig.receiver.delay_s = callback_delay_s  # the terminal callback: sent, unanswered
            time.sleep(min(1.0, callback_delay_s / 3))
            if terminal_calls(rig.receiver.calls_for(job_id)):
                notes.append("missed: the terminal callback was answered before the kill")
        elif moment != "download":
            lo = STAGES[moment][0]
            _until(f"m2 to reach {moment}", lambda: _progress_at_least(store, job_id, lo), 120)
        at_kill = store.get(job_id)
        assert at_kill is not None
        if moment == "callback":
            hit = "callback" if not notes else "-"
        elif at_kill.status is JobStatus.PROCESSING:
            hit = stage_of(at_kill.progress)
        else:
            hit = "-"
            notes.append("the job finished before the kill")
        killed_at = time.time()
        left = m2.kill9_group()
        rig.files.open_gate()
        rig.receiver.delay_s = 0.0

        def settled() -> list[dict[str, Any]] | None:
            ends = [e for e in store.callback_log(job_id) if e["terminal"]]
            return ends if ends and ends[-1]["state"] != "pending" else None

        _until("the terminal callback to be settled", settled, 120, 0.1)
        rig.receiver.wait_for(job_id, set(TERMINAL), 30)
        # A killed request the backend was still answering, or a late duplicate, lands here.
        time.sleep(callback_delay_s if moment == "callback" else 0.5)
        final = store.get(job_id)
        assert final is not None
        calls = rig.receiver.calls_for(job_id)
        ends = terminal_calls(calls)
        violations = [v for c in ends for v in contract_violations(c.body.get("result") or {})]
        m1_log = _log(m1)
        delivered = re.compile(
            rf"callback {re.escape(job_id)}:\d+ \((?:completed|failed)\) delivered"
        )
        return FailoverOutcome(
            moment_wanted=moment,
            moment_hit=hit,
            progress_at_kill=at_kill.progress,
            status=final.status.value,
            attempts=final.attempts,
            first_worker=first.worker_id or "",
            final_worker=final.worker_id or "",
            terminal_calls=len(ends),
            distinct_terminal=len({c.raw for c in ends}),
            violations=violations,
            progress_received=[int(c.body["progress"]) for c in calls],
            progress_queued=[int(e["progress"]) for e in store.callback_log(job_id)],
            m2_left=left,
            dispatcher_before=before,
            m1_took_delivery=DELIVERS in m1_log,
            terminal_by_m1=bool(delivered.search(m1_log)),
            takeover_s=(
                round(final.started_at - killed_at, 2)
                if final.attempts > first.attempts and final.started_at
                else None
            ),
            recovery_s=round(max(c.at for c in ends) - killed_at, 2) if ends else -1.0,
            m1_trouble=[line for line in m1_log.splitlines() if _TROUBLE.search(line)],
            notes=notes,
        )
    finally:
        rig.receiver.delay_s = 0.0
        rig.files.open_gate()
        m1.stop()
        if m2.proc is not None and m2.proc.poll() is None:
            m2.kill9_group()
        store.close()


def _done(store: JobStore, job_id: str) -> bool:
    job = store.get(job_id)
    return job is not None and job.status.value in TERMINAL


def _progress_at_least(store: JobStore, job_id: str, progress: int) -> bool:
    job = store.get(job_id)
    return job is not None and (job.progress >= progress or job.status.value in TERMINAL)


# ------------------------------------------------------------------ media attacks


@dataclass(frozen=True)
class NeighbourOutcome:
    """A playlist naming a running neighbour job's download: what the attacker got."""

    attacker: str  # terminal status or error code of the playlist job
    leaked_words: int  # words of the attacker's result that are the victim's
    victim: str  # terminal status or error code of the victim job
    victim_dir_guessable: bool  # the victim's media sat at work/<job id>/download.*
    terminal_callbacks: tuple[int, int]  # (attacker, victim): each must be 1


def neighbour_playlist(rig: Rig, victim_name: str, timeout_s: float = 240) -> NeighbourOutcome:
    """Issue 12's reproduction through `voxtrace serve` (two workers): while a victim
    job is past its download, submit an HLS playlist (served as `.mp4`) naming
    `../<the victim's real work dir>/download.mp4`. The attacker is handed the real,
    unguessable directory name (read from disk): the demuxer whitelist alone must stop it.

    `victim_name` is a file of `rig.files.root` with speech (faststart mp4, the layout
    HLS can read).
    """
    victim = rig.submit(rig.files.url("file", victim_name))
    work = rig.data_dir / "work"

    def victim_download() -> Path | None:
        for child in work.glob("*/download.*") if work.is_dir() else ():
            if child.parent.name.startswith(victim):
                job = rig.job(victim)
                return child if job["progress"] >= 25 else None
        return None

    media = _until("victim's download", victim_download, 120, poll_s=0.05)
    playlist = f"neighbour-{uuid.uuid4().hex[:8]}.mp4"
    (rig.files.root / playlist).write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:20.0,\n"
        f"../{media.parent.name}/{media.name}\n#EXT-X-ENDLIST\n"
    )
    attacker = rig.submit(rig.files.url("file", playlist))
    ends = {
        job_id: terminal_calls(rig.wait_terminal(job_id, timeout_s))
        for job_id in (attacker, victim)
    }
    victim_words = _result_words(rig.job(victim).get("result"))
    attacker_words = _result_words(rig.job(attacker).get("result"))
    return NeighbourOutcome(
        attacker=_outcome(ends[attacker]),
        leaked_words=sum(1 for w in attacker_words if w in set(victim_words)),
        victim=_outcome(ends[victim]),
        victim_dir_guessable=media.parent.name == victim,
        terminal_callbacks=(len(ends[attacker]), len(ends[victim])),
    )


def _outcome(ends: list[ReceivedCall]) -> str:
    if not ends:
        return "none"
    return str(ends[0].body.get("error_code") or ends[0].body["status"])


def _result_words(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    return [w["word"].strip(" .,?!").lower() for s in result["segments"] for w in s["words"]]


# ------------------------------------------------------------------ hostile callback peers


@dataclass(frozen=True)
class TrickleOutcome:
    """Two jobs: the first calls back a hostile endpoint, the second a healthy one."""

    kind: str  # trickle-body | trickle-head | huge
    healthy_status: str  # the healthy job's terminal callback, as the backend got it
    healthy_s: float  # submit of the healthy job -> its terminal callback received
    hostile_state: str  # the hostile job's terminal callback: delivered | pending | dead
    hostile_error: str | None
    hostile_attempts: int
    serve_rss_growth_mb: float  # serve's peak RSS over the run, less its RSS before


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_callback(rig: Rig, url: str, hostile_base: str, kind: str) -> TrickleOutcome:
    """Submit a job whose callbacks go to `hostile_base` (allowlisted on the server),
    then one for the healthy backend; the healthy one's callback must arrive, and the
    hostile one's attempt must end (its deadline), with serve's memory unmoved."""
    pid = rig.srv.pid
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before_mb = _peak_rss_mb(pid)
    hostile = rig.submit(url, fastapi_base_url=f"{hostile_base}/{kind}")
    started = time.monotonic()
    healthy = rig.submit(url)
    calls = rig.wait_terminal(healthy, timeout_s=120)
    healthy_s = time.monotonic() - started
    entry: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ends = [c for c in rig.job(hostile)["callbacks"] if c["terminal"]]
        if ends and (ends[-1]["attempts"] >= 1):
            entry = ends[-1]
            if kind == "huge" or entry["state"] != "pending":
                break
        time.sleep(0.2)
    return TrickleOutcome(
        kind=kind,
        healthy_status=str(terminal_calls(calls)[-1].body["status"]) if calls else "-",
        healthy_s=round(healthy_s, 1),
        hostile_state=str(entry.get("state", "-")),
        hostile_error=entry.get("last_error"),
        hostile_attempts=int(entry.get("attempts", 0)),
        serve_rss_growth_mb=round(_peak_rss_mb(pid) - before_mb, 1),
    )


# ------------------------------------------------------------------ hostile clients


@dataclass(frozen=True)
class FloodOutcome:
    connections: int  # opened by the flood (half a partial request, half nothing)
    health_status: int  # /health while the flood holds its connections
    health_s: float
    submit_status: int
    serve_fds_during: int  # serve's open descriptors while the flood is on
    closed_by_server: int  # flood connections the server closed (after the wait)
    closed_s: float  # flood start -> the server has closed all of them (or gave up)
    log_tracebacks: int


def connection_flood(srv: ServeProcess, connections: int, wait_s: float = 60.0) -> FloodOutcome:
    """Open `connections` sockets that never finish a request, then use the server."""
    flood: list[socket.socket] = []
    started = time.monotonic()
    try:
        for i in range(connections):
            sock = socket.create_connection(("127.0.0.1", srv.port))
            if i % 2:
                sock.sendall(b"POST /api/upload-video/process-video HTTP/1.1\r\nHost: x\r\n")
            flood.append(sock)
        t0 = time.monotonic()
        health = httpx.get(f"{srv.url}/health", timeout=30)
        health_s = time.monotonic() - t0
        submit = srv.submit(str(uuid.uuid4()), "https://bucket.test/flood.mp4")
        fds = len(list(Path(f"/proc/{srv.pid}/fd").iterdir()))
        open_ = set(range(len(flood)))
        deadline = time.monotonic() + wait_s
        while open_ and time.monotonic() < deadline:
            open_ = {i for i in open_ if not closed_by_peer(flood[i])}
            time.sleep(0.2)
        closed_s = time.monotonic() - started
    finally:
        for sock in flood:
            sock.close()
    return FloodOutcome(
        connections=connections,
        health_status=health.status_code,
        health_s=round(health_s, 3),
        submit_status=submit.status_code,
        serve_fds_during=fds,
        closed_by_server=connections - len(open_),
        closed_s=round(closed_s, 1),
        log_tracebacks=srv.log_tail(10_000_000).count("Traceback"),
    )


@dataclass(frozen=True)
class BodiesOutcome:
    bodies: int
    body_mb: int
    statuses: list[str]  # the status line each client got
    rss_before_mb: float
    rss_peak_mb: float
    health_s: float  # /health right after


def _post_raw(port: int, body_bytes: int, chunked: bool) -> str:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)
    head = "POST /api/upload-video/process-video HTTP/1.1\r\nHost: x\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {body_bytes}\r\n"
    block = b"0" * (1 << 20)
    try:
        sock.sendall((head + "\r\n").encode())
        sent = 0
        while sent < body_bytes:
            piece = block[: min(len(block), body_bytes - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
    except OSError:
        pass  # refused and closed before the body was all sent
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answer += chunk
    sock.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"


def big_bodies(srv: ServeProcess, bodies: int = 8, body_mb: int = 49) -> BodiesOutcome:
    """`bodies` submits of `body_mb` MB at once, half declared, half chunked."""
    pid = srv.pid
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _peak_rss_mb(pid)
    statuses: list[str] = []
    threads = [
        threading.Thread(
            target=lambda c=i % 2 == 1: statuses.append(_post_raw(srv.port, body_mb << 20, c))
        )
        for i in range(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    t0 = time.monotonic()
    httpx.get(f"{srv.url}/health", timeout=30)
    return BodiesOutcome(
        bodies=bodies,
        body_mb=body_mb,
        statuses=sorted(statuses),
        rss_before_mb=round(before, 1),
        rss_peak_mb=round(_peak_rss_mb(pid), 1),
        health_s=round(time.monotonic() - t0, 3),
    )
