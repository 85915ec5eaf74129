"""Emotion: the numpy MiniLM encoder, the trained head, and the voice adjustment.

Real encoder and real head throughout; only the arousal arithmetic is tested on
hand-made distributions and words.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from voxtrace.domain import Segment, Word
from voxtrace.models.emotion import (
    EMOTION_LABELS,
    EmotionModel,
    emotion_json_lines,
    load_emotion_model,
)
from voxtrace.pipeline.emotion import (
    NO_TEXT_MAX_PROBABILITY,
    SegmentArousal,
    adjust_for_arousal,
    classify_segments,
    segment_arousal,
    with_emotions,
)

DATA = Path(__file__).parent / "data"
LOUD_HIGH = SegmentArousal(volume_db_delta=12.0, pitch_ratio=2 ** (6 / 12))  # +12 dB, +6 st
QUIET_LOW = SegmentArousal(volume_db_delta=-12.0, pitch_ratio=2 ** (-6 / 12))


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return load_emotion_model()


# --------------------------------------------------------------------- the encoder


def test_encoder_matches_sentence_transformers(model: EmotionModel) -> None:
    # Reference: SentenceTransformer(all-MiniLM-L6-v2).encode on torch (computed once),
    # including emoji, [NAME] and a sentence past the 256-token truncation.
    with np.load(DATA / "minilm_reference.npz") as ref:
        sentences = [str(s) for s in ref["sentences"]]
        expected = ref["embeddings"]
    got = model.encoder.encode(sentences)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_embeddings_are_unit_length_and_semantic(model: EmotionModel) -> None:
    a, b, c = model.encoder.encode(
        [
            "The weather is lovely today.",
            "It's such a beautiful, sunny day.",
            "The quarterly tax report is due next week.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm([a, b, c], axis=1), 1.0, atol=1e-5)
    assert float(a @ b) > float(a @ c) + 0.2


def test_batching_does_not_change_embeddings(model: EmotionModel) -> None:
    texts = ["Short.", "A much longer sentence that needs padding in the same batch."]
    together = model.encoder.encode(texts)
    alone = np.stack([model.encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


# ------------------------------------------------------------------- the classifier


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I am so happy, this is wonderful!", "joy"),
        ("I hate you, get out!", "anger"),
        ("I'm terrified of what might happen", "fear"),
        ("This is so sad, I miss her", "sadness"),
        ("Wow, I didn't expect that at all!", "surprise"),
        ("The meeting is at three o'clock.", "neutral"),
    ],
)
def test_clear_sentences_get_their_emotion(model: EmotionModel, text: str, label: str) -> None:
    (emotion,) = classify_segments([text], [None], "en", model)
    assert emotion.label == label, emotion.probabilities


def test_emotions_are_well_formed(model: EmotionModel) -> None:
    texts = ["That's disgusting.", "ok", "", "   ", "!!!", "a" * 3000]
    for emotion in classify_segments(texts, [None] * len(texts), "en", model):
        assert set(emotion.probabilities) == set(EMOTION_LABELS)
        values = list(emotion.probabilities.values())
        assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in values)
        assert sum(values) == pytest.approx(1.0, abs=1e-6)
        assert emotion.confidence == max(values)
        assert emotion.probabilities[emotion.label] == emotion.confidence


def test_non_english_is_low_confidence_and_neutral_leaning(model: EmotionModel) -> None:
    texts = ["정말 행복해요, 너무 좋아요!"] * 3
    emotions = classify_segments(texts, [None, LOUD_HIGH, QUIET_LOW], "ko", model)
    for emotion in emotions:
        assert emotion.label == "neutral"
        assert emotion.confidence <= NO_TEXT_MAX_PROBABILITY + 1e-9
        assert sum(emotion.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    plain, loud, quiet = (e.probabilities for e in emotions)
    # The voice alone still moves it: loud/high lowers neutral and lifts anger/surprise.
    assert loud["neutral"] < plain["neutral"]
    assert loud["anger"] > plain["anger"] and loud["surprise"] > plain["surprise"]
    assert quiet["sadness"] > plain["sadness"]


def test_english_text_is_used_only_for_english(model: EmotionModel) -> None:
    text = "I am so happy, this is wonderful!"
    (english,) = classify_segments([text], [None], "en", model)
    (other,) = classify_segments([text], [None], "fr", model)
    assert english.label == "joy" and english.confidence > 0.6
    assert other.label == "neutral"


# -------------------------------------------------------------------------- voice


def test_high_arousal_raises_active_emotions_and_lowers_neutral() -> None:
    base = np.full(len(EMOTION_LABELS), 1 / len(EMOTION_LABELS))
    up = dict(zip(EMOTION_LABELS, adjust_for_arousal(base, 2.0), strict=True))
    down = dict(zip(EMOTION_LABELS, adjust_for_arousal(base, -2.0), strict=True))
    flat = 1 / len(EMOTION_LABELS)
    for label in ("anger", "joy", "surprise"):
        assert up[label] > flat > down[label]
    assert up["neutral"] < flat < down["neutral"]
    assert down["sadness"] > flat
    # Not only on a flat distribution: on any, a raised voice never lowers anger/joy/
    # surprise nor raises neutral (they hold the largest and the smallest weight).
    rng = np.random.default_rng(0)
    for probs in rng.dirichlet(np.full(len(EMOTION_LABELS), 0.3), size=200):
        moved = dict(zip(EMOTION_LABELS, adjust_for_arousal(probs, 1.0), strict=True))
        before = dict(zip(EMOTION_LABELS, probs, strict=True))
        for label in ("anger", "joy", "surprise"):
            assert moved[label] >= before[label] - 1e-12
        assert moved["neutral"] <= before["neutral"] + 1e-12
    # Bounded: even an absurd arousal moves no class by more than e^(2*0.3*2) in odds.
    extreme = adjust_for_arousal(base, 50.0)
    np.testing.assert_allclose(extreme, adjust_for_arousal(base, 2.0))
    assert extreme.max() / extreme.min() <= math.exp(1.2) + 1e-9


def test_arousal_shifts_a_real_prediction(model: EmotionModel) -> None:
    text = "Are you serious right now?"
    calm, loud = classify_segments([text, text], [None, LOUD_HIGH], "en", model)
    for label in ("anger", "joy", "surprise"):
        assert loud.probabilities[label] > calm.probabilities[label]
    assert loud.probabilities["neutral"] < calm.probabilities["neutral"]


def _word(speaker: str, volume_db: float, pitch_hz: float, t: float) -> Word:
    return Word("w", t, t + 0.3, 0.9, speaker, volume_db, pitch_hz)


def _segment(speaker: str, volume_db: float, pitch_hz: float, n: int, t: float) -> Segment:
    words = tuple(_word(speaker, volume_db, pitch_hz, t + i * 0.3) for i in range(n))
    return Segment(t, t + n * 0.3, speaker, "text", words, 0.9)


def test_segment_arousal_is_relative_to_each_speakers_baseline() -> None:
    segments = [
        _segment("A", -30.0, 120.0, 6, 0.0),
        _segment("A", -30.0, 120.0, 6, 2.0),
        _segment("A", -18.0, 170.0, 4, 4.0),  # A shouting, higher
        _segment("B", -12.0, 220.0, 8, 6.0),  # B is loud and high all the time
        _segment("B", -12.0, 220.0, 8, 9.0),
        _segment("C", -20.0, 200.0, 2, 12.0),  # too few words for a baseline
        Segment(13.0, 14.0, "A", "", (), 0.0),  # no words
    ]
    calm, _, shouting, b1, _, c, empty = segment_arousal(segments)
    assert calm is not None and shouting is not None and b1 is not None
    assert calm.volume_db_delta == 0.0 and calm.pitch_ratio == 1.0 and calm.arousal == 0.0
    assert shouting.volume_db_delta == pytest.approx(12.0)
    assert shouting.pitch_ratio == pytest.approx(170.0 / 120.0)
    assert shouting.arousal > 1.0
    assert b1.arousal == 0.0  # loud for A, ordinary for B
    assert c is None and empty is None


def test_with_emotions_fills_every_segment(model: EmotionModel) -> None:
    segments = [_segment("A", -30.0, 120.0, 6, float(i)) for i in range(3)]
    filled = with_emotions(segments, "en", model)
    assert len(filled) == 3
    assert all(s.emotion is not None for s in filled)
    assert [s.start_s for s in filled] == [s.start_s for s in segments]


# --------------------------------------------------------------- CLI and packaging


def test_emotion_json_lines(model: EmotionModel) -> None:
    lines = ["I am so happy, this is wonderful!\n", "\n", "I hate you, get out!"]
    out = [json.loads(line) for line in emotion_json_lines(lines, model)]
    assert [o["text"] for o in out] == ["I am so happy, this is wonderful!", "I hate you, get out!"]
    assert [o["emotion"] for o in out] == ["joy", "anger"]
    for o in out:
        assert set(o["probabilities"]) == set(EMOTION_LABELS)
        assert 0.0 <= o["confidence"] <= 1.0


def test_head_asset_is_small_and_calibrated(model: EmotionModel) -> None:
    asset = resources.files("voxtrace").joinpath("assets", "emotion_head.npz")
    assert len(asset.read_bytes()) < 1_000_000
    assert 0.2 < model.head.temperature < 5.0
    assert model.head.labels == EMOTION_LABELS
