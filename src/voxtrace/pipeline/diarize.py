"""Speaker diarization, the pyannote 3.x way, on two ONNX models and numpy.

1. Local segmentation: segmentation-3.0 over 10-s windows (every 2.5 s, wider steps on
   long audio so the cost per minute stays bounded); its 7 powerset classes give up to
   3 "local" speakers per window, overlap included. This, not the VAD, says where speech
   is: it is overlap-aware and hears quiet speech that Silero misses.
2. One CAM++ embedding per (window, local speaker), from that speaker's frames where
   nobody else speaks (all its frames when those are too few).
3. Global clustering: centroid-linkage agglomerative clustering of the embeddings with
   a cosine threshold calibrated on AMI train excerpts; small clusters are folded into
   large ones, and the hints (known number, or bounds) choose the cut when given. Long
   audio clusters a bounded subsample and assigns the rest, so memory stays bounded.
   The segmentation bounds the count from below: when it hears N local speakers talk
   for a second or more each in one window, there are at least N people, and a speaker
   that clustering merged away is seeded from that window (far-field meetings, where
   embeddings of two voices drift together, need this).
4. Reconstruction: each window's local speakers are mapped to distinct global speakers
   and their probabilities averaged over the overlapping windows; per frame, the N
   likeliest speakers are kept, N being the segmentation's own count of simultaneous
   voices (two once overlap is 30 % likely: the likeliest class alone misses most of
   the overlap in meetings).

Speakers left with almost no speech, or heard only where the VAD heard nothing, are
merged away; ids are numbered by first appearance.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from voxtrace.domain import SpeakerTurn, SpeechRegion
from voxtrace.models.speaker import (
    SEGMENTATION_FRAME_STEP_SAMPLES,
    SEGMENTATION_NUM_FRAMES,
    SEGMENTATION_RECEPTIVE_FIELD_SAMPLES,
    SEGMENTATION_WINDOW_SAMPLES,
    SpeakerModels,
    kaldi_fbank,
)

__all__ = ["DiarizationOptions", "SpeakerHints", "diarize"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_FRAME_STEP_S = SEGMENTATION_FRAME_STEP_SAMPLES / SAMPLE_RATE
_FRAME_OFFSET_S = SEGMENTATION_RECEPTIVE_FIELD_SAMPLES / 2 / SAMPLE_RATE  # frame 0's centre
_FBANK_SHIFT_S = 0.010
_FBANK_CENTRE_S = 0.0125
_MAX_SPEAKERS_AUTO = 20

# powerset class -> which of the 3 local speakers are active: {}, {0}, {1}, {2}, {0,1}, ...
_POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=np.uint8,
)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeakerHints:
    """What the caller knows about the number of speakers; obeyed when given."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def bounds(self) -> tuple[int, int]:
        """(min, max) number of speakers; equal when `num_speakers` is set."""
        if self.num_speakers is not None:
            if self.num_speakers < 1:
                raise ValueError("num_speakers must be at least 1")
            return self.num_speakers, self.num_speakers
        low = self.min_speakers if self.min_speakers is not None else 1
        high = self.max_speakers if self.max_speakers is not None else _MAX_SPEAKERS_AUTO
        if low < 1 or high < low:
            raise ValueError("speaker bounds must satisfy 1 <= min_speakers <= max_speakers")
        return low, high


