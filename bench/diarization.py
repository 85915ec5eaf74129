"""Diarization benchmark: DER, speaker count, speed and memory on the shared fixtures.

    .venv/bin/python -m bench.diarization [--fixtures DIR] [--models DIR] [--lengths 3 13 60]
    .venv/bin/python -m bench.diarization --sweep      # calibrate the clustering threshold

`run(fixtures_dir)` returns a markdown section. DER comes from `pyannote.metrics`
(no weights needed) with the VAD of the real pipeline in front, so it is what a job
gets. pyannote.metrics' `collar` is the total width around each reference boundary:
`collar=0.5` is the usual "collar 0.25 s" of NIST md-eval, reported beside collar 0.
Thresholds are calibrated on ami-trn*; everything else is reported as held out. Word
speaker attribution uses Whisper base words on every clip (reference speaker from the
`.stm` transcript, else the RTTM).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import SHARED_FIXTURES
from voxtrace.domain import SpeakerTurn, SpeechRegion
from voxtrace.models.speaker import SpeakerModels, load_speaker_models
from voxtrace.pipeline.diarize import DiarizationOptions, SpeakerHints, diarize
from voxtrace.pipeline.vad import VadOptions, detect_speech

DEFAULT_FIXTURES = SHARED_FIXTURES / "diarization"
DEFAULT_MODELS = Path("data/models/speaker")
CALIBRATION_PREFIX = "ami-trn"  # the threshold is chosen on these; dev and others are held out
SAMPLE_RATE = 16000
LENGTHS_MIN = (3.0, 13.0, 60.0)  # beside the 1.5-min mixA: cost at every length
AUDIBLE_SPEAKER_S = 2.0  # the second speaker-count column counts only speakers this loud


@dataclasses.dataclass(frozen=True)
class ClipScore:
    name: str
    duration_s: float
    true_speakers: int
    found_speakers: int
    der_025: float  # pyannote collar=0.25 (±0.125 s, md-eval's 0.125)
    der_050: float  # pyannote collar=0.5 (±0.25 s, md-eval's 0.25: the usual report)
    der_0: float
    scored_s: tuple[float, float, float]  # scored speaker time per collar, same order
    seconds: float
    reference_total_s: float
    speaker_speech_s: tuple[float, ...] = ()  # each reference speaker's total speech

    @property
    def audible_speakers(self) -> int:
        """Reference speakers with at least `AUDIBLE_SPEAKER_S` of speech: a voice heard
        for a second in all is not one any embedding can tell apart."""
        return sum(s >= AUDIBLE_SPEAKER_S for s in self.speaker_speech_s)


def load_audio(path: Path) -> npt.NDArray[np.float32]:
    """Any file -> 16-kHz mono float32 (stereo downmixed) through ffmpeg."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    command += ["-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def reference_rttm(wav: Path) -> Path:
    exact = wav.with_suffix(".rttm")
    return exact if exact.exists() else next(wav.parent.glob(wav.stem + ".*.rttm"))


def clips(fixtures_dir: Path) -> list[Path]:
    return sorted(p for p in fixtures_dir.glob("*.wav") if any(p.parent.glob(p.stem + "*.rttm")))


