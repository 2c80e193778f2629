"""``costwise-bench workload``: a replay workload file (issue 13) built from the third-party data in ../shared/data.

One JSON object per line (:class:`WorkloadLine`). FAQ traffic comes from query logs (banking77, Bitext): every tenant
ranks each log's intents in its own shuffled order and draws them with P(rank r) ∝ r^-s (``--zipf``); within an
intent an utterance is drawn under a milder skew (``--paraphrase-zipf``) over a seeded order shared by all tenants,
so popular intents arrive in many phrasings and the commonest phrasings repeat verbatim. Routing traffic comes from
RouteLLM's recorded outcomes: GSM8K with both models' correctness and responses (weak → ``small``, strong →
``large``), MMLU with correctness only, minus RouteLLM's contaminated prompts; each pool is walked in a seeded
order and reshuffled only when used up (``--routing-split held_out``: only the prompts the shipped router was not fit
on). Sources get exact shares of the requests (``--mix``), tenants equal
shares, arrivals are a Poisson process at ``--rate``.

Which intents are answer-determining (two requests with equal ``answer_key`` may share one answer):

1. Bitext annotates the values that change an answer (README "Entities": account_type, delivery_city/country,
   invoice_id, person_name, order_id, refund_amount). An intent the README lists with an entity type is NOT
   answer-determining ("track order 1135" and "track order 7322" need different answers); the other 15 are.
2. banking77 has no annotations, so the list is written here: an intent is NOT answer-determining when its answer
   is a lookup on a value the user names (a country, currency, age, currency pair: ``age_limit``,
   ``country_support``, ``fiat_currency_support``, ``supported_cards_and_currencies``, ``exchange_rate``,
   ``exchange_via_app``) or addresses the amounts of one transaction (``wrong_amount_of_cash_received``,
   ``extra_charge_on_statement``: "got $20 of $100" vs "got $50 of $200"). The other 69 are FAQ/how-to intents
   whose answer is the same however the user words it, numbers included ("my card hasn't come after 2 weeks").
3. Answer-determining: ``answer_key`` = the intent. Otherwise ``answer_key`` = ``intent[v1,v2]`` with the entity
   values of the text (Bitext's annotation; for banking77 the numbers, currency symbols and words, acronyms and
   capitalised names found by :func:`entity_values`), lower-cased and sorted, so a hit across different values
   counts as wrong while two value-less phrasings ("where is my order?") still share an answer.
Routing lines carry no ``label``/``answer_key``: they are judged by exact text, as issue 13 says.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta
from tqdm import tqdm

from costwise.bench.data_sources import Outcome, Utterance, read_outcomes, read_query_log, zipf_probs
from costwise.contracts import ChatMessage

FAQ_SOURCES = ("banking77", "bitext")
ROUTING_SOURCES = ("gsm8k", "mmlu")
SMALL, LARGE = "small", "large"
ROUTING_SPLITS = ("all", "held_out", "train")
NOT_ANSWER_DETERMINING: dict[str, frozenset[str]] = {
    "bitext": frozenset(
        {"create_account", "delete_account", "edit_account", "switch_account", "delivery_options", "check_invoice"}
        | {"get_invoice", "cancel_order", "change_order", "track_order", "get_refund", "track_refund"}
    ),
    "banking77": frozenset(
        {"age_limit", "country_support", "fiat_currency_support", "supported_cards_and_currencies", "exchange_rate"}
        | {"exchange_via_app", "wrong_amount_of_cash_received", "extra_charge_on_statement"}
    ),
}
# Generous budgets: a replay must not truncate a recorded answer (GSM8K's strong answers run to ~300 tokens).
MAX_TOKENS = {"banking77": 256, "bitext": 256, "gsm8k": 1024, "mmlu": 512}
_CURRENCY_WORD = r"euros?|dollars?|pounds?|yen|yuan|rupees?|francs?|pesos?|kron[ae]|rubles?|bitcoins?"
_VALUE = re.compile(rf"[$£€]|\d+(?:[.,]\d+)*|\b[A-Z]{{2,4}}\b|\b(?:{_CURRENCY_WORD})\b|(?<=[a-z,] )[A-Z][a-z]+")


class WorkloadLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One request of a workload file (issue 13); every field but ``prompt``/``messages`` is optional."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tenant: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)] | None = None
    arrival: Annotated[float, Meta(ge=0.0)] | None = None
    """Seconds from the start of the replay."""
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    label: str | None = None
    answer_key: str | None = None
    """Two requests with equal keys may share one answer (defaults to ``label``; neither: judged by exact text)."""
    correct: dict[str, bool] | None = None
    """Tier → whether that tier's model answers this prompt right."""
    responses: dict[str, str] | None = None
    """Tier → the text that tier's model answered (recorded)."""
    source: str | None = None
    category: str | None = None
    """``faq`` or ``routing``: informational, the replay ignores both."""

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a line needs exactly one of `prompt` or `messages`")


