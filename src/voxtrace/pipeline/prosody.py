"""Per-word loudness (RMS dBFS) and pitch (median f0) for the contract's word fields.

Pitch is tracked once over the audio that holds words (Praat's autocorrelation method via
parselmouth), in blocks so that an hour of audio never needs an hour-long float64 copy.
The tracker's floor is lower than the contract's 100 Hz because real low voices go down
to ~75 Hz; values are mapped into the contract's range afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from voxtrace.contract import MAX_PITCH_HZ, MAX_VOLUME_DB, MIN_PITCH_HZ, MIN_VOLUME_DB
from voxtrace.domain import TranscribedWord, WordProsody
from voxtrace.pipeline.audio import SAMPLE_RATE

__all__ = [
    "MAX_PITCH_HZ",
    "MAX_VOLUME_DB",
    "MIN_PITCH_HZ",
    "MIN_VOLUME_DB",
    "measure_words",
    "track_pitch",
]

DEFAULT_PITCH_HZ = 150.0  # only when a file has no voiced word at all
PITCH_FLOOR_HZ = 65.0
PITCH_CEILING_HZ = 1000.0
PITCH_STEP_S = 0.01
_BLOCK_S = 120.0
_BLOCK_MARGIN_S = 0.1  # context each side so block edges track like the middle
_MIN_WORD_WINDOW_S = 0.02


def measure_words(
    samples: npt.NDArray[np.float32], words: Sequence[TranscribedWord]
) -> list[WordProsody]:
    """One WordProsody per word, in order; never NaN, always within the contract's ranges."""
    if not words:
        return []
    spans = [_sample_span(w.start_s, w.end_s, samples.shape[0]) for w in words]
    volumes = [_volume_db(samples[a:b]) for a, b in spans]
    times, f0 = track_pitch(samples, [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in spans])
    pitches: list[float | None] = []
    for a, b in spans:
        lo, hi = np.searchsorted(times, [a / SAMPLE_RATE, b / SAMPLE_RATE])
        voiced = f0[lo:hi]
        voiced = voiced[voiced > 0]
        pitches.append(float(np.median(voiced)) if voiced.size else None)
    filled = _fill_unvoiced(pitches)
    return [
        WordProsody(
            volume_db=volume,
            pitch_hz=_clamp(pitch, MIN_PITCH_HZ, MAX_PITCH_HZ),
            voiced=measured is not None,
            pitch_hz_raw=measured,
        )
        for volume, pitch, measured in zip(volumes, filled, pitches, strict=True)
    ]


def track_pitch(
    samples: npt.NDArray[np.float32], spans_s: Sequence[tuple[float, float]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Frame times and f0 (0 = unvoiced) over the blocks of audio that `spans_s` touch."""
    import parselmouth

    total = samples.shape[0]
    block = int(_BLOCK_S * SAMPLE_RATE)
    margin = int(_BLOCK_MARGIN_S * SAMPLE_RATE)
    wanted = sorted(
        {int(start * SAMPLE_RATE) // block for start, _ in spans_s}
        | {max(0, int(end * SAMPLE_RATE) - 1) // block for _, end in spans_s}
    )
    all_times: list[npt.NDArray[np.float64]] = []
    all_f0: list[npt.NDArray[np.float64]] = []
    for index in wanted:
        begin, end = index * block, min(total, (index + 1) * block)
        lo, hi = max(0, begin - margin), min(total, end + margin)
        if hi - lo < int(3 / PITCH_FLOOR_HZ * SAMPLE_RATE) + 1:
            continue  # too short for one analysis window
        sound = parselmouth.Sound(samples[lo:hi].astype(np.float64), sampling_frequency=SAMPLE_RATE)
        pitch = sound.to_pitch_ac(
            time_step=PITCH_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
        )
        times = np.asarray(pitch.xs(), dtype=np.float64) + lo / SAMPLE_RATE
        f0 = np.nan_to_num(np.asarray(pitch.selected_array["frequency"], dtype=np.float64))
        keep = (times >= begin / SAMPLE_RATE) & (times < end / SAMPLE_RATE)
        all_times.append(times[keep])
        all_f0.append(f0[keep])
    if not all_times:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(all_times), np.concatenate(all_f0)


def _sample_span(start_s: float, end_s: float, total: int) -> tuple[int, int]:
    """Sample range of a word, widened to a minimum window so RMS is meaningful."""
    if end_s - start_s < _MIN_WORD_WINDOW_S:
        middle = (start_s + end_s) / 2
        start_s, end_s = middle - _MIN_WORD_WINDOW_S / 2, middle + _MIN_WORD_WINDOW_S / 2
    a = min(max(0, int(start_s * SAMPLE_RATE)), total)
    b = min(max(a, math.ceil(end_s * SAMPLE_RATE)), total)
    return a, b


def _volume_db(chunk: npt.NDArray[np.float32]) -> float:
    if chunk.size == 0:
        return MIN_VOLUME_DB
    rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64))))
    if not math.isfinite(rms) or rms <= 0:
        return MIN_VOLUME_DB
    return _clamp(20.0 * math.log10(rms), MIN_VOLUME_DB, MAX_VOLUME_DB)


def _fill_unvoiced(pitches: Sequence[float | None]) -> list[float]:
    """Unvoiced words take the median of their nearest voiced neighbours, else the file's."""
    voiced = [p for p in pitches if p is not None]
    overall = float(np.median(voiced)) if voiced else DEFAULT_PITCH_HZ
    before: list[float | None] = []
    last: float | None = None
    for pitch in pitches:
        before.append(last)
        last = pitch if pitch is not None else last
    after: list[float | None] = [None] * len(pitches)
    last = None
    for i in range(len(pitches) - 1, -1, -1):
        after[i] = last
        last = pitches[i] if pitches[i] is not None else last
    filled: list[float] = []
    for pitch, prev, nxt in zip(pitches, before, after, strict=True):
        if pitch is not None:
            filled.append(pitch)
            continue
        neighbours = [p for p in (prev, nxt) if p is not None]
        filled.append(float(np.median(neighbours)) if neighbours else overall)
    return filled


def _clamp(value: float, low: float, high: float) -> float:
    if not math.isfinite(value):
        return low
    return min(high, max(low, value))
