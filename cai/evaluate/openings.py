"""Template learning as a figure: how many answers open alike, and how many copy a training string.

A model can learn a template instead of a value: the same canned refusal for every harmful prompt, or
"Sure!" before every answer. Two answers *open alike* when their first `N_WORDS` normalised words are
equal. Normalisation (`words`): Unicode NFKC, lower case, curly quotes made straight, and every character
that is not a letter, digit or an apostrophe inside a word treated as a space; so "Sure! I can help." and
"sure, i can help" open alike, while "I'm" and "Im" do not.

- `template_share`: the share of answers whose opening is the most common one;
- `distinct_openings`: how many different openings there are;
- `copied_share`: the largest share of answers that contain an `n_words`-word run of one training text
  (a canned refusal in the training pairs that the model now repeats).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

N_WORDS = 8
"""Words that make an opening: long enough that "I'm sorry, but I can't" differs from "I'm sorry to
hear", short enough that answers that share a canned first sentence all match."""

TEMPLATE_WARNING = 0.30
"""A share of benign answers above this that open alike gets a warning in values.md and the report."""

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def words(text: str | None) -> list[str]:
    """The normalised words of `text` (see the module docstring)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text or "").translate(_QUOTES).lower())


def opening(text: str | None, n_words: int = N_WORDS) -> str:
    """The first `n_words` normalised words, joined by spaces ("" for an empty answer)."""
    return " ".join(words(text)[:n_words])


def opening_stats(answers: Sequence[str], n_words: int = N_WORDS, top: int = 10) -> dict:
    """`{n, template_share, distinct_openings, top: [{opening, count, share}]}` of a list of answers."""
    counts = Counter(opening(a, n_words) for a in answers)
    n = len(answers)
    if not n:
        return {"n": 0, "template_share": None, "distinct_openings": 0, "top": []}
    common = counts.most_common(top)
    return {"n": n, "template_share": round(common[0][1] / n, 6), "distinct_openings": len(counts),
            "top": [{"opening": o, "count": c, "share": round(c / n, 6)} for o, c in common]}


def template_share(answers: Sequence[str], n_words: int = N_WORDS) -> float | None:
    """Share of answers whose opening is the most common opening (None for no answers)."""
    return opening_stats(answers, n_words, top=1)["template_share"]


def _shingles(ws: list[str], n: int) -> set[tuple[str, ...]]:
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def copy_counts(answers: Iterable[str], training_texts: Sequence[str], n_words: int = N_WORDS) -> list[int]:
    """For each training text, how many answers contain one of its `n_words`-word runs (normalised
    words; a training text shorter than `n_words` must appear whole, as a run of words)."""
    index: dict[tuple[str, ...], set[int]] = {}
    short: list[tuple[int, tuple[str, ...]]] = []
    for j, t in enumerate(training_texts):
        ws = words(t)
        if 0 < len(ws) < n_words:
            short.append((j, tuple(ws)))
        for sh in _shingles(ws, n_words) if len(ws) >= n_words else ():
            index.setdefault(sh, set()).add(j)
    counts = [0] * len(training_texts)
    for a in answers:
        ws = words(a)
        hit: set[int] = set()
        for sh in _shingles(ws, n_words) if len(ws) >= n_words else ():
            hit |= index.get(sh, set())
        for j, sw in short:
            if any(tuple(ws[i:i + len(sw)]) == sw for i in range(len(ws) - len(sw) + 1)):
                hit.add(j)
        for j in hit:
            counts[j] += 1
    return counts


def copied_share(answers: Sequence[str], training_texts: Sequence[str], n_words: int = N_WORDS) -> float:
    """The largest share of `answers` that copy one training text verbatim (share one of its `n_words`-word
    runs): "no training string is copied into more than X% of answers" holds when this is at most X/100."""
    answers = list(answers)
    if not answers or not training_texts:
        return 0.0
    return max(copy_counts(answers, training_texts, n_words)) / len(answers)