@dataclass(frozen=True)
class DiarizationOptions:
    """Tuning knobs; the defaults are the ones `bench/diarization.py` calibrated."""

    window_step_s: float | None = None  # None: adapt to the length (`_window_step_s`)
    dense_step_s: float = 2.5  # short audio (1 s, as pyannote 3.1, scored worse here)
    sparse_step_s: float = 5.0  # long audio: bounded cost per minute
    target_windows: int = 120  # the step grows past this many windows
    clustering_threshold: float = 0.77  # euclidean distance between unit-vector centroids
    overlap_probability: float = 0.3  # a frame holds two voices from this probability on
    min_heard_apart_s: float = 1.0  # local speakers of one window this loud are different people
    min_cluster_s: float = 1.0  # clusters with less (de-duplicated) speech are folded in
    min_clean_s: float = 2.0  # embeddings with less single-speaker speech don't vote
    min_embed_s: float = 0.3  # below this a local speaker gets no embedding at all
    split_run_s: float = 1.0  # a local speaker's runs this long are embedded apart (0: off)
    max_embed_s: float = 5.0  # CAM++ cost grows with length; 5 s beat 3 s on the bench
    # Embedding reuse (off: 0): a local speaker that continues one of the previous
    # window's (same frames active in the overlap) takes its embedding while that was made
    # from >= reuse_min_s of clean speech heard at most reuse_span_s earlier, so each
    # stretch is embedded about once instead of once per overlapping window. Measured and
    # left off: far-field embeddings of one voice differ by cosine 0.6-0.85 from window to
    # window, and clustering needs those several views (held-out AMI DER 23 -> 45 %).
    reuse_span_s: float = 0.0
    reuse_min_s: float = 2.0
    link_min_iou: float = 0.6  # agreement of the two activities in the overlap to link
    max_clustered: int = 2000  # bound on the all-pairs clustering (memory, time)
    min_speaker_s: float = 1.0  # speakers with less speech are merged into others
    min_vad_speech_s: float = 0.5  # a speaker needs this much speech inside VAD regions
    min_turn_s: float = 0.1  # shorter runs of activity are dropped
    clip_to_regions: bool = False  # cut the turns to the VAD regions
    batch_windows: int = 8


class _HintsLike(Protocol):
    """Anything with the three optional counts (`SpeakerHints`, a job's options)."""

    @property
    def num_speakers(self) -> int | None: ...
    @property
    def min_speakers(self) -> int | None: ...
    @property
    def max_speakers(self) -> int | None: ...


@dataclass(frozen=True)
class _LocalSpeaker:
    """One local speaker of one window and what clustering needs to know about it."""

    window: int
    index: int  # 0..2 within the window
    clean_s: float
    active_s: float
    first: int = 0  # the frames [first, end) of the window that are this speaker's
    end: int = SEGMENTATION_NUM_FRAMES


def diarize(
    samples: npt.NDArray[np.float32],
    regions: Sequence[SpeechRegion],
    models: SpeakerModels,
    hints: _HintsLike | None = None,
    on_progress: Callable[[float], None] | None = None,
    options: DiarizationOptions | None = None,
) -> list[SpeakerTurn]:
    """Who speaks when, as turns that may overlap; ids SPEAKER_00.. by first appearance.

    Speech activity comes from the segmentation model, which is overlap-aware and hears
    quiet speech that the VAD misses; a speaker must still be heard for
    `min_vad_speech_s` inside the VAD `regions`, and turns are cut to them only when
    `options.clip_to_regions` is set.
    """
    if hints is None:
        hints = SpeakerHints()
    bounds = SpeakerHints(hints.num_speakers, hints.min_speakers, hints.max_speakers).bounds()
    options = options or DiarizationOptions()
    report = _Progress(on_progress)
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    speech = [r for r in regions if r.end_s > r.start_s]
    if audio.size == 0 or (options.clip_to_regions and not speech):
        report(1.0)
        return []

    analysis = _analyse(audio, models, options, lambda f: report(0.9 * f))
    turns = _resolve(analysis, speech, bounds, options)
    report(1.0)
    return turns


@dataclass(frozen=True)
class _Analysis:
    """What the models say about the audio; clustering and reconstruction need no model."""

    starts: list[int]
    step_frames: int
    binarized: npt.NDArray[np.uint8]  # (windows, frames, 3) local speaker activity
    probability: FloatArray  # (windows, frames, 3) each local speaker's probability
    count: npt.NDArray[np.uint8]  # (windows, frames) how many speak at once (0-2)
    locals_: list[_LocalSpeaker]
    embeddings: FloatArray  # (len(locals_), 192) unit vectors


