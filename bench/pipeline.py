"""Accuracy and speed of the pipeline against bare faster-whisper, on real speech.

    .venv/bin/python -m bench.pipeline [FIXTURES_DIR]   (default ../shared/fixtures)

Each measurement runs in its own subprocess (model loaded once per subprocess, load time
excluded from the RTFs) and reports that process's peak RSS. "Transcription alone" is
bare faster-whisper: Whisper base int8, beam 5, `vad_filter=True`, word timestamps.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer

from bench import SHARED_FIXTURES

__all__ = ["run"]

DEFAULT_FIXTURES = SHARED_FIXTURES
THREADS = 2
_TARGET_WER = 0.015
_TARGET_RTF = 0.15
_TARGET_RATIO = 1.3
_TARGET_RSS_MB = 1536


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    reference: str
    language: str


def _clips(fixtures: Path) -> list[Clip]:
    clips: list[Clip] = []
    for audio in sorted((fixtures / "en").glob("*")):
        if audio.suffix in (".wav", ".flac") and audio.with_suffix(".txt").exists():
            clips.append(Clip(audio.name, audio, audio.with_suffix(".txt").read_text(), "en"))
    mix = fixtures / "diarization" / "mixA_en_7spk_exactref.mp4"
    if mix.exists():
        text = re.sub(r"\[[^\]]*\]", " ", mix.with_suffix(".txt").read_text())
        clips.append(Clip(mix.name, mix, text, "en"))
    for audio in sorted((fixtures / "multilingual").glob("*.wav")):
        lang = audio.stem.rsplit("_", 1)[-1]
        clips.append(Clip(audio.name, audio, audio.with_suffix(".txt").read_text(), lang))
    return clips


def normalise(text: str) -> str:
    """Lower-case, punctuation (and hyphens) to spaces, the usual title spelled out."""
    text = text.lower()
    text = re.sub(r"\bmr\.", "mister", text)
    text = re.sub(r"\bmrs\.", "missus", text)
    return " ".join(re.sub(r"[^\w\s']|_", " ", text).split())


# ---------------------------------------------------------------- subprocess side


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _StageClock:
    """A progress callback that notes when each progress message arrives."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, str]] = []

    def __call__(self, _: int, message: str) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), message))

    def add_to(self, stages: dict[str, list[float]]) -> None:
        """Wall and CPU seconds from each message to the next, summed per message."""
        for (t0, c0, message), (t1, c1, _) in itertools.pairwise(self.marks):
            wall, cpu = stages.setdefault(message, [0.0, 0.0])
            stages[message] = [wall + t1 - t0, cpu + c1 - c0]


def _measure(mode: str, models_path: Path, paths: list[str]) -> dict[str, Any]:
    """Inside the subprocess: transcribe each path and time it."""
    from faster_whisper.audio import decode_audio

    from voxtrace.domain import JobOptions
    from voxtrace.models import ModelBundle, load_whisper
    from voxtrace.pipeline.runner import PipelineOptions, run_pipeline

    model = load_whisper("base", models_path, "cpu", "int8", THREADS)
    full_bundle = None
    if mode == "full":  # every model, loaded exactly as a worker process loads them
        from voxtrace.config import get_settings
        from voxtrace.models import ensure_bundled_whisper_base, load_models

        settings = get_settings(workers=1, cpu_threads=THREADS)
        ensure_bundled_whisper_base(settings.models_path)
        full_bundle = load_models(settings)
    out: dict[str, Any] = {"clips": {}}
    stages: dict[str, list[float]] = {}  # progress message -> [wall s, CPU s] until the next
    for path in paths:
        if mode == "bare":
            audio = decode_audio(path, sampling_rate=16000)
            start, cpu_start = time.perf_counter(), time.process_time()
            segments, _ = model.transcribe(
                audio, beam_size=5, vad_filter=True, word_timestamps=True
            )
            text = " ".join(s.text.strip() for s in segments)
            elapsed = time.perf_counter() - start
            duration = audio.shape[0] / 16000
        else:
            bundle = full_bundle if full_bundle is not None else ModelBundle(whisper=model)
            clock = _StageClock()
            with tempfile.TemporaryDirectory() as work:
                start, cpu_start = time.perf_counter(), time.process_time()
                clock(0, "Starting")
                options = PipelineOptions()
                result = run_pipeline(path, Path(work), bundle, options, JobOptions(), clock)
                elapsed = time.perf_counter() - start
                clock(100, "Done")
            clock.add_to(stages)
            text = " ".join(s.text for s in result.segments)
            duration = result.duration_s
        cpu = time.process_time() - cpu_start
        out["clips"][path] = {"text": text, "seconds": elapsed, "cpu": cpu, "duration": duration}
    out["peak_rss_mb"] = _peak_rss_mb()
    out["stages"] = stages
    return out


