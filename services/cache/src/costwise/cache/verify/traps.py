"""Explicit checks for the traps a semantic cache must not fall for (issue 16), where MiniLM reads past a word.

Each check compares the two questions after :func:`.normalise.normalise` (so case, punctuation and contractions
never trigger one) and names what differs:

* ``negation`` — the sides negate a different number of times ("hasn't arrived" vs "has arrived"; "no progress,
  not reaching" vs "no progress, reaching"), apostrophe-less forms ("werent") included.
* ``antonym`` — one side has a word fewer times and its opposite more times ("open"/"close", "lock"/"unlock",
  "turn on"/"off"; "pros and cons" vs "cons and cons").
* ``kinds`` — each side names a thing of one kind (currency, country, card brand, language, relative) the
  other does not ("euros" vs "dollars").
* ``dates`` — the sides name different months, weekdays or days ("last Saturday" vs "last Wednesday").
* ``quantities`` — the sides name different quantity words ("once"/"twice", "a hundred" vs "a thousand").
* ``scope`` — who or how much the question covers differs: one side quantifies what the other names ("my card"
  vs "all my cards"), asks for someone else ("my partner's card"), names an account type or a child the other
  does not, adds a restriction at the end ("… for joint accounts"), or names another period ("this month" vs
  "this year").

Words are compared after a crude stemmer (plural, -ed, -ing), so "closed" meets "open". The lists are written for
customer-support and general questions; each entry costs a little recall when it fires on a true rewording.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from itertools import pairwise

from .normalise import normalise, tokens

__all__ = ["TRAP_CHECKS", "antonym_differs", "dates_differ", "kinds_differ", "negation_differs", "scope_differs"]


def _split(words: str) -> list[str]:
    return words.split()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:  # companies → company
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "s"):  # "es" via "s" then "e": rupees → rupee → rupe, like rupee → rupe
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


@lru_cache(maxsize=4096)
def _stems(text: str) -> frozenset[str]:
    return frozenset(_stem(t) for t in tokens(text))


_NEGATIONS = frozenset({"not", "no", "never", "without", "nothing", "none", "nobody", "nor", "neither", "unable"})


def negation_differs(a: str, b: str) -> bool:
    """The sides negate a different number of times (contractions spelled out: "werent" reads "were not")."""
    return sum(t in _NEGATIONS for t in tokens(a)) != sum(t in _NEGATIONS for t in tokens(b))


_OPPOSITES = _split("""open/close/shut lock/unlock freeze/unfreeze block/unblock activate/deactivate enable/disable
add/remove/delete create/delete/cancel increase/decrease/reduce rise/fall accept/decline/reject/refuse
approve/reject/deny allow/block/forbid/prohibit/ban buy/sell bought/sold lend/borrow give/take push/pull
deposit/withdraw send/receive sent/received credit/debit incoming/outgoing inbound/outbound import/export
include/exclude start/stop/end/finish begin/end subscribe/unsubscribe install/uninstall connect/disconnect
link/unlink verify/unverify load/unload before/after first/last earliest/latest early/late max/min
maximum/minimum high/low higher/lower highest/lowest more/less/fewer most/least best/worst better/worse
good/bad cheap/expensive cheapest/expensive fast/slow faster/slower fastest/slowest easy/hard/difficult
valid/invalid possible/impossible legal/illegal success/failure successful/unsuccessful/failed pass/fail
pending/completed safe/unsafe/dangerous true/false right/wrong correct/incorrect/wrong rich/poor
online/offline upgrade/downgrade arrive/leave/depart love/hate like/dislike agree/disagree eat/avoid
pros/cons advantage/disadvantage benefit/drawback positive/negative strong/weak hot/cold big/small
large/small long/short old/new/young heavy/light male/female men/women boy/girl left/right north/south
east/west inside/outside above/below over/under always/never everything/nothing everyone/nobody
win/lose gain/lose won/lost lost/found remember/forget public/private domestic/international/foreign
local/international physical/virtual same/different legit/scam question/answer cause/effect import/export
buyer/seller employer/employee teacher/student parent/child""")
# "a/b/c": a is the opposite of b and of c (b and c may be synonyms).
_PAIRS = {(_stem(g.split("/")[0]), _stem(y)) for g in _OPPOSITES for y in g.split("/")[1:]}
_PAIRS |= {(y, x) for x, y in _PAIRS}
_OPPOSITE: dict[str, set[str]] = {}
for _x, _y in _PAIRS:
    _OPPOSITE.setdefault(_x, set()).add(_y)
_PHRASES = [("turn on", "turn off"), ("log in", "log out"), ("sign in", "sign out"), ("opt in", "opt out"),
            ("switch on", "switch off"), ("top up", "cash out"), ("check in", "check out")]  # fmt: skip
_PHRASE_RE = [(re.compile(rf"\b{x}\b"), re.compile(rf"\b{y}\b")) for p in _PHRASES for x, y in (p, p[::-1])]
_PREFIXES = ("un", "dis", "de", "in", "im", "il", "ir", "non")


def antonym_differs(a: str, b: str) -> bool:
    """A word lost on one side and its opposite gained ("open" vs "closed"; "good and good" vs "bad and good")."""
    ca, cb = Counter(_stem(t) for t in tokens(a)), Counter(_stem(t) for t in tokens(b))
    lost_a = [x for x in ca if ca[x] > cb[x] and x in _OPPOSITE]
    lost_b = [x for x in cb if cb[x] > ca[x] and x in _OPPOSITE]
    if any(cb[y] > ca[y] for x in lost_a for y in _OPPOSITE[x]) or any(
        ca[y] > cb[y] for x in lost_b for y in _OPPOSITE[x]
    ):
        return True
    sa, sb = set(ca), set(cb)
    na, nb = normalise(a), normalise(b)
    for x_re, y_re in _PHRASE_RE:
        if x_re.search(na) and y_re.search(nb) and not y_re.search(na):
            return True
    only_a, only_b = sa - sb, sb - sa
    prefixed = [(w, only_b) for w in only_a] + [(w, only_a) for w in only_b]
    # The stem left must be a word of its own (four letters or more): "unsafe"/"safe", but not "into"/"to".
    return any(
        w.startswith(p) and len(w) - len(p) >= 4 and w[len(p) :] in other for w, other in prefixed for p in _PREFIXES
    )


_KINDS: dict[str, str] = {
    "currency": "euro eur dollar usd pound gbp sterling yen jpy franc chf rupee inr yuan rmb peso ruble rouble "
    "bitcoin btc ethereum krona zloty lira rand dinar dirham",
    "country": "uk usa america britain england scotland ireland spain germany france italy portugal india china "
    "japan canada australia mexico brazil russia pakistan bangladesh nigeria kenya egypt turkey greece poland "
    "netherlands belgium switzerland austria sweden norway denmark finland hungary korea singapore thailand "
    "vietnam indonesia philippines israel iran iraq argentina chile colombia peru europe africa asia",
    "brand": "visa mastercard amex maestro paypal venmo stripe amazon google apple microsoft facebook samsung "
    "netflix uber iphone android windows linux mac",
    "language": "python java javascript ruby php rust golang kotlin swift english spanish french german hindi "
    "chinese japanese russian arabic italian portuguese",
    "relative": "son daughter wife husband mother mom mum father dad friend brother sister child kid children "
    "partner boyfriend girlfriend parent grandmother grandfather grandparent spouse",
}
_KIND_OF = {_stem(w): kind for kind, words in _KINDS.items() for w in _split(words)}
_ACRONYMS = {"US": "usa", "USA": "usa", "UK": "uk", "UAE": "uae", "EU": "eu"}  # "US" the country, not "us"
_KIND_OF |= {v: "country" for v in _ACRONYMS.values()}


def _kinds(text: str) -> dict[str, Counter[str]]:
    """How often the text names each thing, per kind ({"country": {"france": 1, "china": 2}})."""
    found: dict[str, Counter[str]] = {}
    named = [_ACRONYMS[m] for m in re.findall(r"\b(?:US|USA|UK|UAE|EU)\b", text)]
    for s in [_stem(t) for t in tokens(text) if t != "us"] + named:
        kind = _KIND_OF.get(s)
        if kind is not None:
            found.setdefault(kind, Counter())[s] += 1
    return found


def kinds_differ(a: str, b: str) -> bool:
    """One thing of a kind named less often and another of that kind more often: swapped (Visa vs Mastercard;
    "Cochin China … China" vs "Cochin France … China"); not "USA and India" vs "India" (extra context is left
    to the model)."""
    ka, kb = _kinds(a), _kinds(b)
    for kind in ka.keys() & kb.keys():
        x, y = ka[kind], kb[kind]
        if any(x[n] > y[n] for n in x) and any(y[n] > x[n] for n in y):
            return True
    return False


_DATE_WORDS = frozenset(
    _stem(w)
    for w in _split(
        # "may" is left out: mostly the verb
        "january february march april june july august september october november december monday "
        "tuesday wednesday thursday friday saturday sunday today tomorrow yesterday tonight weekend"
    )
)
_QUANTITY_WORDS = frozenset(
    _stem(w)
    for w in _split("once twice thrice half double triple dozen hundred thousand million billion trillion couple")
)


def _swapped(a: str, b: str, vocabulary: frozenset[str]) -> bool:
    """Both sides use words of ``vocabulary`` and not the same ones (one side alone adding one is left to the
    model: "until today" is context more often than a different question)."""
    wa, wb = _stems(a) & vocabulary, _stems(b) & vocabulary
    return bool(wa) and bool(wb) and wa != wb


def dates_differ(a: str, b: str) -> bool:
    """The sides name different months, weekdays or days ("last Saturday" vs "last Wednesday")."""
    return _swapped(a, b, _DATE_WORDS)


def quantities_differ(a: str, b: str) -> bool:
    """The sides name different quantity words ("charged twice" vs "charged once")."""
    return _swapped(a, b, _QUANTITY_WORDS)


_UNIVERSAL = frozenset(_split("all every"))
# Account types count before an account word ("a business account"); children count anywhere.
_ACCOUNT_TYPES = frozenset(
    _split("business company corporate joint enterprise premium platinum gold standard freemium free personal")
)
_ACCOUNT_WORDS = frozenset(_split("account accounts card cards plan plans profile membership customer customers"))
_CHILDREN = frozenset(_split("kid kids child children minor minors teen teens teenager teenagers"))
_OWNERS = frozenset(
    _split(
        "someone somebody partner wife husband son daughter child kid friend mother father mom mum dad brother "
        "sister company business employer parent family spouse boyfriend girlfriend colleague boss customer"
    )
)
_PERIODS = {_stem(w) for w in _split("day week month year quarter hour daily weekly monthly yearly annual annually")}
_RESTRICTING = frozenset(_split("for in with without during after before except outside inside on at from by under"))


def _quantified(words: tuple[str, ...]) -> set[str]:
    """Stems of what "all/every (of) (my|our|the…)" quantifies: "all my cards" → {"card"} (periods excepted:
    "every day" is "per day")."""
    out = set()
    for i, w in enumerate(words):
        if w in _UNIVERSAL:
            rest = [x for x in words[i + 1 : i + 4] if x not in {"of", "my", "our", "your", "their", "the", "these"}]
            if rest and _stem(rest[0]) not in _PERIODS:
                out.add(_stem(rest[0]))
    return out


def _parties(words: tuple[str, ...]) -> set[str]:
    """Account types named before an account word, and children: whom the question is for."""
    found = {w for w in words if w in _CHILDREN}
    return found | {w for w, nxt in pairwise(words) if w in _ACCOUNT_TYPES and nxt in _ACCOUNT_WORDS}


def _owners(text: str) -> set[str]:
    """Who the question is about besides the asker: "my partner's card", "someone else's", "somebody else"."""
    raw = text.replace("\u2019", "'").lower()
    found = {m for m in re.findall(r"\b([a-z]+)'s?\b", raw) if m in _OWNERS}
    return found | {m for m in re.findall(r"\b(someone|somebody|anyone) else\b", raw)}


def _added_restriction(short: tuple[str, ...], long: tuple[str, ...]) -> bool:
    """``long`` is ``short`` plus a restricting phrase at the end ("… for a business account"; not "… at all")."""
    tail = long[len(short) :]
    return len(tail) >= 2 and long[: len(short)] == short and tail[0] in _RESTRICTING and tail[1:] != ("all",)


def scope_differs(a: str, b: str) -> bool:
    """Who or how much is asked about differs: one side quantifies what the other names ("my card" vs "all my
    cards"), asks for someone else ("my partner's card"), names an account type or a child the other does not,
    adds a restriction at the end ("… for joint accounts"), or names another period ("this month" vs "this year")."""
    ta, tb = tokens(a), tokens(b)
    sa, sb = {_stem(t) for t in ta}, {_stem(t) for t in tb}
    if ((_quantified(ta) - _quantified(tb)) & sb) or ((_quantified(tb) - _quantified(ta)) & sa):
        return True
    if _owners(a) != _owners(b) or _parties(ta) != _parties(tb):
        return True
    if _added_restriction(ta, tb) or _added_restriction(tb, ta):
        return True
    pa, pb = sa & _PERIODS, sb & _PERIODS
    return bool(pa) and bool(pb) and pa != pb


TRAP_CHECKS = {
    "negation": negation_differs,
    "antonym": antonym_differs,
    "kinds": kinds_differ,
    "dates": dates_differ,
    "quantities": quantities_differ,
    "scope": scope_differs,
}
"""The explicit trap checks by name (registered in :data:`.lexical.CHECKS`)."""