class WorkloadError(ValueError):
    """A workload line that does not decode: ``line`` is 1-based."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


def load_workload(path: Path, *, on_error: Callable[[WorkloadError], None] | None = None) -> list[WorkloadLine]:
    """Every line of a workload file. A malformed line raises :class:`WorkloadError`, or with ``on_error`` is
    reported to it and skipped (the replay's choice); blank lines are skipped."""
    decoder = msgspec.json.Decoder(WorkloadLine)
    lines: list[WorkloadLine] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                lines.append(decoder.decode(raw))
            except msgspec.DecodeError as exc:  # ValidationError included
                error = WorkloadError(path, number, str(exc))
                if on_error is None:
                    raise error from exc
                on_error(error)
    return lines


def entity_values(text: str) -> tuple[str, ...]:
    """The values in a text that can change its answer: numbers, currency symbols and words, acronyms (US, EUR),
    capitalised words inside a sentence (names, countries); lower-cased, deduplicated, sorted."""
    values = {m.group(0).lower() for m in _VALUE.finditer(text)}
    # "euros" and "euro" name one currency; only currency words lose their plural ("States" keeps its s).
    return tuple(sorted({v.removesuffix("s") if re.fullmatch(_CURRENCY_WORD, v) else v for v in values}))


def answer_key(source: str, utterance: Utterance) -> str:
    """The module docstring's rules: the intent, or the intent with the text's entity values."""
    if utterance.intent not in NOT_ANSWER_DETERMINING.get(source, frozenset()):
        return utterance.intent
    values = utterance.entities or entity_values(utterance.text)
    return f"{utterance.intent}[{','.join(sorted(v.lower() for v in values))}]"


@dataclass(frozen=True)
class Spec:
    """What to build: the CLI's options."""

    faq: tuple[str, ...] = FAQ_SOURCES
    routing: tuple[str, ...] = ROUTING_SOURCES
    mix: tuple[tuple[str, float], ...] = (("faq", 0.6), ("routing", 0.4))
    tenants: int = 3
    requests: int = 5000
    rate: float = 20.0
    zipf_s: float = 1.1
    paraphrase_s: float = 0.5
    seed: int = 7
    data: Path = Path("../shared/data")
    routing_split: str = "all"
    """Which half of RouteLLM's prompts routing lines come from: ``all``, ``held_out`` (the ones the shipped
    router and verifier were not fit on: quality on prompts they never saw) or ``train``."""


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``faq=0.6,routing=0.4`` (keys: ``faq``, ``routing`` or a source name) → pairs; weights need not sum to 1."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--mix: {part!r} is not key=weight")
        pairs.append((key.strip(), float(value)))
    return tuple(pairs)


def source_counts(spec: Spec) -> dict[str, int]:
    """Exact requests per source: a category's weight is split evenly among its sources; largest remainder."""
    known = {"faq": spec.faq, "routing": spec.routing}
    weights: dict[str, float] = {}
    for key, weight in spec.mix:
        members = known.get(key, (key,) if key in spec.faq + spec.routing else ())
        if not members or weight < 0:
            raise ValueError(f"--mix: {key}={weight} names no selected source (selected: {spec.faq + spec.routing})")
        for source in members:
            weights[source] = weights.get(source, 0.0) + weight / len(members)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("--mix: weights sum to 0")
    exact = {s: spec.requests * w / total for s, w in weights.items()}
    counts = {s: int(x) for s, x in exact.items()}
    for s in sorted(exact, key=lambda s: counts[s] - exact[s])[: spec.requests - sum(counts.values())]:
        counts[s] += 1
    return {s: n for s, n in counts.items() if n}


