"""What reading media safely costs: the audio stage, guarded, against bare ffmpeg.

    .venv/bin/python -m bench.media

voxtrace's audio stage runs ffprobe and ffmpeg with a demuxer whitelist, `file:` input
and `-f` pinned (so a playlist cannot make them read other files), decodes every audio
track (up to 4) and runs the VAD on each to pick the one with speech. Bare is what the
stage did before: unrestricted ffprobe, then ffmpeg on the first audio track only, then
one VAD pass. Same files, same machine, one run, medians of `REPS`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio_streams, probe
from voxtrace.pipeline.vad import VadOptions, detect_speech

REPS = 3
DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)


def _inputs(tmp: Path) -> list[tuple[str, Path]]:
    """A short video, and ten minutes of speech with 1 and with 2 audio tracks (the
    speech on the second)."""
    long_speech = tmp / "speech_10min.m4a"
    _ffmpeg("-stream_loop", "55", "-i", str(DATA / "jfk.flac"), "-t", "600", "-ac", "1",
            "-c:a", "aac", "-b:a", "64k", str(long_speech))  # fmt: skip
    two = tmp / "two_tracks_10min.mkv"
    _ffmpeg("-f", "lavfi", "-i", "anoisesrc=r=16000:color=pink:amplitude=0.05:seed=3",
            "-i", str(long_speech), "-map", "0:a", "-map", "1:a", "-t", "600",
            "-c:a", "aac", "-b:a", "64k", str(two))  # fmt: skip
    return [
        ("sample.mp4 (18 s video, 1 track)", DATA / "sample.mp4"),
        ("10 min speech, 1 track", long_speech),
        ("10 min, noise + speech tracks", two),
    ]


def _bare(path: Path, work: Path) -> float:
    """The old audio stage: unrestricted probe and first-track decode, one VAD pass."""
    subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    pcm = work / "bare.s16le"
    _ffmpeg("-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
            "-f", "s16le", str(pcm))  # fmt: skip
    samples = np.fromfile(pcm, dtype="<i2").astype(np.float32) / 32768.0
    pcm.unlink()
    regions = detect_speech(samples, VadOptions())
    return sum(r.end_s - r.start_s for r in regions)


def _guarded(path: Path, work: Path) -> float:
    """The audio stage now: guarded probe, every track decoded, the speech track picked."""
    info = probe(path, 60)
    tracks = extract_audio_streams(path, work, 600, 3600, info.demuxer, info.audio_streams)
    return max(sum(r.end_s - r.start_s for r in detect_speech(t, VadOptions())) for t in tracks)


def _median_s(step: Callable[[Path, Path], float], path: Path, work: Path) -> tuple[float, float]:
    times, speech = [], 0.0
    for _ in range(REPS):
        start = time.perf_counter()
        speech = step(path, work)
        times.append(time.perf_counter() - start)
    return statistics.median(times), speech


def run() -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="voxtrace-bench-media-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        for label, path in _inputs(Path(tmp)):
            bare_s, bare_speech = _median_s(_bare, path, work)
            guarded_s, guarded_speech = _median_s(_guarded, path, work)
            rows.append(
                f"| {label} | {bare_s:.2f} s | {guarded_s:.2f} s | {guarded_s / bare_s:.2f}x "
                f"| {bare_speech:.0f} s | {guarded_speech:.0f} s |"
            )
    return "\n".join(
        [
            "## Reading media safely (audio stage)",
            "",
            "Probe + decode + VAD, median of 3. *bare*: unrestricted ffprobe/ffmpeg, first "
            "audio track only (the stage before issue 12). *voxtrace*: demuxer and protocol "
            "whitelists, `-f` pinned, every audio track decoded in one pass and the one "
            "with the most speech kept. Produced by `python -m bench.media`.",
            "",
            "| input | bare | voxtrace | ratio | speech found (bare) | speech found (voxtrace) |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> int:
    print(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
