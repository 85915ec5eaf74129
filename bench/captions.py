"""Captions an editor can use: caption shape, Korean CER and English WER beside bare
faster-whisper, and words invented on non-speech audio.

    .venv/bin/python -m bench.captions [FIXTURES_DIR]          (the report section)
    .venv/bin/python -m bench.captions --sweep [FIXTURES_DIR]  (+ the Korean decoding sweep)

Transcripts are cached per configuration under `$VOXTRACE_BENCH_CACHE` (default
/tmp/captions/), keyed by the configuration and the clip, so a rerun after a change to
captions or prosody only decodes again what changed; delete the folder after changing
decoding code. Korean is scored by CER without spaces after removing punctuation (both
sides normalised alike; spoken- vs written-form numbers count as errors for everybody).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jiwer

__all__ = ["run"]

DEFAULT_FIXTURES = Path("/work/shared/fixtures")
THREADS = 2
CACHE = Path(os.environ.get("VOXTRACE_BENCH_CACHE", "/tmp/captions"))


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    reference: str
    language: str


@dataclass(frozen=True)
class Config:
    """One way of decoding: bare faster-whisper, or voxtrace's VAD + transcribe stage."""

    name: str
    bare: bool = False
    language: str | None = None  # what the request says; None = auto
    overrides: tuple[tuple[str, Any], ...] = ()  # TranscribeOptions fields
    vad: tuple[tuple[str, Any], ...] = ()  # VadOptions fields


# The sweep: one change at a time from the shipped defaults.
SWEEP = (
    Config("bare faster-whisper, language=ko", bare=True, language="ko"),
    Config("voxtrace defaults, auto language"),
    Config("voxtrace defaults, language=ko", language="ko"),
    Config("auto language among ko,en", overrides=(("candidate_languages", ("ko", "en")),)),
    Config("VAD pad 200 ms", language="ko", vad=(("speech_pad_ms", 200),)),
    Config("VAD pad 800 ms", language="ko", vad=(("speech_pad_ms", 800),)),
    Config(
        "Korean initial prompt",
        language="ko",
        overrides=(("initial_prompt", "안녕하세요. 오늘은 무엇을 도와드릴까요?"),),
    ),
)


def ko_dev(fixtures: Path, part: str = "all") -> list[Clip]:
    """ko-dev's clips: "tune" = the first 30 (the sweep chooses on these), "report" =
    the next 30 (held out, reported), "all"."""
    table = fixtures / "ko-dev" / "transcripts.tsv"
    if not table.exists():
        return []
    clips = []
    for line in table.read_text(encoding="utf-8").splitlines():
        ident, _, text = line.split("\t")
        clips.append(Clip(ident, fixtures / "ko-dev" / "wav" / f"{ident}.wav", text, "ko"))
    return {"tune": clips[:30], "report": clips[30:60]}.get(part, clips)


def english(fixtures: Path) -> list[Clip]:
    clips = []
    for audio in sorted((fixtures / "en").glob("*")):
        if audio.suffix in (".wav", ".flac") and audio.with_suffix(".txt").exists():
            clips.append(Clip(audio.name, audio, audio.with_suffix(".txt").read_text(), "en"))
    return clips


def normalise(text: str, language: str) -> str:
    text = text.lower()
    text = re.sub(r"\bmr\.", "mister", text)
    text = re.sub(r"\bmrs\.", "missus", text)
    text = " ".join(re.sub(r"[^\w\s']|_", " ", text).split())
    return text.replace(" ", "") if language in ("ko", "ja", "zh") else text


def error_rate(clips: list[Clip], hypotheses: list[str]) -> float:
    """Corpus CER (Korean) or WER (otherwise): edits over reference length, all clips."""
    refs = [normalise(c.reference, c.language) for c in clips]
    hyps = [normalise(h, c.language) for c, h in zip(clips, hypotheses, strict=True)]
    if clips and clips[0].language in ("ko", "ja", "zh"):
        return float(jiwer.cer(refs, hyps))
    return float(jiwer.wer(refs, hyps))


# ------------------------------------------------------------------- decoding


