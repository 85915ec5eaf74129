"""faster-whisper's `WhisperModel`, minus one encoder pass per job.

When the language is not given, `WhisperModel.transcribe` encodes the first 30-s window
to detect the language and then encodes the same window again to decode it. Here the
last encoding is remembered (per thread) and language detection looks at exactly the
frames decoding will use, so the second pass is a lookup: on a 10-s clip that is about
a quarter of the whole transcription time. Imported only by `load_whisper`, because
importing faster-whisper is slow.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

__all__ = ["EncoderReusingWhisperModel"]


class EncoderReusingWhisperModel(WhisperModel):  # type: ignore[misc]
    """A `WhisperModel` that never encodes the same window twice in a row."""

    def encode(self, features: npt.NDArray[np.float32]) -> Any:
        local = self.__dict__.setdefault("_local", threading.local())
        last = getattr(local, "last", None)
        if last is not None and np.array_equal(last[0], features):
            return last[1]
        output = super().encode(features)
        local.last = (np.array(features, copy=True), output)
        return output

    def detect_language(
        self,
        audio: npt.NDArray[np.float32] | None = None,
        features: npt.NDArray[np.float32] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # Decoding drops the spectrogram's last frame (its window is cut short); on
        # audio under 30 s that frame falls inside the first window, so detection
        # drops it too and encodes the very array decoding will encode.
        if audio is None and features is not None:
            frames = features.shape[-1] - 1
            if 0 < frames < self.feature_extractor.nb_max_frames:
                features = features[..., :frames]
        return super().detect_language(audio, features, *args, **kwargs)
