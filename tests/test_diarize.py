"""Diarization on real audio with the real (exported) speaker models."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.optimize import linear_sum_assignment

from voxtrace.config import get_settings
from voxtrace.domain import JobOptions, SpeakerTurn, SpeechRegion
from voxtrace.models.speaker import (
    EMBEDDING_FILE,
    SEGMENTATION_FILE,
    SpeakerModels,
    SpeakerModelsMissing,
    kaldi_fbank,
    load_speaker_models,
)
from voxtrace.models.speaker_export import ensure_speaker_models
from voxtrace.pipeline.diarize import (
    DiarizationOptions,
    SpeakerHints,
    _add_speakers_heard_apart,
    _LocalSpeaker,
    _own_speech_s,
    diarize,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow


def _read_wav(path: Path) -> npt.NDArray[np.float32]:
    with wave.open(str(path)) as reader:
        assert reader.getframerate() == 16000 and reader.getsampwidth() == 2
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        pcm = pcm.reshape(-1, reader.getnchannels()).mean(axis=1)
    result: npt.NDArray[np.float32] = (pcm / 32768.0).astype(np.float32)
    return result


def _whole(samples: npt.NDArray[np.float32]) -> list[SpeechRegion]:
    return [SpeechRegion(0.0, samples.size / 16000)]


@pytest.fixture(scope="session")
def speaker_models() -> SpeakerModels:
    """The set-up's exported models (`voxtrace setup`); exported here if missing (minutes)."""
    settings = get_settings()
    models_path = settings.models_path
    if not models_path.is_absolute():
        models_path = REPO_ROOT / models_path
    model_dir = models_path / "speaker"
    if not (model_dir / SEGMENTATION_FILE).is_file() or not (model_dir / EMBEDDING_FILE).is_file():
        ensure_speaker_models(model_dir, REPO_ROOT / settings.data_dir / ".export-venv")
    return load_speaker_models(model_dir, threads=1)


@pytest.fixture(scope="module")
def two_speakers() -> npt.NDArray[np.float32]:
    return _read_wav(DATA / "pyannote-sample.wav")


def _reference(path: Path) -> list[SpeakerTurn]:
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        turns.append(SpeakerTurn(start, start + duration, fields[7]))
    return turns


def _frame_agreement(reference: list[SpeakerTurn], found: list[SpeakerTurn]) -> float:
    """Share of single-speaker reference time (10-ms frames) given to the mapped speaker."""
    step = 0.01
    end = max(t.end_s for t in reference + found)
    frames = int(end / step) + 1

    def grid(turns: list[SpeakerTurn]) -> tuple[list[str], npt.NDArray[np.bool_]]:
        names = sorted({t.speaker_id for t in turns})
        active = np.zeros((frames, len(names)), dtype=bool)
        for t in turns:
            active[int(t.start_s / step) : int(t.end_s / step), names.index(t.speaker_id)] = True
        return names, active

    _, ref = grid(reference)
    _, hyp = grid(found)
    single = ref.sum(axis=1) == 1
    overlap = ref[single].astype(np.int64).T @ hyp[single].astype(np.int64)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / single.sum())


