"""Caption shape: how many characters a line holds, how many lines and seconds a caption
may take, and where to cut a stream of words into captions and captions into lines.

Every result segment becomes one on-screen caption in the product, so segments are cut
here by reading rules rather than by Whisper's decoding windows. Cuts fall only between
whole words (in Korean between 어절): at a change of speaker or a long pause always, else
preferring sentence ends, then clause punctuation, then pauses, and avoiding one-word
captions where the limits allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

__all__ = [
    "CAPTION_OVERRIDE_KEYS",
    "CaptionRules",
    "cut_captions",
    "ends_sentence",
    "layout_lines",
]

SENTENCE_ENDS = (".", "?", "!", "…", "。", "？", "！", "｡", "؟", "।")
CLAUSE_ENDS = (",", ";", ":", "，", "、", "；", "：", "—", "–")
# Words ending in "." that do not end a sentence (compared lower-case, without the dot).
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "mt"}
)
# Costs of cutting between two words (lower = better place) and of each caption.
_CUT_SENTENCE = 0.0
_CUT_CLAUSE = 1.0
_CUT_PAUSE_LONG = 1.5  # a pause of _LONG_PAUSE_S or more
_CUT_PAUSE_SHORT = 3.0  # a pause of _SHORT_PAUSE_S or more
_CUT_PLAIN = 6.0
_CUT_AFTER_FUNCTION_WORD = 3.0  # extra: "in the | world" reads worse than "the world"
# Words that lean on the next one (English; lower-case): cutting after them splits a phrase.
_FUNCTION_TEXT = (
    "a an the of to in on at by for from with into onto and or but nor so than that"
    " my your his her its our their this these those is are was were be been has have had"
    " will would can could shall should may might must not no very as if"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_TEXT.split())
_LONG_PAUSE_S = 0.5
_SHORT_PAUSE_S = 0.25
_PER_CAPTION = 1.0
_ORPHAN = 3.0  # a one-word caption
_UNDERFILLED = 1.5  # times (1 - fill)², fill = the caption's share of its character budget
_RUNS_ON = 2.5  # a sentence end left inside a caption
_LOOKBACK_WORDS = 80


@dataclass(frozen=True)
class CaptionRules:
    """Reading rules for one language (see `for_language`); per request, any field
    may be overridden (`with_overrides`)."""

    max_chars_per_line: int = 42
    max_lines: int = 2
    max_caption_s: float = 7.0
    # Reading speed: a cue stays on screen (into the following gap) until this many
    # characters a second could be read. Speech faster than this is not cut shorter.
    max_chars_per_s: float = 20.0
    max_pause_s: float = 1.5  # a longer silence always ends a caption
    spaced: bool = True  # words are separated by a space (False: ja, zh, th ...)

    @classmethod
    def for_language(cls, language: str) -> CaptionRules:
        """The defaults for an ISO code; space-delimited languages share English's."""
        return _DEFAULTS.get(language.lower().split("-")[0], cls())

    def with_overrides(self, overrides: dict[str, Any]) -> CaptionRules:
        """These rules with the given fields replaced (None values are ignored)."""
        chosen = {k: v for k, v in overrides.items() if k in CAPTION_OVERRIDE_KEYS}
        return replace(self, **{k: v for k, v in chosen.items() if v is not None})

    @property
    def max_chars(self) -> int:
        return self.max_chars_per_line * self.max_lines

    @property
    def joiner(self) -> str:
        return " " if self.spaced else ""


# Korean: Hangul is wide, 18 characters fill a line (2 lines, 7 s, ~12 characters/s).
# Japanese and Chinese follow the common subtitle guides (13 and 16 a line).
_DEFAULTS = {
    "ko": CaptionRules(max_chars_per_line=18, max_chars_per_s=12.0),
    "ja": CaptionRules(max_chars_per_line=13, max_chars_per_s=4.0, spaced=False),
    "zh": CaptionRules(max_chars_per_line=16, max_chars_per_s=9.0, spaced=False),
    "yue": CaptionRules(max_chars_per_line=16, max_chars_per_s=9.0, spaced=False),
    "th": CaptionRules(max_chars_per_line=35, spaced=False),
}
# What a request (or the CLI) may set.
CAPTION_OVERRIDE_KEYS = frozenset(
    {"max_chars_per_line", "max_lines", "max_caption_s", "max_chars_per_s"}
)