def _analyse(
    audio: FloatArray,
    models: SpeakerModels,
    options: DiarizationOptions,
    report: Callable[[float], None],
) -> _Analysis:
    """Local segmentation of every window and an embedding per local speaker."""
    step_frames = max(1, round(_window_step_s(audio.size, options) / _FRAME_STEP_S))
    starts = _window_starts(audio.size, step_frames * SEGMENTATION_FRAME_STEP_SAMPLES)
    binarized = np.zeros((len(starts), SEGMENTATION_NUM_FRAMES, 3), dtype=np.uint8)
    probability = np.zeros((len(starts), SEGMENTATION_NUM_FRAMES, 3), dtype=np.float32)
    count = np.zeros((len(starts), SEGMENTATION_NUM_FRAMES), dtype=np.uint8)
    locals_: list[_LocalSpeaker] = []
    vectors: list[FloatArray] = []
    tracks: list[_Track] = []  # the previous window's local speakers
    for batch_start in range(0, len(starts), options.batch_windows):
        batch = list(range(batch_start, min(len(starts), batch_start + options.batch_windows)))
        chunks = np.stack([_window(audio, starts[i]) for i in batch])
        logits = models.segment(chunks)
        for row, window in enumerate(batch):
            binarized[window] = _POWERSET[np.argmax(logits[row], axis=-1)]
            probability[window], count[window] = _soft_activity(logits[row], options)
            found = _embed_window(
                chunks[row], binarized[window], models, options, window, step_frames, tracks
            )
            tracks = []
            for local, vector, track in found:
                locals_.append(dataclasses.replace(local, window=window))
                vectors.append(vector)
                tracks.append(track)
        report((batch_start + len(batch)) / len(starts))
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 192), dtype=np.float32)
    return _Analysis(starts, step_frames, binarized, probability, count, locals_, embeddings)


def _soft_activity(
    logits: FloatArray, options: DiarizationOptions
) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
    """Each local speaker's probability, and the number of voices, from the powerset.

    The argmax class hears overlap only where it is the likeliest class, which misses
    most of it in meetings; a frame counts two voices once overlap is
    `overlap_probability` likely, and one where speech of any kind is more likely than not.
    """
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    classes = shifted / shifted.sum(axis=-1, keepdims=True)
    speakers = (classes @ _POWERSET.astype(np.float32)).astype(np.float32)
    overlap = classes[:, _POWERSET.sum(axis=1) == 2].sum(axis=1)
    speech = 1.0 - classes[:, 0]
    count = np.where(overlap >= options.overlap_probability, 2, speech > 0.5).astype(np.uint8)
    return speakers, count


def _resolve(
    analysis: _Analysis,
    speech: Sequence[SpeechRegion],
    bounds: tuple[int, int],
    options: DiarizationOptions,
) -> list[SpeakerTurn]:
    """Global speakers from the local ones, and their turns."""
    step_frames, binarized = analysis.step_frames, analysis.binarized
    locals_, embeddings = analysis.locals_, analysis.embeddings
    min_k, max_k = bounds
    if not locals_:  # speech too short to embed: whatever the segmentation found is one voice
        activity = binarized.max(axis=2, keepdims=True).astype(bool)
        turns = _to_turns(_stitch(activity, step_frames), speech, options)
        if _heard_s(turns, speech) < options.min_vad_speech_s and min_k <= 1:
            return []
        return _relabel(turns)
    speech_s = _own_speech_s(binarized, step_frames, locals_)
    centroids = _cluster(embeddings, locals_, speech_s, (min_k, max_k), options)
    centroids = _add_speakers_heard_apart(centroids, embeddings, locals_, binarized, max_k, options)
    while True:
        labels = _assign(embeddings, centroids, locals_)
        activity, leader = _reconstruct(analysis, labels, len(centroids))
        turns = _to_turns(activity, speech, options, leader)
        durations = _durations(turns, len(centroids))
        heard = [
            _heard_s([t for t in turns if t.speaker_id == str(k)], speech)
            for k in range(len(centroids))
        ]
        weak = [
            k
            for k in range(len(centroids))
            if durations[k] < options.min_speaker_s or heard[k] < options.min_vad_speech_s
        ]
        if not weak or len(centroids) <= max(1, min_k):
            break
        centroids = np.delete(centroids, min(weak, key=lambda k: durations[k]), axis=0)
    if weak and len(centroids) == 1 and min_k <= 1:
        return []  # a sliver of "speech" in noise is nobody
    missing = [k for k in range(len(centroids)) if durations[k] == 0.0]
    if missing:  # hints demand more speakers than won any frame: each gets its best local
        similarity = embeddings @ centroids.T
        for k in missing:
            i = int(np.argmax(similarity[:, k]))
            window, index = locals_[i].window, locals_[i].index
            frames = slice(window * step_frames, window * step_frames + SEGMENTATION_NUM_FRAMES)
            own = np.zeros(SEGMENTATION_NUM_FRAMES, dtype=bool)
            own[locals_[i].first : locals_[i].end] = binarized[
                window, locals_[i].first : locals_[i].end, index
            ].astype(bool)
            activity[frames][own] = False
            activity[frames][own, k] = True
            leader[frames][own] = k
            similarity[i] = -np.inf
        turns = _to_turns(activity, speech, options, leader)
    return _relabel(turns)


