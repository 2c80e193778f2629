"""Cheap normalisation, and the near-repeat rule it makes possible: the same question typed differently.

The cross-encoder was trained on Quora's mostly well-typed questions and is unsure of "whats the capital city of
france" against "What's the capital city of France?" (probability 0.76 where 0.81 is needed). Case, punctuation,
contractions, greetings and please/thanks never change what is asked, so two questions equal after
:func:`normalise` (allowing one typo per long word, or the same clauses in another order) are near-repeats, and
the verifier serves them without asking the model, once every explicit check has passed.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["clauses", "near_repeat", "normalise", "symbols", "tokens"]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
# Contractions and their apostrophe-less spellings (typed on phones: "whats", "dont") → the long form.
_NOT = "can could do does did is are was were has have had wo would should must need ai"
_CONTRACTED = {f"{w}n't": f"{'will' if w == 'wo' else 'am' if w == 'ai' else w} not" for w in _NOT.split()}
_CONTRACTED |= {k.replace("'", ""): v for k, v in _CONTRACTED.items() if k not in {"wont", "cant"}}
_CONTRACTED |= {"can't": "can not", "cant": "can not", "won't": "will not", "cannot": "can not"}
_SUBJECTS = "i you we they he she it that what where how who there here when why which"
for _s in _SUBJECTS.split():
    for _tail, _long in (("'s", "is"), ("'re", "are"), ("'ve", "have"), ("'ll", "will"), ("'d", "would")):
        _CONTRACTED[_s + _tail] = f"{_s} {_long}"
_CONTRACTED |= {"i'm": "i am", "im": "i am", "whats": "what is", "thats": "that is", "hows": "how is"}
_CONTRACTED |= {"wheres": "where is", "ive": "i have", "youre": "you are", "theyre": "they are"}
# Greetings and courtesy: dropped wherever they appear (longest phrases first).
_COURTESY = re.compile(
    r"\b(?:thank(?:s| you)(?: so much| very much| a lot)?(?: in advance)?|please help|please|"
    r"excuse me|quick question|hello|hi|hey|good (?:morning|afternoon|evening)|could you help me|"
    r"can you help me|kindly|pls|plz)\b"
)
_TOKEN = re.compile(r"[a-z0-9']+")
_PLAIN = re.compile(r"[a-z0-9'\s,.;:?!()\"*_/-]+|#(?=\d)")  # punctuation, marks that decorate ("#123", not "C#")
_CURRENCY = str.maketrans({"$": " dollar ", "€": " euro ", "£": " pound ", "¥": " yen ", "₹": " rupee "})


@lru_cache(maxsize=4096)  # every check of one decision reads the same two texts
def normalise(text: str) -> str:
    """Lower case, one apostrophe, contractions spelled out, courtesy dropped, punctuation kept as clause marks,
    currency signs as words (so "€1" and "1" differ, as do "$1" and "€1")."""
    text = text.translate(_APOSTROPHES).translate(_CURRENCY).lower()
    text = re.sub(r"[a-z']+", lambda m: _CONTRACTED.get(m.group(0), m.group(0)), text)
    text = _COURTESY.sub(" ", text)
    text = re.sub(r"'", "", text)  # possessives: "bose's" and "boses" are the same word typed twice
    return re.sub(r"\s+", " ", text).strip()


@lru_cache(maxsize=4096)
def tokens(text: str) -> tuple[str, ...]:
    """The words of :func:`normalise`'s output, punctuation dropped."""
    return tuple(_TOKEN.findall(normalise(text)))


@lru_cache(maxsize=4096)
def symbols(text: str) -> str:
    """What :func:`tokens` cannot see, sorted: symbols and letters outside a-z ("%", "+", "~", "ß", "呵")."""
    return "".join(sorted(_PLAIN.sub("", normalise(text))))


def clauses(text: str) -> list[tuple[str, ...]]:
    """The normalised text cut at punctuation into word tuples (empty clauses dropped)."""
    parts = re.split(r"[,.;:?!()\-]+", normalise(text))
    return [tuple(_TOKEN.findall(p)) for p in parts if _TOKEN.findall(p)]


def _one_slip(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` (a word of five letters or more typed with four or more; no digits) differ by one
    typo: a letter dropped, added, doubled, replaced, or two neighbours swapped — but not a plural "s" (scope)."""
    if a == b or min(len(a), len(b)) < 4 or max(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1:
        return a == b
    if any(ch.isdigit() for ch in a + b):
        return False
    if a + "s" == b or b + "s" == a:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        return len(diff) == 1 or swapped
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def near_repeat(a: str, b: str, *, max_slips: int = 2) -> bool:
    """Whether ``b`` is ``a`` typed again: equal after :func:`normalise`, up to ``max_slips`` one-letter typos
    in long words, or the same clauses in another order ("I got my card, how do I activate it?")."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb or symbols(a) != symbols(b):  # "~ in C++" vs "% in C++": the words alone are equal
        return False
    if ta == tb or "".join(ta) == "".join(tb):  # "top-up" typed "topup", "M.Tech" typed "mtech"
        return True
    if len(ta) == len(tb):
        slips = [(x, y) for x, y in zip(ta, tb, strict=True) if x != y]
        if len(slips) <= max_slips and all(_one_slip(x, y) for x, y in slips):
            return True
    ca, cb = clauses(a), clauses(b)
    return len(ca) >= 2 and sorted(ca) == sorted(cb)
