"""Transcribe the speech regions with faster-whisper, with word timestamps.

This is what faster-whisper's `vad_filter=True` does, but with the regions our own VAD
stage found: the speech is concatenated, decoded once, and every segment and word time is
mapped back onto the original timeline; a file within one Whisper window is read whole.
Segments are consumed as a stream so that progress follows the decoder.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from voxtrace.domain import SpeechRegion, TranscribedSegment, TranscribedWord, Transcription
from voxtrace.errors import TranscriptionError
from voxtrace.pipeline.audio import SAMPLE_RATE
from voxtrace.pipeline.vad import VAD_WINDOW_SAMPLES

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment as RawSegment
    from faster_whisper.vad import SpeechTimestampsMap

__all__ = [
    "UNSPACED_LANGUAGES",
    "TranscribeOptions",
    "is_phantom",
    "join_pieces",
    "speech_evidence",
    "transcribe",
]

logger = logging.getLogger(__name__)

_AUTO_LANGUAGES = frozenset({"", "auto"})
# Written without spaces between words: a word is Whisper's own word piece there.
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "my", "km", "bo"})


@dataclass(frozen=True)
class TranscribeOptions:
    """All decoding choices in one place (faster-whisper's defaults unless noted)."""

    language: str | None = None  # ISO code; None or "auto" = detect
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    # Extra audio either side of each VAD region, for decoding only (diarization keeps
    # the VAD's own regions): Korean CER 24.6 % -> 23.4 % on ko-dev's tuning clips
    # (bench.captions --sweep; bare faster-whisper 23.7 %). Held-out figures, which
    # are less kind on short clips, are in docs/benchmarks.md.
    chunk_pad_s: float = 0.4
    # Padded regions whose gap is at most this are decoded as one stretch of audio,
    # pause included, as long as it stays within `max_merged_chunk_s` (one Whisper
    # window), so speech with short pauses reaches Whisper as bare Whisper reads it:
    # ko-dev tuning CER 23.4 % -> 22.1 % (bench.captions --sweep; any gap up to 30 s
    # scored the same, 3 s worse). Longer pauses stay cut out, so that Whisper's word
    # times cannot drift across them. 0 = only regions whose padding touches merge.
    merge_gap_s: float = 1.0
    max_merged_chunk_s: float = 30.0
    # Audio at most this long, with any speech in it, is read whole, as bare Whisper
    # reads it: on 2-7-s clips moving Whisper's input by a few hundred milliseconds flips
    # syllables either way, and bare Whisper's own framing is the one it was trained on
    # (bench.captions; the speech-evidence filters below still drop words where nobody
    # speaks). 0 = always decode the VAD's regions.
    whole_audio_max_s: float = 30.0
    # Skip silent stretches > 2 s inside a window when a hallucination is suspected.
    hallucination_silence_threshold: float | None = 2.0
    # A segment whose decoder thinks it is probably not speech AND whose words are all
    # unsure is dropped (typical "Thank you." on noise).
    drop_no_speech_prob: float = 0.5
    drop_max_word_probability: float = 0.5
    # Mean Silero speech probability over a segment's words below which nobody speaks.
    min_speech_evidence: float = 0.15
    # A known phantom phrase ("Thanks for watching", a count-in) stays only where the
    # VAD is fairly sure of speech and the decoder does not doubt it.
    phantom_min_speech_evidence: float = 0.5
    phantom_no_speech_prob: float = 0.3
    # Language detection: this many 30-s windows spread over the speech, probabilities
    # summed, so an opening title or jingle in another language does not decide it.
    language_windows: int = 5
    # Languages auto-detection may choose from (empty = any Whisper knows): short clips
    # of Korean are often heard as Japanese by Whisper base.
    candidate_languages: tuple[str, ...] = ()


def _language(code: str | None) -> str | None:
    if code is None or code.strip().lower() in _AUTO_LANGUAGES:
        return None
    return code.strip().lower()


def transcribe(
    samples: npt.NDArray[np.float32],
    regions: Sequence[SpeechRegion],
    model: WhisperModel,
    opts: TranscribeOptions,
    on_progress: Callable[[float], None],
    speech_prob: npt.NDArray[np.float32] | None = None,
) -> Transcription:
    """Decode the speech in `regions`; `on_progress(fraction)` follows each segment.

    `speech_prob` (Silero's per-window speech probability over the whole audio, see
    `vad.speech_probabilities`) lets segments where nobody speaks be dropped.
    """
    from faster_whisper.vad import SpeechTimestampsMap, collect_chunks

    chunks = _padded_chunks(
        regions,
        opts.chunk_pad_s,
        samples.shape[0],
        merge_gap_s=opts.merge_gap_s,
        max_chunk_s=opts.max_merged_chunk_s,
        whole_max_s=opts.whole_audio_max_s,
    )
    language = _language(opts.language)
    if not chunks:
        return Transcription(language=language or "", language_probability=0.0, segments=())

    audio_chunks, _ = collect_chunks(samples, chunks, sampling_rate=SAMPLE_RATE)
    speech = np.concatenate(audio_chunks).astype(np.float32, copy=False)
    speech_s = speech.shape[0] / SAMPLE_RATE
    ts_map = SpeechTimestampsMap(chunks, SAMPLE_RATE)

    segments: list[TranscribedSegment] = []
    try:
        detected = None if language else _detect_language(model, speech, opts)
        if detected is not None:
            language = detected[0]
        stream, info = model.transcribe(
            speech,
            language=language,
            beam_size=opts.beam_size,
            temperature=list(opts.temperatures),
            compression_ratio_threshold=opts.compression_ratio_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            condition_on_previous_text=opts.condition_on_previous_text,
            initial_prompt=opts.initial_prompt,
            hallucination_silence_threshold=opts.hallucination_silence_threshold,
            word_timestamps=True,
            vad_filter=False,
        )
        for raw in stream:
            on_progress(min(1.0, max(0.0, float(raw.end) / speech_s)))
            segment = _restore(raw, ts_map, opts, str(info.language), speech_prob)
            if segment is not None:
                segments.append(segment)
    except (RuntimeError, ValueError, IndexError) as exc:
        logger.debug("Transcription failed: %s", exc)
        raise TranscriptionError() from None
    on_progress(1.0)
    return Transcription(
        language=str(info.language),
        language_probability=detected[1] if detected else float(info.language_probability),
        segments=tuple(segments),
    )


def _padded_chunks(
    regions: Sequence[SpeechRegion],
    pad_s: float,
    total: int,
    *,
    merge_gap_s: float = 0.0,
    max_chunk_s: float = 30.0,
    whole_max_s: float = 0.0,
) -> list[dict[str, int]]:
    """Sample ranges of the regions, each widened by `pad_s` (within the audio), with
    ranges that then touch merged: Whisper reads speech better with some of the silence
    around it than cut tight (measured in bench.captions). Ranges at most `merge_gap_s`
    apart are merged too, silence and all, while the result stays within `max_chunk_s`.
    Audio of at most `whole_max_s` with any region in it is one range, the whole of it."""
    pad = round(pad_s * SAMPLE_RATE)
    gap = round(merge_gap_s * SAMPLE_RATE) if math.isfinite(merge_gap_s) else total
    longest = round(max_chunk_s * SAMPLE_RATE)
    if regions and total <= whole_max_s * SAMPLE_RATE:
        return [{"start": 0, "end": total}]
    chunks: list[dict[str, int]] = []
    for region in regions:
        start = max(0, round(region.start_s * SAMPLE_RATE) - pad)
        end = min(total, round(region.end_s * SAMPLE_RATE) + pad)
        if end <= start:
            continue
        if chunks and (
            start <= chunks[-1]["end"]
            or (start - chunks[-1]["end"] <= gap and end - chunks[-1]["start"] <= longest)
        ):
            chunks[-1]["end"] = max(chunks[-1]["end"], end)
        else:
            chunks.append({"start": start, "end": end})
    return chunks


def _detect_language(
    model: WhisperModel, speech: npt.NDArray[np.float32], opts: TranscribeOptions
) -> tuple[str, float]:
    """The language over up to `opts.language_windows` 30-s windows spread across the
    speech (probabilities averaged), among `opts.candidate_languages` when set.

    The first window is looked at last, so that decoding finds its encoding cached.
    """
    extractor = model.feature_extractor
    count = max(1, min(opts.language_windows, math.ceil(speech.shape[0] / extractor.n_samples)))
    features = extractor(speech)
    frames = extractor.nb_max_frames
    starts = np.linspace(0, max(0, features.shape[-1] - 1 - frames), count).astype(int)
    totals: dict[str, float] = {}
    for start in sorted(set(starts.tolist()), reverse=True):
        # a window that reaches the end keeps the final frame: the model drops it as
        # decoding does (see whisper_reuse)
        window = features[..., start : start + frames] if count > 1 else features
        _, _, probabilities = model.detect_language(features=window)
        for code, probability in probabilities:
            totals[code] = totals.get(code, 0.0) + float(probability) / count
    allowed = {c: p for c, p in totals.items() if c in opts.candidate_languages}
    if allowed:
        total = sum(allowed.values()) or 1.0
        totals = {c: p / total for c, p in allowed.items()}
    best = max(totals, key=totals.__getitem__)
    logger.debug("Language %s over %d windows (%.2f)", best, count, totals[best])
    return best, totals[best]


def _restore(
    raw: RawSegment,
    ts_map: SpeechTimestampsMap,
    opts: TranscribeOptions,
    language: str,
    speech_prob: npt.NDArray[np.float32] | None,
) -> TranscribedSegment | None:
    """Map one faster-whisper segment back onto the original timeline as whole words,
    or drop it when nothing says anybody speaks there."""
    pieces: list[TranscribedWord] = []
    for word in raw.words or ():
        if not word.word.strip():
            continue
        # Resolve start and end in the same chunk, as faster-whisper does.
        chunk_index = ts_map.get_chunk_index((word.start + word.end) / 2)
        start_s = float(ts_map.get_original_time(word.start, chunk_index))
        end_s = float(ts_map.get_original_time(word.end, chunk_index))
        pieces.append(
            TranscribedWord(
                text=str(word.word),
                start_s=start_s,
                end_s=max(start_s, end_s),
                probability=float(word.probability),
            )
        )
    if not pieces:
        return None
    spaced = language not in UNSPACED_LANGUAGES
    words = join_pieces(pieces) if spaced else [_stripped(p) for p in pieces]
    text = (" " if spaced else "").join(w.text for w in words)
    evidence = speech_evidence(speech_prob, words)
    no_speech = float(raw.no_speech_prob)
    if no_speech > opts.drop_no_speech_prob and (
        max(w.probability for w in words) < opts.drop_max_word_probability
    ):
        logger.debug("Dropped a probable non-speech segment")
        return None
    if evidence is not None and evidence < opts.min_speech_evidence:
        logger.debug("Dropped a segment where the VAD hears no speech (%.2f)", evidence)
        return None
    if is_phantom(text) and (
        no_speech > opts.phantom_no_speech_prob
        or (evidence is not None and evidence < opts.phantom_min_speech_evidence)
    ):
        logger.debug("Dropped a known phantom phrase (speech evidence %s)", evidence)
        return None
    return TranscribedSegment(
        start_s=words[0].start_s,
        end_s=words[-1].end_s,
        text=text,
        words=tuple(words),
        no_speech_prob=no_speech,
    )


def _stripped(word: TranscribedWord) -> TranscribedWord:
    return TranscribedWord(word.text.strip(), word.start_s, word.end_s, word.probability)


def join_pieces(pieces: Sequence[TranscribedWord]) -> list[TranscribedWord]:
    """Whole words: a piece without a leading space continues the word before it
    ("ill" + "-disposed", "0" + ".1" + "%"), with the joined span and the lowest
    piece's probability. Returned texts carry no surrounding spaces."""
    words: list[TranscribedWord] = []
    for piece in pieces:
        if words and not piece.text[:1].isspace():
            last = words[-1]
            words[-1] = TranscribedWord(
                text=last.text + piece.text.strip(),
                start_s=last.start_s,
                end_s=max(last.end_s, piece.end_s),
                probability=min(last.probability, piece.probability),
            )
        else:
            words.append(_stripped(piece))
    return words


def speech_evidence(
    speech_prob: npt.NDArray[np.float32] | None, words: Sequence[TranscribedWord]
) -> float | None:
    """Mean Silero speech probability over the words' own spans (None: not measured)."""
    if speech_prob is None or speech_prob.size == 0:
        return None
    frames: list[npt.NDArray[np.float32]] = []
    for word in words:
        lo = int(word.start_s * SAMPLE_RATE) // VAD_WINDOW_SAMPLES
        hi = max(lo + 1, -(-int(word.end_s * SAMPLE_RATE) // VAD_WINDOW_SAMPLES))
        frames.append(speech_prob[min(lo, speech_prob.size - 1) : hi])
    joined = np.concatenate(frames)
    return float(joined.mean()) if joined.size else None


# Whisper's best-known inventions on music, noise and silence (compared after
# `_normalise`): sign-offs from subtitled videos, and count-ins.
_PHANTOM_PHRASES = frozenset(
    {
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and please subscribe",
        "thank you for watching and please subscribe",
        "please subscribe",
        "please subscribe to my channel",
        "subscribe to my channel",
        "like and subscribe",
        "see you next time",
        "see you in the next video",
        "subtitles by the amara org community",
        "thank you",
        "thank you very much",
        "you",
        "bye",
        "시청해주셔서 감사합니다",
        "시청해 주셔서 감사합니다",
        "시청 해주셔서 감사합니다",
        "구독과 좋아요 부탁드립니다",
        "구독 좋아요 부탁드립니다",
        "구독과 좋아요",
        "감사합니다",
        "다음 영상에서 만나요",
        "ご視聴ありがとうございました",
        "谢谢观看",
        "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目",
    }
)
_COUNT_TEXT = (
    "one two three four five six seven eight and a 1 2 3 4 5 6 7 8 "
    "하나 둘 셋 넷 다섯 여섯 일곱 여덟 일 이 삼 사 오 육 칠 팔 "
    "eins zwei drei vier un deux trois quatre uno dos tres cuatro"
)
_COUNT_WORDS = frozenset(_COUNT_TEXT.split())


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def is_phantom(text: str) -> bool:
    """A known invention, or a count-in ("One, two, three, four", "1,2,3,4 1,2,3,4")."""
    plain = _normalise(text)
    if not plain:
        return True
    if plain in _PHANTOM_PHRASES or plain.replace(" ", "") in _PHANTOM_COMPACT:
        return True
    tokens = plain.split()
    numbers = [t for t in tokens if t not in ("and", "a")]
    return len(numbers) >= 3 and all(t in _COUNT_WORDS for t in tokens)


_PHANTOM_COMPACT = frozenset(p.replace(" ", "") for p in _PHANTOM_PHRASES if not p.isascii())