def _heard_s(turns: Sequence[SpeakerTurn], speech: Sequence[SpeechRegion]) -> float:
    """Seconds of `turns` inside the VAD regions: a voice heard only where the VAD heard
    nothing is taken for noise."""
    return sum(
        max(0.0, min(t.end_s, r.end_s) - max(t.start_s, r.start_s)) for t in turns for r in speech
    )


def _window_step_s(num_samples: int, options: DiarizationOptions) -> float:
    """Dense steps for short audio, wider ones for long audio so cost per minute is bounded."""
    if options.window_step_s is not None:
        return options.window_step_s
    duration_s = num_samples / SAMPLE_RATE
    step = duration_s / max(1, options.target_windows)
    return float(min(options.sparse_step_s, max(options.dense_step_s, step)))


class _Progress:
    """Forwards a fraction in [0, 1] that never goes backwards."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self._callback = callback
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        fraction = min(1.0, max(self._last, fraction))
        self._last = fraction
        if self._callback is not None:
            self._callback(fraction)


def _window_starts(num_samples: int, step_samples: int) -> list[int]:
    """Window starts covering the whole signal; the last window is zero-padded."""
    starts = [0]
    while starts[-1] + SEGMENTATION_WINDOW_SAMPLES < num_samples:
        starts.append(starts[-1] + step_samples)
    return starts


def _window(audio: FloatArray, start: int) -> FloatArray:
    chunk = audio[start : start + SEGMENTATION_WINDOW_SAMPLES]
    if chunk.size < SEGMENTATION_WINDOW_SAMPLES:
        chunk = np.pad(chunk, (0, SEGMENTATION_WINDOW_SAMPLES - chunk.size))
    return chunk


@dataclass(frozen=True)
class _Track:
    """A local speaker's frames in its window and the embedding it was given, for the
    next window to link to (and reuse while it is recent and long enough)."""

    speaking: npt.NDArray[np.bool_]  # (SEGMENTATION_NUM_FRAMES,)
    vector: FloatArray
    source_window: int  # where the embedding was computed
    embedded_s: float  # seconds of single-speaker speech it was computed from (0: overlap)


def _link(
    tracks: Sequence[_Track],
    pieces: Sequence[npt.NDArray[np.bool_]],
    step_frames: int,
    options: DiarizationOptions,
) -> dict[int, int]:
    """piece -> the previous window's track it continues: one-to-one, by the agreement
    (intersection over union) of their activity where the two windows overlap."""
    overlap = SEGMENTATION_NUM_FRAMES - step_frames
    if not tracks or not pieces or overlap <= 0:
        return {}
    iou = np.zeros((len(pieces), len(tracks)))
    for i, piece in enumerate(pieces):
        new = piece[:overlap]
        for j, track in enumerate(tracks):
            old = track.speaking[step_frames:]
            union = int((new | old).sum())
            iou[i, j] = (new & old).sum() / union if union else 0.0
    rows, cols = linear_sum_assignment(-iou)
    return {
        int(r): int(c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= options.link_min_iou
    }


def _embed_window(
    chunk: FloatArray,
    active: npt.NDArray[np.uint8],
    models: SpeakerModels,
    options: DiarizationOptions,
    window: int = 0,
    step_frames: int = SEGMENTATION_NUM_FRAMES,
    tracks: Sequence[_Track] = (),
) -> list[tuple[_LocalSpeaker, FloatArray, _Track]]:
    """An embedding per local speaker, from its own single-speaker frames if enough; a
    local speaker continuing a recent track of the previous window reuses its embedding."""
    if not active.any():
        return []
    alone = active.sum(axis=1) == 1
    candidates = []
    for index in range(3):
        for first, end in _split_at_pauses(active[:, index].astype(bool), options):
            speaking = np.zeros(SEGMENTATION_NUM_FRAMES, dtype=bool)
            speaking[first:end] = active[first:end, index]
            if speaking.any():
                candidates.append((index, first, end, speaking))
    links = {}
    if options.reuse_span_s > 0:
        links = _link(tracks, [c[3] for c in candidates], step_frames, options)
    reuse_windows = options.reuse_span_s / max(step_frames * _FRAME_STEP_S, 1e-6)
    fbank: FloatArray | None = None
    nearest: npt.NDArray[np.int64] | None = None
    found = []
    for position, (index, first, end, speaking) in enumerate(candidates):
        clean = speaking & alone
        clean_s = float(clean.sum()) * _FRAME_STEP_S
        active_s = float(speaking.sum()) * _FRAME_STEP_S
        local = _LocalSpeaker(-1, index, clean_s, active_s, first, end)
        previous = tracks[links[position]] if position in links else None
        if (
            previous is not None
            and window - previous.source_window < reuse_windows
            and previous.embedded_s >= options.reuse_min_s
        ):
            track = dataclasses.replace(previous, speaking=speaking)
            found.append((local, previous.vector, track))
            continue
        if fbank is None:
            fbank = kaldi_fbank(chunk)
            # the segmentation frame nearest to each fbank frame's centre
            centres_s = _FBANK_CENTRE_S + _FBANK_SHIFT_S * np.arange(fbank.shape[0])
            nearest = np.clip(
                np.rint((centres_s - _FRAME_OFFSET_S) / _FRAME_STEP_S).astype(np.int64),
                0,
                SEGMENTATION_NUM_FRAMES - 1,
            )
        assert nearest is not None
        mask = clean if clean_s >= options.min_embed_s else speaking
        selected = np.flatnonzero(mask[nearest])
        if selected.size * _FBANK_SHIFT_S < options.min_embed_s:
            continue
        limit = round(options.max_embed_s / _FBANK_SHIFT_S)
        if selected.size > limit:  # evenly spread frames keep the voice's variety
            selected = selected[np.linspace(0, selected.size - 1, limit).astype(np.int64)]
        features = fbank[selected]
        features = features - features.mean(axis=0, keepdims=True)
        vector = models.embed(features[None])[0]
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            continue
        unit = (vector / norm).astype(np.float32)
        # only an embedding of clean (single-speaker) speech is good enough to pass on
        embedded_s = selected.size * _FBANK_SHIFT_S if clean_s >= options.min_embed_s else 0.0
        found.append((local, unit, _Track(speaking, unit, window, embedded_s)))
    return found


def _split_at_pauses(
    speaking: npt.NDArray[np.bool_], options: DiarizationOptions
) -> list[tuple[int, int]]:
    """Frame ranges of one local speaker, cut in the pauses between its long runs.

    The segmentation model sometimes gives two people who take turns one local label;
    embedding each long run on its own lets clustering tell them apart (or join them).
    """
    if options.split_run_s <= 0:
        return [(0, SEGMENTATION_NUM_FRAMES)]
    column = np.concatenate([[False], speaking, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(column))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    min_frames = options.split_run_s / _FRAME_STEP_S
    long_runs = [(a, b) for a, b in runs if b - a >= min_frames]
    if len(long_runs) < 2:
        return [(0, SEGMENTATION_NUM_FRAMES)]
    cuts = [(b1 + a2) // 2 for (_, b1), (a2, _) in itertools.pairwise(long_runs)]
    bounds = [0, *cuts, SEGMENTATION_NUM_FRAMES]
    return list(itertools.pairwise(bounds))


def _own_speech_s(
    binarized: npt.NDArray[np.uint8], step_frames: int, locals_: list[_LocalSpeaker]
) -> npt.NDArray[np.float64]:
    """Seconds of speech of each local speaker, each second counted once however many
    overlapping windows heard it (the one window of a 5-s clip hears each second once)."""
    num_windows = binarized.shape[0]
    num_frames = (num_windows - 1) * step_frames + SEGMENTATION_NUM_FRAMES
    coverage = np.zeros(num_frames, dtype=np.float64)
    for window in range(num_windows):
        coverage[window * step_frames : window * step_frames + SEGMENTATION_NUM_FRAMES] += 1.0
    result = np.zeros(len(locals_), dtype=np.float64)
    for i, local in enumerate(locals_):
        frames = np.flatnonzero(binarized[local.window, local.first : local.end, local.index])
        offset = local.window * step_frames + local.first
        result[i] = float((1.0 / coverage[frames + offset]).sum()) * _FRAME_STEP_S
    return result


def _cluster(
    embeddings: FloatArray,
    locals_: list[_LocalSpeaker],
    speech_s: npt.NDArray[np.float64],
    bounds: tuple[int, int],
    options: DiarizationOptions,
) -> FloatArray:
    """Centroids of the global speakers (unit vectors), their number within `bounds`."""
    min_k, max_k = bounds
    voters = np.array([s.clean_s >= options.min_clean_s for s in locals_])
    if voters.sum() < 2:
        voters = np.ones(len(locals_), dtype=bool)
    index = np.flatnonzero(voters)
    if index.size > options.max_clustered:
        index = index[np.linspace(0, index.size - 1, options.max_clustered).astype(np.int64)]
    train = embeddings[index]
    if train.shape[0] < 2:
        return _normalise(train.mean(axis=0, keepdims=True))
    weights = speech_s[index] * (len(locals_) / index.size)  # subsampling keeps the totals

    tree = linkage(train.astype(np.float64), method="centroid", metric="euclidean")
    labels = fcluster(tree, options.clustering_threshold, criterion="distance")
    large = _large_clusters(labels, weights, options.min_cluster_s)
    target = min(max(len(large), min_k), max_k, train.shape[0])
    if len(large) != target:
        labels, large = _cut_at(tree, target, weights, options.min_cluster_s, train.shape[0])
    centroids = np.stack([train[labels == label].mean(axis=0) for label in large])
    return _normalise(centroids)


def _add_speakers_heard_apart(
    centroids: FloatArray,
    embeddings: FloatArray,
    locals_: list[_LocalSpeaker],
    binarized: npt.NDArray[np.uint8],
    max_k: int,
    options: DiarizationOptions,
) -> FloatArray:
    """At least as many speakers as the segmentation hears apart in one window.

    Each local speaker of a window with `min_heard_apart_s` of speech or more is a
    different person; where clustering found fewer speakers than the busiest such window
    holds, the window's local speakers no centroid claims become centroids themselves.
    """
    loud = binarized.sum(axis=1) * _FRAME_STEP_S >= options.min_heard_apart_s  # (windows, 3)
    longest: dict[tuple[int, int], int] = {}  # (window, index) -> its longest piece
    for row, local in enumerate(locals_):
        key = (local.window, local.index)
        if loud[key] and (key not in longest or local.active_s > locals_[longest[key]].active_s):
            longest[key] = row
    groups: dict[int, list[int]] = {}
    for (window, _), row in sorted(longest.items()):
        groups.setdefault(window, []).append(row)
    need = min(max_k, max((len(rows) for rows in groups.values()), default=0))
    for rows in sorted(groups.values(), key=len, reverse=True):
        if len(centroids) >= need:
            break
        matched = set(linear_sum_assignment(-(embeddings[rows] @ centroids.T))[0].tolist())
        for position, row in enumerate(rows):
            if position not in matched and len(centroids) < need:
                centroids = np.vstack([centroids, embeddings[row][None]])
    return _normalise(centroids)


def _large_clusters(
    labels: npt.NDArray[np.int32], weights: npt.NDArray[np.float64], min_weight: float
) -> list[int]:
    """Cluster labels holding at least `min_weight` seconds, the heaviest first."""
    values = np.unique(labels)
    totals = np.array([weights[labels == v].sum() for v in values])
    order = np.argsort(-totals, kind="stable")
    return [int(values[i]) for i in order if totals[i] >= min_weight]


def _cut_at(
    tree: npt.NDArray[np.float64],
    target: int,
    weights: npt.NDArray[np.float64],
    min_weight: float,
    count: int,
) -> tuple[npt.NDArray[np.int32], list[int]]:
    """The coarsest cut of the dendrogram that has `target` large clusters."""
    labels = fcluster(tree, target, criterion="maxclust")
    for num in range(target, count + 1):
        labels = fcluster(tree, num, criterion="maxclust")
        large = _large_clusters(labels, weights, min_weight)
        if len(large) >= target:
            return labels, large[:target]
    return labels, _large_clusters(labels, weights, 0.0)[:target]


def _normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: FloatArray = (vectors / np.maximum(norms, 1e-8)).astype(np.float32)
    return result


def _assign(
    embeddings: FloatArray, centroids: FloatArray, locals_: list[_LocalSpeaker]
) -> npt.NDArray[np.int64]:
    """Each local speaker goes to the most similar global speaker (cosine), two local
    speakers of one window never to the same one while there are enough global ones."""
    similarity = embeddings @ centroids.T
    labels = np.asarray(np.argmax(similarity, axis=1), dtype=np.int64)
    if centroids.shape[0] < 2:
        return labels
    window_of = np.array([s.window for s in locals_])
    boundaries = np.flatnonzero(np.diff(window_of)) + 1
    for rows in np.split(np.arange(len(locals_)), boundaries):
        # the longest piece of each local speaker: these are surely different people
        main: dict[int, int] = {}
        for row in rows:
            index = locals_[row].index
            if index not in main or locals_[row].active_s > locals_[main[index]].active_s:
                main[index] = int(row)
        chosen = np.array(sorted(main.values()))
        if chosen.size > 1 and np.unique(labels[chosen]).size < chosen.size:
            picked_rows, picked = linear_sum_assignment(-similarity[chosen])
            labels[chosen[picked_rows]] = picked
    return labels


def _reconstruct(
    analysis: _Analysis, labels: npt.NDArray[np.int64], num_speakers: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Global frame-level activity (frames, speakers) from the relabelled windows: per
    frame, the segmentation's number of voices, given to the likeliest speakers; and
    per frame the likeliest of them (the leading voice where two overlap)."""
    starts, step_frames, locals_ = analysis.starts, analysis.step_frames, analysis.locals_
    num_frames = (len(starts) - 1) * step_frames + SEGMENTATION_NUM_FRAMES
    score = np.zeros((num_frames, num_speakers), dtype=np.float32)
    count = np.zeros(num_frames, dtype=np.float32)
    coverage = np.zeros(num_frames, dtype=np.float32)
    window_of = np.array([s.window for s in locals_])
    for window in range(len(starts)):
        frames = slice(window * step_frames, window * step_frames + SEGMENTATION_NUM_FRAMES)
        coverage[frames] += 1.0
        count[frames] += analysis.count[window]
        clustered = np.zeros((SEGMENTATION_NUM_FRAMES, num_speakers), dtype=np.float32)
        for i in np.flatnonzero(window_of == window):
            local = locals_[i]
            span = slice(local.first, local.end)
            np.maximum(
                clustered[span, labels[i]],
                analysis.probability[window, span, local.index],
                out=clustered[span, labels[i]],
            )
        score[frames] += clustered
    np.divide(score, np.maximum(coverage, 1.0)[:, None], out=score)
    speakers_per_frame = np.rint(count / np.maximum(coverage, 1.0)).astype(np.int64)
    speakers_per_frame = np.minimum(speakers_per_frame, num_speakers)
    order = np.argsort(-score, axis=1, kind="stable")
    active = np.zeros_like(score, dtype=bool)
    for rank in range(int(speakers_per_frame.max(initial=0))):
        rows = np.flatnonzero(speakers_per_frame > rank)
        active[rows, order[rows, rank]] = True
    leader: npt.NDArray[np.int64] = order[:, 0] if num_speakers else np.zeros(num_frames, np.int64)
    return active, leader