def score_clip(
    wav: Path,
    models: SpeakerModels,
    options: DiarizationOptions,
    regions: Sequence[SpeechRegion] | None = None,
    audio: npt.NDArray[np.float32] | None = None,
) -> ClipScore:
    from pyannote.core import Annotation, Segment
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    audio = load_audio(wav) if audio is None else audio
    regions = detect_speech(audio, VadOptions()) if regions is None else regions
    started = time.perf_counter()
    turns = diarize(audio, regions, models, SpeakerHints(), options=options)
    seconds = time.perf_counter() - started
    reference = next(iter(load_rttm(str(reference_rttm(wav))).values()))  # type: ignore[no-untyped-call]
    hypothesis = Annotation()
    for i, turn in enumerate(turns):
        hypothesis[Segment(turn.start_s, turn.end_s), i] = turn.speaker_id
    metrics = [DiarizationErrorRate(collar=c, skip_overlap=False) for c in (0.25, 0.5, 0.0)]
    details = [m(reference, hypothesis, detailed=True) for m in metrics]
    ders = [float(d["diarization error rate"]) for d in details]
    return ClipScore(
        name=wav.stem,
        duration_s=audio.size / SAMPLE_RATE,
        true_speakers=len(reference.labels()),
        found_speakers=len({t.speaker_id for t in turns}),
        der_025=ders[0],
        der_050=ders[1],
        der_0=ders[2],
        scored_s=(
            float(details[0]["total"]),
            float(details[1]["total"]),
            float(details[2]["total"]),
        ),
        seconds=seconds,
        reference_total_s=float(reference.get_timeline().support().duration()),
        speaker_speech_s=tuple(
            float(reference.label_duration(label)) for label in sorted(reference.labels())
        ),
    )


def overall(scores: Sequence[ClipScore], attribute: str) -> float:
    """DER over several clips as md-eval computes it: all errors over all scored time."""
    column = ("der_025", "der_050", "der_0").index(attribute)
    totals = np.array([s.scored_s[column] for s in scores])
    values = np.array([getattr(s, attribute) for s in scores])
    return float((totals * values).sum() / max(totals.sum(), 1e-9))


def long_mix(fixtures_dir: Path, minutes: float) -> npt.NDArray[np.float32]:
    """Fixtures concatenated (with 1-s gaps) until `minutes` long."""
    pieces = [load_audio(p) for p in clips(fixtures_dir)]
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    out: list[npt.NDArray[np.float32]] = []
    total = 0
    while total < minutes * 60 * SAMPLE_RATE:
        for piece in pieces:
            out += [piece, gap]
            total += piece.size + gap.size
    return np.concatenate(out)[: int(minutes * 60 * SAMPLE_RATE)]