def test_two_speaker_call_gets_two_speakers_matching_the_reference(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    turns = diarize(two_speakers, _whole(two_speakers), speaker_models, SpeakerHints())
    assert {t.speaker_id for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(type(t.start_s) is float and type(t.end_s) is float for t in turns)
    agreement = _frame_agreement(_reference(DATA / "pyannote-sample.rttm"), turns)
    assert agreement >= 0.85, agreement


def test_ids_are_numbered_by_first_appearance_and_turns_sorted(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    turns = diarize(two_speakers, _whole(two_speakers), speaker_models, SpeakerHints())
    assert turns == sorted(turns, key=lambda t: (t.start_s, t.end_s))
    first_seen: list[str] = []
    for turn in turns:
        if turn.speaker_id not in first_seen:
            first_seen.append(turn.speaker_id)
        assert turn.end_s > turn.start_s
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(len(first_seen))]


def test_far_field_meeting_voices_heard_apart_stay_two_speakers(
    speaker_models: SpeakerModels,
) -> None:
    """AMI far-field excerpt: the two voices' embeddings drift together (clustering
    alone found 3 speakers at one threshold and 1 at the next); the segmentation hears
    them apart in one window, so there are 2, and the time goes to the right one."""
    samples = _read_wav(DATA / "ami-dev00.wav")
    turns = diarize(samples, _whole(samples), speaker_models, SpeakerHints())
    assert {t.speaker_id for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    agreement = _frame_agreement(_reference(DATA / "ami-dev00.rttm"), turns)
    assert agreement >= 0.74, agreement  # 0.77 now; one speaker gives 0.71, three 0.56


def test_overlapping_turns_name_one_leading_voice_at_a_time(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    """The telephone call has overlapping speech: where turns overlap, exactly one of
    them leads (so a word there has one speaker), and every frame with speech has one."""
    turns = diarize(two_speakers, _whole(two_speakers), speaker_models, SpeakerHints())
    assert any(not t.dominant for t in turns)  # overlap was found
    for t in (x / 100 for x in range(0, 3000)):
        covering = [turn for turn in turns if turn.start_s <= t < turn.end_s]
        if covering:
            assert sum(turn.dominant for turn in covering) == 1, (t, covering)


def test_single_reader_is_one_speaker(speaker_models: SpeakerModels) -> None:
    samples = _read_wav(DATA / "libri-1088-134315-0000.wav")
    turns = diarize(samples, _whole(samples), speaker_models, SpeakerHints())
    assert turns
    assert {t.speaker_id for t in turns} == {"SPEAKER_00"}
    assert sum(t.end_s - t.start_s for t in turns) > 10.0  # most of the 16-s reading


def test_two_voices_talking_at_once_in_a_five_second_clip_are_two_speakers(
    speaker_models: SpeakerModels,
) -> None:
    """One LibriSpeech reader per channel, downmixed: the right-channel reader (0.4-2.2 s)
    only ever speaks over the other. A lone 10-s window hears each second once, so that
    voice's 2 s must not be discounted as if several windows had heard it."""
    samples = _read_wav(DATA / "stereo_diarization.wav")
    turns = diarize(samples, _whole(samples), speaker_models, SpeakerHints())
    assert len({t.speaker_id for t in turns}) == 2
    spans = {
        speaker: [t for t in turns if t.speaker_id == speaker]
        for speaker in {t.speaker_id for t in turns}
    }
    longest = max(spans.values(), key=lambda ts: sum(t.end_s - t.start_s for t in ts))
    other = next(ts for ts in spans.values() if ts is not longest)
    assert sum(t.end_s - t.start_s for t in longest) > 4.0  # the left reader: 0-4.9 s
    assert all(t.start_s < 2.6 for t in other)  # the right reader: 0.4-2.2 s


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (SpeakerHints(num_speakers=1), 1),
        (SpeakerHints(num_speakers=3), 3),
        (SpeakerHints(max_speakers=1), 1),
        (SpeakerHints(min_speakers=3), 3),
        (SpeakerHints(min_speakers=2, max_speakers=2), 2),
    ],
)
def test_speaker_hints_are_obeyed(
    speaker_models: SpeakerModels,
    two_speakers: npt.NDArray[np.float32],
    hints: SpeakerHints,
    expected: int,
) -> None:
    turns = diarize(two_speakers, _whole(two_speakers), speaker_models, hints)
    assert len({t.speaker_id for t in turns}) == expected


def test_turns_stay_inside_the_speech_regions(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    regions = [SpeechRegion(6.0, 14.0), SpeechRegion(20.0, 26.5)]
    options = DiarizationOptions(clip_to_regions=True)
    turns = diarize(two_speakers, regions, speaker_models, SpeakerHints(), options=options)
    assert turns
    for turn in turns:
        assert any(r.start_s <= turn.start_s and turn.end_s <= r.end_s for r in regions), turn


def test_silence_gives_no_turns(speaker_models: SpeakerModels) -> None:
    """Room tone the VAD found no speech in is nobody, even where the segmentation
    hears a sliver of something."""
    samples = _read_wav(DATA / "empty-8s.wav")
    assert diarize(samples, [], speaker_models, SpeakerHints()) == []
    assert diarize(np.zeros(0, np.float32), [], speaker_models, SpeakerHints()) == []


def test_progress_rises_to_one_and_never_falls(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    seen: list[float] = []
    diarize(two_speakers, _whole(two_speakers), speaker_models, SpeakerHints(), seen.append)
    assert seen and seen[-1] == 1.0
    assert all(0.0 <= a <= b <= 1.0 for a, b in itertools.pairwise(seen))


def test_speech_the_vad_missed_is_still_diarized(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    """Speech activity comes from the segmentation model, not from the regions given."""
    regions = [SpeechRegion(6.0, 9.0), SpeechRegion(20.0, 23.0)]
    turns = diarize(two_speakers, regions, speaker_models, SpeakerHints())
    assert len({t.speaker_id for t in turns}) == 2
    assert sum(t.end_s - t.start_s for t in turns) > 15.0  # far more than the 6 s of regions


def test_job_options_serve_as_hints(
    speaker_models: SpeakerModels, two_speakers: npt.NDArray[np.float32]
) -> None:
    turns = diarize(two_speakers, _whole(two_speakers), speaker_models, JobOptions(num_speakers=3))
    assert len({t.speaker_id for t in turns}) == 3


# ------------------------------------------------------------------ pure logic


@pytest.mark.parametrize(
    "hints",
    [
        SpeakerHints(num_speakers=0),
        SpeakerHints(min_speakers=0),
        SpeakerHints(min_speakers=3, max_speakers=2),
    ],
)
def test_invalid_hints_are_rejected(hints: SpeakerHints) -> None:
    with pytest.raises(ValueError):
        hints.bounds()


def test_missing_models_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpeakerModelsMissing, match="voxtrace setup"):
        load_speaker_models(tmp_path, threads=1)


def test_fbank_has_kaldi_frame_count_and_is_finite() -> None:
    samples = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    features = kaldi_fbank(samples)
    assert features.shape == (1 + (16000 - 400) // 160, 80)
    assert np.isfinite(features).all()
    assert kaldi_fbank(np.zeros(100, np.float32)).shape == (0, 80)


def test_own_speech_counts_each_second_once_however_many_windows_heard_it() -> None:
    """Two windows half a window apart: speech in their overlap is heard twice and must
    weigh as its real length; a lone window's speech weighs in full."""
    frames = 589
    step = 200
    binarized = np.zeros((2, frames, 3), dtype=np.uint8)
    binarized[0, step:, 0] = 1  # heard by both windows
    binarized[1, : frames - step, 0] = 1  # the same frames, seen from window 1
    binarized[1, frames - step :, 1] = 1  # heard by window 1 only
    locals_ = [_LocalSpeaker(0, 0, 0.0, 0.0), _LocalSpeaker(1, 0, 0.0, 0.0)]
    locals_ += [_LocalSpeaker(1, 1, 0.0, 0.0)]
    shared_s, same_s, alone_s = _own_speech_s(binarized, step, locals_)
    frame_s = 270 / 16000
    assert shared_s == pytest.approx(same_s) == pytest.approx((frames - step) * frame_s / 2)
    assert alone_s == pytest.approx(step * frame_s)
    lone = np.zeros((1, frames, 3), dtype=np.uint8)
    lone[0, :100, 2] = 1
    (lone_s,) = _own_speech_s(lone, step, [_LocalSpeaker(0, 2, 0.0, 0.0)])
    assert lone_s == pytest.approx(100 * frame_s)


def _heard_apart_case(
    seconds: tuple[float, float],
) -> tuple[npt.NDArray[np.float32], list[_LocalSpeaker], npt.NDArray[np.uint8]]:
    """Window 0: local speakers 0 and 1 talk for `seconds`; window 1: speaker 0 alone.
    Embeddings: local 0 and window 1's speaker on axis x, local 1 on axis y."""
    frame_s = 270 / 16000
    binarized = np.zeros((2, 589, 3), dtype=np.uint8)
    binarized[0, : round(seconds[0] / frame_s), 0] = 1
    binarized[0, 300 : 300 + round(seconds[1] / frame_s), 1] = 1
    binarized[1, :200, 0] = 1
    locals_ = [_LocalSpeaker(0, 0, 1.0, 1.0), _LocalSpeaker(0, 1, 1.0, 1.0)]
    locals_ += [_LocalSpeaker(1, 0, 1.0, 1.0)]
    embeddings = np.array([[1, 0, 0], [0.6, 0.8, 0], [1, 0, 0]], dtype=np.float32)
    return embeddings, locals_, binarized


def test_voices_heard_apart_in_one_window_are_never_merged_into_one_speaker() -> None:
    embeddings, locals_, binarized = _heard_apart_case((3.0, 1.5))
    merged = embeddings[:1].copy()  # clustering found one speaker
    options = DiarizationOptions()
    centroids = _add_speakers_heard_apart(merged, embeddings, locals_, binarized, 20, options)
    assert centroids.shape == (2, 3)
    np.testing.assert_allclose(centroids[1], [0.6, 0.8, 0.0], atol=1e-6)  # the unclaimed one
    # a hint's maximum still wins, and a voice heard for less than the minimum proves nothing
    capped = _add_speakers_heard_apart(merged, embeddings, locals_, binarized, 1, options)
    assert capped.shape == (1, 3)
    embeddings, locals_, binarized = _heard_apart_case((3.0, 0.5))
    quiet = _add_speakers_heard_apart(merged, embeddings, locals_, binarized, 20, options)
    assert quiet.shape == (1, 3)


def test_a_local_speaker_links_to_the_one_it_continues_in_the_previous_window() -> None:
    """Activity shifted by the step lines up in the overlap: the continuation links to
    its own track (not the other voice), and a voice new in this window links to none."""
    from voxtrace.pipeline.diarize import _link, _Track

    frames, step = 589, 147
    first = np.zeros(frames, dtype=bool)
    first[200:400] = True
    second = np.zeros(frames, dtype=bool)
    second[450:589] = True
    vector = np.zeros(192, dtype=np.float32)
    tracks = [_Track(first, vector, 0, 3.0), _Track(second, vector, 0, 3.0)]
    continues_second = np.zeros(frames, dtype=bool)
    continues_second[450 - step : 589 - step + 60] = True
    continues_first = np.zeros(frames, dtype=bool)
    continues_first[200 - step : 400 - step] = True
    newcomer = np.zeros(frames, dtype=bool)
    newcomer[500:589] = True  # only where the previous window never reached
    links = _link(tracks, [continues_second, newcomer, continues_first], step, DiarizationOptions())
    assert links == {0: 1, 2: 0}