def _to_turns(
    active: npt.NDArray[np.bool_],
    speech: Sequence[SpeechRegion],
    options: DiarizationOptions,
    leader: npt.NDArray[np.int64] | None = None,
) -> list[SpeakerTurn]:
    """Runs of active frames per speaker (cut to the VAD regions if asked). A run is cut
    where the speaker stops or starts leading (`leader`: the likeliest voice per frame);
    the pieces where another voice leads are the second voice of an overlap
    (`dominant=False`), which words are given to only when nobody leads them."""
    turns = []
    for speaker in range(active.shape[1]):
        for first, end in _runs(active[:, speaker]):
            run_start_s = max(0.0, _FRAME_OFFSET_S + (first - 0.5) * _FRAME_STEP_S)
            if _FRAME_OFFSET_S + (end - 0.5) * _FRAME_STEP_S - run_start_s < options.min_turn_s:
                continue
            leads = np.ones(end - first, dtype=bool)
            if leader is not None:
                leads = leader[first:end] == speaker
            for low, high in _runs(leads, both=True):
                start_s = max(0.0, _FRAME_OFFSET_S + (first + low - 0.5) * _FRAME_STEP_S)
                end_s = _FRAME_OFFSET_S + (first + high - 0.5) * _FRAME_STEP_S
                pieces = [(start_s, end_s)]
                if options.clip_to_regions:
                    pieces = [
                        (max(start_s, r.start_s), min(end_s, r.end_s))
                        for r in speech
                        if min(end_s, r.end_s) > max(start_s, r.start_s)
                    ]
                dominant = bool(leads[low])
                for a, b in pieces:
                    turns.append(
                        SpeakerTurn(round(float(a), 3), round(float(b), 3), str(speaker), dominant)
                    )
    return turns