def measure_long(
    fixtures_dir: Path, models_dir: Path, minutes: float, threads: int
) -> dict[str, float]:
    """Run the long mix in a child process so its peak RSS is its own."""
    command = [sys.executable, "-m", "bench.diarization", "--long-child", str(minutes)]
    command += ["--fixtures", str(fixtures_dir), "--models", str(models_dir)]
    command += ["--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def _long_child(fixtures_dir: Path, models_dir: Path, minutes: float, threads: int) -> None:
    models = load_speaker_models(models_dir, threads)
    audio = long_mix(fixtures_dir, minutes)
    regions = detect_speech(audio, VadOptions())
    rss_before = _current_rss_mb()
    sampled = [rss_before]
    done = threading.Event()

    def sample() -> None:  # the peak while diarizing, not the process's lifetime peak
        while not done.wait(0.01):
            sampled.append(_current_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    turns = diarize(audio, regions, models, SpeakerHints())
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "minutes": minutes,
        "seconds": seconds,
        "s_per_min": seconds / minutes,
        "cpu_s_per_min": cpu_seconds / minutes,  # what a busy machine cannot inflate
        "peak_rss_mb": peak,
        "rss_before_diarize_mb": rss_before,
        "diarize_rss_delta_mb": max(sampled) - rss_before,
        "speakers": len({t.speaker_id for t in turns}),
    }
    print(json.dumps(result))


def speed_by_length(
    fixtures_dir: Path, models_dir: Path, minutes: Sequence[float], threads: int
) -> list[str]:
    """Diarization seconds per audio minute at each length (each in its own process)."""
    lines = [
        "| audio | s per audio min (wall) | CPU-s per audio min | peak RSS | speakers found |",
        "|---|---|---|---|---|",
    ]
    for length in minutes:
        long = measure_long(fixtures_dir, models_dir, length, threads)
        lines.append(
            f"| {length:g} min | {long['s_per_min']:.2f} | {long['cpu_s_per_min']:.2f} | "
            f"{long['peak_rss_mb']:.0f} MB | {long['speakers']:.0f} |"
        )
    return lines


def pipeline_ratio(fixtures_dir: Path, minutes: Sequence[float]) -> list[str]:
    """Whole pipeline (every stage, models as a worker loads them) against bare
    faster-whisper on the same audio, side by side in one run: the 90-s mixA video and
    concatenated-fixture mixes of the other lengths."""
    import tempfile
    import wave

    from bench.pipeline import Clip, _run_subprocess
    from voxtrace.models import ensure_bundled_whisper_base

    with tempfile.TemporaryDirectory(prefix="bench-ratio-") as tmp:
        root = Path(tmp)
        clips_: list[Clip] = []
        mix = fixtures_dir / "mixA_en_7spk_exactref.mp4"
        if mix.exists():
            clips_.append(Clip(mix.name, mix, "", "en"))
        for length in minutes:
            path = root / f"mix-{length:g}min.wav"
            pcm = (np.clip(long_mix(fixtures_dir, length), -1, 1) * 32767).astype(np.int16)
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(SAMPLE_RATE)
                out.writeframes(pcm.tobytes())
            clips_.append(Clip(path.name, path, "", "en"))
        models_path = root / "models"
        ensure_bundled_whisper_base(models_path)
        bare = _run_subprocess("bare", models_path, clips_)
        full = _run_subprocess("full", models_path, clips_)
    lines = [
        "| audio | RTF bare faster-whisper | RTF whole pipeline | ratio (wall) "
        "| CPU-s/audio-s bare | CPU-s/audio-s pipeline | ratio (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for clip in clips_:
        b, f = bare["clips"][str(clip.path)], full["clips"][str(clip.path)]
        rtf_b, rtf_f = b["seconds"] / b["duration"], f["seconds"] / f["duration"]
        cpu_b, cpu_f = b["cpu"] / b["duration"], f["cpu"] / f["duration"]
        lines.append(
            f"| {clip.name} ({b['duration'] / 60:.1f} min) | {rtf_b:.3f} | {rtf_f:.3f} | "
            f"{rtf_f / rtf_b:.2f}× | {cpu_b:.3f} | {cpu_f:.3f} | {cpu_f / cpu_b:.2f}× |"
        )
    return lines


def stm_segments(path: Path) -> list[tuple[str, float, float]]:
    """(speaker, start_s, end_s) per line of a speaker-attributed transcript."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5:
            rows.append((fields[2], float(fields[3]), float(fields[4])))
    return rows


def _most_covering(start_s: float, end_s: float, spans: Sequence[tuple[str, float, float]]) -> str:
    """The label whose spans cover most of [start_s, end_s] ('' when none does)."""
    cover: dict[str, float] = {}
    for label, low, high in spans:
        overlap = min(end_s, high) - max(start_s, low)
        if overlap > 0:
            cover[label] = cover.get(label, 0.0) + overlap
    if not cover:  # a word in a gap: the nearest span
        nearest = min(spans, key=lambda s: min(abs(s[1] - end_s), abs(s[2] - start_s)))
        return nearest[0] if spans else ""
    return max(cover, key=lambda k: cover[k])


def word_attribution(
    words: Sequence[tuple[float, float]],
    reference: Sequence[tuple[str, float, float]],
    turns: Sequence[SpeakerTurn],
) -> float:
    """Share of words given the right speaker (by the pipeline's own rule), hypothesis
    speakers mapped optimally."""
    from scipy.optimize import linear_sum_assignment

    from voxtrace.pipeline.assemble import assign_speaker

    # the hypothesis side exactly as a job attributes its words
    pairs = [(_most_covering(a, b, reference), assign_speaker(a, b, turns)) for a, b in words]
    refs = sorted({r for r, _ in pairs})
    hyps = sorted({h for _, h in pairs})
    counts = np.zeros((len(refs), len(hyps)))
    for r, h in pairs:
        counts[refs.index(r), hyps.index(h)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / max(1, len(pairs)))


def reference_spans(wav: Path) -> list[tuple[str, float, float]]:
    """Who speaks when, for scoring words: the .stm transcript when there is one, else
    the RTTM turns (a word then belongs to the reference speaker covering most of it)."""
    stm = wav.with_suffix(".stm")
    if stm.exists():
        return stm_segments(stm)
    rows = []
    for line in reference_rttm(wav).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            rows.append((fields[7], start, start + duration))
    return rows


def attribution_scores(
    fixtures_dir: Path, models: SpeakerModels, options: DiarizationOptions
) -> list[tuple[str, int, float]]:
    """(clip, words, share given the right speaker) on every clip, words from Whisper
    base (language detected, as a job does), speakers by the pipeline's own rule."""
    from voxtrace.config import get_settings
    from voxtrace.models.whisper import load_whisper
    from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe

    whisper = load_whisper("base", get_settings().models_path, cpu_threads=2)
    results = []
    for wav in clips(fixtures_dir):
        audio = load_audio(wav)
        regions = detect_speech(audio, VadOptions())
        text = transcribe(audio, regions, whisper, TranscribeOptions(), _ignore)
        words = [(w.start_s, w.end_s) for seg in text.segments for w in seg.words]
        if not words:
            continue
        turns = diarize(audio, regions, models, SpeakerHints(), options=options)
        accuracy = word_attribution(words, reference_spans(wav), turns)
        results.append((wav.stem, len(words), accuracy))
    return results


def attribution_lines(scores: Sequence[tuple[str, int, float]]) -> list[str]:
    """Word attribution per clip and per set: calibration (ami-trn*) apart from the
    meetings nobody tuned on (ami-dev*) and the other held-out recordings."""
    lines = [
        "| clip | set | words | words given the right speaker |",
        "|---|---|---|---|",
    ]
    for name, count, accuracy in scores:
        group = "calibration" if name.startswith(CALIBRATION_PREFIX) else "held out"
        lines.append(f"| {name} | {group} | {count} | {100 * accuracy:.1f} % |")
    lines.append("")
    sets = (
        ("calibration meetings (ami-trn*)", lambda n: n.startswith(CALIBRATION_PREFIX)),
        ("held-out meetings (ami-dev*)", lambda n: n.startswith("ami-dev")),
        ("other held-out recordings", lambda n: not n.startswith("ami-")),
    )
    for label, member in sets:
        values = [a for n, _, a in scores if member(n)]
        if values:
            lines.append(
                f"- Word attribution, {label}: average {100 * np.mean(values):.1f} %, "
                f"lowest {100 * min(values):.1f} % ({len(values)} clips)"
            )
    return lines


def _ignore(_: float) -> None:
    return None


def _current_rss_mb() -> float:
    """Resident memory now (not the peak), so the peak after diarizing minus it is its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(scores: Sequence[ClipScore]) -> list[str]:
    lines = [
        "| clip | s | true spk | true spk >= 2 s | found | DER md-eval collar 0.25 "
        "| DER collar 0 | DER md-eval collar 0.125 | s/min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.name} | {s.duration_s:.1f} | {s.true_speakers} | {s.audible_speakers} | "
            f"{s.found_speakers} | "
            f"{100 * s.der_050:.1f} % | {100 * s.der_0:.1f} % | {100 * s.der_025:.1f} % | "
            f"{60 * s.seconds / s.duration_s:.2f} |"
        )
    return lines


def run(
    fixtures_dir: Path = DEFAULT_FIXTURES,
    models_dir: Path = DEFAULT_MODELS,
    lengths: Sequence[float] = LENGTHS_MIN,
    threads: int = 1,
    calibrate: bool = True,
    ratio_lengths: Sequence[float] | None = None,
) -> str:
    """The benchmark as a markdown section (`lengths`: the mixes for cost by length)."""
    models = load_speaker_models(models_dir, threads)
    options = DiarizationOptions()
    scores = [score_clip(wav, models, options) for wav in clips(fixtures_dir)]
    ami = [s for s in scores if s.name.startswith("ami-")]
    calib = [s for s in scores if s.name.startswith(CALIBRATION_PREFIX)]
    exact = sum(s.found_speakers == s.true_speakers for s in scores)
    audible = [s for s in scores if s.audible_speakers > 0]
    exact_audible = sum(s.found_speakers == s.true_speakers for s in audible)
    exact_loud = sum(s.found_speakers == s.audible_speakers for s in scores)
    total_audio = sum(s.duration_s for s in scores)
    total_time = sum(s.seconds for s in scores)
    lines = [
        "## Speaker diarization",
        "",
        f"Options: `{options}`; {threads} onnxruntime thread(s); "
        "Silero VAD regions only veto speakers heard nowhere in them.",
        "",
        *table(scores),
        "",
        "DER columns: md-eval collar 0.25 s = pyannote.metrics `collar=0.5` (it takes the total "
        "width); overall = all errors over all scored time, as md-eval sums them.",
        "",
        *[
            f"- {label} overall DER: md-eval collar 0.25 {100 * overall(group, 'der_050'):.1f} %, "
            f"collar 0 {100 * overall(group, 'der_0'):.1f} %"
            for label, group in (
                ("AMI (all 12)", ami),
                ("AMI calibration (ami-trn*)", calib),
                ("Held-out AMI (ami-dev*)", [s for s in ami if s not in calib]),
                ("All clips", scores),
            )
            if group
        ],
        *[
            f"- {s.name} (held out): md-eval collar 0.25 {100 * s.der_050:.1f} %, "
            f"{s.found_speakers}/{s.true_speakers} speakers"
            for s in scores
            if not s.name.startswith("ami-")
        ],
        f"- Exact speaker count: {exact}/{len(scores)} clips; {exact_audible}/{len(audible)} "
        f"without the clips where every reference speaker talks < {AUDIBLE_SPEAKER_S:.0f} s in "
        f"all ({', '.join(s.name for s in scores if s not in audible) or 'none'}); "
        f"{exact_loud}/{len(scores)} counting only speakers with >= {AUDIBLE_SPEAKER_S:.0f} s",
        f"- Speed on the clips: {60 * total_time / total_audio:.2f} s per audio minute",
    ]
    lines += [
        "",
        "### Words given the right speaker",
        "",
        "Whisper-base words of each clip, each given a speaker by the pipeline's own rule "
        "(`assign_speaker`), scored against the reference speaker covering most of the word "
        "(the .stm transcript, else the RTTM), speakers mapped one-to-one optimally. Target "
        "on held-out meetings: average >= 90 %, none below 70 %.",
        "",
        *attribution_lines(attribution_scores(fixtures_dir, models, options)),
    ]
    if lengths:
        lines += [
            "",
            "### Cost by length",
            "",
            f"Diarization alone ({threads} onnxruntime thread(s); mixes of the fixtures "
            "concatenated; target <= 3 s per audio minute):",
            "",
            *speed_by_length(fixtures_dir, models_dir, lengths, threads),
            *[
                f"| {s.duration_s / 60:.1f} min ({s.name}, in the clip table) | "
                f"{60 * s.seconds / s.duration_s:.2f} | | | {s.found_speakers} |"
                for s in scores
                if s.name.startswith("mixA")
            ],
            "",
            "Whole pipeline (VAD, diarization beside transcription, prosody, segments, "
            "emotion; Whisper 2 threads) against bare faster-whisper on the same audio, "
            "measured side by side in this run (target: ratio <= 1.25):",
            "",
            *pipeline_ratio(fixtures_dir, lengths if ratio_lengths is None else ratio_lengths),
        ]
    if not calibrate:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "### Calibration (`python -m bench.diarization --sweep`)",
        "",
        "Chosen on ami-trn* by DER, which is flat from 0.74 to 0.85: the default 0.77 sits "
        "inside that plateau, away from its lower edge where the AMI speakers split; the "
        "heard-apart bound is what keeps the telephone call at two speakers there. Overlap "
        "probabilities 0.2 and 0.3 score within 0.1 point on ami-trn*; 0.3 adds fewer false "
        "alarms.",
        "",
        *sweep(fixtures_dir, models, calibration_variants(options)),
        "",
    ]
    return "\n".join(lines) + "\n"


def calibration_variants(base: DiarizationOptions) -> list[tuple[str, DiarizationOptions]]:
    """The thresholds around the default, the default without the heard-apart bound, and
    other overlap probabilities."""
    variants = [
        (f"{t:.2f}", dataclasses.replace(base, clustering_threshold=t))
        for t in (0.60, 0.65, 0.70, 0.72, 0.74, 0.77, 0.80, 0.85, 0.90)
    ]
    for t in (0.70, base.clustering_threshold):
        no_bound = dataclasses.replace(base, clustering_threshold=t, min_heard_apart_s=float("inf"))
        variants.append((f"{t:.2f}, no heard-apart bound", no_bound))
    for p in (0.2, 0.5):
        overlap = dataclasses.replace(base, overlap_probability=p)
        variants.append((f"{base.clustering_threshold:.2f}, overlap from p >= {p}", overlap))
    if base.reuse_span_s > 0:
        no_reuse = dataclasses.replace(base, reuse_span_s=0.0)
        variants.append((f"{base.clustering_threshold:.2f}, every window embedded", no_reuse))
    else:
        reuse = dataclasses.replace(base, reuse_span_s=7.5)
        variants.append((f"{base.clustering_threshold:.2f}, embeddings reused 7.5 s", reuse))
    return variants


def sweep(
    fixtures_dir: Path,
    models: SpeakerModels,
    variants: Sequence[tuple[str, DiarizationOptions]],
    use_vad: bool = True,
) -> list[str]:
    """A markdown table: DER and exact counts per variant, calibration clips (ami-trn*)
    against the held-out ones."""
    cache = {}
    for wav in clips(fixtures_dir):
        audio = load_audio(wav)
        whole = [SpeechRegion(0.0, audio.size / SAMPLE_RATE)]
        cache[wav] = (audio, detect_speech(audio, VadOptions()) if use_vad else whole)
    lines = [
        "| threshold | calib DER (md-eval 0.25) | calib exact | held-out DER | held-out exact "
        "| AMI DER | found per held-out clip |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, options in variants:
        scores = [
            score_clip(wav, models, options, regions, audio)
            for wav, (audio, regions) in cache.items()
        ]
        calib = [s for s in scores if s.name.startswith(CALIBRATION_PREFIX)]
        held = [s for s in scores if not s.name.startswith(CALIBRATION_PREFIX)]
        ami = [s for s in scores if s.name.startswith("ami-")]
        lines.append(
            f"| {label} | {100 * overall(calib, 'der_050'):.1f} % | "
            f"{sum(s.found_speakers == s.true_speakers for s in calib)}/{len(calib)} | "
            f"{100 * overall(held, 'der_050'):.1f} % | "
            f"{sum(s.found_speakers == s.true_speakers for s in held)}/{len(held)} | "
            f"{100 * overall(ami, 'der_050'):.1f} % | "
            f"{', '.join(f'{s.name[:9]} {s.found_speakers}/{s.true_speakers}' for s in held)} |"
        )
        print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument(
        "--lengths", type=float, nargs="*", default=list(LENGTHS_MIN), help="mix lengths, min"
    )
    parser.add_argument(
        "--ratio-lengths", type=float, nargs="*", help="mix lengths for the pipeline ratio"
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the calibration sweep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--no-vad", action="store_true", help="sweep on whole clips")
    parser.add_argument("--long-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long_child is not None:
        _long_child(args.fixtures, args.models, args.long_child, args.threads)
    elif args.sweep:
        models = load_speaker_models(args.models, args.threads)
        variants = calibration_variants(DiarizationOptions())
        print("\n".join(sweep(args.fixtures, models, variants, use_vad=not args.no_vad)))
    else:
        section = run(
            args.fixtures,
            args.models,
            args.lengths,
            args.threads,
            not args.no_sweep,
            args.ratio_lengths,
        )
        print(section)


if __name__ == "__main__":
    main()


__all__ = ["ClipScore", "SpeakerTurn", "run", "score_clip", "sweep"]