class _FaqDraw:
    """One query log's traffic: per-tenant Zipf over intents, a milder shared Zipf over each intent's phrasings."""

    def __init__(self, source: str, utterances: list[Utterance], spec: Spec, rng: np.random.Generator) -> None:
        by_intent: dict[str, list[Utterance]] = {}
        for u in utterances:
            by_intent.setdefault(u.intent, []).append(u)
        self.source, self.rng = source, rng
        self.intents = sorted(by_intent)
        # One shared phrasing order per intent: "the common way to ask" is the same for every tenant's users.
        self.phrasings = {i: [by_intent[i][k] for k in rng.permutation(len(by_intent[i]))] for i in self.intents}
        self.ranking = [rng.permutation(len(self.intents)) for _ in range(spec.tenants)]
        self.intent_p = zipf_probs(len(self.intents), spec.zipf_s)
        self.phrasing_p = {i: zipf_probs(len(self.phrasings[i]), spec.paraphrase_s) for i in self.intents}

    def draw(self, tenant: int) -> WorkloadLine:
        intent = self.intents[self.ranking[tenant][self.rng.choice(len(self.intents), p=self.intent_p)]]
        options = self.phrasings[intent]
        utterance = options[self.rng.choice(len(options), p=self.phrasing_p[intent])]
        return WorkloadLine(
            prompt=utterance.text,
            label=intent,
            answer_key=answer_key(self.source, utterance),
            source=self.source,
            category="faq",
        )


class _RoutingDraw:
    """One outcome set's traffic: a seeded walk through every prompt, reshuffled when used up."""

    def __init__(self, source: str, spec: Spec, rng: np.random.Generator) -> None:
        self.source, self.rng = source, rng
        outcomes, self.excluded = read_outcomes(spec.data, source)
        self.outcomes = _split(outcomes, spec.routing_split)
        self.order: list[int] = []

    def draw(self, tenant: int) -> WorkloadLine:
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(self.outcomes))][::-1]
        o = self.outcomes[self.order.pop()]
        responses = None
        if o.weak_response is not None and o.strong_response is not None:
            responses = {SMALL: o.weak_response, LARGE: o.strong_response}
        return WorkloadLine(
            prompt=o.prompt,
            correct={SMALL: o.weak_ok, LARGE: o.strong_ok},
            responses=responses,
            source=self.source,
            category="routing",
        )


def _split(outcomes: list[Outcome], split: str) -> list[Outcome]:
    """The outcomes on one side of the shipped router's split (its own rule, ``train_mask``), or all of them."""
    if split == "all":
        return outcomes
    from costwise.router.learned import train_mask  # the router package is heavy; only this split needs it

    in_train = train_mask([o.prompt for o in outcomes])
    return [o for o, fit_on in zip(outcomes, in_train, strict=True) if fit_on == (split == "train")]


def build(spec: Spec, *, progress: bool = False) -> tuple[list[WorkloadLine], dict[str, int]]:
    """The workload's lines in arrival order, and the contaminated prompts excluded per routing source."""
    if spec.tenants < 1 or spec.requests < 1 or spec.rate <= 0:
        raise ValueError("--tenants and --requests must be ≥ 1 and --rate > 0")
    unknown = set(spec.faq) - set(FAQ_SOURCES) | set(spec.routing) - set(ROUTING_SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)} (FAQ: {FAQ_SOURCES}, routing: {ROUTING_SOURCES})")
    if spec.routing_split not in ROUTING_SPLITS:
        raise ValueError(f"unknown --routing-split {spec.routing_split!r} (one of {', '.join(ROUTING_SPLITS)})")
    counts = source_counts(spec)
    rng = np.random.default_rng(spec.seed)
    draws: dict[str, _FaqDraw | _RoutingDraw] = {}
    for source in counts:  # dict order = --mix order: reproducible
        if source in spec.faq:
            draws[source] = _FaqDraw(source, read_query_log(spec.data, source), spec, rng)
        else:
            draws[source] = _RoutingDraw(source, spec, rng)
    sources = rng.permutation([s for s, n in counts.items() for _ in range(n)])
    # Equal tenant shares, exact: tenant k gets every tenants-th slot of a shuffled order.
    tenants = rng.permutation(np.arange(spec.requests) % spec.tenants)
    arrivals = np.cumsum(rng.exponential(1.0 / spec.rate, size=spec.requests))  # Poisson process at --rate
    lines = []
    for i in tqdm(range(spec.requests), desc="workload", unit="req", disable=not progress):
        line = draws[str(sources[i])].draw(int(tenants[i]))
        line.tenant, line.arrival = f"tenant-{int(tenants[i]) + 1}", float(arrivals[i])
        line.temperature, line.max_tokens = 0.0, MAX_TOKENS[line.source or ""]
        lines.append(line)
    excluded = {s: d.excluded for s, d in draws.items() if isinstance(d, _RoutingDraw)}
    return lines, excluded