def _runs(flags: npt.NDArray[np.bool_], both: bool = False) -> list[tuple[int, int]]:
    """[first, end) of each run of True (of either value with `both`)."""
    if both:
        cuts = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
        bounds = [0, *cuts.tolist(), int(flags.size)]
        return list(itertools.pairwise(bounds))
    column = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(column))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _durations(turns: list[SpeakerTurn], num_speakers: int) -> list[float]:
    total = [0.0] * num_speakers
    for turn in turns:
        total[int(turn.speaker_id)] += turn.end_s - turn.start_s
    return total


def _relabel(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    """Sort by time and name speakers SPEAKER_00, SPEAKER_01, ... by first appearance."""
    turns = sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker_id))
    names: dict[str, str] = {}
    for turn in turns:
        names.setdefault(turn.speaker_id, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(t.start_s, t.end_s, names[t.speaker_id], t.dominant) for t in turns]


def _stitch(per_window: npt.NDArray[np.bool_], step_frames: int) -> npt.NDArray[np.bool_]:
    """(windows, frames, 1) activity -> global (frames, 1): active where any window says so."""
    num_frames = (per_window.shape[0] - 1) * step_frames + SEGMENTATION_NUM_FRAMES
    active = np.zeros((num_frames, 1), dtype=bool)
    for window in range(per_window.shape[0]):
        frames = slice(window * step_frames, window * step_frames + SEGMENTATION_NUM_FRAMES)
        active[frames] |= per_window[window]
    return active