class TimedWord(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...
    @property
    def speaker_id(self) -> str: ...


W = TypeVar("W", bound=TimedWord)


def ends_sentence(text: str) -> bool:
    """Sentence-final punctuation, except after an abbreviation or an initial ("J.")."""
    text = text.strip().rstrip("\"'”’)]")
    if not text.endswith(SENTENCE_ENDS):
        return False
    if text.endswith(".") and not text.endswith(".."):
        stem = text[:-1].lower()
        if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
            return False
    return True


def _ends_clause(text: str) -> bool:
    return text.strip().rstrip("\"'”’)]").endswith(CLAUSE_ENDS)


def layout_lines(texts: Sequence[str], rules: CaptionRules) -> list[str] | None:
    """The caption's words in at most `max_lines` lines of at most `max_chars_per_line`
    characters, as even as possible and breaking after punctuation where it can; None
    when they do not fit. A single word longer than a line gets a line of its own."""
    if not texts:
        return []
    n = len(texts)
    joiner = rules.joiner

    def width(i: int, j: int) -> int:
        return sum(len(t) for t in texts[i:j]) + len(joiner) * (j - i - 1)

    if width(0, n) <= rules.max_chars_per_line:
        return [joiner.join(texts)]
    # best[k][j]: cost of laying texts[:j] out in k lines
    inf = math.inf
    best = [[inf] * (n + 1) for _ in range(rules.max_lines + 1)]
    back = [[0] * (n + 1) for _ in range(rules.max_lines + 1)]
    best[0][0] = 0.0
    for k in range(1, rules.max_lines + 1):
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):
                w = width(i, j)
                if w > rules.max_chars_per_line and j - i > 1:
                    break
                if best[k - 1][i] == inf:
                    continue
                slack = max(0, rules.max_chars_per_line - w) / rules.max_chars_per_line
                cost = best[k - 1][i] + slack**2
                if j < n and not (ends_sentence(texts[j - 1]) or _ends_clause(texts[j - 1])):
                    cost += 0.15  # a line that ends mid-phrase reads worse
                    if _leans_forward(texts[j - 1]):
                        cost += 0.3
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    k = min(range(1, rules.max_lines + 1), key=lambda k: best[k][n])
    if best[k][n] == inf:
        return None
    lines: list[str] = []
    j = n
    while k > 0:
        i = back[k][j]
        lines.append(joiner.join(texts[i:j]))
        j, k = i, k - 1
    return lines[::-1]


def _fits(words: Sequence[TimedWord], rules: CaptionRules) -> bool:
    if len(words) == 1:
        return True  # a caption can never be smaller than one word
    if words[-1].end_s - words[0].start_s > rules.max_caption_s:
        return False
    texts = [w.text.strip() for w in words]
    if sum(len(t) for t in texts) > rules.max_chars:
        return False
    return layout_lines(texts, rules) is not None


def _cut_cost(last: TimedWord, nxt: TimedWord) -> float:
    """How good a place for a cut the gap between two words is."""
    if ends_sentence(last.text):
        return _CUT_SENTENCE
    cost = _CUT_PLAIN
    pause_s = nxt.start_s - last.end_s
    if pause_s >= _LONG_PAUSE_S:
        cost = _CUT_PAUSE_LONG
    elif pause_s >= _SHORT_PAUSE_S:
        cost = _CUT_PAUSE_SHORT
    if _ends_clause(last.text):
        cost = min(cost, _CUT_CLAUSE)
    elif _leans_forward(last.text):
        cost += _CUT_AFTER_FUNCTION_WORD
    return cost


def _leans_forward(text: str) -> bool:
    return text.strip().lower() in _FUNCTION_WORDS


def _hard_runs(words: Sequence[W], rules: CaptionRules) -> list[list[W]]:
    """Stretches no caption may span: a speaker change or a long silence ends one."""
    runs: list[list[W]] = []
    for word in words:
        if (
            runs
            and word.speaker_id == runs[-1][-1].speaker_id
            and word.start_s - runs[-1][-1].end_s <= rules.max_pause_s
        ):
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs


def _cut_run(words: Sequence[W], rules: CaptionRules) -> list[list[W]]:
    """The cheapest cutting of one run into captions that fit (dynamic programming)."""
    n = len(words)
    cut = [_cut_cost(words[k], words[k + 1]) for k in range(n - 1)]
    inside = [_RUNS_ON if ends_sentence(words[k].text) else 0.0 for k in range(n - 1)]
    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        inner = 0.0  # sentence ends inside words[i:j]
        for i in range(j - 1, max(-1, j - 1 - _LOOKBACK_WORDS), -1):
            if i < j - 1:
                inner += inside[i]
            if not _fits(words[i:j], rules):
                break
            fill = min(1.0, sum(len(w.text.strip()) for w in words[i:j]) / rules.max_chars)
            cost = best[i] + _PER_CAPTION + inner + _UNDERFILLED * (1.0 - fill) ** 2
            if j - i == 1 and n > 1:
                cost += _ORPHAN
            if j < n:
                cost += cut[j - 1]
            if cost < best[j]:
                best[j], back[j] = cost, i
    captions: list[list[W]] = []
    j = n
    while j > 0:
        i = back[j]
        captions.append(list(words[i:j]))
        j = i
    return captions[::-1]


def cut_captions(words: Sequence[W], rules: CaptionRules) -> list[list[W]]:
    """Words (in time order, each with its speaker) cut into captions."""
    return [cap for run in _hard_runs(words, rules) for cap in _cut_run(run, rules)]
