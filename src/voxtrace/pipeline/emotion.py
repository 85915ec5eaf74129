"""Per-segment emotion: a multilingual text classifier, nudged by the voice's arousal.

Two sources, combined in log space:

* Text, in every language the encoder covers (`EmotionModel.covers`: Korean, English and
  the other ~100 languages of multilingual-e5): the calibrated e5 + head model of
  `voxtrace.models.emotion` (`source: "text"`). Languages it does not cover (and an
  unknown language) get an honest low-confidence answer instead (`source: "voice"`): a
  neutral-leaning prior (neutral 0.5, the six emotions 1/12 each) that only the voice
  moves, never above 0.5 for any class.
* Voice: how much louder and higher a segment is than its speaker's own baseline (the
  median over all of that speaker's words). Loud, high speech signals arousal, which
  separates anger/joy/surprise/fear from neutral/sadness but cannot tell anger from joy —
  so the voice only shifts the text's probabilities, by a bounded log-linear prior:
  ``log p'(c) = log p(c) + AROUSAL_WEIGHTS[c] * arousal`` with ``|arousal| <= 2``,
  i.e. at most a factor e^0.6 ≈ 1.8 on any class before renormalising.

No labelled emotional speech is available offline, so the voice weights are a documented
prior, not a fitted model; `bench/emotion.py` shows their effect on examples.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import median

import numpy as np
import numpy.typing as npt

from voxtrace.domain import Emotion, Segment
from voxtrace.models.emotion import EMOTION_LABELS, EmotionModel

__all__ = [
    "AROUSAL_WEIGHTS",
    "SegmentArousal",
    "adjust_for_arousal",
    "classify_segments",
    "prosody_only_probabilities",
    "segment_arousal",
    "with_emotions",
]

FloatArray = npt.NDArray[np.float64]
logger = logging.getLogger(__name__)

# Log-probability shift per unit of arousal. Positive: more likely when the voice is
# louder/higher than the speaker's baseline (the high-arousal emotions of the
# circumplex model); negative: more likely when it is quieter/lower. anger, joy and
# surprise share the largest weight, so a raised voice never lowers any of them, and
# neutral has the smallest, so a raised voice never raises it (and the reverse).
AROUSAL_WEIGHTS: dict[str, float] = {
    "anger": 0.3,
    "disgust": 0.0,
    "fear": 0.15,
    "joy": 0.3,
    "neutral": -0.3,
    "sadness": -0.2,
    "surprise": 0.3,
}
MAX_AROUSAL = 2.0
# One unit of arousal: a segment ~6 dB louder, or ~3 semitones higher, than the speaker's
# median word — roughly one within-speaker standard deviation of conversational speech.
VOLUME_SCALE_DB = 6.0
PITCH_SCALE_SEMITONES = 3.0
MIN_SPEAKER_WORDS = 5  # fewer words give no trustworthy baseline: no voice adjustment
NO_TEXT_NEUTRAL = 0.5
NO_TEXT_MAX_PROBABILITY = 0.5
_WEIGHTS = np.array([AROUSAL_WEIGHTS[label] for label in EMOTION_LABELS])


@dataclass(frozen=True)
class SegmentArousal:
    """A segment's voice relative to its own speaker's baseline."""

    volume_db_delta: float  # median word loudness minus the speaker's median, dB
    pitch_ratio: float  # median word pitch divided by the speaker's median pitch

    @property
    def arousal(self) -> float:
        """Louder and higher → positive; bounded to [-MAX_AROUSAL, MAX_AROUSAL]."""
        semitones = 12.0 * math.log2(max(self.pitch_ratio, 1e-6))
        score = 0.5 * (self.volume_db_delta / VOLUME_SCALE_DB + semitones / PITCH_SCALE_SEMITONES)
        return max(-MAX_AROUSAL, min(MAX_AROUSAL, score))


def segment_arousal(segments: Sequence[Segment]) -> list[SegmentArousal | None]:
    """Each segment's loudness and pitch against its speaker's median over all their words.

    None for a segment without words or whose speaker has too few words for a baseline.
    Words are attributed by their own `speaker_id` (a segment's words share it anyway).
    """
    volumes: dict[str, list[float]] = defaultdict(list)
    pitches: dict[str, list[float]] = defaultdict(list)
    for segment in segments:
        for word in segment.words:
            volumes[word.speaker_id].append(word.volume_db)
            pitches[word.speaker_id].append(word.pitch_hz)
    base_volume = {s: median(v) for s, v in volumes.items() if len(v) >= MIN_SPEAKER_WORDS}
    base_pitch = {s: median(p) for s, p in pitches.items() if len(p) >= MIN_SPEAKER_WORDS}

    out: list[SegmentArousal | None] = []
    for segment in segments:
        speaker = segment.words[0].speaker_id if segment.words else segment.speaker_id
        if not segment.words or speaker not in base_volume or base_pitch[speaker] <= 0:
            out.append(None)
            continue
        out.append(
            SegmentArousal(
                volume_db_delta=median(w.volume_db for w in segment.words) - base_volume[speaker],
                pitch_ratio=median(w.pitch_hz for w in segment.words) / base_pitch[speaker],
            )
        )
    return out


def adjust_for_arousal(probabilities: FloatArray, arousal: float) -> FloatArray:
    """Shift a distribution over EMOTION_LABELS by the bounded log-linear arousal prior."""
    a = max(-MAX_AROUSAL, min(MAX_AROUSAL, arousal))
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) + _WEIGHTS * a
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()  # type: ignore[no-any-return]


def prosody_only_probabilities(arousal: SegmentArousal | None) -> FloatArray:
    """The answer without a text model: neutral-leaning, no class above 0.5.

    The voice moves the prior; if that lifts a class above NO_TEXT_MAX_PROBABILITY, the
    result is mixed with the uniform distribution just enough to bring it back, because
    loudness and pitch alone cannot justify more confidence than that.
    """
    others = (1.0 - NO_TEXT_NEUTRAL) / (len(EMOTION_LABELS) - 1)
    prior = np.array([NO_TEXT_NEUTRAL if lb == "neutral" else others for lb in EMOTION_LABELS])
    probs = prior if arousal is None else adjust_for_arousal(prior, arousal.arousal)
    top = float(probs.max())
    uniform = 1.0 / len(EMOTION_LABELS)
    if top > NO_TEXT_MAX_PROBABILITY:
        keep = (NO_TEXT_MAX_PROBABILITY - uniform) / (top - uniform)
        probs = keep * probs + (1.0 - keep) * uniform
    return probs


def _emotion(probs: FloatArray, source: str) -> Emotion:
    probs = probs / probs.sum()
    best = int(np.argmax(probs))
    return Emotion(
        label=EMOTION_LABELS[best],
        confidence=float(probs[best]),
        probabilities={label: float(p) for label, p in zip(EMOTION_LABELS, probs, strict=True)},
        source=source,
    )


def classify_segments(
    texts: Sequence[str],
    arousal: Sequence[SegmentArousal | None],
    language: str,
    model: EmotionModel,
    known: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> list[Emotion]:
    """One Emotion per text; `arousal[i]` (None = no voice information) belongs to texts[i].

    `language` is the transcription's language code: text in a language the encoder
    covers uses the text model, the rest (and empty texts) the voice-only fallback. All
    distinct texts go through the encoder in batched calls, except those in `known`
    (embeddings computed earlier, keyed by the stripped text).
    """
    if len(texts) != len(arousal):
        raise ValueError("texts and arousal must have the same length")
    covered = model.covers(language)
    text_indices = [i for i, t in enumerate(texts) if covered and t.strip()]
    # Each distinct text once: conversation repeats its backchannels ("네.", "Yeah.").
    unique = sorted({texts[i].strip() for i in text_indices})
    probs = model.predict_proba(unique, language, known).astype(np.float64)
    by_text = dict(zip(unique, probs, strict=True))
    by_index = {i: by_text[texts[i].strip()] for i in text_indices}

    emotions = []
    for i, voice in enumerate(arousal):
        if i in by_index:
            probs = by_index[i]
            if voice is not None:
                probs = adjust_for_arousal(probs, voice.arousal)
            emotions.append(_emotion(probs, "text"))
        else:
            emotions.append(_emotion(prosody_only_probabilities(voice), "voice"))
    return emotions


def with_emotions(
    segments: Sequence[Segment],
    language: str,
    model: EmotionModel,
    known: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> tuple[Segment, ...]:
    """The segments with `emotion` filled in: voice baselines per speaker, then classify."""
    emotions = classify_segments(
        [s.text for s in segments], segment_arousal(segments), language, model, known
    )
    return tuple(replace(s, emotion=e) for s, e in zip(segments, emotions, strict=True))
