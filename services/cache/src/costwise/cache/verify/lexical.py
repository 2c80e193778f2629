"""Cheap lexical vetoes: refuse a hit when the two questions visibly differ in a detail that changes the answer.

A model reading both questions usually notices these, but "order 1234" vs "order 1243" or "can" vs "can't"
are one token apart, and a wrong cached answer costs far more than a miss. Each check is a pure function
of two strings so it can be unit-tested and measured on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from .traps import TRAP_CHECKS

__all__ = [
    "CHECKS",
    "DEFAULT_CHECKS",
    "LEGACY_CHECKS",
    "codes",
    "codes_differ",
    "entities",
    "entities_differ",
    "has_negation",
    "negation_differs",
    "numbers",
    "numbers_differ",
    "veto",
]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SMALL = "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(_SMALL.split())
    if w != "_"  # "one" is mostly a pronoun ("which one is better?"), so it is not read as 1
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90"}
_APOSTROPHE = "\u2019"  # the typographic apostrophe phones insert ("can\u2019t")
_WORD = re.compile(r"[A-Za-z][A-Za-z'" + _APOSTROPHE + "]*")
# A code mixes letters and digits: order ids, SKUs, model names ("A1234", "ORD-77B", "ps4", "x86").
_CODE = re.compile(r"\b(?=[\w-]*[A-Za-z])(?=[\w-]*\d)[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*\b")
_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "nothing", "none", "nobody", "nor", "neither"})
# Capitalised words that name no entity: question words, pronouns, and what Quora users capitalise anyway.
_NOT_ENTITY_WORDS = (
    "i i'm i've i'd i'll what what's why how how's who whom whose which when where is are was were do does did "
    "can could should would will shall may might must if the a an and or but in on at to for of my your you we "
    "they he she it this that these those there here has have had be am"
)
_NOT_ENTITIES = frozenset(_NOT_ENTITY_WORDS.split())


def _squash(text: str) -> str:
    """Lowercase with every non-alphanumeric removed, so "iPhone 6", "iphone-6" and "iphone6" compare equal."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def numbers(text: str) -> frozenset[str]:
    """Numbers in ``text``, normalised ("1,000" → "1000"; "three" → "3"; digits inside codes count too)."""
    found = {m.replace(",", "") for m in _NUMBER.findall(text)}
    found |= {_NUMBER_WORDS[w] for w in (w.lower() for w in _WORD.findall(text)) if w in _NUMBER_WORDS}
    return frozenset(found)


def numbers_differ(a: str, b: str) -> bool:
    """True when one question names a number the other does not (2016 vs 2017, 5 kg vs no amount at all)."""
    return numbers(a) != numbers(b)


def codes(text: str) -> frozenset[str]:
    """Letter-and-digit tokens (ids, SKUs, model names), lowercased, separators removed."""
    return frozenset(_squash(m.group(0)) for m in _CODE.finditer(text))


def _runs(text: str) -> set[str]:
    """Maximal letter runs and digit runs, lowercased: "Rs1000 notes" → {"rs", "1000", "notes"}."""
    return set(re.findall(r"[a-z]+|[0-9]+", text.lower()))


def _code_in(code: str, text: str) -> bool:
    # Spelled out whole ("iphone 6" holds "iphone6") or piece by piece ("1000 rs" holds "rs1000"),
    # but "ORD-B123" does not hold "ORD-A123": the lone "a" must be a run of its own.
    return code in _squash(text) or _runs(code) <= _runs(text)


def codes_differ(a: str, b: str) -> bool:
    """True when a code in one question is not spelled out in the other (spacing, case and order of parts ignored)."""
    return any(not _code_in(c, b) for c in codes(a)) or any(not _code_in(c, a) for c in codes(b))


def has_negation(text: str) -> bool:
    """Whether ``text`` negates: "not", "never", "without", "n't" contractions, "cannot"…"""
    words = [w.lower().replace(_APOSTROPHE, "'") for w in _WORD.findall(text)]
    return any(w in _NEGATIONS or w.endswith("n't") for w in words)


def negation_differs(a: str, b: str) -> bool:
    """True when exactly one of the two questions is negated ("can I …" vs "why can't I …")."""
    return has_negation(a) != has_negation(b)


def entities(text: str) -> frozenset[str]:
    """Capitalised words that are not sentence-initial, lowercased: a crude named-entity detector."""
    found: set[str] = set()
    for sentence in re.split(r"[.?!]\s+", text):
        words = _WORD.findall(sentence)
        found.update(w.lower() for w in words[1:] if w[0].isupper() and w.lower() not in _NOT_ENTITIES)
    return frozenset(found)


def entities_differ(a: str, b: str) -> bool:
    """True when both questions name entities and none of one side's appears in the other (Java vs Python).

    Requiring disjointness, not equality, keeps "Trump" vs "Donald Trump" and one-sided capitalisation
    (Quora users often type in lowercase) from vetoing true paraphrases.
    """
    ea, eb = entities(a), entities(b)
    if not ea or not eb:
        return False
    sa, sb = _squash(a), _squash(b)
    return not any(_squash(e) in sb for e in ea) and not any(_squash(e) in sa for e in eb)


Check = Callable[[str, str], bool]

CHECKS: Mapping[str, Check] = {
    "numbers": numbers_differ,
    "codes": codes_differ,
    **TRAP_CHECKS,  # "negation" (contractions spelled out first), "antonym", "kinds", "dates", …
    "entities": entities_differ,
    "negation_v1": negation_differs,  # the raw-text negation check shipped before issue 16 (for comparisons)
}
"""Every veto by name, in the order :func:`veto` tries them."""

DEFAULT_CHECKS: tuple[str, ...] = tuple(c for c in CHECKS if c != "negation_v1")
"""What a new artifact vetoes with (the shipped one lists its own in ``verifier.json``)."""
LEGACY_CHECKS: tuple[str, ...] = ("numbers", "codes", "negation_v1", "entities")
"""The vetoes of the verifier shipped before issue 16 (its ``negation`` read raw text: "werent" was not negated)."""


def veto(query: str, cached: str, checks: Iterable[str] = DEFAULT_CHECKS) -> str | None:
    """The name of the first check that refuses serving ``cached``'s answer to ``query``, or None."""
    for name in checks:
        if CHECKS[name](query, cached):
            return name
    return None