class Decoder:
    """Whisper base loaded once; `text(config, clip)` decodes (or reads the cache)."""

    def __init__(self) -> None:
        from voxtrace.models import ensure_bundled_whisper_base, load_whisper

        self._models = Path(tempfile.mkdtemp(prefix="voxtrace-bench-"))
        ensure_bundled_whisper_base(self._models)
        self.model = load_whisper("base", self._models, "cpu", "int8", THREADS)
        self.seconds = 0.0

    def text(self, config: Config, clip: Clip) -> str:
        key = hashlib.sha256(repr((config, str(clip.path))).encode()).hexdigest()[:16]
        path = CACHE / f"{key}.json"
        if path.exists():
            cached: str = json.loads(path.read_text(encoding="utf-8"))["text"]
            return cached
        start = time.perf_counter()
        text = self._decode(config, clip)
        self.seconds += time.perf_counter() - start
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": config.name, "clip": clip.name, "text": text}))
        return text

    def _decode(self, config: Config, clip: Clip) -> str:
        from faster_whisper.audio import decode_audio

        from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe
        from voxtrace.pipeline.vad import VadOptions, detect_speech, speech_probabilities

        audio = decode_audio(str(clip.path), sampling_rate=16000)
        if config.bare:
            segments, _ = self.model.transcribe(audio, language=config.language, beam_size=5)
            return " ".join(s.text.strip() for s in segments)
        regions = detect_speech(audio, replace(VadOptions(), **dict(config.vad)))
        opts = replace(TranscribeOptions(language=config.language), **dict(config.overrides))
        evidence = speech_probabilities(audio)
        result = transcribe(audio, regions, self.model, opts, lambda _: None, evidence)
        return " ".join(s.text for s in result.segments)


def sweep(fixtures: Path, decoder: Decoder, log: Callable[[str], None]) -> list[str]:
    """Korean CER (ko-dev) per decoding choice, one configuration at a time."""
    clips = ko_dev(fixtures, "tune")
    if not clips:
        return ["ko-dev not found: no Korean sweep."]
    lines = [
        f"Korean decoding sweep on ko-dev's first {len(clips)} clips ("
        f"{sum(_seconds(c) for c in clips):.0f} s; CER without spaces or punctuation):",
        "",
        "| configuration | CER |",
        "|---|---|",
    ]
    for config in SWEEP:
        cer = error_rate(clips, [decoder.text(config, c) for c in clips])
        lines.append(f"| {config.name} | {cer:.2%} |")
        log(lines[-1])
    return lines


def _seconds(clip: Clip) -> float:
    import wave

    with wave.open(str(clip.path)) as f:
        return f.getnframes() / f.getframerate()


def main(argv: list[str]) -> int:
    do_sweep = "--sweep" in argv
    rest = [a for a in argv if a != "--sweep"]
    fixtures = Path(rest[0]) if rest else DEFAULT_FIXTURES
    decoder = Decoder()
    if do_sweep:
        print("\n".join(sweep(fixtures, decoder, lambda s: print(s, file=sys.stderr))))
    print(run(fixtures, decoder))
    return 0


def run(fixtures: Path = DEFAULT_FIXTURES, decoder: Decoder | None = None) -> str:
    """The markdown section for docs/benchmarks.md."""
    decoder = decoder or Decoder()
    ko = ko_dev(fixtures, "report")
    en = english(fixtures)
    lines = ["## Captions, Korean and invented words", ""]
    rows = [("bare faster-whisper", SWEEP[0], Config("bare faster-whisper", bare=True))]
    rows.append(("voxtrace (auto language)", SWEEP[1], SWEEP[1]))
    lines += ["| decoder | Korean CER (ko-dev) | English WER (en/) |", "|---|---|---|"]
    for label, ko_config, en_config in rows:
        cer = error_rate(ko, [decoder.text(ko_config, c) for c in ko]) if ko else float("nan")
        wer = error_rate(en, [decoder.text(en_config, c) for c in en]) if en else float("nan")
        lines.append(f"| {label} | {cer:.2%} | {wer:.2%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