def _run_subprocess(mode: str, models_path: Path, clips: list[Clip]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.pipeline", "--measure", mode, str(models_path)]
    cmd += [str(c.path) for c in clips]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------ report side


def _error_rate(clip: Clip, hypothesis: str) -> tuple[str, float, int]:
    ref, hyp = normalise(clip.reference), normalise(hypothesis)
    if clip.language in ("ko", "ja", "zh"):
        ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
        return "CER", float(jiwer.cer(ref, hyp)), len(ref)
    return "WER", float(jiwer.wer(ref, hyp)), len(ref.split())


def run(fixtures_dir: Path = DEFAULT_FIXTURES) -> str:
    """Run both measurements and return a markdown section."""
    from voxtrace.models import ensure_bundled_whisper_base

    clips = _clips(fixtures_dir)
    if not clips:
        return "## Pipeline benchmark\n\nNo fixtures found.\n"
    with tempfile.TemporaryDirectory() as tmp:
        models_path = Path(tmp)
        ensure_bundled_whisper_base(models_path)
        bare = _run_subprocess("bare", models_path, clips)
        ours = _run_subprocess("pipeline", models_path, clips)
        full = _run_subprocess("full", models_path, clips)

    lines = [
        "## Pipeline benchmark",
        "",
        f"Whisper base int8, beam 5, {THREADS} threads, CPU. WER/CER after lower-casing and "
        "stripping punctuation (CER without spaces for Korean). RTF = processing s / audio s;"
        " model load excluded. bare = faster-whisper `vad_filter=True`, word timestamps;"
        " pipeline = `run_pipeline` (decode, VAD, transcription, prosody, segments; no"
        " diarizer, no emotion model).",
        "",
        "| clip | lang | audio s | metric | bare | pipeline | RTF bare | RTF pipeline | RTF full |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals: dict[str, dict[str, float]] = {}
    for clip in clips:
        b = bare["clips"][str(clip.path)]
        p = ours["clips"][str(clip.path)]
        f = full["clips"][str(clip.path)]
        metric, err_b, n = _error_rate(clip, b["text"])
        _, err_p, _ = _error_rate(clip, p["text"])
        group = "en" if clip.language == "en" else "multilingual"
        t = totals.setdefault(
            group,
            {
                "n": 0,
                "err_b": 0,
                "err_p": 0,
                "audio": 0,
                "sec_b": 0,
                "sec_p": 0,
                "cpu_b": 0,
                "cpu_p": 0,
            },
        )
        t["n"] += n
        t["err_b"] += err_b * n
        t["err_p"] += err_p * n
        t["audio"] += p["duration"]
        t["sec_b"] += b["seconds"]
        t["sec_p"] += p["seconds"]
        t["cpu_b"] += b["cpu"]
        t["cpu_p"] += p["cpu"]
        lines.append(
            f"| {clip.name} | {clip.language} | {p['duration']:.1f} | {metric} | {err_b:.1%} "
            f"| {err_p:.1%} | {b['seconds'] / b['duration']:.3f} "
            f"| {p['seconds'] / p['duration']:.3f} | {f['seconds'] / f['duration']:.3f} |"
        )
    lines += [
        "",
        "| set | error bare | error pipeline | RTF bare | RTF pipeline | ratio "
        "| CPU-s/audio-s bare | CPU-s/audio-s pipeline |",
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for group, t in totals.items():
        rtf_b, rtf_p = t["sec_b"] / t["audio"], t["sec_p"] / t["audio"]
        lines.append(
            f"| {group} (word/char-weighted) | {t['err_b'] / t['n']:.2%} | "
            f"{t['err_p'] / t['n']:.2%} | {rtf_b:.3f} | {rtf_p:.3f} | {rtf_p / rtf_b:.2f}× "
            f"| {t['cpu_b'] / t['audio']:.3f} | {t['cpu_p'] / t['audio']:.3f} |"
        )
    en = totals.get("en")
    lines += [
        "",
        "CPU-s/audio-s counts the CPU time of all threads: on an idle machine the RTF is"
        f" about that divided by {THREADS} (at best); wall-clock RTFs inflate when other"
        " processes share the cores (see the load average below).",
        "",
        f"Peak RSS: bare {bare['peak_rss_mb']:.0f} MB, pipeline {ours['peak_rss_mb']:.0f} MB,"
        f" full pipeline {full['peak_rss_mb']:.0f} MB.",
    ]
    full_audio = sum(c["duration"] for c in full["clips"].values())
    full_sec = sum(c["seconds"] for c in full["clips"].values())
    full_cpu = sum(c["cpu"] for c in full["clips"].values())
    full_err = [_error_rate(c, full["clips"][str(c.path)]["text"]) for c in clips]
    en_full = [(e, n) for c, (_, e, n) in zip(clips, full_err, strict=True) if c.language == "en"]
    en_full_wer = sum(e * n for e, n in en_full) / max(1, sum(n for _, n in en_full))
    lines += [
        "",
        "Full pipeline (as a worker runs it: + speaker diarization + emotion, all clips):"
        f" RTF {full_sec / full_audio:.3f}, CPU-s/audio-s {full_cpu / full_audio:.3f},"
        f" English WER {en_full_wer:.2%} (target: RTF ≤ 0.2:"
        f" {'met' if full_sec / full_audio <= 0.2 else 'MISSED'}).",
    ]
    lines += ["", *_stage_table(full["stages"], full_audio)]
    longest = max(clips, key=lambda c: ours["clips"][str(c.path)]["duration"])
    lb, lp, lf = (run["clips"][str(longest.path)] for run in (bare, ours, full))
    lines += [
        "",
        f"On the longest clip ({longest.name}, {lp['duration']:.0f} s, the closest to a real"
        f" video): RTF bare {lb['seconds'] / lb['duration']:.3f}, pipeline"
        f" {lp['seconds'] / lp['duration']:.3f},"
        f" full pipeline {lf['seconds'] / lf['duration']:.3f}."
        " Short clips weigh fixed per-file costs (ffprobe/ffmpeg processes, language"
        " detection, a 10-s diarization window) against little audio, which is why the"
        " totals above are higher.",
    ]
    if en:
        rtf_b, rtf_p = en["sec_b"] / en["audio"], en["sec_p"] / en["audio"]
        checks = [
            ("English pipeline WER ≤ 1.5 %", en["err_p"] / en["n"] <= _TARGET_WER),
            ("pipeline RTF ≤ 0.15", rtf_p <= _TARGET_RTF),
            ("pipeline ≤ 1.3× transcription alone", rtf_p / rtf_b <= _TARGET_RATIO),
            ("peak RSS ≤ 1.5 GB", ours["peak_rss_mb"] <= _TARGET_RSS_MB),
        ]
        lines += [
            "",
            "Targets: " + "; ".join(f"{n}: {'met' if ok else 'MISSED'}" for n, ok in checks),
        ]
    lines += [
        "",
        f"Load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    return "\n".join(lines) + "\n"


def _stage_table(stages: dict[str, list[float]], audio_s: float) -> list[str]:
    """Where the full pipeline's time goes, stage by stage (from its progress messages),
    with the CPU it used: above 2 CPU-s per wall-s would mean threads fighting for the
    2 cores."""
    lines = [
        "Full pipeline by stage (all clips, worker thread settings: Whisper 2 threads,"
        " onnxruntime 1 thread per speaker model, OMP_NUM_THREADS=2):",
        "",
        "| stage (progress message) | wall s | s per audio min | CPU-s per wall-s |",
        "|---|---|---|---|",
    ]
    for message, (wall, cpu) in stages.items():
        if wall >= 0.005:
            lines.append(
                f"| {message} | {wall:.2f} | {60 * wall / audio_s:.2f} | {cpu / wall:.2f} |"
            )
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure"]:
        mode, models_path, *paths = argv[1:]
        print(json.dumps(_measure(mode, Path(models_path), paths)))
        return 0
    fixtures = Path(argv[0]) if argv else DEFAULT_FIXTURES
    print(run(fixtures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
