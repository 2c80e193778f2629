"""The perturbation rules behind the cache trap set: each turns one question into a pair, or says it cannot.

Should-hit rules (label 1) change the wording but not the question: ``typo``, ``word_order``, ``politeness``,
``contraction``, ``case_punctuation``. Trap rules (label 0) keep the wording but change the question:
``negation`` (a negation dropped or an antonym swapped in), ``entity_swap`` (a currency, country, brand, person,
city or relative replaced by another of its kind), ``number`` (an amount, id, count, month or weekday changed),
``scope`` (who or how much it is about: "my card" → "all my cards", "this month" → "this year", a qualifier
added). Every rule is a pure function of the text and a seeded ``random.Random``; ``None`` = not applicable.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

__all__ = ["NEAR_REPEAT_RULES", "TRAP_RULES", "Rule", "swap_entity_value"]

Rule = Callable[[str, random.Random], "str | None"]

_WORD = re.compile(r"[A-Za-z]+")


def _split(words: str) -> list[str]:
    return words.split()


def _sub_word(text: str, pattern: str, repl: str) -> str | None:
    """Replace the first whole-word, case-insensitive match of ``pattern``, keeping a leading capital."""
    m = re.search(rf"\b{pattern}\b", text, flags=re.IGNORECASE)
    if m is None:
        return None
    out = repl[:1].upper() + repl[1:] if m.group(0)[0].isupper() else repl
    return text[: m.start()] + out + text[m.end() :]


def _first_applicable(text: str, rng: random.Random, table: list[tuple[str, str]]) -> str | None:
    """Try ``(pattern, replacement)`` rows in a shuffled order; the first that matches wins."""
    rows = table[:]
    rng.shuffle(rows)
    for pattern, repl in rows:
        out = _sub_word(text, pattern, repl)
        if out is not None and out != text:
            return out
    return None


# ---- should hit ---------------------------------------------------------------------------------------------


def typo(text: str, rng: random.Random) -> str | None:
    """One keyboard slip in one word of five letters or more: two letters swapped, one dropped or doubled."""
    words = [m for m in _WORD.finditer(text) if len(m.group(0)) >= 5]
    if not words:
        return None
    m = rng.choice(words)
    w, i = m.group(0), rng.randrange(1, len(m.group(0)) - 2)
    kind = rng.randrange(3)
    slipped = (
        w[:i] + w[i + 1] + w[i] + w[i + 2 :] if kind == 0 else w[:i] + w[i + 1 :] if kind == 1 else w[:i] + w[i] + w[i:]
    )
    return None if slipped == w else text[: m.start()] + slipped + text[m.end() :]


def word_order(text: str, rng: random.Random) -> str | None:
    """Two clauses swapped around their boundary (", " or a sentence end), each at least three words long."""
    parts = re.split(r"(?<=[,.?!])\s+", text.strip())
    if len(parts) < 2:
        return None
    cut = rng.randrange(1, len(parts))
    first, second = " ".join(parts[:cut]).rstrip(",."), " ".join(parts[cut:])
    if len(first.split()) < 3 or len(second.split()) < 3:
        return None
    end = second[-1] if second[-1] in "?.!" else ""
    second = second.rstrip("?.!,")
    return f"{second[0].upper()}{second[1:]}, {first[0].lower()}{first[1:]}{end or '?'}"


_POLITE_PREFIX = ["Hi, ", "Hello, ", "Please, ", "Excuse me, ", "Could you help me? ", "Quick question: "]
_POLITE_SUFFIX = [" Thanks!", " Thank you.", " Thanks in advance.", " Please help."]


def politeness(text: str, rng: random.Random) -> str | None:
    """A greeting or a please/thanks added (or an existing "please" dropped)."""
    if re.search(r"\bplease\b", text, flags=re.IGNORECASE) and rng.random() < 0.5:
        return re.sub(r",?\s*\bplease\b,?", "", text, count=1, flags=re.IGNORECASE).strip() or None
    if rng.random() < 0.5:
        return rng.choice(_POLITE_PREFIX) + text[0].lower() + text[1:]
    return text.rstrip() + rng.choice(_POLITE_SUFFIX)


_CONTRACTIONS = [
    ("can't", "cannot"),
    ("won't", "will not"),
    ("don't", "do not"),
    ("doesn't", "does not"),
    ("didn't", "did not"),
    ("isn't", "is not"),
    ("aren't", "are not"),
    ("hasn't", "has not"),
    ("haven't", "have not"),
    ("wasn't", "was not"),
    ("I'm", "I am"),
    ("I've", "I have"),
    ("I'd", "I would"),
    ("what's", "what is"),
    ("it's", "it is"),
    ("where's", "where is"),
    ("how's", "how is"),
    ("that's", "that is"),
]


def contraction(text: str, rng: random.Random) -> str | None:
    """A contraction spelled out ("can't" → "cannot") or a spelled-out form contracted ("I am" → "I'm")."""
    expand = [(re.escape(short), long) for short, long in _CONTRACTIONS]
    contract = [(re.escape(long), short) for short, long in _CONTRACTIONS if short != "I'd"]
    return _first_applicable(text, rng, expand) or _first_applicable(text, rng, contract)


def case_punctuation(text: str, rng: random.Random) -> str | None:
    """All lower case with the punctuation dropped ("What's the fee?" → "whats the fee"), or all upper case."""
    out = text.upper() if rng.random() < 0.15 else re.sub(r"[^\w\s']|'", "", text.lower())
    out = re.sub(r"\s+", " ", out).strip()
    return out if out and out != text else None


NEAR_REPEAT_RULES: dict[str, Rule] = {
    "typo": typo,
    "word_order": word_order,
    "politeness": politeness,
    "contraction": contraction,
    "case_punctuation": case_punctuation,
}

# ---- traps --------------------------------------------------------------------------------------------------

# "a/b": a and b are opposites; "_" stands for a space ("turn_on").
_ANTONYMS = [
    tuple(pair.replace("_", " ").split("/"))
    for pair in _split(
        "activate/deactivate activated/deactivated open/close opened/closed lock/unlock locked/unlocked "
        "freeze/unfreeze add/remove added/removed increase/decrease enable/disable accepted/declined accept/reject "
        "allow/block buy/sell deposit/withdraw send/receive sent/received incoming/outgoing start/stop "
        "subscribe/unsubscribe turn_on/turn_off log_in/log_out sign_in/sign_out before/after maximum/minimum "
        "higher/lower more/less earliest/latest create/delete include/exclude approve/reject valid/invalid "
        "possible/impossible successful/failed pending/completed cheap/expensive fast/slow best/worst good/bad "
        "advantages/disadvantages pros/cons eat/avoid gain/lose win/lose love/hate legal/illegal safe/dangerous "
        "true/false rich/poor online/offline upgrade/downgrade import/export arrive/leave"
    )
]
_NEGATED = [("can't", "can"), ("cannot", "can"), ("don't", "do"), ("doesn't", "does"), ("didn't", "did"),
            ("isn't", "is"), ("aren't", "are"), ("hasn't", "has"), ("haven't", "have"), ("wasn't", "was"),
            ("won't", "will"), ("not ", ""), ("never ", ""), ("no longer ", "")]  # fmt: skip


def negation(text: str, rng: random.Random) -> str | None:
    """A negation removed ("hasn't arrived" → "has arrived"), or a word swapped for its antonym."""
    dropped = _first_applicable(text, rng, [(re.escape(neg.strip()) + (r"\s" if neg.endswith(" ") else ""), pos)
                                            for neg, pos in _NEGATED])  # fmt: skip
    if dropped is not None and rng.random() < 0.6:
        return re.sub(r"\s+", " ", dropped)
    swaps = [(a, b) for a, b in _ANTONYMS] + [(b, a) for a, b in _ANTONYMS]  # type: ignore[misc]
    return _first_applicable(text, rng, [(re.escape(a), b) for a, b in swaps]) or dropped


_KINDS = {
    "currency": ["euros", "dollars", "pounds", "yen", "Swiss francs", "rupees", "bitcoin"],
    "country": [
        *_split("Spain Germany France India China Canada Australia Japan Mexico Italy Brazil"),
        "the UK",
        "the US",
    ],
    "card_brand": ["Visa", "Mastercard", "American Express", "Maestro"],
    "wallet": ["Apple Pay", "Google Pay", "PayPal", "Venmo"],
    "company": _split("Amazon Google Apple Microsoft Facebook Samsung Netflix Uber"),
    "language": ["Python", "Java", "JavaScript", "C++", "Ruby", "English", "Spanish", "French", "German", "Hindi"],
    "relative": ["my son", "my daughter", "my wife", "my husband", "my mother", "my father", "my friend"],
}
_KIND_WORDS = [(kind, w) for kind, words in _KINDS.items() for w in words]


def entity_swap(text: str, rng: random.Random) -> str | None:
    """A named thing (currency, country, card brand, wallet, company, language, relative) replaced by another of
    the same kind."""
    found = [(kind, w) for kind, w in _KIND_WORDS if re.search(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE)]
    # "Apple" inside "Apple Pay" is not a thing of its own: only the longest name found is swapped.
    found = [(k, w) for k, w in found if not any(w != v and w.lower() in v.lower() for _, v in found)]
    if not found:
        return None
    kind, word = rng.choice(found)
    other = rng.choice([w for w in _KINDS[kind] if w.lower() != word.lower()])
    return _sub_word(text, re.escape(word), other)


def swap_entity_value(text: str, value: str, others: list[str], rng: random.Random) -> str | None:
    """Replace an annotated entity value (Bitext's offsets) with another value of its type."""
    choices = [o for o in others if o.lower() != value.lower()]
    if not value or value not in text or not choices:
        return None
    return text.replace(value, rng.choice(choices), 1)


_MONTHS = _split("January February March April May June July August September October November December")
_DAYS = _split("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_COUNTS = _split("two three four five six seven eight nine ten")


def number(text: str, rng: random.Random) -> str | None:
    """A number, amount, month, weekday or spelled-out count changed to another."""
    digits = list(re.finditer(r"\d+", text))
    if digits:
        m = rng.choice(digits)
        n = int(m.group(0))
        new = str(n + rng.choice([1, 2, 5, 10, 100]) if n < 10 else n * rng.choice([2, 3]) + rng.randrange(1, 9))
        return text[: m.start()] + new + text[m.end() :]
    for names in (_MONTHS, _DAYS, _COUNTS):
        for name in names:
            if re.search(rf"\b{name}\b", text, flags=re.IGNORECASE):
                return _sub_word(text, name, rng.choice([n for n in names if n != name]))
    return None


_NOUNS = _split("account card transfer payment order invoice refund subscription transaction purchase")
_SPANS = ["today", "this week", "this month", "this year", "per day", "per month", "daily", "monthly", "yearly"]
_QUALIFIERS = [" for a business account", " for joint accounts", " for all my cards", " for my whole family", " for kids",
               " for every country", " for premium accounts", " for beginners", " for small businesses"]  # fmt: skip


def scope(text: str, rng: random.Random) -> str | None:
    """Who or how much the question covers changed: one → all, mine → someone else's, a period, a qualifier."""
    noun = next((n for n in _NOUNS if re.search(rf"\bmy {n}\b", text, flags=re.IGNORECASE)), None)
    options: list[str | None] = []
    if noun is not None:
        options.append(_sub_word(text, f"my {noun}", f"all my {noun}s"))
        options.append(_sub_word(text, f"my {noun}", rng.choice([f"my partner's {noun}", f"someone else's {noun}",
                                                                 f"my company's {noun}"])))  # fmt: skip
    span = next((s for s in _SPANS if re.search(rf"\b{s}\b", text, flags=re.IGNORECASE)), None)
    if span is not None:
        options.append(_sub_word(text, span, rng.choice([s for s in _SPANS if s != span])))
    if text.rstrip().endswith("?") and len(text.split()) >= 4:
        options.append(text.rstrip()[:-1] + rng.choice(_QUALIFIERS) + "?")
    kept = [o for o in options if o is not None and o != text]
    return rng.choice(kept) if kept else None


TRAP_RULES: dict[str, Rule] = {"negation": negation, "entity_swap": entity_swap, "number": number, "scope": scope}