def summarize(lines: list[WorkloadLine]) -> dict[str, Any]:
    """Counts per source, tenant and category; the FAQ skew and the answer-determining share."""
    faq = [line for line in lines if line.category == "faq"]
    intents = Counter((line.source, line.label) for line in faq)
    determining = sum(line.answer_key == line.label for line in faq)
    return {
        "requests": len(lines),
        "duration_s": round(lines[-1].arrival or 0.0, 1) if lines else 0.0,
        "by_category": dict(Counter(line.category for line in lines)),
        "by_source": dict(Counter(line.source for line in lines)),
        "by_tenant": dict(sorted(Counter(line.tenant for line in lines).items())),
        "faq_intents_seen": len(intents),
        "faq_top_intent_requests": max(intents.values(), default=0),
        "faq_median_intent_requests": median(intents.values()) if intents else 0,
        "faq_answer_determining_share": round(determining / max(1, len(faq)), 4),
        "faq_distinct_answer_keys": len({line.answer_key for line in faq}),
        "distinct_prompts": len({line.prompt for line in lines}),
        "with_responses": sum(line.responses is not None for line in lines),
        "with_correct": sum(line.correct is not None for line in lines),
    }


async def run(spec: Spec, out: Path) -> dict[str, Any]:
    try:
        lines, excluded = build(spec, progress=True)
    except (ValueError, FileNotFoundError) as exc:  # bad options or missing data: one line, not a traceback
        raise SystemExit(f"costwise-bench workload: {exc}") from exc
    encoder = msgspec.json.Encoder()
    with out.open("wb") as fh:
        for line in lines:
            fh.write(encoder.encode(line) + b"\n")
    return {
        "benchmark": "workload",
        "out": str(out),
        "data": str(spec.data),
        "seed": spec.seed,
        "rate": spec.rate,
        "zipf_s": spec.zipf_s,
        "paraphrase_zipf_s": spec.paraphrase_s,
        "mix": dict(spec.mix),
        "routing_split": spec.routing_split,
        **summarize(lines),
        "not_answer_determining_intents": {s: sorted(NOT_ANSWER_DETERMINING[s]) for s in spec.faq},
        "contaminated_excluded": excluded,
    }


def add_parser(sub: Any) -> None:
    """``costwise-bench workload``'s options (``sub``: the CLI's subparsers)."""
    parser = sub.add_parser(
        "workload",
        help="a replay workload file (issue 13) from ../shared/data; JSON summary",
        description="Write a workload file (JSON lines) for `costwise-bench replay`; print a JSON summary.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS, help="the file to write")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--faq", default="banking77,bitext", help="query logs for FAQ traffic (banking77, bitext)")
    parser.add_argument("--routing", default="gsm8k,mmlu", help="RouteLLM outcome sets for routing traffic")
    parser.add_argument("--mix", default="faq=0.6,routing=0.4", help="shares by category or source name")
    parser.add_argument("--tenants", type=int, default=3, help="equal shares, each its own intent popularity")
    parser.add_argument("--requests", type=int, default=5000, help="lines to write")
    parser.add_argument("--rate", type=float, default=20.0, help="mean requests/s of the Poisson arrivals")
    parser.add_argument("--zipf", type=float, default=1.1, help="intent popularity skew s: P(rank r) ∝ r^-s")
    parser.add_argument("--paraphrase-zipf", type=float, default=0.5, help="skew over an intent's phrasings")
    parser.add_argument("--seed", type=int, default=7, help="same seed and data: the same file, byte for byte")
    parser.add_argument(
        "--routing-split",
        choices=ROUTING_SPLITS,
        default="all",
        help="routing prompts from the half the shipped router was fit on (train), the other (held_out), or both",
    )
    parser.set_defaults(module="workload", call=lambda run, a: run(spec_from_args(a), a.out))


def spec_from_args(args: Any) -> Spec:
    return Spec(
        faq=tuple(filter(None, args.faq.split(","))),
        routing=tuple(filter(None, args.routing.split(","))),
        mix=parse_mix(args.mix),
        tenants=args.tenants,
        requests=args.requests,
        rate=args.rate,
        zipf_s=args.zipf,
        paraphrase_s=args.paraphrase_zipf,
        seed=args.seed,
        data=args.data,
        routing_split=args.routing_split,
    )
